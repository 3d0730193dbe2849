//! The distributed dogpile lock of the redis backends: `SET NX PX` with a random token and
//! a compare-and-delete release (see the parent module's docs, "The distributed lock").
//! Waiting (a bounded, jittered backoff up to `lock_sleep`, within the caller's time budget
//! and `lock_blocking_timeout`) is the region's.
//!
//! No lock is stranded by a caller that goes away: each acquire's token is known before
//! its `SET NX` is sent, and a lock that may be held by a token nobody will release (a
//! handle dropped without a release, an async acquire whose caller was dropped with the
//! command in flight) is released by that token when it is dropped. The async `SET NX`
//! runs in a task of its own, so its reply is always read, and a release never overtakes
//! the acquire it undoes.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dogpile_core::lock::{lock_token, CacheMutex, DEFAULT_RETRY_PAUSE};
use dogpile_core::Result;

use super::Shared;

/// Deletes `KEYS[1]` if its value is `ARGV[1]`; returns the number of keys deleted.
const RELEASE_SCRIPT: &str = r#"
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
else
    return 0
end
"#;

fn release_script() -> &'static redis::Script {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(RELEASE_SCRIPT))
}

/// A distributed lock on one cache key (see the [module docs](self)).
pub(crate) struct RedisLock {
    shared: Arc<Shared>,
    lock_key: String,
    /// The acquire this handle holds the lock by, if it holds it.
    held: Mutex<Option<Token>>,
}

/// One acquire's token, known before its `SET NX` is sent, and the lock it may hold.
///
/// Dropped while armed (a handle dropped without a release, an async acquire whose caller
/// was dropped, an async acquire that failed with the command possibly applied), it
/// releases the lock by its token: at once on a blocking thread, or in a task spawned on
/// the current runtime. Releasing by token is harmless when the `SET` never took.
struct Token {
    shared: Arc<Shared>,
    lock_key: String,
    token: String,
    /// Taken on the async path: released by a spawned task when dropped on a runtime.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    on_async: bool,
    armed: bool,
}

impl Token {
    /// Nothing to release: the `SET NX` was answered and did not take the lock.
    fn disarm(mut self) {
        self.armed = false;
    }

    /// Releases the lock by this token, blocking; the number of keys deleted.
    fn release(mut self) -> Result<i64> {
        self.armed = false;
        release_sync(&self.shared, &self.lock_key, &self.token)
    }

    /// Releases the lock by this token on the async path. Dropped before it is done, the
    /// token is still armed and its drop releases.
    #[cfg(feature = "tokio")]
    async fn release_async(mut self) -> Result<i64> {
        let deleted = release_async(&self.shared, &self.lock_key, &self.token).await;
        self.armed = false;
        deleted
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (shared, lock_key, token) = (
            self.shared.clone(),
            std::mem::take(&mut self.lock_key),
            std::mem::take(&mut self.token),
        );
        #[cfg(feature = "tokio")]
        if self.on_async {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let deleted = release_async(&shared, &lock_key, &token).await;
                    abandoned_released(&shared, &lock_key, deleted);
                });
                return;
            }
        }
        let deleted = release_sync(&shared, &lock_key, &token);
        abandoned_released(&shared, &lock_key, deleted);
    }
}

/// The release of a lock whose holder let go of it without releasing it: only failures
/// are worth a word (the lock then expires after `lock_timeout`), and a quiet one, since
/// they come with a server that is down, which the calls report themselves.
fn abandoned_released(shared: &Shared, lock_key: &str, deleted: Result<i64>) {
    if let Err(error) = deleted {
        tracing::debug!(lock = %lock_key, backend = %shared.describe, %error,
            "failed to release the distributed dogpile lock of a dropped call; it expires \
             after lock_timeout");
    }
}

/// The release script by `token`, blocking: the number of keys deleted.
fn release_sync(shared: &Shared, lock_key: &str, token: &str) -> Result<i64> {
    let mut invocation = release_script().key(lock_key);
    invocation.arg(token);
    shared.run("EVALSHA (lock release)", |mut conn| {
        invocation.invoke(conn.as_dyn())
    })
}

/// The release script by `token` on an async connection: EVALSHA, and EVAL once if the
/// server does not know the script yet.
#[cfg(feature = "tokio")]
async fn release_async(shared: &Shared, lock_key: &str, token: &str) -> Result<i64> {
    let script = release_script();
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(1).arg(lock_key).arg(token);
    let packed = cmd.get_packed_command();
    let known = |values: Vec<redis::Value>| match values
        .into_iter()
        .next()
        .unwrap_or(redis::Value::Nil)
        .extract_error()
    {
        Err(error) if error.code() == Some("NOSCRIPT") => Ok(None),
        other => Ok(Some(redis::from_redis_value::<i64>(other?)?)),
    };
    match shared
        .request_async("EVALSHA (lock release)", &packed, (0, 1), known)
        .await?
    {
        Some(deleted) => Ok(deleted),
        None => {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(RELEASE_SCRIPT).arg(1).arg(lock_key).arg(token);
            shared.query_async("EVAL (lock release)", &cmd).await
        }
    }
}

