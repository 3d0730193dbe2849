//! The core of dogpile: regions, the dogpile lock, keys, values and the backend trait.
//!
//! Most users depend on the `dogpile` facade crate, which re-exports everything here along
//! with the backends and the `#[cache_on_arguments]` macro.
#![warn(missing_docs)]

#[cfg(feature = "tokio")]
mod async_backend;
mod backend;
mod clock;
mod config;
mod engine;
mod error;
mod key;
pub mod lock;
mod proxy;
mod region;
mod registry;
mod runner;
mod stats;
mod value;
mod warnings;

#[cfg(feature = "tokio")]
pub use async_backend::{acquire_until_async, AsyncBackend, AsyncCacheBackend, AsyncCacheMutex};
/// The attribute that implements [`AsyncCacheBackend`] and [`AsyncCacheMutex`]
/// (re-exported from the `async-trait` crate).
#[cfg(feature = "tokio")]
pub use async_trait::async_trait;
pub use backend::{Backend, CacheBackend};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Arguments, RegionConfig};
pub use error::{Error, Result};
pub use key::{
    default_function_key, function_key_prefix, length_conditional_mangler, sha1_mangle_key,
    FunctionKey, FunctionKeyGenerator, KeyMangler,
};
pub use lock::{acquire_until, lock_token, Backoff, CacheMutex, DEFAULT_RETRY_PAUSE};
pub use proxy::{wrap, ProxyBackend};
pub use region::{
    make_region, CacheRegion, CreateOptions, Expiration, RegionBuilder, DEFAULT_TIME_BUDGET,
};
pub use registry::{
    register_backend, registered_backends, BackendFactory, BuiltinBackend, BUILTIN_BACKENDS,
};
pub use runner::{AsyncCreationRunner, CreationJob, ThreadPoolRunner};
pub use stats::RegionStats;
pub use value::{Cacheable, CachedValue, Entry, Metadata, VALUE_VERSION};

#[doc(hidden)]
#[path = "private/mod.rs"]
pub mod __private;
