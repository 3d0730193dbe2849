//! Proxy backends: behaviour (logging, metrics, a near cache) wrapped around a backend.

use std::sync::Arc;

#[cfg(feature = "tokio")]
use async_trait::async_trait;

#[cfg(feature = "tokio")]
use super::async_cache_backend::AsyncCacheBackend;
#[cfg(feature = "tokio")]
use super::bridge::async_path;
use super::cache_backend::CacheBackend;
use super::capabilities::Capabilities;
use super::entries;
use crate::error::Result;
#[cfg(feature = "tokio")]
use crate::lock::distributed::AsyncCacheMutex;
use crate::lock::CacheMutex;
use crate::value::Entry;

/// A layer around a backend. Every hook receives the next backend in the chain; the
/// defaults pass the call on unchanged, so a proxy overrides only what it changes.
///
/// # Which hooks see which calls
///
/// - The sync hooks ([`get`](ProxyBackend::get), [`get_with`](ProxyBackend::get_with),
///   [`set`](ProxyBackend::set), [`delete`](ProxyBackend::delete), the `_multi` forms and
///   [`get_mutex`](ProxyBackend::get_mutex)) see every call of a region's sync methods,
///   whether the backend below stores bytes or typed objects.
/// - The async hooks (feature `tokio`: [`get_async`](ProxyBackend::get_async) and the rest
///   of the `_async` hooks) see every call of a region's async methods. Their `next` is
///   the next layer's async path: the backend's native async twin (redis), direct calls
///   for a backend that never blocks (memory, null), or tokio's blocking pool (file, a
///   sync-only backend of yours). By default they pass each call on unchanged, so a
///   wrapped backend keeps its async path.
/// - The sync hooks never see an async call, nor the async hooks a sync one: a proxy that
///   must see both (logging, metrics, a near cache that must see every write) overrides
///   both.
/// - A wrapped backend keeps its [`Capabilities`] (the
///   [`capabilities`](ProxyBackend::capabilities) hook passes them on) and its async twin.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use dogpile_core::Result;
/// use dogpile_core::backend::{CacheBackend, Entry, ProxyBackend};
///
/// #[derive(Default)]
/// struct CountGets(AtomicUsize);
///
/// impl ProxyBackend for CountGets {
///     fn get(&self, key: &str, next: &dyn CacheBackend) -> Result<Option<Entry>> {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         next.get_entry(key)
///     }
/// }
/// ```
///
/// A proxy that overrides an async hook implements the trait with
/// [`#[async_trait]`](crate::backend::async_trait), as [`get_async`](ProxyBackend::get_async) shows.
#[cfg_attr(feature = "tokio", async_trait)]
pub trait ProxyBackend: Send + Sync + 'static {
    /// A region's sync read; see [`CacheBackend::get_entry`].
    fn get(&self, key: &str, next: &dyn CacheBackend) -> Result<Option<Entry>> {
        next.get_entry(key)
    }

    /// A region's sync read that borrows the stored entry; see
    /// [`CacheBackend::get_with`]. The default goes through this proxy's
    /// [`get`](ProxyBackend::get), so a proxy that overrides only `get` sees every read;
    /// override this too to lend the store's entry (`next.get_with(key, f)`).
    fn get_with(
        &self,
        key: &str,
        f: &mut dyn FnMut(Option<&Entry>),
        next: &dyn CacheBackend,
    ) -> Result<()> {
        f(self.get(key, next)?.as_ref());
        Ok(())
    }

    /// A region's sync write; see [`CacheBackend::set_entry`].
    fn set(&self, key: &str, entry: Entry, next: &dyn CacheBackend) -> Result<()> {
        next.set_entry(key, entry)
    }

    /// See [`CacheBackend::delete`].
    fn delete(&self, key: &str, next: &dyn CacheBackend) -> Result<()> {
        next.delete(key)
    }

    /// See [`CacheBackend::get_entries`].
    fn get_multi(&self, keys: &[&str], next: &dyn CacheBackend) -> Result<Vec<Option<Entry>>> {
        next.get_entries(keys)
    }

    /// See [`CacheBackend::set_entries`].
    fn set_multi(&self, items: Vec<(&str, Entry)>, next: &dyn CacheBackend) -> Result<()> {
        next.set_entries(items)
    }

    /// See [`CacheBackend::delete_multi`].
    fn delete_multi(&self, keys: &[&str], next: &dyn CacheBackend) -> Result<()> {
        next.delete_multi(keys)
    }

    /// See [`CacheBackend::get_mutex`].
    fn get_mutex(&self, key: &str, next: &dyn CacheBackend) -> Option<Box<dyn CacheMutex>> {
        next.get_mutex(key)
    }

    /// What the wrapped backend can do; the default is the next backend's
    /// [`capabilities`](CacheBackend::capabilities), unchanged.
    fn capabilities(&self, next: &dyn CacheBackend) -> Capabilities {
        next.capabilities()
    }

    /// A region's async read; see [`AsyncCacheBackend::get_entry`].
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use dogpile_core::backend::{
    ///     async_trait, AsyncCacheBackend, CacheBackend, Entry, ProxyBackend,
    /// };
    /// use dogpile_core::Result;
    ///
    /// #[derive(Default)]
    /// struct CountGets(AtomicUsize);
    ///
    /// #[async_trait]
    /// impl ProxyBackend for CountGets {
    ///     fn get(&self, key: &str, next: &dyn CacheBackend) -> Result<Option<Entry>> {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///         next.get_entry(key)
    ///     }
    ///     async fn get_async(
    ///         &self,
    ///         key: &str,
    ///         next: &dyn AsyncCacheBackend,
    ///     ) -> Result<Option<Entry>> {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///         next.get_entry(key).await
    ///     }
    /// }
    /// ```
    #[cfg(feature = "tokio")]
    async fn get_async(&self, key: &str, next: &dyn AsyncCacheBackend) -> Result<Option<Entry>> {
        next.get_entry(key).await
    }

    /// A region's async write; see [`AsyncCacheBackend::set_entry`].
    #[cfg(feature = "tokio")]
    async fn set_async(&self, key: &str, entry: Entry, next: &dyn AsyncCacheBackend) -> Result<()> {
        next.set_entry(key, entry).await
    }

    /// See [`AsyncCacheBackend::delete`].
    #[cfg(feature = "tokio")]
    async fn delete_async(&self, key: &str, next: &dyn AsyncCacheBackend) -> Result<()> {
        next.delete(key).await
    }

    /// See [`AsyncCacheBackend::get_entries`].
    #[cfg(feature = "tokio")]
    async fn get_multi_async(
        &self,
        keys: &[&str],
        next: &dyn AsyncCacheBackend,
    ) -> Result<Vec<Option<Entry>>> {
        next.get_entries(keys).await
    }

    /// See [`AsyncCacheBackend::set_entries`].
    #[cfg(feature = "tokio")]
    async fn set_multi_async(
        &self,
        items: Vec<(&str, Entry)>,
        next: &dyn AsyncCacheBackend,
    ) -> Result<()> {
        next.set_entries(items).await
    }

    /// See [`AsyncCacheBackend::delete_multi`].
    #[cfg(feature = "tokio")]
    async fn delete_multi_async(&self, keys: &[&str], next: &dyn AsyncCacheBackend) -> Result<()> {
        next.delete_multi(keys).await
    }

    /// See [`AsyncCacheBackend::get_mutex`].
    #[cfg(feature = "tokio")]
    fn get_mutex_async(
        &self,
        key: &str,
        next: &dyn AsyncCacheBackend,
    ) -> Option<Box<dyn AsyncCacheMutex>> {
        next.get_mutex(key)
    }
}

