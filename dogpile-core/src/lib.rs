//! The core of dogpile: regions, the dogpile lock, keys, values and the backend trait.
//!
//! Most users depend on the `dogpile` facade crate, which re-exports everything here along
//! with the backends and the `#[cache_on_arguments]` macro.
#![warn(missing_docs)]

mod backend;
mod clock;
mod config;
mod error;
mod key;
mod lock;
mod macro_support;
mod proxy;
mod region;
mod registry;
mod runner;
mod stats;
mod value;
mod warnings;

pub use backend::{Backend, CacheBackend};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Arguments, RegionConfig};
pub use error::{Error, Result};
pub use key::{
    default_function_key, function_key_prefix, length_conditional_mangler, sha1_mangle_key,
    FunctionKey, FunctionKeyGenerator, KeyMangler,
};
pub use lock::{CacheMutex, LockHandle};
pub use proxy::{wrap, ProxyBackend};
pub use region::{make_region, CacheRegion, CreateOptions, Expiration, RegionBuilder};
pub use registry::{
    register_backend, registered_backends, BackendFactory, BuiltinBackend, BUILTIN_BACKENDS,
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
