//! The distributed dogpile lock on memcached (`distributed_lock`).
//!
//! As dogpile's `MemcachedLock`, the lock is the key `_lock` + the cache key, taken with
//! memcached's atomic add (`ms <key> <len> T<ttl> ME`, which answers `NS` when the key
//! exists), with a server-side TTL of `lock_timeout` so that a holder that dies releases
//! it. Where dogpile does worse, this one differs:
//! - the value is a token unique to the holder, and `release` removes the lock only while
//!   it still holds that token: it reads the token with its CAS id (`mg <key> v c`), then
//!   deletes with a compare-and-delete (`md <key> C<cas>`): a lock that expired and was
//!   taken by another process has another CAS id, so the old holder never removes it;
//! - a waiting caller (the region's backoff, [`dogpile_core::lock::Backoff`]) pauses at most
//!   `lock_sleep` between tries and gives up after `lock_blocking_timeout` counted from
//!   the start of its call, or sooner when its time budget runs out (the region reports
//!   [`dogpile_core::Error::LockTimeout`]). dogpile's backoff grows without bound;
//! - a lock is released when its handle is dropped without a release, and async callers,
//!   which reach this lock on tokio's blocking pool, never strand one: a lock taken there
//!   after the caller was dropped (a request timeout) is released by the pool's task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dogpile_core::lock::{lock_token, CacheMutex};
use dogpile_core::Result;

use super::keys::{display_key, memcached_key};
use super::protocol::Mode;
use super::{exptime, Cluster};

/// How the distributed lock behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockSettings {
    /// Server-side TTL of the lock; zero means it never expires (dogpile's default).
    pub(crate) timeout: Duration,
    /// The longest pause between two tries of a waiting `acquire`.
    pub(crate) sleep: Duration,
    /// How long a waiting `acquire` tries before it gives up.
    pub(crate) blocking_timeout: Duration,
}

/// The lock on one cache key, for one holder.
pub(crate) struct MemcachedLock {
    cluster: Arc<Cluster>,
    key: String,
    lock_key: String,
    token: String,
    settings: LockSettings,
    held: AtomicBool,
}

impl MemcachedLock {
    pub(crate) fn new(cluster: Arc<Cluster>, key: &str, settings: LockSettings) -> Self {
        MemcachedLock {
            cluster,
            key: key.to_owned(),
            lock_key: memcached_key(&format!("_lock{key}")).into_owned(),
            token: lock_token(),
            settings,
            held: AtomicBool::new(false),
        }
    }

    fn what(&self, op: &'static str) -> impl Fn() -> String + '_ {
        move || format!("{op} of the lock on key {}", display_key(&self.key))
    }

    /// One `add`: true when this holder now has the lock.
    fn try_add(&self) -> Result<bool> {
        let ttl = exptime(self.settings.timeout);
        self.cluster
            .server(&self.lock_key)
            .call(&self.what("acquire"), &|connection| {
                connection.store(&self.lock_key, self.token.as_bytes(), ttl, Mode::Add)
            })
    }
}

impl CacheMutex for MemcachedLock {
    fn try_acquire(&self) -> Result<bool> {
        if self.held.load(Ordering::Acquire) {
            return Ok(true);
        }
        let won = self.try_add()?;
        self.held.store(won, Ordering::Release);
        Ok(won)
    }

    fn retry_pause(&self) -> Duration {
        self.settings.sleep
    }

    fn wait_limit(&self) -> Option<Duration> {
        Some(self.settings.blocking_timeout)
    }

    fn release(&self) -> Result<()> {
        if !self.held.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let released =
            self.cluster
                .server(&self.lock_key)
                .call(&self.what("release"), &|connection| match connection
                    .get_with_cas(&self.lock_key)?
                {
                    Some((token, cas)) if token == self.token.as_bytes() => {
                        connection.delete(&self.lock_key, Some(cas))
                    }
                    _ => Ok(false),
                })?;
        if !released {
            tracing::warn!(key = %display_key(&self.key), lock_timeout = ?self.settings.timeout,
                "the memcached dogpile lock expired before its holder released it (the creator \
                 outlived lock_timeout); another process may have taken it, so it was left alone");
        }
        Ok(())
    }
}

/// A holder dropped without releasing (a caller that panicked, a handle let go of)
/// releases here; on a blocking thread, as every call of this backend (async callers reach
/// it through tokio's blocking pool, which releases a lock its caller left behind there).
impl Drop for MemcachedLock {
    fn drop(&mut self) {
        if let Err(error) = self.release() {
            tracing::warn!(key = %display_key(&self.key), %error,
                "failed to release a dropped memcached dogpile lock; it expires after lock_timeout");
        }
    }
}
