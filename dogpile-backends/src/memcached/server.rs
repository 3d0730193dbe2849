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
//!
//! Blocking and async callers have a pool each (`pool_size` connections at most in each),
//! and one health record: a server marked down by either fails both fast.

use std::fmt;
use std::io;
use std::time::Duration;
#[cfg(feature = "tokio")]
use std::time::Instant;

use dogpile_core::{Error, Result};

#[cfg(feature = "tokio")]
use super::async_pool::AsyncPool;
use super::command::{Command, Failure};
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
    #[cfg(feature = "tokio")]
    async_pool: AsyncPool,
    #[cfg(feature = "tokio")]
    socket_timeout: Duration,
    health: health::Health,
}

/// What a failed command says about its server.
#[derive(Clone, Copy)]
enum Verdict {
    /// The server answered (an error, or garbage): it is up; the connection was dropped.
    Answered,
    /// No connection could be had, or the server did not answer in time.
    Unreachable,
    /// The connection broke; a fresh one may work.
    Broken,
    /// Nothing is known of the server: every pooled connection stayed busy, or an async
    /// command or connect, left with less than half of its call's deadline by the wait
    /// for a connection, timed out. Its health stays as it is.
    Inconclusive,
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
            #[cfg(feature = "tokio")]
            async_pool: AsyncPool::new(
                name.clone(),
                settings.size,
                settings.socket_timeout,
                settings.max_value_size,
            ),
            #[cfg(feature = "tokio")]
            socket_timeout: settings.socket_timeout,
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
    pub(crate) fn call<C: Command>(
        &self,
        what: &dyn Fn() -> String,
        command: &C,
    ) -> Result<C::Output> {
        let mut retried = false;
        loop {
            self.check_up(what)?;
            let (failure, verdict, generation) = match self.pool.checkout() {
                Ok(mut connection) => match connection.run(command) {
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
                Err(checkout) => self.checkout_failed(checkout, self.pool.generation()),
            };
            self.judge(what, failure, verdict, &mut retried, || {
                self.pool.flush(generation)
            })?;
        }
    }

    /// [`Server::call`] for async callers, on the async pool: one deadline,
    /// `socket_timeout` from the start of each try, covers waiting for a connection,
    /// connecting and the command (see the `async_pool` module).
    #[cfg(feature = "tokio")]
    pub(crate) async fn call_async<C: Command + Sync>(
        &self,
        what: &(dyn Fn() -> String + Sync),
        command: &C,
    ) -> Result<C::Output>
    where
        C::State: Send,
    {
        let mut retried = false;
        loop {
            self.check_up(what)?;
            let started = Instant::now();
            let deadline = started + self.socket_timeout;
            let (failure, verdict, generation) = match self.async_pool.checkout(deadline).await {
                Ok((mut connection, waited)) => {
                    let running = if waited { Instant::now() } else { started };
                    match connection.run(command, started, deadline).await {
                        Ok(value) => {
                            drop(connection);
                            self.health.mark_up();
                            return Ok(value);
                        }
                        Err(failure) => {
                            let verdict = match health_after(&failure) {
                                // Less than half of socket_timeout left for the
                                // command: its timeout is the wait's, not the server's.
                                Verdict::Unreachable
                                    if matches!(failure, Failure::Timeout { .. })
                                        && running - started > self.socket_timeout / 2 =>
                                {
                                    Verdict::Inconclusive
                                }
                                verdict => verdict,
                            };
                            (failure, verdict, connection.generation())
                        }
                    }
                }
                Err(checkout) => self.checkout_failed(checkout, self.async_pool.generation()),
            };
            self.judge(what, failure, verdict, &mut retried, || {
                self.async_pool.flush(generation)
            })?;
        }
    }

    /// The failure, verdict and pool generation of a checkout that gave no connection.
    fn checkout_failed(&self, checkout: Checkout, generation: u64) -> (Failure, Verdict, u64) {
        match checkout {
            Checkout::Connect(failure) => (failure, Verdict::Unreachable, generation),
            Checkout::Busy(waited) => (Failure::Busy { waited }, Verdict::Inconclusive, generation),
            #[cfg(feature = "tokio")]
            Checkout::Late(failure) => (failure, Verdict::Inconclusive, generation),
        }
    }

    /// After a failed command: the server's health updated, the pool flushed (`flush`)
    /// when its connections are likely dead, and `Ok` to run the command once more on a
    /// fresh connection, or the error to fail with.
    fn judge(
        &self,
        what: &dyn Fn() -> String,
        failure: Failure,
        verdict: Verdict,
        retried: &mut bool,
        flush: impl FnOnce(),
    ) -> Result<()> {
        match verdict {
            Verdict::Answered => self.health.mark_up(),
            Verdict::Broken if !*retried => {
                tracing::debug!(server = %self.name, %failure, "memcached connection broke; retrying on a fresh one");
                flush();
                *retried = true;
                return Ok(());
            }
            Verdict::Broken | Verdict::Unreachable => {
                flush();
                self.health.mark_down(&failure);
            }
            Verdict::Inconclusive => {}
        }
        Err(self.error(what, Reason::Failed(failure)))
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
        | Failure::ValueTooLarge { .. } => Verdict::Answered,
        Failure::Busy { .. } => Verdict::Inconclusive,
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
