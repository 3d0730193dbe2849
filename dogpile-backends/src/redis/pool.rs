//! Connection pools for the redis backends.
//!
//! An r2d2 pool of connections that
//! - never pings the server on checkout (a hit costs one round trip, as on a bare
//!   connection);
//! - connects, and runs each call on one server, within the backend's `socket_timeout` and
//!   `max_value_size` (see the `connection` module), so a server that is down, hung or
//!   hostile gives an error, never a hang or a huge allocation;
//! - drops a connection after an I/O error, and retries an operation that failed on a
//!   connection that waited in the pool and that the server had closed (a restarted server), so the program recovers
//!   without a restart and without showing the stale connections to its callers;
//! - makes a failed connect (refused, a TLS certificate refused) the waiting caller's
//!   error within a few milliseconds, saying why. r2d2 opens connections on its own
//!   threads and retries a failed one there, while the caller waits on the pool until the
//!   checkout times out: a refused connection cost the whole `socket_timeout` and came
//!   back as "timed out waiting for connection". So the manager records each failed
//!   connect, and a caller without a connection waits on the pool in short slices, giving
//!   up with a failure recorded since it began (a connect that succeeds clears it). r2d2
//!   still opens every connection, so `connection_pool` bounds them all. (For one
//!   server, given directly or found through Sentinel, whose lookup asks every Sentinel
//!   before it fails.) A cluster's connections are the `cluster` module's, per node.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{ConnectionInfo, ConnectionLike, RedisError, RedisResult};

#[cfg(feature = "tokio")]
use super::async_connection::AsyncConnection;
use super::connection::{Connection, Limits, Tls};
use super::sentinel::Sentinels;

use crate::health::MarkedDown;

/// Opens one connection of a kind.
pub(crate) trait Connect: Send + Sync + 'static {
    /// The connection type.
    type Conn: ConnectionLike + Send + 'static;

    /// Opens a connection, with timeouts set for connecting, reading and writing.
    fn connect(&self) -> RedisResult<Self::Conn>;

    /// True when a failed connect says the server cannot be had now, so that a caller
    /// waiting for a connection gives up with its error at once (see the [module
    /// docs](self)). False (the default) where a failure may pass within the checkout
    /// timeout: callers then wait, while r2d2 tries again.
    fn fails_fast(&self) -> bool {
        false
    }
}

/// One redis server, given directly or found through Sentinel.
pub(crate) enum Server {
    /// A server at a known address.
    Direct(ConnectionInfo),
    /// The current master of a Sentinel service.
    Sentinel(Sentinels),
}

impl Server {
    /// The address of a server given directly (`host:port`); `None` for a Sentinel
    /// service, whose master changes.
    pub(crate) fn address(&self) -> Option<String> {
        match self {
            Server::Direct(info) => Some(info.addr().to_string()),
            Server::Sentinel(_) => None,
        }
    }

    /// Opens a connection bounded by `limits`, connecting (a Sentinel lookup included)
    /// within `limits.timeout`.
    fn open(&self, limits: Limits, tls: &Tls) -> RedisResult<Connection> {
        match self {
            Server::Direct(info) => Connection::open(info, limits, tls),
            Server::Sentinel(sentinels) => sentinels.open(limits, tls),
        }
    }

    /// Opens an async connection bounded by `limits`, connecting (a Sentinel lookup
    /// included) before `deadline`.
    #[cfg(feature = "tokio")]
    async fn open_async(
        &self,
        limits: Limits,
        tls: &Tls,
        deadline: Instant,
    ) -> RedisResult<AsyncConnection> {
        match self {
            Server::Direct(info) => AsyncConnection::open(info, limits, tls, deadline).await,
            Server::Sentinel(sentinels) => sentinels.open_async(limits, tls, deadline).await,
        }
    }
}

/// Connects to a [`Server`], with connections bounded by `limits`.
pub(crate) struct ServerConnector {
    pub(crate) server: Arc<Server>,
    pub(crate) limits: Limits,
    pub(crate) tls: Tls,
}

impl Connect for ServerConnector {
    type Conn = Connection;

    fn connect(&self) -> RedisResult<Connection> {
        self.server.open(self.limits, &self.tls)
    }

