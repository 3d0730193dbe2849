//! The backends of dogpile: `memory`, `memory_serialized`, `null`, and behind features
//! `file`, `memcached` and `redis`.
//!
//! Each backend's module documents its arguments; the `dogpile` facade shows them all
//! under `dogpile::backends`.
//!
//! Each backend registers itself (with dogpile.cache's names as aliases) in the registry
//! of `dogpile-core` at link time, so `RegionConfig::new("redis")` finds it.
#![warn(missing_docs)]

use dogpile_core::__private::{BuiltinBackend, BUILTIN_BACKENDS};
use linkme::distributed_slice;

#[cfg(feature = "file")]
pub mod file;
#[cfg(any(feature = "redis", feature = "memcached"))]
mod health;
#[cfg(any(feature = "redis", feature = "memcached"))]
mod lock_task;
#[cfg(feature = "memcached")]
pub mod memcached;
pub mod memory;
pub mod null;
#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "redis")]
pub use self::redis::RedisBackend;
#[cfg(feature = "file")]
pub use file::FileBackend;
#[cfg(feature = "memcached")]
pub use memcached::MemcachedBackend;
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

#[cfg(feature = "memcached")]
#[distributed_slice(BUILTIN_BACKENDS)]
static MEMCACHED: BuiltinBackend = BuiltinBackend {
    names: &[
        "memcached",
        "dogpile.cache.memcached",
        "dogpile.cache.pylibmc",
        "dogpile.cache.bmemcached",
        "dogpile.cache.pymemcache",
    ],
    factory: memcached::memcached,
};

#[cfg(feature = "redis")]
#[distributed_slice(BUILTIN_BACKENDS)]
static REDIS: BuiltinBackend = BuiltinBackend {
    names: &["redis", "dogpile.cache.redis"],
    factory: self::redis::redis,
};

#[cfg(feature = "redis")]
#[distributed_slice(BUILTIN_BACKENDS)]
static REDIS_CLUSTER: BuiltinBackend = BuiltinBackend {
    names: &["redis_cluster", "dogpile.cache.redis_cluster"],
    factory: self::redis::redis_cluster,
};

#[cfg(feature = "redis")]
#[distributed_slice(BUILTIN_BACKENDS)]
static REDIS_SENTINEL: BuiltinBackend = BuiltinBackend {
    names: &["redis_sentinel", "dogpile.cache.redis_sentinel"],
    factory: self::redis::redis_sentinel,
};

#[cfg(feature = "file")]
#[distributed_slice(BUILTIN_BACKENDS)]
static FILE: BuiltinBackend = BuiltinBackend {
    names: &["file", "dogpile.cache.dbm"],
    factory: file::file,
};
