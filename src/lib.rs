//! # dogpile
//!
//! Python's dogpile.cache for Rust: cache regions configured at run time, the dogpile lock
//! (one caller regenerates an expired value while the others get the stale value at once,
//! or wait for the new one when there is none), and `#[cache_on_arguments]`.
//!
//! A region is a lazy static, configured when the application starts; a memoized function
//! names it:
//!
//! ```
//! use std::time::Duration;
//! use dogpile::{cache_on_arguments, make_region, CacheRegion, RegionConfig};
//! use once_cell::sync::Lazy;
//!
//! static REGION: Lazy<CacheRegion> = Lazy::new(make_region);
//!
//! #[cache_on_arguments(region = "REGION", namespace = "users")]
//! fn load_user(id: u64) -> String {
//!     format!("user {id}") // the expensive lookup
//! }
//!
//! fn main() -> dogpile::Result<()> {
//!     REGION.configure(RegionConfig::new("memory").expiration_time(Duration::from_secs(3600)))?;
//!     assert_eq!(load_user(5), "user 5"); // computed, then cached
//!     assert_eq!(load_user(5), "user 5"); // a hit
//!     invalidate_load_user(5)?; // the generated siblings: load_user_key, get_, set_, refresh_
//!     let visits: u64 = REGION.get_or_create("visits", || 42)?; // or the region directly
//!     assert_eq!(visits, 42);
//!     Ok(())
//! }
//! ```
//!
//! # Async
//!
//! On an `async fn` the macro caches the same way, and the siblings that reach the cache
//! are awaited; regions have an `_async` twin of every operation
//! ([`CacheRegion::get_or_create_async`], ...). Waiting for another caller's value never
//! blocks an executor thread, and the futures are `Send`, so they fit `tokio::spawn` and
//! axum handlers. Sync and async callers of one region share its locks.
//!
//! ```
//! # use dogpile::{cache_on_arguments, make_region, CacheRegion, RegionConfig};
//! # use once_cell::sync::Lazy;
//! # static REGION: Lazy<CacheRegion> = Lazy::new(make_region);
//! #[cache_on_arguments(region = "REGION")]
//! async fn render(page: u32) -> String {
//!     format!("<h1>page {page}</h1>") // an async origin: a query, an HTTP call
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> dogpile::Result<()> {
//! # REGION.configure(RegionConfig::new("memory"))?;
//! assert_eq!(render(1).await, "<h1>page 1</h1>");
//! invalidate_render(1).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! All on by default but `cluster-tls`; a memory-only application can turn off the rest
//! with `default-features = false`.
//!
//! | feature | what it adds |
//! |---|---|
//! | `file` | the [`file`](backends::file) backend |
//! | `memcached` | the [`memcached`](backends::memcached) backend |
//! | `redis` | the [`redis`](backends::redis) backends (single, cluster, sentinel) |
//! | `tls` | `rediss://` for redis (one server, Sentinels and their master, cluster nodes), through rustls (dogpile's own: the `redis` crate's features stay as your application sets them) |
//! | `cluster-tls` (off by default) | another name of `tls`, kept for configurations that name it |
//! | `tokio` | the async API (`_async` methods, memoized `async fn`s, async backends) |
//! | `serde` | [`RegionConfig`] from a TOML, YAML or JSON file |
//! | `metrics` | region statistics also go to the [`metrics`](https://docs.rs/metrics) facade (see [`RegionStats`]) |
//! | `log` | dogpile's `tracing` events reach applications on the `log` crate |
//!
//! # Backends
//!
//! Backends are chosen by name in [`RegionConfig::new`]: `memory`, `memory_serialized`,
//! `null`, `file`, `memcached`, `redis`, `redis_cluster`, `redis_sentinel`, and
//! dogpile.cache's names (`dogpile.cache.redis`, `dogpile.cache.pylibmc`, ...) as aliases.
//! Each backend's arguments are in its module under [`backends`]. Write your own with
//! [`backend::CacheBackend`] and [`backend::register_backend`]; the extension points live
//! in modules: [`backend`], [`lock`], [`clock`], [`runner`], [`key`], [`value`].
//!
//! # Configuration files
//!
//! With the `serde` feature a [`RegionConfig`] deserializes from a table with `backend`,
//! `expiration_time` (seconds, `-1` for never, or `"10m"`, `"1h30m"`, ...) and
//! `arguments`, so a TOML, YAML or JSON file configures every region:
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
