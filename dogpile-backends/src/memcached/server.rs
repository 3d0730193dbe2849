//! One memcached server: its connection pool, and what happens when it fails.
//!
//! Connections come from an r2d2 pool of [`Connection`]s, built without a ping on
//! checkout (that would double the round trips). A connection on which anything failed
//! is marked broken and the pool drops it; and a connection that broke (reset, closed)
//! replaces the server's whole pool, because the other idle connections of a restarted
//! server are dead too.
//!
//! A server that cannot be reached is marked down for `dead_retry`: commands for it fail
//! at once instead of each waiting `socket_timeout`. After that, one caller tries it
//! again while the others keep failing fast; the first success marks it up.

use std::fmt;
use std::io;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dogpile_core::{Error, Result};

use super::connection::{Connection, Failure, Outcome};
use crate::health::{self, MarkedDown};

/// How connections to a server are made and pooled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    /// Connections per server, at most.
    pub(crate) size: u32,
    /// The deadline of a command, and the longest wait for a connection.
    pub(crate) socket_timeout: Duration,
    /// How long a server that could not be reached is left alone.
    pub(crate) dead_retry: Duration,
    /// The largest value read or written.
    pub(crate) max_value_size: usize,
}

/// A memcached server (`host:port`) with its pool.
pub(crate) struct Server {
    name: String,
    description: String,
    settings: PoolSettings,
    pool: RwLock<Pool>,
    health: health::Health,
}

type Pool = Arc<r2d2::Pool<Manager>>;

/// Opens connections to one server for r2d2, and tells it which ones broke.
struct Manager {
    address: String,
    settings: PoolSettings,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = Failure;

    fn connect(&self) -> Outcome<Connection> {
        Connection::open(
            &self.address,
            self.settings.socket_timeout,
            self.settings.max_value_size,
        )
    }

    fn is_valid(&self, _: &mut Connection) -> Outcome<()> {
        Ok(())
    }

    fn has_broken(&self, connection: &mut Connection) -> bool {
        connection.is_broken()
    }
}

/// What a failed command says about its server.
enum Verdict {
    /// The server answered (an error, or garbage): it is up; the connection was dropped.
    Answered,
    /// No connection could be had, or the server did not answer in time.
    Unreachable,
    /// The connection broke; a fresh one may work.
    Broken,
}

impl Server {
    /// A server at `name` (`host:port`); no connection is made until the first command.
    pub(crate) fn new(name: String, settings: PoolSettings) -> Self {
        let description = format!("memcached at {name}");
        Server {
            // The caller that tries a server again may take a command's deadline and a
            // connection's (others fail fast meanwhile).
            health: health::Health::new(
                description.clone(),
                settings.dead_retry,
                settings.socket_timeout * 2,
            ),
            description,
            pool: RwLock::new(new_pool(&name, settings)),
            name,
            settings,
        }
    }

    /// `host:port`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Runs `command` on a pooled connection. `what` describes the command for errors
    /// (`get of key "k"`); it is only called on failure.
    ///
    /// A command whose connection broke (reset, closed) is run once more on a fresh
    /// connection: that is what a server restart looks like to a pooled connection.
    /// Commands are idempotent or, for the lock's `add`, cannot have reached a server
    /// that closed the connection without answering.
    pub(crate) fn call<T>(
        &self,
        what: &dyn Fn() -> String,
        command: &dyn Fn(&mut Connection) -> Outcome<T>,
    ) -> Result<T> {
        let mut retried = false;
        loop {
            self.check_up(what)?;
            let pool = self.current_pool();
            let outcome = match pool.get() {
                Ok(mut connection) => command(&mut connection).map_err(|failure| {
                    let health = health_after(&failure);
                    (failure, health)
                }),
                Err(error) => {
                    let busy = pool.state().connections >= self.settings.size;
                    Err((
                        Failure::Pool(error.to_string()),
                        if busy {
                            Verdict::Answered
                        } else {
                            Verdict::Unreachable
                        },
                    ))
                }
            };
            let (failure, health) = match outcome {
                Ok(value) => {
                    self.health.mark_up();
                    return Ok(value);
                }
                Err(failed) => failed,
            };
            match health {
                Verdict::Answered => {
                    self.health.mark_up();
                    return Err(self.error(what, Reason::Failed(failure)));
                }
                Verdict::Broken if !retried => {
                    tracing::debug!(server = %self.name, %failure, "memcached connection broke; retrying on a fresh one");
                    self.replace_pool(&pool);
                    retried = true;
                }
                Verdict::Broken | Verdict::Unreachable => {
                    self.replace_pool(&pool);
                    self.health.mark_down(&failure);
                    return Err(self.error(what, Reason::Failed(failure)));
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

    fn current_pool(&self) -> Pool {
        self.pool
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces `failed` with a new pool, unless another caller already did: its idle
    /// connections go with it.
    fn replace_pool(&self, failed: &Pool) {
        let mut current = self
            .pool
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if Arc::ptr_eq(&current, failed) {
            *current = new_pool(&self.name, self.settings);
        }
    }

    /// Fails fast while the server is marked down; lets one caller through to try again
    /// once `dead_retry` has passed.
    fn check_up(&self, what: &dyn Fn() -> String) -> Result<()> {
        self.health
            .check()
            .map_err(|down| self.error(what, Reason::Down(down)))
    }
}

fn new_pool(name: &str, settings: PoolSettings) -> Pool {
    Arc::new(
        r2d2::Pool::builder()
            .max_size(settings.size)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(settings.socket_timeout)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(Manager {
                address: name.to_owned(),
                settings,
            }),
    )
}

/// What a failure says about the server.
fn health_after(failure: &Failure) -> Verdict {
    match failure {
        Failure::Timeout { .. } | Failure::Connect(_) | Failure::Pool(_) => Verdict::Unreachable,
        Failure::Closed => Verdict::Broken,
        Failure::Io(error) if error.kind() == io::ErrorKind::TimedOut => Verdict::Unreachable,
        Failure::Io(_) => Verdict::Broken,
        Failure::Protocol(_)
        | Failure::Unexpected { .. }
        | Failure::Server(_)
        | Failure::ValueTooLarge { .. } => Verdict::Answered,
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
    Failed(Failure),
    Down(MarkedDown),
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Reason::Failed(Failure::Pool(error)) => {
                write!(f, "{}: no connection to the server: {error}", self.what)
            }
            Reason::Failed(failure) => write!(f, "{}: {failure}", self.what),
            Reason::Down(down) => write!(f, "{}: {down}", self.what),
        }
    }
}

impl std::error::Error for CommandFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.reason {
            Reason::Failed(failure) => Some(failure),
            Reason::Down(_) => None,
        }
    }
}