    /// A Sentinel lookup has asked every Sentinel by the time it fails, within the
    /// timeout: waiting longer would only repeat it.
    fn fails_fast(&self) -> bool {
        true
    }
}

/// A pooled connection and what the pool needs to know about it.
pub(crate) struct Tracked<C> {
    conn: C,
    /// An error left the connection in an unknown state: the pool drops it.
    broken: bool,
    /// When it was opened: one opened before the checkout began waited in the pool, and
    /// the server may have closed it meanwhile.
    opened: Instant,
}

impl<C> Tracked<C> {
    fn new(conn: C) -> Self {
        Tracked {
            conn,
            broken: false,
            opened: Instant::now(),
        }
    }
}

/// What a pool and its r2d2 manager share: the connector, and the last connect that
/// failed, with no success since.
struct Opener<C> {
    connector: C,
    failed: Mutex<Option<(Instant, RedisError)>>,
}

impl<C> Opener<C> {
    fn failed(&self) -> std::sync::MutexGuard<'_, Option<(Instant, RedisError)>> {
        self.failed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The r2d2 manager of [`Tracked`] connections.
pub(crate) struct Manager<C>(Arc<Opener<C>>);

impl<C: Connect> r2d2::ManageConnection for Manager<C> {
    type Connection = Tracked<C::Conn>;
    type Error = RedisError;

    fn connect(&self) -> RedisResult<Tracked<C::Conn>> {
        match self.0.connector.connect() {
            Ok(conn) => {
                *self.0.failed() = None;
                Ok(Tracked::new(conn))
            }
            Err(error) => {
                *self.0.failed() = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
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
    /// A new connection could not be opened (refused, a TLS handshake refused, ...).
    Connect(RedisError),
    /// No connection within the timeout (the server is down or every connection is busy).
    Checkout(r2d2::Error),
    /// The command failed.
    Redis(RedisError),
    /// The server is marked down (`dead_retry`): not tried.
    Down(MarkedDown),
    /// Every async connection stayed busy for `socket_timeout`.
    #[cfg(feature = "tokio")]
    Busy(Duration),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(error) => write!(f, "cannot open a connection: {error}"),
            Failure::Checkout(error) => write!(f, "no connection: {error}"),
            Failure::Redis(error) => error.fmt(f),
            Failure::Down(down) => down.fmt(f),
            #[cfg(feature = "tokio")]
            Failure::Busy(waited) => write!(
                f,
                "no connection: every one stayed busy for {waited:?} (raise connection_pool)"
            ),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Checkout(error) => Some(error),
            Failure::Connect(error) | Failure::Redis(error) => Some(error),
            Failure::Down(_) => None,
            #[cfg(feature = "tokio")]
            Failure::Busy(_) => None,
        }
    }
}

/// How long a caller without a connection waits on the pool before it looks for a
/// failed connect.
const CONNECT_POLL: Duration = Duration::from_millis(5);

/// A pool of connections made by `C`.
pub(crate) struct Pool<C: Connect> {
    pool: r2d2::Pool<Manager<C>>,
    opener: Arc<Opener<C>>,
    timeout: Duration,
}

impl<C: Connect> Pool<C> {
    /// A pool of at most `size` connections; a checkout waits at most `timeout`. No
    /// connection is made before the first operation, so a server that is down does not
    /// stop a region from being configured.
    pub(crate) fn new(connector: C, size: u32, timeout: Duration) -> Self {
        let opener = Arc::new(Opener {
            connector,
            failed: Mutex::new(None),
        });
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(timeout)
            .error_handler(Box::new(TracingErrorHandler))
            .build_unchecked(Manager(opener.clone()));
        Pool {
            pool,
            opener,
            timeout,
        }
    }

    /// The connector, to open a connection outside the pool (a subscription's).
    pub(crate) fn connector(&self) -> &C {
        &self.opener.connector
    }

