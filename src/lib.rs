//! dogpile: Python's dogpile.cache for Rust.
#![warn(missing_docs)]

pub use dogpile_backends as backends;
#[cfg(feature = "file")]
pub use dogpile_backends::FileBackend;
pub use dogpile_backends::{MemoryBackend, NullBackend};
pub use dogpile_core::*;
