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
//! `null`, `file`, `memcached`, `redis`, `redis_cluster`, and dogpile.cache's names
//! (`dogpile.cache.redis`, `dogpile.cache.pylibmc`, ...) as aliases. Write your own with
//! [`CacheBackend`] and [`register_backend`].
#![warn(missing_docs)]

pub use dogpile_backends as backends;
#[cfg(feature = "file")]
pub use dogpile_backends::FileBackend;
pub use dogpile_backends::{MemoryBackend, NullBackend};
pub use dogpile_core::*;

#[doc(inline)]
pub use dogpile_macros::{cache_multi_on_arguments, cache_on_arguments};
