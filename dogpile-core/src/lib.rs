//! The core of dogpile: regions, the dogpile lock, keys, values and the backend trait.
//!
//! Most users depend on the `dogpile` facade crate, which re-exports everything here along
//! with the backends and the `#[cache_on_arguments]` macro.
#![warn(missing_docs)]

#[cfg(feature = "tokio")]
mod async_region;
pub mod backend;
mod clock;
mod config;
mod driver;
mod engine;
mod error;
mod key;
mod lock;
mod macro_support;
mod region;
mod runner;
mod stats;
mod value;
mod warnings;

/// The attribute that implements [`AsyncCacheBackend`] and [`AsyncCacheMutex`]
/// (re-exported from the `async-trait` crate).
#[cfg(feature = "tokio")]
pub use async_trait::async_trait;
#[cfg(feature = "tokio")]
pub use backend::{acquire_until_async, AsyncCacheBackend, AsyncCacheMutex};
pub use backend::{
    register_backend, registered_backends, wrap, BackendFactory, BuiltinBackend, CacheBackend,
    Capabilities, ProxyBackend, BUILTIN_BACKENDS,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Arguments, RegionConfig};
pub use error::{Error, Result};
pub use key::{
    default_function_key, function_key_prefix, length_conditional_mangler, sha1_mangle_key,
    FunctionKey, FunctionKeyGenerator, KeyMangler,
};
pub use lock::{acquire_until, lock_token, Backoff, CacheMutex, LockHandle, DEFAULT_RETRY_PAUSE};
pub use region::{
    make_region, CacheRegion, CreateOptions, Expiration, RegionBuilder, DEFAULT_TIME_BUDGET,
};
pub use runner::{AsyncCreationRunner, CreationJob, ThreadPoolRunner};
pub use stats::RegionStats;
pub use value::{Cacheable, CachedValue, Entry, Metadata, VALUE_VERSION};

#[doc(hidden)]
pub mod __private {
    pub use crate::macro_support::*;
    /// Exposed for the benchmarks only.
    pub use crate::stats::StatsRecorder;
    pub use linkme;
}
