//! The core of dogpile: regions, the dogpile lock, keys, values and the backend trait.
//!
//! Most users depend on the `dogpile` facade crate, which re-exports everything here along
//! with the backends and the `#[cache_on_arguments]` macro.
#![warn(missing_docs)]

pub mod backend;
mod clock;
mod config;
mod engine;
mod error;
mod key;
pub mod lock;
mod region;
mod runner;
mod stats;
mod value;
mod warnings;

/// The attribute that implements [`AsyncCacheBackend`] and [`AsyncCacheMutex`]
/// (re-exported from the `async-trait` crate).
#[cfg(feature = "tokio")]
pub use async_trait::async_trait;
pub use backend::Arguments;
#[cfg(feature = "tokio")]
pub use backend::AsyncCacheBackend;
pub use backend::{
    register_backend, registered_backends, wrap, BackendFactory, BuiltinBackend, CacheBackend,
    Capabilities, ProxyBackend, BUILTIN_BACKENDS,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::RegionConfig;
pub use error::{Error, Result};
pub use key::{
    default_function_key, function_key_prefix, length_conditional_mangler, sha1_mangle_key,
    FunctionKey, FunctionKeyGenerator, KeyMangler,
};
pub use lock::{acquire_until, lock_token, Backoff, CacheMutex, DEFAULT_RETRY_PAUSE};
#[cfg(feature = "tokio")]
pub use lock::{acquire_until_async, AsyncCacheMutex};
pub use region::{
    make_region, CacheRegion, CreateOptions, Expiration, RegionBuilder, DEFAULT_TIME_BUDGET,
};
pub use runner::{AsyncCreationRunner, CreationJob, ThreadPoolRunner};
pub use stats::RegionStats;
pub use value::{Cacheable, CachedValue, Entry, Metadata, VALUE_VERSION};

#[doc(hidden)]
#[path = "private/mod.rs"]
pub mod __private;
