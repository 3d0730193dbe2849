//! The core of dogpile: regions, the dogpile lock, keys, values and the backend trait.
//!
//! Most users depend on the `dogpile` facade crate, which re-exports everything here along
//! with the backends and the `#[cache_on_arguments]` macro.
//!
//! The root holds what an application writes: regions ([`CacheRegion`], [`RegionConfig`],
//! [`CreateOptions`]), errors and values. Extension points live in modules: backend
//! authors find their traits in [`backend`], lock authors in [`lock`], clocks in [`clock`],
//! background runners in [`runner`], key builders and manglers in [`key`].
#![warn(missing_docs)]

pub mod backend;
pub mod clock;
mod config;
mod engine;
mod error;
pub mod key;
pub mod lock;
mod region;
pub mod runner;
mod stats;
mod suggest;
pub mod value;
mod warnings;

pub use config::RegionConfig;
pub use error::{Error, Result};
pub use region::{
    make_region, CacheRegion, CreateOptions, Expiration, RegionBuilder, DEFAULT_TIME_BUDGET,
};
pub use stats::RegionStats;
pub use value::{Cacheable, CachedValue};

#[doc(hidden)]
#[path = "private/mod.rs"]
pub mod __private;
