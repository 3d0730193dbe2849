//! The backend contract: what a region stores values in.
//!
//! - [`CacheBackend`] is the one sync trait. A custom backend implements three methods over
//!   bytes (`get`, `set`, `delete`); everything else has a default: the `_multi` forms,
//!   the distributed lock (`get_mutex`), what the backend can do ([`Capabilities`]), its
//!   native async twin, and the entry methods a store of typed objects (the memory
//!   backend) overrides.
//! - [`AsyncCacheBackend`] (feature `tokio`) is the same shape, async.
//! - [`ProxyBackend`] wraps a backend to add behaviour; the wrapped backend keeps its
//!   capabilities and its async path
//!   ([`RegionConfig::wrap`](crate::RegionConfig::wrap)).
//! - [`register_backend`] names a backend, so that a configuration (a file) selects it.
//!
//! # How a region's async methods reach a backend
//!
//! A region configured with a sync backend serves async callers too, by the first of:
//! - the backend's [`async_twin`](CacheBackend::async_twin), a native async client (the
//!   redis backends, cluster and Sentinel included, and memcached: their own bounded async
//!   connections, on tokio's sockets);
//! - direct calls, on the task, for a backend whose calls never block
//!   ([`Capabilities::nonblocking`]: memory, null), so both paths share the one store;
//! - tokio's blocking pool (`spawn_blocking`) for every other (file, a sync-only
//!   [`CacheBackend`] of yours), so that it never blocks an executor thread: a sync-only
//!   custom backend works unchanged from async code, at the cost of a hop to the blocking
//!   pool per call.
//!
//! A proxied backend's async path is its proxy's async hooks around the backend's own
//! async path. A backend with only an async client is given to
//! [`RegionConfig::with_async_backend`](crate::RegionConfig::with_async_backend); the
//! region's sync methods then fail with an error that says to use the async ones.

pub(crate) mod arguments;
#[cfg(feature = "tokio")]
mod async_cache_backend;
#[cfg(feature = "tokio")]
mod bridge;
mod cache_backend;
mod capabilities;
mod entries;
mod proxy;
mod registry;
mod server_status;
mod subscription;

pub use crate::value::Entry;
pub use arguments::Arguments;
#[cfg(feature = "tokio")]
pub use async_cache_backend::AsyncCacheBackend;
/// The attribute that implements [`AsyncCacheBackend`] and
/// [`AsyncCacheMutex`](crate::lock::AsyncCacheMutex) (re-exported from the `async-trait`
/// crate).
#[cfg(feature = "tokio")]
pub use async_trait::async_trait;
#[cfg(feature = "tokio")]
pub(crate) use bridge::{async_path, AsyncOnly};
pub use cache_backend::{key_matches, CacheBackend};
pub use capabilities::Capabilities;
pub(crate) use proxy::wrap;
pub use proxy::ProxyBackend;
pub(crate) use registry::create_backend;
pub use registry::{register_backend, registered_backends, BackendFactory};
#[doc(hidden)]
pub use registry::{BuiltinBackend, BUILTIN_BACKENDS};
pub use server_status::ServerStatus;
pub use subscription::Subscription;
