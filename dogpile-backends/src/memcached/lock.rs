//! The distributed dogpile lock on memcached (`distributed_lock`).
//!
//! As dogpile's `MemcachedLock`, the lock is the key `_lock` + the cache key, taken with
//! memcached's atomic add (`ms <key> <len> T<ttl> ME`, which answers `NS` when the key
//! exists), with a server-side TTL of `lock_timeout` so that a holder that dies releases
//! it. Where dogpile does worse, this one differs:
//! - the value is a token unique to the acquire, and `release` removes the lock only while
//!   it still holds that token: it reads the token with its CAS id (`mg <key> v c`), then
//!   deletes with a compare-and-delete (`md <key> C<cas>`): a lock that expired and was
//!   taken by another process has another CAS id, so the old holder never removes it;
//! - a waiting caller (the region's backoff, [`dogpile_core::lock::Backoff`]) pauses at most
//!   `lock_sleep` between tries and gives up after `lock_blocking_timeout` counted from
//!   the start of its call, or sooner when its time budget runs out (the region reports
//!   [`dogpile_core::Error::LockTimeout`]). dogpile's backoff grows without bound;
//! - no lock is stranded by a caller that goes away. Each acquire's token is known before
//!   its `add` is sent, and a lock that may be held by a token nobody will release (a
//!   handle dropped without a release, an async acquire whose caller was dropped with the
//!   `add` in flight or after it, an async release dropped midway) is released by that
//!   token when the token is dropped: at once on a blocking caller's thread, or in a task
//!   spawned on the current runtime for an async one. The async `add` runs in a task of
//!   its own, so its reply is always read and a release never overtakes the acquire it
//!   undoes. Releasing by token is harmless when the `add` never took. (The tokens and
//!   the task are the `lock_task` module's, shared with redis's lock.)
//! - a creator slower than `lock_timeout` keeps its lock: while it runs, the lock is set
//!   again with its full TTL twice within what memcached's whole-second clock surely leaves
//!   of it (`lock_timeout` less a second, so `lock_timeout` 1 cannot be relied on: it may
//!   expire at once), by compare-and-swap on the CAS
//!   id read with the holder's token (`ms <key> ... C<cas>`), so a lock that expired and
//!   was taken by another holder is never touched.

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "tokio")]
use std::future::Future;
#[cfg(feature = "tokio")]
use std::pin::Pin;

use dogpile_core::lock::CacheMutex;
use dogpile_core::Result;

use crate::lock_task::{Held, Releaser, Token};

use super::command::{Delete, GetWithCas, Store};
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
    target: Arc<Target>,
    settings: LockSettings,
    /// The acquire this handle holds the lock by, if it holds it.
    held: Held<Target>,
}

/// Where a lock lives: the servers, the cache key (for logs) and the lock's key.
struct Target {
    cluster: Arc<Cluster>,
    key: String,
    lock_key: String,
}

impl Target {
    fn what(&self, op: &'static str) -> impl Fn() -> String + Sync + '_ {
        move || format!("{op} of the lock on key {}", display_key(&self.key))
    }

    /// The `add` of the lock with `token`.
    fn add<'a>(&'a self, token: &'a str, settings: &LockSettings) -> Store<'a> {
        Store {
            key: &self.lock_key,
            value: token.as_bytes(),
            ttl: exptime(settings.timeout),
            mode: Mode::Add,
        }
    }

    /// The compare-and-delete of the lock if `found` (its value and CAS id) holds `token`.
    fn delete_if_held<'a>(
        &'a self,
        token: &str,
        found: Option<(Vec<u8>, u64)>,
    ) -> Option<Delete<'a>> {
        held_cas(token, found).map(|cas| Delete {
            key: &self.lock_key,
            cas: Some(cas),
        })
    }

    /// The lock set again with its full TTL if `found` (its value and CAS id) still holds
    /// `token`: a compare-and-swap, so a lock taken by another holder is never touched.
    fn extend_if_held<'a>(
        &'a self,
        token: &'a str,
        found: Option<(Vec<u8>, u64)>,
        settings: &LockSettings,
    ) -> Option<Store<'a>> {
        held_cas(token, found).map(|cas| Store {
            key: &self.lock_key,
            value: token.as_bytes(),
            ttl: exptime(settings.timeout),
            mode: Mode::Swap(cas),
        })
    }

    /// A release that found the lock gone or another holder's: it had expired.
    fn released(&self, deleted: bool, settings: &LockSettings) {
        if !deleted {
            tracing::warn!(key = %display_key(&self.key), lock_timeout = ?settings.timeout,
                "the memcached dogpile lock expired before its holder released it (the creator \
                 outlived lock_timeout); another process may have taken it, so it was left alone");
        }
    }
}

/// The CAS id of the lock `found` (its value and CAS id), if it still holds `token`.
fn held_cas(token: &str, found: Option<(Vec<u8>, u64)>) -> Option<u64> {
    found
        .filter(|(value, _)| value == token.as_bytes())
        .map(|(_, cas)| cas)
}

impl Releaser for Target {
    fn describe(&self) -> String {
        format!("the lock on key {}", display_key(&self.key))
    }

