//! Whether a server of a network backend is worth trying: one found unreachable (a failed
//! connection, a timeout) is marked down for `dead_retry`, and commands for it fail at
//! once meanwhile instead of each waiting `socket_timeout`. After that, one caller tries
//! it again while the others keep failing fast; the first success marks it up, so a
//! server that comes back is used again without a restart of the program.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The default `dead_retry`.
pub(crate) const DEFAULT_DEAD_RETRY: Duration = Duration::from_secs(5);

/// Up or down, for one server.
pub(crate) struct Health {
    /// The server, for logs (`redis at 127.0.0.1:6379`).
    server: String,
    dead_retry: Duration,
    /// How long the caller that tries a server again may take (others fail fast
    /// meanwhile).
    probe: Duration,
    /// Set while `down` holds a record: the common case (up) takes no lock.
    marked: AtomicBool,
    down: Mutex<Option<Down>>,
}

struct Down {
    since: Instant,
    retry_at: Instant,
    error: String,
}

/// A command refused because its server is marked down.
#[derive(Debug)]
pub(crate) struct MarkedDown {
    ago: Duration,
    retry_in: Duration,
    error: String,
}

impl fmt::Display for MarkedDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server marked down {:.1}s ago after: {}; it is tried again in {:.1}s (dead_retry)",
            self.ago.as_secs_f64(),
            self.error,
            self.retry_in.as_secs_f64()
        )
    }
}

impl std::error::Error for MarkedDown {}

impl Health {
    /// A server that is up; once down, it is left alone for `dead_retry` (zero: never
    /// marked down), then tried by one caller that may take up to `probe`.
    pub(crate) fn new(server: String, dead_retry: Duration, probe: Duration) -> Self {
        Health {
            server,
            dead_retry,
            probe,
            marked: AtomicBool::new(false),
            down: Mutex::new(None),
        }
    }

    fn down(&self) -> MutexGuard<'_, Option<Down>> {
        self.down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `Ok` if a command may try the server now.
    pub(crate) fn check(&self) -> Result<(), MarkedDown> {
        if !self.marked.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut down = self.down();
        let Some(record) = down.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        if now >= record.retry_at {
            // This caller tries the server; the others keep failing fast meanwhile.
            record.retry_at = now + self.probe;
            return Ok(());
        }
        Err(MarkedDown {
            ago: now.duration_since(record.since),
            retry_in: record.retry_at.duration_since(now),
            error: record.error.clone(),
        })
    }

    /// A command reached the server.
    pub(crate) fn mark_up(&self) {
        if self.marked.load(Ordering::Acquire) {
            *self.down() = None;
            self.marked.store(false, Ordering::Release);
            tracing::info!(server = %self.server, "server is reachable again");
        }
    }

    /// A command could not reach the server: `error` says why.
    pub(crate) fn mark_down(&self, error: &dyn fmt::Display) {
        if self.dead_retry.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut down = self.down();
        let since = down.as_ref().map_or(now, |record| record.since);
        *down = Some(Down {
            since,
            retry_at: now + self.dead_retry,
            error: error.to_string(),
        });
        self.marked.store(true, Ordering::Release);
        tracing::warn!(server = %self.server, %error, dead_retry = ?self.dead_retry,
            "server unreachable; failing its commands fast until dead_retry passes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_fails_fast_until_dead_retry_then_lets_one_caller_probe() {
        let health = Health::new(
            "test".into(),
            Duration::from_millis(50),
            Duration::from_secs(60),
        );
        assert!(health.check().is_ok());
        health.mark_down(&"refused");
        let refused = health.check().unwrap_err().to_string();
        assert!(
            refused.contains("refused") && refused.contains("dead_retry"),
            "{refused}"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(health.check().is_ok(), "dead_retry passed: one probe");
        assert!(health.check().is_err(), "the others wait for the probe");
        health.mark_up();
        assert!(health.check().is_ok());

        let never = Health::new("test".into(), Duration::ZERO, Duration::from_secs(1));
        never.mark_down(&"refused");
        assert!(never.check().is_ok(), "dead_retry 0: never marked down");
    }
}
