//! dogpile: Python's dogpile.cache for Rust.
#![warn(missing_docs)]

pub use dogpile_backends as backends;
pub use dogpile_backends::{MemoryBackend, NullBackend};
pub use dogpile_core::*;

#[doc(inline)]
pub use dogpile_macros::{cache_multi_on_arguments, cache_on_arguments};
