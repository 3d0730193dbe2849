//! Connection pools for the redis backends.
//!
//! An r2d2 pool of connections that
//! - never pings the server on checkout (a hit costs one round trip, as on a bare
//!   connection);
//! - connects, reads and writes with the backend's `socket_timeout`, so a server that is down
//!   or hung gives an error, never a hang;
//! - drops a connection after an I/O error, and retries an operation that failed on a
//!   *reused* connection the server had closed (a restarted server), so the program recovers
//!   without a restart and without showing the stale connections to its callers.

use std::sync::Mutex;
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::sentinel::SentinelClient;
use redis::{ConnectionLike, RedisError, RedisResult};

use crate::health::MarkedDown;

/// Opens one connection of a kind.
pub(crate) trait Connect: Send + Sync + 'static {
    /// The connection type.
    type Conn: ConnectionLike + Send + 'static;

    /// Opens a connection, with timeouts set for connecting, reading and writing.
    fn connect(&self) -> RedisResult<Self::Conn>;
}

/// One redis server, given directly or found through Sentinel.
pub(crate) enum Server {
    /// A server at a known address.
    Direct(redis::Client),
    /// The current master of a Sentinel service.
    Sentinel(Mutex<SentinelClient>),
}

/// Connects to [`Server`]s.
pub(crate) struct ServerConnector {
    pub(crate) server: Server,
    pub(crate) timeout: Duration,
}

impl Connect for ServerConnector {
    type Conn = redis::Connection;

    fn connect(&self) -> RedisResult<redis::Connection> {
        let client = match &self.server {
            Server::Direct(client) => client.clone(),
            Server::Sentinel(sentinel) => sentinel
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get_client()?,
        };
        let conn = client.get_connection_with_timeout(self.timeout)?;
        conn.set_read_timeout(Some(self.timeout))?;
        conn.set_write_timeout(Some(self.timeout))?;
        Ok(conn)
    }
}

/// Connects to a Redis Cluster (timeouts are set on the client).
pub(crate) struct ClusterConnector(pub(crate) ClusterClient);

impl Connect for ClusterConnector {
    type Conn = ClusterConnection;

    fn connect(&self) -> RedisResult<ClusterConnection> {
        self.0.get_connection()
    }
}

/// A pooled connection and what the pool needs to know about it.
pub(crate) struct Tracked<C> {
    conn: C,
    /// An error left the connection in an unknown state: the pool drops it.
    broken: bool,
    /// It served an operation before (so the server may have closed it meanwhile).
    used: bool,
}

/// The r2d2 manager of [`Tracked`] connections.
pub(crate) struct Manager<C>(C);

impl<C: Connect> r2d2::ManageConnection for Manager<C> {
    type Connection = Tracked<C::Conn>;
    type Error = RedisError;

    fn connect(&self) -> RedisResult<Tracked<C::Conn>> {
        Ok(Tracked {
            conn: self.0.connect()?,
            broken: false,
            used: false,
        })
    }

    fn is_valid(&self, conn: &mut Tracked<C::Conn>) -> RedisResult<()> {
        // Only called if checkout tests were switched on, which they are not.
        redis::cmd("PING").query::<()>(&mut conn.conn)
    }

    fn has_broken(&self, conn: &mut Tracked<C::Conn>) -> bool {
        conn.broken || !conn.conn.is_open()
    }
}

/// Logs r2d2's connection errors through `tracing` (they also reach the caller).
#[derive(Debug)]
struct TracingErrorHandler;

impl r2d2::HandleError<RedisError> for TracingErrorHandler {
    fn handle_error(&self, error: RedisError) {
        tracing::debug!(%error, "redis connection attempt failed");
    }
}

/// Why an operation failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection within the timeout (the server is down or every connection is busy).
    Checkout(r2d2::Error),
    /// The command failed.
    Redis(RedisError),
    /// The server is marked down (`dead_retry`): not tried.
    Down(MarkedDown),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Checkout(error) => write!(f, "no connection: {error}"),
            Failure::Redis(error) => error.fmt(f),
            Failure::Down(down) => down.fmt(f),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Checkout(error) => Some(error),
            Failure::Redis(error) => Some(error),
            Failure::Down(_) => None,
        }
    }
}

/// A pool of connections made by `C`.
pub(crate) struct Pool<C: Connect> {
    pool: r2d2::Pool<Manager<C>>,
}

impl<C: Connect> Pool<C> {
    /// A pool of at most `size` connections; a checkout waits at most `timeout`. No
    /// connection is made before the first operation, so a server that is down does not
    /// stop a region from being configured.
    pub(crate) fn new(connector: C, size: u32, timeout: Duration) -> Self {
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(timeout)
            .error_handler(Box::new(TracingErrorHandler))
            .build_unchecked(Manager(connector));
        Pool { pool }
    }

    /// Runs `op` on a pooled connection.
    ///
    /// When `op` fails on a connection that served earlier operations because the server
    /// dropped it (a restart) or demoted itself (a Sentinel failover), the connection is
    /// discarded and `op` runs again on another one: at most once per pooled connection plus
    /// one, so a pool full of connections to a restarted server is flushed in one call.
    pub(crate) fn run<T>(
        &self,
        mut op: impl FnMut(&mut C::Conn) -> RedisResult<T>,
    ) -> Result<T, Failure> {
        let mut retries = self.pool.max_size();
        loop {
            let mut pooled = self.pool.get().map_err(Failure::Checkout)?;
            let reused = std::mem::replace(&mut pooled.used, true);
            match op(&mut pooled.conn) {
                Ok(value) => return Ok(value),
                Err(error) => {
                    let stale = error.is_connection_dropped() || is_read_only(&error);
                    if stale || error.is_io_error() || error.is_unrecoverable_error() {
                        pooled.broken = true;
                    }
                    drop(pooled);
                    if reused && stale && retries > 0 {
                        retries -= 1;
                        tracing::debug!(%error, "redis connection went stale; retrying on another one");
                        continue;
                    }
                    return Err(Failure::Redis(error));
                }
            }
        }
    }
}

impl<C: Connect> Pool<C> {
    /// `failure` says that the server cannot be reached (it is down or hung), rather than
    /// that it answered with an error or that every connection is busy.
    pub(crate) fn unreachable(&self, failure: &Failure) -> bool {
        match failure {
            Failure::Checkout(_) => self.pool.state().connections < self.pool.max_size(),
            Failure::Redis(error) => error.is_io_error(),
            Failure::Down(_) => false,
        }
    }
}

/// A write reached a replica: the server was demoted (failover).
fn is_read_only(error: &RedisError) -> bool {
    error.code() == Some("READONLY")
}