/// Wraps `backend` in `proxy`: the result passes every call through the proxy first, and
/// keeps the backend's capabilities and async path (see [`ProxyBackend`]).
pub fn wrap(backend: Arc<dyn CacheBackend>, proxy: Arc<dyn ProxyBackend>) -> Arc<dyn CacheBackend> {
    Arc::new(Proxied {
        proxy,
        next: backend,
    })
}

/// Names a proxied backend in errors.
const PROXIED: &str = "a proxied backend";

/// A backend wrapped in a proxy: its sync face.
struct Proxied {
    proxy: Arc<dyn ProxyBackend>,
    next: Arc<dyn CacheBackend>,
}

impl CacheBackend for Proxied {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        entries::read_bytes(self.get_entry(key)?, PROXIED)
    }

    fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.set_entry(key, Entry::Bytes(value))
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.proxy.delete(key, &*self.next)
    }

    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        entries::read_bytes_multi(self.get_entries(keys)?, PROXIED)
    }

    fn set_multi(&self, items: Vec<(&str, Vec<u8>)>) -> Result<()> {
        self.set_entries(entries::bytes_items(items))
    }

    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        self.proxy.delete_multi(keys, &*self.next)
    }

    fn get_mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        self.proxy.get_mutex(key, &*self.next)
    }

    /// The next backend's keys: a proxy changes what a key holds, not which keys exist.
    fn keys(&self, pattern: &str, found: &mut dyn FnMut(String) -> bool) -> Result<()> {
        self.next.keys(pattern, found)
    }

    fn capabilities(&self) -> Capabilities {
        self.proxy.capabilities(&*self.next)
    }

    /// The next backend's servers.
    fn servers(&self) -> Option<Vec<super::server_status::ServerStatus>> {
        self.next.servers()
    }

    /// The next backend's channels: a proxy changes values, not who hears of changes.
    fn publish(&self, channel: &str, message: &[u8]) -> Result<()> {
        self.next.publish(channel, message)
    }

    fn subscribe(
        &self,
        channel: &str,
    ) -> Result<Option<Box<dyn super::subscription::Subscription>>> {
        self.next.subscribe(channel)
    }

    /// Always present: the proxy's async hooks around the next backend's async path.
    #[cfg(feature = "tokio")]
    fn async_twin(&self) -> Option<Arc<dyn AsyncCacheBackend>> {
        Some(Arc::new(AsyncProxied {
            proxy: self.proxy.clone(),
            next: async_path(&self.next),
        }))
    }

    fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        self.proxy.get(key, &*self.next)
    }

    fn get_with(&self, key: &str, f: &mut dyn FnMut(Option<&Entry>)) -> Result<()> {
        self.proxy.get_with(key, f, &*self.next)
    }

    fn set_entry(&self, key: &str, entry: Entry) -> Result<()> {
        self.proxy.set(key, entry, &*self.next)
    }

    fn get_entries(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.proxy.get_multi(keys, &*self.next)
    }

    fn set_entries(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        self.proxy.set_multi(items, &*self.next)
    }
}

