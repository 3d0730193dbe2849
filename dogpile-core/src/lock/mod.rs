//! The dogpile lock: this process's lock per key (`local.rs`), the lock a backend may share
//! with other processes (`distributed.rs`: [`CacheMutex`] and its async twin), and a held
//! lock of both (`handle.rs`), and the keeper that extends a held distributed lock while
//! its creator runs (`keeper.rs`).
//!
//! Lock authors implement [`CacheMutex`] (or its async twin) for their backend; the region
//! does the waiting, within each call's time budget.

pub(crate) mod distributed;
pub(crate) mod handle;
pub(crate) mod keeper;
pub(crate) mod local;

pub use distributed::{acquire_until, lock_token, Backoff, CacheMutex, DEFAULT_RETRY_PAUSE};
#[cfg(feature = "tokio")]
pub use distributed::{acquire_until_async, AsyncCacheMutex};
