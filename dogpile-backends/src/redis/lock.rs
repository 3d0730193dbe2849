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
//! the acquire it undoes (the `lock_task` module, shared with memcached's lock). While
//! held, the lock is extended by its token every third of `lock_timeout` (`PEXPIRE` if the
//! value is still the token), so a creator slower than `lock_timeout` keeps it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[cfg(feature = "tokio")]
use std::future::Future;
#[cfg(feature = "tokio")]
use std::pin::Pin;

use dogpile_core::lock::{CacheMutex, DEFAULT_RETRY_PAUSE};
use dogpile_core::Result;

use crate::lock_task::{Held, Releaser, Token};

use super::Shared;

/// Deletes `KEYS[1]` if its value is `ARGV[1]`; returns the number of keys deleted.
const RELEASE_SCRIPT: &str = r#"
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
else
    return 0
end
"#;

/// Sets `KEYS[1]`'s expiry to `ARGV[2]` milliseconds if its value is `ARGV[1]`; returns 1
/// when it did.
const EXTEND_SCRIPT: &str = r#"
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("PEXPIRE", KEYS[1], ARGV[2])
else
    return 0
end
"#;

fn release_script() -> &'static redis::Script {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(RELEASE_SCRIPT))
}

fn extend_script() -> &'static redis::Script {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(EXTEND_SCRIPT))
}

/// A distributed lock on one cache key (see the [module docs](self)).
pub(crate) struct RedisLock {
    target: Arc<Target>,
    /// The acquire this handle holds the lock by, if it holds it.
    held: Held<Target>,
}

/// Where a lock lives: the backend and the lock's key.
pub(crate) struct Target {
    shared: Arc<Shared>,
    lock_key: String,
}

/// Releases by token with the release script ([`release_sync`], [`release_async`]).
impl Releaser for Target {
    fn describe(&self) -> String {
        format!("{} on {}", self.lock_key, self.shared.describe)
    }

    fn release(&self, token: &str) -> Result<bool> {
        release_sync(&self.shared, &self.lock_key, token).map(|deleted| deleted > 0)
    }

    #[cfg(feature = "tokio")]
    fn release_async<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<bool>> + Send + 'a>> {
        Box::pin(async move {
            let deleted = release_async(&self.shared, &self.lock_key, token).await?;
            Ok(deleted > 0)
        })
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

/// The release script by `token` on an async connection.
#[cfg(feature = "tokio")]
async fn release_async(shared: &Shared, lock_key: &str, token: &str) -> Result<i64> {
    let release = LockScript {
        source: RELEASE_SCRIPT,
        script: release_script(),
        names: ("EVALSHA (lock release)", "EVAL (lock release)"),
    };
    script_async(shared, release, lock_key, &[token]).await
}

/// A script of the lock, for the async path.
#[cfg(feature = "tokio")]
struct LockScript {
    source: &'static str,
    script: &'static redis::Script,
    /// What its EVALSHA and its EVAL are called in errors.
    names: (&'static str, &'static str),
}

/// A lock script on `lock_key` with `args`, on an async connection: EVALSHA, and EVAL once
/// if the server does not know the script yet.
#[cfg(feature = "tokio")]
async fn script_async(
    shared: &Shared,
    LockScript {
        source,
        script,
        names,
    }: LockScript,
    lock_key: &str,
    args: &[&str],
) -> Result<i64> {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(1).arg(lock_key).arg(args);
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
        .request_async(names.0, &packed, (0, 1), known)
        .await?
    {
        Some(answer) => Ok(answer),
        None => {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(source).arg(1).arg(lock_key).arg(args);
            shared.query_async(names.1, &cmd).await
        }
    }
}

impl RedisLock {
    pub(crate) fn new(shared: Arc<Shared>, prefix: &str, key: &str) -> Self {
        RedisLock {
            target: Arc::new(Target {
                shared,
                lock_key: format!("{prefix}{key}"),
            }),
            held: Held::new(),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.target.shared
    }

    /// A new acquire's token, armed.
    fn token(&self, on_async: bool) -> Token<Target> {
        Token::new(self.target.clone(), on_async)
    }

    /// One `SET NX PX` attempt's command.
    fn take_cmd(&self, token: &str, ttl: Duration) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(&self.target.lock_key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        cmd
    }

    /// A third of `lock_timeout`: how often a held lock is extended.
    fn keep_alive_period(&self) -> Option<Duration> {
        self.shared()
            .lock
            .as_ref()
            .map(|settings| settings.timeout / 3)
    }

    /// The extend script's arguments for `token`: the token and `lock_timeout` in ms.
    fn extend_args(&self, token: &str) -> [String; 2] {
        let timeout = self.shared().lock.as_ref().map_or(1, |s| millis(s.timeout));
        [token.to_owned(), timeout.to_string()]
    }

    /// The release script deleted the lock, or found it gone: it had expired.
    fn released(&self, deleted: bool) {
        if !deleted {
            tracing::warn!(
                lock = %self.target.lock_key,
                backend = %self.shared().describe,
                "the distributed dogpile lock expired before its holder released it \
                 (lock_timeout is shorter than the creator took); another caller may have \
                 regenerated the value meanwhile"
            );
        }
    }
}

impl CacheMutex for RedisLock {
    fn try_acquire(&self) -> Result<bool> {
        let Some(settings) = self.shared().lock.as_ref() else {
            return Ok(true);
        };
        self.held.acquire(
            || self.token(false),
            |token| {
                let cmd = self.take_cmd(token, settings.timeout);
                let reply: Option<String> = self.shared().query("SET NX (lock)", &cmd)?;
                Ok(reply.is_some())
            },
        )
    }

