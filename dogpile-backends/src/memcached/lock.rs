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
//! - a waiting `acquire` backs off with a bounded, jittered sleep (at most `lock_sleep`)
//!   and gives up after `lock_blocking_timeout`, returning `Ok(false)` (the region
//!   reports [`dogpile_core::Error::LockTimeout`]). dogpile's backoff grows without bound.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dogpile_core::{CacheMutex, Result};

use super::keys::{display_key, memcached_key};
use super::protocol::Mode;
use super::{exptime, Cluster};

/// The first pause between two tries of a waiting `acquire`; it doubles up to `lock_sleep`.
const FIRST_SLEEP: Duration = Duration::from_millis(5);

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
            token: new_token(),
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
    fn acquire(&self, wait: bool) -> Result<bool> {
        let deadline = Instant::now() + self.settings.blocking_timeout;
        let mut pause = FIRST_SLEEP.min(self.settings.sleep);
        loop {
            if self.try_add()? {
                self.held.store(true, Ordering::Release);
                return Ok(true);
            }
            if !wait {
                return Ok(false);
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(key = %display_key(&self.key), waited = ?self.settings.blocking_timeout,
                    "gave up waiting for the memcached dogpile lock (lock_blocking_timeout)");
                return Ok(false);
            }
            std::thread::sleep(jitter(pause).min(deadline - now));
            pause = (pause * 2).min(self.settings.sleep);
        }
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

    fn locked(&self) -> Result<bool> {
        self.cluster
            .server(&self.lock_key)
            .call(&self.what("check"), &|connection| {
                connection.exists(&self.lock_key)
            })
    }
}

/// A token no other holder, in this process or another, has.
fn new_token() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:x}.{sequence:x}.{:016x}",
        std::process::id(),
        random_u64()
    )
}

/// A random number from the standard library's randomly keyed hasher.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// `pause` scaled by a random factor in [0.5, 1), so waiting processes spread out.
fn jitter(pause: Duration) -> Duration {
    pause.mul_f64(0.5 + (random_u64() >> 11) as f64 / (1u64 << 54) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique() {
        let tokens: std::collections::HashSet<_> = (0..10_000).map(|_| new_token()).collect();
        assert_eq!(tokens.len(), 10_000);
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_pause() {
        let pause = Duration::from_millis(100);
        for _ in 0..1000 {
            let slept = jitter(pause);
            assert!(slept >= pause / 2 && slept < pause, "{slept:?}");
        }
    }
}
