//! The backends of dogpile: `memory`, `memory_serialized`, `null`, and behind features
//! `file`, `memcached` and `redis`.
//!
//! Each backend registers itself (with dogpile.cache's names as aliases) in the registry
//! of `dogpile-core` at link time, so `RegionConfig::new("redis")` finds it.
#![warn(missing_docs)]

use dogpile_core::{BuiltinBackend, BUILTIN_BACKENDS};
use linkme::distributed_slice;

#[cfg(feature = "file")]
pub mod file;
pub mod memory;
pub mod null;

#[cfg(feature = "file")]
pub use file::FileBackend;
pub use memory::MemoryBackend;
pub use null::NullBackend;

#[distributed_slice(BUILTIN_BACKENDS)]
static MEMORY: BuiltinBackend = BuiltinBackend {
    names: &["memory", "dogpile.cache.memory"],
    factory: memory::memory,
};

#[distributed_slice(BUILTIN_BACKENDS)]
static MEMORY_SERIALIZED: BuiltinBackend = BuiltinBackend {
    names: &[
        "memory_serialized",
        "memory_pickle",
        "dogpile.cache.memory_pickle",
    ],
    factory: memory::memory_serialized,
};

#[distributed_slice(BUILTIN_BACKENDS)]
static NULL: BuiltinBackend = BuiltinBackend {
    names: &["null", "dogpile.cache.null"],
    factory: null::null,
};

#[cfg(feature = "file")]
#[distributed_slice(BUILTIN_BACKENDS)]
static FILE: BuiltinBackend = BuiltinBackend {
    names: &["file", "dogpile.cache.dbm"],
    factory: file::file,
};