    fn release(&self, token: &str) -> Result<bool> {
        let server = self.cluster.server(&self.lock_key);
        let what = self.what("release");
        let found = server.call(&what, &GetWithCas(&self.lock_key))?;
        match self.delete_if_held(token, found) {
            Some(delete) => server.call(&what, &delete),
            None => Ok(false),
        }
    }

    #[cfg(feature = "tokio")]
    fn release_async<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<bool>> + Send + 'a>> {
        Box::pin(async move {
            let server = self.cluster.server(&self.lock_key);
            let what = self.what("release");
            let found = server
                .call_async(&what, &GetWithCas(&self.lock_key))
                .await?;
            match self.delete_if_held(token, found) {
                Some(delete) => server.call_async(&what, &delete).await,
                None => Ok(false),
            }
        })
    }
}

impl MemcachedLock {
    pub(crate) fn new(cluster: Arc<Cluster>, key: &str, settings: LockSettings) -> Self {
        MemcachedLock {
            target: Arc::new(Target {
                cluster,
                key: key.to_owned(),
                lock_key: memcached_key(&format!("_lock{key}")).into_owned(),
            }),
            settings,
            held: Held::new(),
        }
    }

    /// A new acquire's token, armed.
    fn token(&self, on_async: bool) -> Token<Target> {
        Token::new(self.target.clone(), on_async)
    }

    /// How often a held lock is renewed: memcached counts TTLs on a clock of whole
    /// seconds, so a lock set with `lock_timeout` lives at least one second less; renewed
    /// twice within that. None for a lock that never expires (`lock_timeout` 0).
    fn keep_alive_period(&self) -> Option<Duration> {
        let timeout = self.settings.timeout;
        let surely = timeout.saturating_sub(Duration::from_secs(1));
        (!timeout.is_zero()).then(|| (surely / 2).max(Duration::from_millis(100)))
    }
}

impl CacheMutex for MemcachedLock {
    fn try_acquire(&self) -> Result<bool> {
        let server = self.target.cluster.server(&self.target.lock_key);
        self.held.acquire(
            || self.token(false),
            |token| {
                server.call(
                    &self.target.what("acquire"),
                    &self.target.add(token, &self.settings),
                )
            },
        )
    }

    fn retry_pause(&self) -> Duration {
        self.settings.sleep
    }

    fn wait_limit(&self) -> Option<Duration> {
        Some(self.settings.blocking_timeout)
    }

    fn release(&self) -> Result<()> {
        if let Some(deleted) = self.held.release()? {
            self.target.released(deleted, &self.settings);
        }
        Ok(())
    }

    fn keep_alive(&self) -> Option<Duration> {
        self.keep_alive_period()
    }

    fn extend(&self) -> Result<bool> {
        let Some(token) = self.held.value() else {
            return Ok(false);
        };
        let target = &self.target;
        let server = target.cluster.server(&target.lock_key);
        let what = target.what("extend");
        let found = server.call(&what, &GetWithCas(&target.lock_key))?;
        match target.extend_if_held(&token, found, &self.settings) {
            Some(swap) => server.call(&what, &swap),
            None => Ok(false),
        }
    }
}

/// The same lock for async callers, on the servers' async pools. A caller may be dropped
/// at any await (a request timeout): the `add` runs in a task of its own, with its token
/// known before it is sent, so that its outcome is always read; when nobody is left to
/// take the lock from it, the token's drop releases it.
#[cfg(feature = "tokio")]
#[dogpile_core::backend::async_trait]
impl dogpile_core::lock::AsyncCacheMutex for MemcachedLock {
    async fn try_acquire(&self) -> Result<bool> {
        if self.held.is_held() {
            return Ok(true);
        }
        let token = self.token(true);
        let settings = self.settings;
        let attempt = async move {
            let target = token.releaser().clone();
            let add = target.add(token.value(), &settings);
            let server = target.cluster.server(&target.lock_key);
            // An error drops the token armed: the `add` may have been applied.
            if server.call_async(&target.what("acquire"), &add).await? {
                return Ok(Some(token));
            }
            token.disarm();
            Ok(None)
        };
        let target = &self.target;
        let server = || {
            format!(
                "memcached at {}",
                target.cluster.server(&target.lock_key).name()
            )
        };
        self.held
            .acquire_in_task(attempt, server, target.what("acquire"))
            .await
    }

    /// Dropped before it is done, the token is still armed and its drop releases.
    async fn release(&self) -> Result<()> {
        if let Some(deleted) = self.held.release_async().await? {
            self.target.released(deleted, &self.settings);
        }
        Ok(())
    }

    fn retry_pause(&self) -> Duration {
        self.settings.sleep
    }

    fn wait_limit(&self) -> Option<Duration> {
        Some(self.settings.blocking_timeout)
    }

    fn keep_alive(&self) -> Option<Duration> {
        self.keep_alive_period()
    }

    async fn extend(&self) -> Result<bool> {
        let Some(token) = self.held.value() else {
            return Ok(false);
        };
        let target = &self.target;
        let server = target.cluster.server(&target.lock_key);
        let what = target.what("extend");
        let found = server
            .call_async(&what, &GetWithCas(&target.lock_key))
            .await?;
        match target.extend_if_held(&token, found, &self.settings) {
            Some(swap) => server.call_async(&what, &swap).await,
            None => Ok(false),
        }
    }
}
