//! The distributed dogpile lock of the redis backends: `SET NX PX` with a random token and
//! a compare-and-delete release (see the parent module's docs, "The distributed lock").
//! Waiting (a bounded, jittered backoff up to `lock_sleep`, within the caller's time budget
//! and `lock_blocking_timeout`) is the region's.

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
    /// The token of the acquire this handle holds, if it holds the lock.
    token: Mutex<Option<String>>,
}

impl RedisLock {
    pub(crate) fn new(shared: Arc<Shared>, prefix: &str, key: &str) -> Self {
        RedisLock {
            shared,
            lock_key: format!("{prefix}{key}"),
            token: Mutex::new(None),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

    /// One `SET NX PX` attempt.
    fn try_take(&self, token: &str, ttl: Duration) -> Result<bool> {
        let reply: Option<String> = self
            .shared
            .query("SET NX (lock)", &self.take_cmd(token, ttl))?;
        Ok(reply.is_some())
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
        if self.held().is_some() {
            return Ok(true);
        }
        let token = lock_token();
        if self.try_take(&token, settings.timeout)? {
            *self.held() = Some(token);
            return Ok(true);
        }
        Ok(false)
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
        let mut invocation = release_script().key(&self.lock_key);
        invocation.arg(&token);
        let deleted: i64 = self.shared.run("EVALSHA (lock release)", |mut conn| {
            invocation.invoke(conn.as_dyn())
        })?;
        self.released(deleted);
        Ok(())
    }
}

/// The same lock for async callers: the same commands on the backend's async
/// connections (see the `async_backend` module).
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
        let token = lock_token();
        let cmd = self.take_cmd(&token, settings.timeout);
        let reply: Option<String> = self.shared.query_async("SET NX (lock)", &cmd).await?;
        if reply.is_some() {
            *self.held() = Some(token);
        }
        Ok(reply.is_some())
    }

    async fn release(&self) -> Result<()> {
        let Some(token) = self.held().take() else {
            return Ok(());
        };
        // EVALSHA, and EVAL once if the server does not know the script yet.
        let script = release_script();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash())
            .arg(1)
            .arg(&self.lock_key)
            .arg(&token);
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
        let deleted = match self
            .shared
            .request_async("EVALSHA (lock release)", &packed, (0, 1), known)
            .await?
        {
            Some(deleted) => deleted,
            None => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(RELEASE_SCRIPT)
                    .arg(1)
                    .arg(&self.lock_key)
                    .arg(&token);
                self.shared.query_async("EVAL (lock release)", &cmd).await?
            }
        };
        self.released(deleted);
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