/// A backend wrapped in a proxy: its async face, the proxy's async hooks around the next
/// backend's async path.
#[cfg(feature = "tokio")]
struct AsyncProxied {
    proxy: Arc<dyn ProxyBackend>,
    next: Arc<dyn AsyncCacheBackend>,
}

#[cfg(feature = "tokio")]
#[async_trait]
impl AsyncCacheBackend for AsyncProxied {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        entries::read_bytes(self.get_entry(key).await?, PROXIED)
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.set_entry(key, Entry::Bytes(value)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.proxy.delete_async(key, &*self.next).await
    }

    async fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        entries::read_bytes_multi(self.get_entries(keys).await?, PROXIED)
    }

    async fn set_multi(&self, items: Vec<(&str, Vec<u8>)>) -> Result<()> {
        self.set_entries(entries::bytes_items(items)).await
    }

    async fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        self.proxy.delete_multi_async(keys, &*self.next).await
    }

    fn get_mutex(&self, key: &str) -> Option<Box<dyn AsyncCacheMutex>> {
        self.proxy.get_mutex_async(key, &*self.next)
    }

    fn capabilities(&self) -> Capabilities {
        self.next.capabilities()
    }

    async fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        self.proxy.get_async(key, &*self.next).await
    }

    async fn set_entry(&self, key: &str, entry: Entry) -> Result<()> {
        self.proxy.set_async(key, entry, &*self.next).await
    }

    async fn get_entries(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.proxy.get_multi_async(keys, &*self.next).await
    }

    async fn set_entries(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        self.proxy.set_multi_async(items, &*self.next).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Mutex;

    use super::*;

    /// A store of bytes that counts its calls, with capabilities of its own and (when
    /// given one) an async twin.
    #[derive(Default)]
    struct Store {
        values: Mutex<HashMap<String, Vec<u8>>>,
        calls: AtomicUsize,
        #[cfg(feature = "tokio")]
        twin: Option<Arc<Twin>>,
    }

    impl Store {
        fn capabilities() -> Capabilities {
            Capabilities::new()
                .stores_nothing(true)
                .nonblocking(true)
                .lock_key_prefix(Some("_lock".into()))
        }
    }

    impl CacheBackend for Store {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
            self.calls.fetch_add(1, SeqCst);
            Ok(self.values.lock().unwrap().get(key).cloned())
        }
        fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
            self.calls.fetch_add(1, SeqCst);
            self.values.lock().unwrap().insert(key.into(), value);
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.calls.fetch_add(1, SeqCst);
            self.values.lock().unwrap().remove(key);
            Ok(())
        }
        fn capabilities(&self) -> Capabilities {
            Store::capabilities()
        }
        #[cfg(feature = "tokio")]
        fn async_twin(&self) -> Option<Arc<dyn AsyncCacheBackend>> {
            self.twin
                .clone()
                .map(|twin| twin as Arc<dyn AsyncCacheBackend>)
        }
    }

    /// A native async twin that counts its calls.
    #[cfg(feature = "tokio")]
    #[derive(Default)]
    struct Twin {
        values: Mutex<HashMap<String, Vec<u8>>>,
        calls: AtomicUsize,
    }

    #[cfg(feature = "tokio")]
    #[async_trait]
    impl AsyncCacheBackend for Twin {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
            self.calls.fetch_add(1, SeqCst);
            Ok(self.values.lock().unwrap().get(key).cloned())
        }
        async fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
            self.calls.fetch_add(1, SeqCst);
            self.values.lock().unwrap().insert(key.into(), value);
            Ok(())
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.calls.fetch_add(1, SeqCst);
            self.values.lock().unwrap().remove(key);
            Ok(())
        }
    }

    /// Counts the reads and writes each face of the proxy sees.
    #[derive(Default)]
    struct Seen {
        sync: AtomicUsize,
        #[cfg(feature = "tokio")]
        async_: AtomicUsize,
    }

    #[cfg_attr(feature = "tokio", async_trait)]
    impl ProxyBackend for Seen {
        fn get(&self, key: &str, next: &dyn CacheBackend) -> Result<Option<Entry>> {
            self.sync.fetch_add(1, SeqCst);
            next.get_entry(key)
        }
        fn set(&self, key: &str, entry: Entry, next: &dyn CacheBackend) -> Result<()> {
            self.sync.fetch_add(1, SeqCst);
            next.set_entry(key, entry)
        }
        #[cfg(feature = "tokio")]
        async fn get_async(
            &self,
            key: &str,
            next: &dyn AsyncCacheBackend,
        ) -> Result<Option<Entry>> {
            self.async_.fetch_add(1, SeqCst);
            next.get_entry(key).await
        }
        #[cfg(feature = "tokio")]
        async fn set_async(
            &self,
            key: &str,
            entry: Entry,
            next: &dyn AsyncCacheBackend,
        ) -> Result<()> {
            self.async_.fetch_add(1, SeqCst);
            next.set_entry(key, entry).await
        }
    }

    #[test]
    fn a_wrapped_backend_keeps_its_capabilities_through_every_layer() {
        let seen = Arc::new(Seen::default());
        let once = wrap(Arc::new(Store::default()), seen.clone());
        let twice = wrap(once.clone(), seen);
        assert_eq!(once.capabilities(), Store::capabilities());
        assert_eq!(twice.capabilities(), Store::capabilities());
    }

    #[test]
    fn the_sync_hooks_see_sync_calls_and_the_byte_view_goes_through_them() {
        let store = Arc::new(Store::default());
        let seen = Arc::new(Seen::default());
        let proxied = wrap(store.clone(), seen.clone());
        proxied.set("k", b"v".to_vec()).unwrap();
        assert_eq!(proxied.get("k").unwrap(), Some(b"v".to_vec()));
        let mut lent = None;
        proxied
            .get_with("k", &mut |entry| {
                lent = entry.and_then(Entry::as_bytes).map(<[u8]>::to_vec)
            })
            .unwrap();
        assert_eq!(lent, Some(b"v".to_vec()));
        assert_eq!(seen.sync.load(SeqCst), 3);
        assert_eq!(store.calls.load(SeqCst), 3);
    }

    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn a_wrapped_backends_async_calls_reach_its_native_twin_through_the_async_hooks() {
        let twin = Arc::new(Twin::default());
        let store = Arc::new(Store {
            twin: Some(twin.clone()),
            ..Store::default()
        });
        let seen = Arc::new(Seen::default());
        let proxied = wrap(wrap(store.clone(), seen.clone()), seen.clone());
        let async_face = proxied
            .async_twin()
            .expect("a proxied backend has an async path");
        async_face
            .set_entry("k", Entry::Bytes(b"v".to_vec()))
            .await
            .unwrap();
        assert_eq!(async_face.get("k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(
            seen.async_.load(SeqCst),
            4,
            "both layers' async hooks, twice"
        );
        assert_eq!(twin.calls.load(SeqCst), 2, "served by the native twin");
        assert_eq!(seen.sync.load(SeqCst), 0);
        assert_eq!(
            store.calls.load(SeqCst),
            0,
            "the sync backend was never called"
        );
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(flavor = "current_thread")]
    async fn without_a_twin_the_async_hooks_reach_the_backend_by_its_own_path() {
        // A nonblocking backend without a twin: the async hooks' `next` calls it directly.
        let store = Arc::new(Store::default());
        let seen = Arc::new(Seen::default());
        let async_face = wrap(store.clone(), seen.clone()).async_twin().unwrap();
        async_face.set("k", b"v".to_vec()).await.unwrap();
        assert_eq!(
            async_face
                .get_entry("k")
                .await
                .unwrap()
                .and_then(|e| e.as_bytes().map(<[u8]>::to_vec)),
            Some(b"v".to_vec())
        );
        assert_eq!(seen.async_.load(SeqCst), 2);
        assert_eq!(seen.sync.load(SeqCst), 0);
        assert_eq!(store.calls.load(SeqCst), 2);
    }
}
