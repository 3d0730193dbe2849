//! The backend registry: backend names and the factories that build them.
//!
//! Built-in backends (from `dogpile-backends`) register themselves at link time in
//! [`BUILTIN_BACKENDS`]; users add theirs at run time with [`register_backend`]. A user
//! registration under a built-in name takes precedence.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use super::arguments::Arguments;
use super::cache_backend::CacheBackend;
use crate::error::{Error, Result};

/// Builds a backend from its arguments.
pub type BackendFactory = Arc<dyn Fn(&Arguments) -> Result<Arc<dyn CacheBackend>> + Send + Sync>;

/// A backend shipped with dogpile, registered at link time.
#[derive(Debug)]
pub struct BuiltinBackend {
    /// The canonical name first, then aliases (dogpile.cache's own names).
    pub names: &'static [&'static str],
    /// Builds the backend.
    pub factory: fn(&Arguments) -> Result<Arc<dyn CacheBackend>>,
}

/// The built-in backends, filled at link time by `dogpile-backends`.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static BUILTIN_BACKENDS: [BuiltinBackend];

fn user_backends() -> &'static RwLock<BTreeMap<String, BackendFactory>> {
    static USER: OnceLock<RwLock<BTreeMap<String, BackendFactory>>> = OnceLock::new();
    USER.get_or_init(Default::default)
}

/// Registers a backend under `name`, so that `RegionConfig::new(name)` builds it with
/// `factory`. Registering a name again replaces the earlier factory.
///
/// ```
/// use dogpile_core::Result;
/// use dogpile_core::backend::{register_backend, Arguments, CacheBackend};
///
/// struct Nothing;
/// impl CacheBackend for Nothing {
///     fn get(&self, _: &str) -> Result<Option<Vec<u8>>> { Ok(None) }
///     fn set(&self, _: &str, _: Vec<u8>) -> Result<()> { Ok(()) }
///     fn delete(&self, _: &str) -> Result<()> { Ok(()) }
/// }
///
/// register_backend("nothing", |_args: &Arguments| Ok(Nothing));
/// ```
pub fn register_backend<B, F>(name: impl Into<String>, factory: F)
where
    B: CacheBackend,
    F: Fn(&Arguments) -> Result<B> + Send + Sync + 'static,
{
    let factory: BackendFactory =
        Arc::new(move |args| factory(args).map(|b| Arc::new(b) as Arc<dyn CacheBackend>));
    user_backends()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(name.into(), factory);
}

/// Every registered backend name, built-in names and aliases included, sorted.
pub fn registered_backends() -> Vec<String> {
    let mut names: Vec<String> = BUILTIN_BACKENDS
        .iter()
        .flat_map(|b| b.names.iter().map(|n| n.to_string()))
        .collect();
    names.extend(
        user_backends()
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys()
            .cloned(),
    );
    names.sort();
    names.dedup();
    names
}

/// Builds the backend registered under `name` from `arguments`.
pub(crate) fn create_backend(
    name: &str,
    arguments: &std::collections::BTreeMap<String, String>,
) -> Result<Arc<dyn CacheBackend>> {
    let args = Arguments::new(name, arguments.clone());
    let user = user_backends()
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(name)
        .cloned();
    if let Some(factory) = user {
        return factory(&args);
    }
    if let Some(builtin) = BUILTIN_BACKENDS.iter().find(|b| b.names.contains(&name)) {
        return (builtin.factory)(&args);
    }
    let known = registered_backends();
    Err(Error::PluginNotFound {
        name: name.to_owned(),
        suggestion: crate::suggest::closest(name, known.iter().map(String::as_str))
            .map(str::to_owned),
        known: known.join(", "),
    })
}
