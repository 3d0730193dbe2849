//! One memcached server: its connection pool, and what happens when it fails.
//!
//! Connections come from an r2d2 pool of the `memcache` crate's connections, built without
//! a ping on checkout (that would double the round trips). The `memcache` connection
//! manager never reports a connection as broken, and a connection whose command failed
//! half way (timeout, reset, garbage) could hand a later command the previous command's
//! answer. So any failure that can leave a connection out of step replaces the server's
//! whole pool: no connection that saw such a failure is used again.
//!
//! A server that cannot be reached is marked down for `dead_retry`: commands for it fail
//! at once instead of each waiting `socket_timeout`. After that, one caller tries it
//! again while the others keep failing fast; the first success marks it up.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use dogpile_core::{Error, Result};
use memcache::{Client, CommandError, ConnectionManager, MemcacheError, Url};

/// How connections to a server are made and pooled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    /// Connections per server, at most.
    pub(crate) size: u32,
    /// Read and write timeout of a connection, and the longest wait for a connection.
    pub(crate) socket_timeout: Duration,
    /// How long a server that could not be reached is left alone.
    pub(crate) dead_retry: Duration,
}

/// A memcached server (`host:port`) with its pool.
pub(crate) struct Server {
    name: String,
    description: String,
    url: Url,
    settings: PoolSettings,
    pool: RwLock<Arc<Pool>>,
    down: AtomicBool,
    health: Mutex<Option<Down>>,
}

struct Pool {
    pool: r2d2::Pool<ConnectionManager>,
    client: Client,
}

struct Down {
    since: Instant,
    retry_at: Instant,
    error: String,
}

/// What a failed command did to its connection.
enum Failure {
    /// The server answered (an error status): the connection is fine.
    Answered,
    /// No connection could be had, or the server did not answer in time.
    Unreachable,
    /// The connection broke or went out of step; a fresh one may work.
    Broken,
}

impl Server {
    /// A server at `name` (`host:port`); no connection is made until the first command.
    pub(crate) fn new(name: String, settings: PoolSettings) -> std::result::Result<Self, String> {
        let url = Url::parse(&format!(
            "memcache://{name}?timeout={}&tcp_nodelay=true",
            settings.socket_timeout.as_secs_f64()
        ))
        .map_err(|e| e.to_string())?;
        let pool = Pool::new(&url, settings).map_err(|e| e.to_string())?;
        Ok(Server {
            description: format!("memcached at {name}"),
            name,
            url,
            settings,
            pool: RwLock::new(Arc::new(pool)),
            down: AtomicBool::new(false),
            health: Mutex::new(None),
        })
    }

    /// `host:port`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Runs `command` on a pooled connection. `what` describes the command for errors
    /// (`get of key "k"`); it is only called on failure.
    ///
    /// A command whose connection broke (reset, end of stream, out of step) is run once
    /// more on a fresh connection: that is what a server restart looks like to a pooled
    /// connection. Commands are idempotent or, for the lock's `add`, cannot have reached a
    /// server that closed the connection without answering.
    pub(crate) fn call<T>(
        &self,
        what: &dyn Fn() -> String,
        command: &dyn Fn(&Client) -> std::result::Result<T, MemcacheError>,
    ) -> Result<T> {
        let mut retried = false;
        loop {
            self.check_up(what)?;
            let pool = self.current_pool();
            let error = match command(&pool.client) {
                Ok(value) => {
                    self.mark_up();
                    return Ok(value);
                }
                Err(error) => error,
            };
            match classify(&error, &pool.pool, self.settings.size) {
                Failure::Answered => {
                    self.mark_up();
                    return Err(self.error(what, Reason::Memcache(error)));
                }
                Failure::Broken if !retried => {
                    tracing::debug!(server = %self.name, %error, "memcached connection broke; retrying on a fresh one");
                    self.replace_pool(&pool);
                    retried = true;
                }
                Failure::Broken | Failure::Unreachable => {
                    self.replace_pool(&pool);
                    self.mark_down(&error);
                    return Err(self.error(what, Reason::Memcache(error)));
                }
            }
        }
    }

    fn error(&self, what: &dyn Fn() -> String, reason: Reason) -> Error {
        Error::backend(
            self.description.clone(),
            CommandFailed {
                what: what(),
                reason,
            },
        )
    }

