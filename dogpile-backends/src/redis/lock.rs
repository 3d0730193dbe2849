//! The distributed dogpile lock of the redis backends: `SET NX PX` with a random token,
//! a bounded, jittered back-off while waiting, and a compare-and-delete release (see the
//! parent module's docs, "The distributed lock").

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dogpile_core::{CacheMutex, Result};

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

/// The first sleep of a blocking acquire (then doubled up to `lock_sleep`).
const FIRST_SLEEP: Duration = Duration::from_millis(5);

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

    /// One `SET NX PX` attempt.
    fn try_take(&self, token: &str, ttl: Duration) -> Result<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(&self.lock_key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        let reply: Option<String> = self.shared.query("SET NX (lock)", &cmd)?;
        Ok(reply.is_some())
    }
}

impl CacheMutex for RedisLock {
    fn acquire(&self, wait: bool) -> Result<bool> {
        let Some(settings) = self.shared.lock.as_ref() else {
            return Ok(true);
        };
        let token = random_token();
        let started = Instant::now();
        let mut sleep = FIRST_SLEEP.min(settings.sleep);
        loop {
            if self.try_take(&token, settings.timeout)? {
                *self.held() = Some(token);
                return Ok(true);
            }
            if !wait {
                return Ok(false);
            }
            let waited = started.elapsed();
            let Some(left) = settings.blocking_timeout.checked_sub(waited) else {
                tracing::warn!(
                    lock = %self.lock_key,
                    backend = %self.shared.describe,
                    ?waited,
                    "gave up waiting for the distributed dogpile lock"
                );
                return Ok(false);
            };
            std::thread::sleep(jitter(sleep).min(left));
            sleep = (sleep * 2).min(settings.sleep);
        }
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
        if deleted == 0 {
            tracing::warn!(
                lock = %self.lock_key,
                backend = %self.shared.describe,
                "the distributed dogpile lock expired before its holder released it \
                 (lock_timeout is shorter than the creator took); another caller may have \
                 regenerated the value meanwhile"
            );
        }
        Ok(())
    }

    fn locked(&self) -> Result<bool> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(&self.lock_key);
        self.shared.query("EXISTS (lock)", &cmd)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A random 64-bit number (std's per-process random hash keys, mixed with a counter and
/// the time); enough for tokens and jitter, not for secrets.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish()
}

/// A token that no other acquire, in this process or another, uses.
pub(crate) fn random_token() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

/// `sleep` scaled by a random factor in [0.5, 1), so that waiters do not poll in step.
fn jitter(sleep: Duration) -> Duration {
    let unit = (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
    sleep.mul_f64(0.5 + unit / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_and_jitter_stays_in_range() {
        let tokens: std::collections::HashSet<_> = (0..1000).map(|_| random_token()).collect();
        assert_eq!(tokens.len(), 1000);
        assert!(tokens.iter().all(|t| t.len() == 32));
        for _ in 0..1000 {
            let j = jitter(Duration::from_millis(100));
            assert!(
                j >= Duration::from_millis(50) && j < Duration::from_millis(100),
                "{j:?}"
            );
        }
    }
}
