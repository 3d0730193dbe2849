//! Proxy backends: behaviour (logging, metrics, a near cache) wrapped around a backend.

use std::sync::Arc;

use crate::backend::Backend;
use crate::error::Result;
use crate::lock::CacheMutex;
use crate::value::Entry;

/// A layer around a backend. Every method receives the next backend in the chain; the
/// defaults pass the call on unchanged, so a proxy overrides only what it changes.
///
/// A proxy sees every call, whether the backend below stores bytes or typed objects.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use dogpile_core::{Backend, Entry, ProxyBackend, Result};
///
/// #[derive(Default)]
/// struct CountGets(AtomicUsize);
///
/// impl ProxyBackend for CountGets {
///     fn get(&self, key: &str, next: &dyn Backend) -> Result<Option<Entry>> {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         next.get(key)
///     }
/// }
/// ```
pub trait ProxyBackend: Send + Sync + 'static {
    /// See [`Backend::get`].
    fn get(&self, key: &str, next: &dyn Backend) -> Result<Option<Entry>> {
        next.get(key)
    }

    /// See [`Backend::get_with`]. The default goes through this proxy's
    /// [`get`](ProxyBackend::get), so a proxy that overrides only `get` sees every read;
    /// override this too to lend the store's entry (`next.get_with(key, f)`).
    fn get_with(
        &self,
        key: &str,
        f: &mut dyn FnMut(Option<&Entry>),
        next: &dyn Backend,
    ) -> Result<()> {
        f(self.get(key, next)?.as_ref());
        Ok(())
    }

    /// See [`Backend::set`].
    fn set(&self, key: &str, entry: Entry, next: &dyn Backend) -> Result<()> {
        next.set(key, entry)
    }

    /// See [`Backend::delete`].
    fn delete(&self, key: &str, next: &dyn Backend) -> Result<()> {
        next.delete(key)
    }

    /// See [`Backend::get_multi`].
    fn get_multi(&self, keys: &[&str], next: &dyn Backend) -> Result<Vec<Option<Entry>>> {
        next.get_multi(keys)
    }

    /// See [`Backend::set_multi`].
    fn set_multi(&self, items: Vec<(&str, Entry)>, next: &dyn Backend) -> Result<()> {
        next.set_multi(items)
    }

    /// See [`Backend::delete_multi`].
    fn delete_multi(&self, keys: &[&str], next: &dyn Backend) -> Result<()> {
        next.delete_multi(keys)
    }

    /// See [`Backend::get_mutex`].
    fn get_mutex(&self, key: &str, next: &dyn Backend) -> Option<Box<dyn CacheMutex>> {
        next.get_mutex(key)
    }
}

/// Wraps `backend` in `proxy`: the result passes every call through the proxy first.
pub fn wrap(backend: Arc<dyn Backend>, proxy: Arc<dyn ProxyBackend>) -> Arc<dyn Backend> {
    Arc::new(Proxied {
        proxy,
        next: backend,
    })
}

struct Proxied {
    proxy: Arc<dyn ProxyBackend>,
    next: Arc<dyn Backend>,
}

impl Backend for Proxied {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.proxy.get(key, &*self.next)
    }

    fn get_with(&self, key: &str, f: &mut dyn FnMut(Option<&Entry>)) -> Result<()> {
        self.proxy.get_with(key, f, &*self.next)
    }

    fn set(&self, key: &str, entry: Entry) -> Result<()> {
        self.proxy.set(key, entry, &*self.next)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.proxy.delete(key, &*self.next)
    }

    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.proxy.get_multi(keys, &*self.next)
    }

    fn set_multi(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        self.proxy.set_multi(items, &*self.next)
    }

    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        self.proxy.delete_multi(keys, &*self.next)
    }

    fn get_mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        self.proxy.get_mutex(key, &*self.next)
    }

    fn stores_objects(&self) -> bool {
        self.next.stores_objects()
    }

    fn stores_nothing(&self) -> bool {
        self.next.stores_nothing()
    }

    fn lock_key_prefix(&self) -> Option<String> {
        self.next.lock_key_prefix()
    }
}