    fn retry_pause(&self) -> Duration {
        self.shared()
            .lock
            .as_ref()
            .map_or(DEFAULT_RETRY_PAUSE, |settings| settings.sleep)
    }

    fn wait_limit(&self) -> Option<Duration> {
        self.shared()
            .lock
            .as_ref()
            .map(|settings| settings.blocking_timeout)
    }

    fn release(&self) -> Result<()> {
        if let Some(deleted) = self.held.release()? {
            self.released(deleted);
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
        let mut invocation = extend_script().key(&self.target.lock_key);
        invocation.arg(&self.extend_args(&token));
        let extended: i64 = self.shared().run("EVALSHA (lock extend)", |mut conn| {
            invocation.invoke(conn.as_dyn())
        })?;
        Ok(extended == 1)
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
        let Some(settings) = self.shared().lock.as_ref() else {
            return Ok(true);
        };
        if self.held.is_held() {
            return Ok(true);
        }
        let token = self.token(true);
        let cmd = self.take_cmd(token.value(), settings.timeout);
        let shared = self.shared().clone();
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
        self.held
            .acquire_in_task(
                attempt,
                || self.shared().describe.clone(),
                || format!("SET NX (lock) of {}", self.target.lock_key),
            )
            .await
    }

    async fn release(&self) -> Result<()> {
        if let Some(deleted) = self.held.release_async().await? {
            self.released(deleted);
        }
        Ok(())
    }

    fn retry_pause(&self) -> Duration {
        CacheMutex::retry_pause(self)
    }

    fn wait_limit(&self) -> Option<Duration> {
        CacheMutex::wait_limit(self)
    }

    fn keep_alive(&self) -> Option<Duration> {
        self.keep_alive_period()
    }

    async fn extend(&self) -> Result<bool> {
        let Some(token) = self.held.value() else {
            return Ok(false);
        };
        let [token, timeout] = self.extend_args(&token);
        let extend = LockScript {
            source: EXTEND_SCRIPT,
            script: extend_script(),
            names: ("EVALSHA (lock extend)", "EVAL (lock extend)"),
        };
        let args = [token.as_str(), timeout.as_str()];
        let extended = script_async(self.shared(), extend, &self.target.lock_key, &args).await?;
        Ok(extended == 1)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
