//! # dogpile
//!
//! Python's dogpile.cache for Rust: cache regions configured at run time, the dogpile lock
//! (one caller regenerates an expired value while the others get the stale value at once),
//! and `#[cache_on_arguments]`.
//!
//! ```
//! use std::time::Duration;
//! use dogpile::{make_region, CacheRegion, RegionConfig};
//! use once_cell::sync::Lazy;
//!
//! static REGION: Lazy<CacheRegion> = Lazy::new(make_region);
//!
//! fn main() -> dogpile::Result<()> {
//!     REGION.configure(RegionConfig::new("memory").expiration_time(Duration::from_secs(3600)))?;
//!     let name: String = REGION.get_or_create("user:5", || "ed".to_string())?;
//!     assert_eq!(name, "ed");
//!     Ok(())
//! }
//! ```
//!
//! Backends are chosen by name in [`RegionConfig::new`]: `memory`, `memory_serialized`,
//! `null`, `file`, `memcached`, `redis`, `redis_cluster`, `redis_sentinel`, and
//! dogpile.cache's names (`dogpile.cache.redis`, `dogpile.cache.pylibmc`, ...) as aliases.
//! Each backend's arguments are in its module under [`backends`]:
//! [`memory`](backends::memory), [`null`](backends::null), [`file`](backends::file),
//! [`memcached`](backends::memcached), [`redis`](backends::redis). Write your own with
//! [`CacheBackend`] and [`register_backend`].
//!
//! # Configuration files
//!
//! With the `serde` feature (on by default) a [`RegionConfig`] deserializes from a table
//! with `backend`, `expiration_time` (seconds, `-1` for never, or `"10m"`, `"1h30m"`, ...)
//! and `arguments`, so a TOML, YAML or JSON file configures every region:
//!
//! ```
//! use std::collections::HashMap;
//! use dogpile::{make_region, RegionConfig};
//!
//! let file = r#"{
//!     "users": { "backend": "memory", "expiration_time": "10m",
//!                "arguments": { "max_entries": 10000 } },
//!     "reports": { "backend": "null" }
//! }"#;
//! let mut configs: HashMap<String, RegionConfig> = serde_json::from_str(file).unwrap();
//! let users = make_region();
//! users.configure(configs.remove("users").unwrap())?;
//! # Ok::<(), dogpile::Error>(())
//! ```
//!
//! # Logging
//!
//! dogpile logs through [`tracing`](https://docs.rs/tracing). Warnings about a failing
//! backend are rate-limited per region and kind: the first is logged at once, then at most
//! one every 10 seconds, whose `suppressed` field counts those left out since the last one.
//! An application on the `log` crate sees them too, as long as it installs no `tracing`
//! subscriber: `env_logger::init()` and `RUST_LOG=dogpile_core=warn` print them.
//!
//! # Features
//!
//! All on by default: `file`, `memcached`, `redis` (the backends of those names), `serde`
//! (configuration files), `metrics` (region statistics also go to the
//! [`metrics`](https://docs.rs/metrics) facade, see [`RegionStats`]) and `log` (dogpile's
//! `tracing` events reach applications that use the `log` crate, such as `env_logger`, and
//! no `tracing` subscriber).
#![warn(missing_docs)]

pub mod backends {
    //! The backends, one module each, which lists its arguments.
    //!
    //! | backend names (dogpile.cache's as aliases) | arguments | type | feature |
    //! |---|---|---|---|
    //! | `memory`, `memory_serialized` (`dogpile.cache.memory`, `dogpile.cache.memory_pickle`) | [`memory`] | [`MemoryBackend`] | |
    //! | `null` (`dogpile.cache.null`) | [`null`] | [`NullBackend`] | |
    //! | `file` (`dogpile.cache.dbm`) | [`file`](mod@file) | [`FileBackend`] | `file` |
    //! | `memcached` (`dogpile.cache.memcached`, `dogpile.cache.pylibmc`, `dogpile.cache.bmemcached`, `dogpile.cache.pymemcache`) | [`memcached`] | [`MemcachedBackend`] | `memcached` |
    //! | `redis`, `redis_cluster`, `redis_sentinel` (`dogpile.cache.redis`, `dogpile.cache.redis_cluster`, `dogpile.cache.redis_sentinel`) | [`redis`] | [`RedisBackend`] | `redis` |
    //!
    //! The features are on by default.

    #[cfg(feature = "file")]
    #[doc(inline)]
    pub use dogpile_backends::file;
    #[cfg(feature = "memcached")]
    #[doc(inline)]
    pub use dogpile_backends::memcached;
    #[doc(inline)]
    pub use dogpile_backends::memory;
    #[doc(inline)]
    pub use dogpile_backends::null;
    #[cfg(feature = "redis")]
    #[doc(inline)]
    pub use dogpile_backends::redis;

    #[cfg(feature = "file")]
    #[doc(no_inline)]
    pub use dogpile_backends::FileBackend;
    #[cfg(feature = "memcached")]
    #[doc(no_inline)]
    pub use dogpile_backends::MemcachedBackend;
    #[cfg(feature = "redis")]
    #[doc(no_inline)]
    pub use dogpile_backends::RedisBackend;
    #[doc(no_inline)]
    pub use dogpile_backends::{MemoryBackend, NullBackend};
}

#[cfg(feature = "file")]
#[doc(inline)]
pub use dogpile_backends::FileBackend;
#[cfg(feature = "memcached")]
#[doc(inline)]
pub use dogpile_backends::MemcachedBackend;
#[cfg(feature = "redis")]
#[doc(inline)]
pub use dogpile_backends::RedisBackend;
#[doc(inline)]
pub use dogpile_backends::{MemoryBackend, NullBackend};
#[doc(inline)]
pub use dogpile_core::*;

#[doc(inline)]
pub use dogpile_macros::{cache_multi_on_arguments, cache_on_arguments};