impl RedisLock {
    pub(crate) fn new(shared: Arc<Shared>, prefix: &str, key: &str) -> Self {
        RedisLock {
            shared,
            lock_key: format!("{prefix}{key}"),
            held: Mutex::new(None),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Token>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new acquire's token, armed.
    fn token(&self, on_async: bool) -> Token {
        Token {
            shared: self.shared.clone(),
            lock_key: self.lock_key.clone(),
            token: lock_token(),
            on_async,
            armed: true,
        }
    }

    /// One `SET NX PX` attempt's command.
    fn take_cmd(&self, token: &str, ttl: Duration) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(&self.lock_key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        cmd
    }

    /// The release script deleted `deleted` keys: none means the lock had expired.
    fn released(&self, deleted: i64) {
        if deleted == 0 {
            tracing::warn!(
                lock = %self.lock_key,
                backend = %self.shared.describe,
                "the distributed dogpile lock expired before its holder released it \
                 (lock_timeout is shorter than the creator took); another caller may have \
                 regenerated the value meanwhile"
            );
        }
    }
}

impl CacheMutex for RedisLock {
    fn try_acquire(&self) -> Result<bool> {
        let Some(settings) = self.shared.lock.as_ref() else {
            return Ok(true);
        };
        let mut held = self.held();
        if held.is_some() {
            return Ok(true);
        }
        let token = self.token(false);
        let cmd = self.take_cmd(&token.token, settings.timeout);
        // A failed attempt on the blocking path is not released: the caller is waiting,
        // and the server is likely down (its health record makes later calls fail fast).
        let reply: Option<String> = match self.shared.query("SET NX (lock)", &cmd) {
            Ok(reply) => reply,
            Err(error) => {
                token.disarm();
                return Err(error);
            }
        };
        if reply.is_none() {
            token.disarm();
            return Ok(false);
        }
        *held = Some(token);
        Ok(true)
    }

    fn retry_pause(&self) -> Duration {
        self.shared
            .lock
            .as_ref()
            .map_or(DEFAULT_RETRY_PAUSE, |settings| settings.sleep)
    }

    fn wait_limit(&self) -> Option<Duration> {
        self.shared
            .lock
            .as_ref()
            .map(|settings| settings.blocking_timeout)
    }

    fn release(&self) -> Result<()> {
        let Some(token) = self.held().take() else {
            return Ok(());
        };
        self.released(token.release()?);
        Ok(())
    }
}

/// The same lock for async callers: the same commands on the backend's async
/// connections (see the `async_backend` module).
///
/// A caller may be dropped at any await (a request timeout): the `SET NX` runs in a task
/// of its own, with its token known before it is sent, so that its outcome is always
/// read; when nobody is left to take the lock from it, the token's drop releases it.
#[cfg(feature = "tokio")]
#[dogpile_core::backend::async_trait]
impl dogpile_core::lock::AsyncCacheMutex for RedisLock {
    async fn try_acquire(&self) -> Result<bool> {
        let Some(settings) = self.shared.lock.as_ref() else {
            return Ok(true);
        };
        if self.held().is_some() {
            return Ok(true);
        }
        let token = self.token(true);
        let cmd = self.take_cmd(&token.token, settings.timeout);
        let shared = self.shared.clone();
        let attempt = async move {
            let reply: Option<String> = shared.query_async("SET NX (lock)", &cmd).await?;
            match reply {
                Some(_) => Ok(Some(token)),
                None => {
                    token.disarm();
                    Ok(None)
                }
            }
            // An error drops the token armed: the `SET` may have been applied.
        };
        let taken = crate::lock_task::acquire_in_task(
            attempt,
            || self.shared.describe.clone(),
            || format!("SET NX (lock) of {}", self.lock_key),
        )
        .await?;
        let won = taken.is_some();
        *self.held() = taken;
        Ok(won)
    }

    async fn release(&self) -> Result<()> {
        let Some(token) = self.held().take() else {
            return Ok(());
        };
        self.released(token.release_async().await?);
        Ok(())
    }

    fn retry_pause(&self) -> Duration {
        CacheMutex::retry_pause(self)
    }

    fn wait_limit(&self) -> Option<Duration> {
        CacheMutex::wait_limit(self)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