    fn current_pool(&self) -> Arc<Pool> {
        self.pool
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces `failed` with a new pool, unless another caller already did.
    fn replace_pool(&self, failed: &Arc<Pool>) {
        let mut current = self
            .pool
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if Arc::ptr_eq(&current, failed) {
            match Pool::new(&self.url, self.settings) {
                Ok(pool) => *current = Arc::new(pool),
                // `memcache` cannot fail here today (it only wraps the pool).
                Err(error) => {
                    tracing::error!(server = %self.name, %error, "cannot replace the memcached connection pool")
                }
            }
        }
    }

    fn health(&self) -> MutexGuard<'_, Option<Down>> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fails fast while the server is marked down; lets one caller through to try again
    /// once `dead_retry` has passed.
    fn check_up(&self, what: &dyn Fn() -> String) -> Result<()> {
        if !self.down.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut health = self.health();
        let Some(down) = health.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        if now >= down.retry_at {
            // This caller probes the server; the others keep failing fast meanwhile (for
            // at most the time the probe can take).
            down.retry_at = now + self.settings.socket_timeout * 2;
            return Ok(());
        }
        let reason = Reason::Down {
            ago: now.duration_since(down.since),
            retry_in: down.retry_at.duration_since(now),
            error: down.error.clone(),
        };
        drop(health);
        Err(self.error(what, reason))
    }

    fn mark_up(&self) {
        if self.down.load(Ordering::Acquire) {
            *self.health() = None;
            self.down.store(false, Ordering::Release);
            tracing::info!(server = %self.name, "memcached server is reachable again");
        }
    }

    fn mark_down(&self, error: &MemcacheError) {
        if self.settings.dead_retry.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut health = self.health();
        let since = health.as_ref().map_or(now, |down| down.since);
        *health = Some(Down {
            since,
            retry_at: now + self.settings.dead_retry,
            error: error.to_string(),
        });
        self.down.store(true, Ordering::Release);
        tracing::warn!(server = %self.name, %error, dead_retry = ?self.settings.dead_retry,
            "memcached server unreachable; failing its commands fast until dead_retry passes");
    }
}

impl Pool {
    fn new(url: &Url, settings: PoolSettings) -> std::result::Result<Self, MemcacheError> {
        let pool = r2d2::Pool::builder()
            .max_size(settings.size)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(settings.socket_timeout)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(ConnectionManager::new(url.clone()));
        let client = Client::with_pools(vec![pool.clone()])?;
        Ok(Pool { pool, client })
    }
}

fn classify(error: &MemcacheError, pool: &r2d2::Pool<ConnectionManager>, size: u32) -> Failure {
    match error {
        MemcacheError::CommandError(_) => Failure::Answered,
        MemcacheError::ClientError(memcache::ClientError::KeyTooLong) => Failure::Answered,
        MemcacheError::BadURL(_) => Failure::Answered,
        // Every connection is busy: the server is slow or the pool small, not down.
        MemcacheError::PoolError(_) if pool.state().connections >= size => Failure::Answered,
        MemcacheError::PoolError(_) => Failure::Unreachable,
        MemcacheError::IOError(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Failure::Unreachable
        }
        _ => Failure::Broken,
    }
}

/// The source of a memcached backend error: which command failed and why.
#[derive(Debug)]
struct CommandFailed {
    what: String,
    reason: Reason,
}

#[derive(Debug)]
enum Reason {
    Memcache(MemcacheError),
    Down {
        ago: Duration,
        retry_in: Duration,
        error: String,
    },
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Reason::Memcache(MemcacheError::CommandError(CommandError::ValueTooLarge)) => write!(
                f,
                "{}: the value is larger than the server's item size limit \
                 (1 MiB unless memcached was started with a larger -I, e.g. -I 8m)",
                self.what
            ),
            Reason::Memcache(MemcacheError::PoolError(error)) => {
                write!(f, "{}: no connection to the server: {error}", self.what)
            }
            Reason::Memcache(error) => write!(f, "{}: {error}", self.what),
            Reason::Down {
                ago,
                retry_in,
                error,
            } => write!(
                f,
                "{}: server marked down {:.1}s ago after: {error}; it is tried again in {:.1}s \
                 (dead_retry)",
                self.what,
                ago.as_secs_f64(),
                retry_in.as_secs_f64()
            ),
        }
    }
}

impl std::error::Error for CommandFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.reason {
            Reason::Memcache(error) => Some(error),
            Reason::Down { .. } => None,
        }
    }
}
