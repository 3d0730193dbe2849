//! One memcached server: its connection pool (the `pool` module), and what happens when
//! it fails.
//!
//! A connection on which anything failed is dropped; and a connection that broke (reset,
//! closed) flushes the server's whole pool, because the other idle connections of a
//! restarted server are dead too.
//!
//! A server that cannot be reached is marked down for `dead_retry`: commands for it fail
//! at once instead of each waiting `socket_timeout`. After that, one caller tries it
//! again while the others keep failing fast; the first success marks it up.

use std::fmt;
use std::io;
use std::time::Duration;

use dogpile_core::{Error, Result};

use super::connection::{Connection, Failure, Outcome};
use super::pool::{Checkout, Pool};
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
    pool: Pool,
    health: health::Health,
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
            pool: Pool::new(
                name.clone(),
                settings.size,
                settings.socket_timeout,
                settings.max_value_size,
            ),
            name,
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
            let (failure, verdict, generation) = match self.pool.checkout() {
                Ok(mut connection) => match command(&mut connection) {
                    Ok(value) => {
                        drop(connection);
                        self.health.mark_up();
                        return Ok(value);
                    }
                    Err(failure) => {
                        let verdict = health_after(&failure);
                        (failure, verdict, connection.generation())
                    }
                },
                Err(Checkout::Connect(failure)) => {
                    (failure, Verdict::Unreachable, self.pool.generation())
                }
                Err(Checkout::Busy(waited)) => (Failure::Busy { waited }, Verdict::Answered, 0),
            };
            match verdict {
                Verdict::Answered => {
                    self.health.mark_up();
                    return Err(self.error(what, Reason::Failed(failure)));
                }
                Verdict::Broken if !retried => {
                    tracing::debug!(server = %self.name, %failure, "memcached connection broke; retrying on a fresh one");
                    self.pool.flush(generation);
                    retried = true;
                }
                Verdict::Broken | Verdict::Unreachable => {
                    self.pool.flush(generation);
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

    /// Fails fast while the server is marked down; lets one caller through to try again
    /// once `dead_retry` has passed.
    fn check_up(&self, what: &dyn Fn() -> String) -> Result<()> {
        self.health
            .check()
            .map_err(|down| self.error(what, Reason::Down(down)))
    }
}

/// What a failure says about the server.
fn health_after(failure: &Failure) -> Verdict {
    match failure {
        Failure::Timeout { .. } | Failure::Connect(_) => Verdict::Unreachable,
        Failure::Closed => Verdict::Broken,
        Failure::Io(error) if error.kind() == io::ErrorKind::TimedOut => Verdict::Unreachable,
        Failure::Io(_) => Verdict::Broken,
        Failure::Protocol(_)
        | Failure::Unexpected { .. }
        | Failure::Server(_)
        | Failure::ValueTooLarge { .. }
        | Failure::Busy { .. } => Verdict::Answered,
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