    /// A pooled connection: an idle one, or the first the pool has within the timeout;
    /// for a connector that [fails fast](Connect::fails_fast), a connect that fails
    /// meanwhile ends the wait with its error (see the [module docs](self)).
    fn checkout(&self) -> Result<r2d2::PooledConnection<Manager<C>>, Failure> {
        if let Some(pooled) = self.pool.try_get() {
            return Ok(pooled);
        }
        if !self.opener.connector.fails_fast() {
            return self.pool.get().map_err(Failure::Checkout);
        }
        let started = Instant::now();
        let deadline = started + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.pool.get_timeout(left.min(CONNECT_POLL)) {
                Ok(pooled) => return Ok(pooled),
                Err(error) => {
                    if let Some((at, failure)) = &*self.opener.failed() {
                        if *at >= started {
                            return Err(Failure::Connect(failure.clone()));
                        }
                    }
                    if Instant::now() >= deadline {
                        return Err(Failure::Checkout(error));
                    }
                }
            }
        }
    }

    /// Runs `op` on a pooled connection.
    ///
    /// When `op` fails on a connection that waited in the pool because the server
    /// dropped it (a restart) or demoted itself (a Sentinel failover), the connection is
    /// discarded and `op` runs again on another one: at most once per pooled connection plus
    /// one, so a pool full of connections to a restarted server is flushed in one call.
    pub(crate) fn run<T>(
        &self,
        mut op: impl FnMut(&mut C::Conn) -> RedisResult<T>,
    ) -> Result<T, Failure> {
        let mut retries = self.pool.max_size();
        loop {
            let checkout = Instant::now();
            let mut pooled = self.checkout()?;
            let reused = pooled.opened < checkout;
            match op(&mut pooled.conn) {
                Ok(value) => return Ok(value),
                Err(error) => {
                    let stale = stale(&error);
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
            Failure::Connect(error) | Failure::Redis(error) => error.is_io_error(),
            Failure::Down(_) => false,
            #[cfg(feature = "tokio")]
            Failure::Busy(_) => false,
        }
    }
}

/// The error of a connection that waited in a pool and went stale meanwhile: the server
/// dropped it (a restart), or a write reached a replica (the server was demoted in a
/// failover). The operation is worth trying again on a fresh connection.
fn stale(error: &RedisError) -> bool {
    error.is_connection_dropped() || error.code() == Some("READONLY")
}

/// A pool of async connections to one server (given directly or found through
/// Sentinel): at most `connection_pool` at once (a
/// semaphore), idle ones kept for the next call, none made before the first call (so a
/// region is configured without a runtime or a server).
///
/// A call takes an idle connection or opens one; it gives it back only when the call
/// succeeded, so a connection that failed, or whose call was cancelled (its future
/// dropped), is never used again. The wait for a free connection and the connecting
/// share one `socket_timeout`, the call has its own (as on the blocking side).
#[cfg(feature = "tokio")]
pub(crate) struct AsyncPool {
    server: Arc<Server>,
    limits: Limits,
    tls: Tls,
    size: usize,
    idle: Mutex<Vec<AsyncConnection>>,
    permits: tokio::sync::Semaphore,
}

#[cfg(feature = "tokio")]
impl AsyncPool {
    /// A pool of at most `size` connections to `server`.
    pub(crate) fn new(server: Arc<Server>, limits: Limits, tls: Tls, size: u32) -> Self {
        let size = usize::try_from(size).unwrap_or(usize::MAX).max(1);
        AsyncPool {
            server,
            limits,
            tls,
            size,
            idle: Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(size),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<AsyncConnection>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends `packed` on a pooled connection and reads `skip + count` replies (see
    /// [`AsyncConnection::call`]). A pooled connection that went stale is dropped and the
    /// call made again on another one, as [`Pool::run`] does.
    pub(crate) async fn request(
        &self,
        packed: &[u8],
        skip: usize,
        count: usize,
    ) -> Result<Vec<redis::Value>, Failure> {
        let deadline = Instant::now() + self.limits.timeout;
        let _permit = match tokio::time::timeout_at(deadline.into(), self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(Failure::Busy(self.limits.timeout)),
        };
        let mut retries = self.size;
        loop {
            let pooled = self.idle().pop();
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => self
                    .server
                    .open_async(self.limits, &self.tls, deadline)
                    .await
                    .map_err(Failure::Redis)?,
            };
            match conn.call(packed, skip, count).await {
                Ok(values) => {
                    self.idle().push(conn);
                    return Ok(values);
                }
                Err(error) if reused && stale(&error) && retries > 0 => {
                    retries -= 1;
                    tracing::debug!(%error, "redis connection went stale; retrying on another one");
                }
                Err(error) => return Err(Failure::Redis(error)),
            }
        }
    }
}
