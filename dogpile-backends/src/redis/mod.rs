//! The redis backends: `redis` (one server), `redis_cluster` (Redis Cluster) and
//! `redis_sentinel` (the master of a Sentinel service), with dogpile.cache's names as
//! aliases (`dogpile.cache.redis`, `dogpile.cache.redis_cluster`,
//! `dogpile.cache.redis_sentinel`).
//!
//! Values are stored as dogpile's bytes (`{"ct":..,"v":2}|<msgpack>`), one redis string per
//! key. Connections come from an r2d2 pool that does not ping the server on checkout, so a
//! hit is one round trip; `get_multi`, `set_multi` and `delete_multi` are one round trip
//! too (`MGET`, a pipeline of `SET`, `DEL` of many keys; on a cluster, a pipeline of
//! `GET`s, `SET`s or `DEL`s split by node, one round trip per node, node after node: see
//! the `cluster` module).
//!
//! ```no_run
//! use std::time::Duration;
//! use dogpile_core::{make_region, RegionConfig}; // `dogpile::` in applications
//!
//! let region = make_region();
//! region.configure(
//!     RegionConfig::new("redis")
//!         .expiration_time(Duration::from_secs(600))
//!         .argument("url", "redis://127.0.0.1:6379/0")
//!         .argument("redis_expiration_time", 3600)
//!         .argument("distributed_lock", true),
//! )?;
//! let answer: u32 = region.get_or_create("answer", || 42)?;
//! # Ok::<(), dogpile_core::Error>(())
//! ```
//!
//! # Arguments
//!
//! Every backend rejects arguments it does not know. `redis`:
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `url` | | `redis://[user][:password@]host[:port][/db]`, `rediss://...` for TLS (`rediss://...#insecure`: the certificate is not checked), or `redis+unix:///path`. Not with `host`/`port` |
//! | `host`, `port` | `localhost`, `6379` | the server, when no `url` is given |
//! | `db` | `0` (or the URL's) | the database number |
//! | `username`, `password` | (or the URL's) | credentials (ACL user, `AUTH`) |
//! | `ssl_ca_certs` | the system's CAs | with `rediss://`: a PEM file of the CA certificates that the server's certificate must chain to (a private CA, as hosted services and self-signed setups use) |
//! | `ssl_certfile`, `ssl_keyfile` | | with `rediss://`: the client certificate (PEM, with its chain) and its private key, for servers that require one (`tls-auth-clients yes`) |
//! | `ssl_cert_reqs` | `required` | with `rediss://`: `none` accepts any server certificate (encrypted, but open to a man in the middle; as `#insecure`) |
//! | `dead_retry` | `5` | seconds a server found unreachable (a failed connection, a timeout) is left alone: its commands fail at once meanwhile instead of each waiting `socket_timeout`; then one caller tries it again, and the first success marks it up. `0` tries it on every command (memcached's argument of the same name) |
//! | `near_cache` | `false` | keep values read in this process's memory and serve them from there, kept coherent by the server's client-side caching (`CLIENT TRACKING ... BCAST`): a write by any process reaches the near cache within a round trip, and the near cache is emptied and bypassed whenever its tracking connection is lost or stalls (see the `near` module for the consistency model). Needs redis 6 or later |
//! | `near_cache_max_entries` | `10000` | with `near_cache`: the most keys kept in memory (the bounded memory store's S3-FIFO eviction) |
//!
//! `redis_cluster`: `url`, the cluster's nodes as a comma-separated list of URLs or
//! `host:port` (`startup_nodes` is a synonym; `rediss://` URLs for TLS, all of them or
//! none, with the `ssl_*` arguments as `redis` has them); one reachable node is enough to
//! discover the others. `username`/`password` apply to every node, and `dead_retry` (as
//! `redis`) to each node by itself. Commands go to the master of their key's slot, from a
//! slot map fetched with `CLUSTER SLOTS` under the same limits as any reply and refreshed
//! after a `MOVED`; `MOVED` and `ASK` redirections are followed, at most 5 rounds of
//! them.
//!
//! `redis_sentinel`: `sentinels`, the Sentinel nodes (`host:port` or URLs, comma
//! separated; `rediss://` URLs for TLS, all of them or none), `service_name` (default
//! `mymaster`), `db`, `username`/`password` (for the master), `sentinel_password`,
//! `dead_retry` (as `redis`, for the master), and with TLS Sentinels the `ssl_*`
//! arguments as `redis` has them, for the Sentinels and the master alike (the master is
//! reached over TLS when the Sentinels are). Reads and writes go to the current master;
//! after a failover the connections to the old master are dropped and new ones found
//! through Sentinel. Each new connection asks the Sentinels in turn, the one that
//! answered last first, each within its share of one `socket_timeout`, so a Sentinel that
//! is down, hung or stopped costs one bounded try before the next is asked; the master
//! named is checked with `ROLE` (see the `sentinel` module).
//!
//! All of them:
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `socket_timeout` | `2` | seconds; bounds the wait for a pooled connection (connecting included, a Sentinel lookup too) and then each call as a whole, from sending the command to the last byte of its reply, whatever the server sends (trickled, truncated or endless replies), so a server that is down, hung or hostile gives `Error::Backend` within about twice this time, never a hang (`redis_cluster`: each round trip to a node within this, and a call as a whole, fetching the slot map and following redirections included, within one and a half times this) |
//! | `max_value_size` | `16777216` (16 MiB) | bytes; the largest value read or stored, and (with a little room for framing) the most one call reads, all values of a `get_multi` together. A reply announcing more is refused before it is read, so a broken or hostile server cannot make a call allocate more; a `set` of a larger value fails naming the key. Redis itself allows 512 MiB; raise this if you cache values over 16 MiB (a cluster's `CLUSTER SLOTS` reply too) |
//! | `connection_pool` (or `pool_size`, memcached's name) | `16` | the most connections kept (per region; `redis` and `redis_sentinel` keep as many again for async callers; `redis_cluster` as many idle ones per node, for each); no connection is made before the first operation, so configuring a region does not need the server up |
//! | `redis_expiration_time` | none | seconds; a server-side TTL on every value (`SET .. PX`), visible with `TTL`. Make it longer than the region's expiration time plus the creator's run time, or stale values vanish and readers block |
//! | `distributed_lock` | `false` (`true` for `redis_sentinel`, as dogpile.cache) | use a dogpile lock in redis, shared by every process, instead of only the per-process lock |
//! | `lock_timeout` | `30` | seconds; the lock key's TTL. A holder that dies loses the lock after this; a live holder's lock is extended (by its token) every third of this while its creator runs, so a creator running longer keeps it |
//! | `lock_sleep` | `0.1` | seconds; the longest sleep between two tries of a waiting acquire (it starts at 5 ms and doubles) |
//! | `lock_blocking_timeout` | `lock_timeout + 1` | seconds; a waiting acquire gives up after this, and the region returns `Error::LockTimeout` |
//! | `lock_prefix` | `_lock` | the lock key is this prefix + the cache key; 2 to 10 of letters, digits, `_ - . :` |
//! | `thread_local_lock` | | accepted for compatibility with dogpile.cache configurations, and has no effect: the lock handle here is never bound to a thread (dogpile needs `false` to release a lock from the background runner's thread; this port always can) |
//!
//! TLS (the `tls` feature, on by default) is rustls with the ring provider, on dogpile's
//! own connections (every flavour: one server, Sentinels and their master, cluster
//! nodes): it turns on no feature of the `redis` crate, so an application that depends on
//! `redis` itself (with `tokio-comp`, say) builds unchanged. The `ssl_*` names are
//! redis-py's, as dogpile.cache passes them through. (The `cluster-tls` feature is kept
//! for configurations that name it, and is the same as `tls`.)
//!
//! # The distributed lock
//!
//! - The lock on cache key `k` is the redis key `_lock` + `k` (the prefix is `lock_prefix`),
//!   taken with `SET _lockk <token> NX PX <lock_timeout>`; the token is random and new for
//!   each acquire.
//! - A waiting acquire tries again after 5 ms, then after sleeps that double (with jitter)
//!   up to `lock_sleep`, and gives up after `lock_blocking_timeout` (by default
//!   `lock_timeout` + 1 s, so that a dead holder's lock has expired by then: only a live
//!   holder that keeps winning can make a waiter give up). The region reports that as
//!   `Error::LockTimeout`.
//! - Release deletes the key only if it still holds this acquire's token (compare and delete
//!   in one Lua script), so a holder whose lock expired and was taken by another process
//!   never deletes the new holder's lock; it logs a warning instead.
//! - Within one process, threads queue on the region's own per-key lock first, so only one
//!   of them polls redis.
//!
//! # Async callers
//!
//! A `redis`, `redis_sentinel` or `redis_cluster` region serves its `*_async` methods on
//! async connections with the same settings, bounds, `dead_retry` records, slot map and
//! distributed lock as its sync methods, never on tokio's blocking pool (the
//! `async_backend` module).
//!
//! # Errors and faults
//!
//! Every error names the backend and its server(s), e.g. `redis at 127.0.0.1:7001`. A
//! connection that saw any failure (an I/O error, a timeout, a reply that is malformed,
//! too large, short or followed by extra bytes) is dropped, never used again; an operation that finds a pooled
//! connection closed by the server (a restart) is retried on a fresh one, so the same
//! region works again as soon as the server is back. A value of another type than a string
//! under a cache key (written by another program) reads as a miss, as does a string that is
//! not dogpile's format.
//!
//! A `redis` server that refuses the connection, or whose TLS certificate (or handshake)
//! is refused, fails the call at once with the reason (`Connection refused`, `invalid
//! peer certificate: UnknownIssuer`), sync and async; then `dead_retry` applies. (The
//! pool hands a failed connect to the caller waiting for a connection: see the `pool`
//! module.)

#[cfg(feature = "tokio")]
mod async_backend;
#[cfg(feature = "tokio")]
mod async_connection;
mod cluster;
mod config;
mod connection;
mod lock;
mod near;
mod pool;
mod resp;
mod sentinel;
mod subscription;
#[cfg(feature = "tls")]
mod tls;
mod turns;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dogpile_core::backend::{Arguments, CacheBackend, Capabilities};
use dogpile_core::lock::CacheMutex;
use dogpile_core::{Error, Result};
use redis::{ConnectionLike, FromRedisValue, RedisResult};

use self::cluster::Cluster;
use self::config::LockSettings;
use self::pool::{Failure, Pool, ServerConnector};
use crate::health::Health;

/// A redis, Redis Cluster or Sentinel-managed redis store: see the [module docs](self).
///
/// Regions usually build it by name (`RegionConfig::new("redis")`); build it yourself to
/// share one pool between regions (`RegionConfig::with_backend`).
#[derive(Clone)]
pub struct RedisBackend {
    shared: Arc<Shared>,
}

/// The pool(s) of a backend.
pub(crate) enum Pools {
    /// One server (direct or through Sentinel).
    Server(Pool<ServerConnector>),
    /// A cluster.
    Cluster(Box<Cluster>),
}

/// A checked-out connection (to a cluster: a handle that routes each command).
pub(crate) enum Conn<'a> {
    Server(&'a mut connection::Connection),
    Cluster(cluster::Handle<'a>),
}

impl Conn<'_> {
    pub(crate) fn as_dyn(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Conn::Server(conn) => *conn,
            Conn::Cluster(conn) => conn,
        }
    }
}

/// What the backend and its locks share.
pub(crate) struct Shared {
    /// The backend and its server(s), for error messages.
    pub(crate) describe: String,
    pub(crate) pools: Pools,
    /// Server-side TTL of every value, if any.
    pub(crate) expiration: Option<Duration>,
    /// The distributed lock, when `distributed_lock` is on.
    pub(crate) lock: Option<LockSettings>,
    /// The largest value stored or read (`max_value_size`).
    pub(crate) max_value_size: usize,
    /// Up, or down for `dead_retry` (one server; a cluster's nodes each have their own,
    /// in the `cluster` module).
    pub(crate) health: Health,
    /// The near cache (`near_cache`; see the `near` module).
    pub(crate) near: Option<near::Near>,
    /// The async connections to the one server (`redis`, `redis_sentinel`; a cluster's
    /// are its nodes', and this is `None`).
    #[cfg(feature = "tokio")]
    pub(crate) async_pool: Option<pool::AsyncPool>,
}

impl Shared {
    /// Runs `op` on a pooled connection; `what` names the command in errors.
    pub(crate) fn run<T>(
        &self,
        what: &'static str,
        mut op: impl FnMut(Conn<'_>) -> RedisResult<T>,
    ) -> Result<T> {
        let outcome = match &self.pools {
            Pools::Server(pool) => self.health.check().map_err(Failure::Down).and_then(|()| {
                let outcome = pool.run(|conn| op(Conn::Server(conn)));
                self.judge(&outcome, |failure| pool.unreachable(failure));
                outcome
            }),
            Pools::Cluster(cluster) => op(Conn::Cluster(cluster.handle())).map_err(Failure::Redis),
        };
        outcome.map_err(|failure| self.error(what, failure))
    }

    /// What an operation's outcome says of the server's health (`unreachable`: whether a
    /// failure says that the server cannot be reached).
    pub(crate) fn judge<T>(
        &self,
        outcome: &std::result::Result<T, Failure>,
        unreachable: impl FnOnce(&Failure) -> bool,
    ) {
        match outcome {
            Ok(_) => self.health.mark_up(),
            Err(failure) if unreachable(failure) => self.health.mark_down(failure),
            // The server answered (an error reply, a value of another type).
            Err(Failure::Redis(error)) if !error.is_unrecoverable_error() => self.health.mark_up(),
            // A malformed reply, or every connection busy: says nothing either way.
            Err(_) => {}
        }
    }

    /// The error of command `what` that failed.
    pub(crate) fn error(&self, what: &'static str, failure: Failure) -> Error {
        Error::backend(
            &self.describe,
            CommandError {
                command: what,
                failure,
            },
        )
    }

    /// Runs one command.
    pub(crate) fn query<T: FromRedisValue>(
        &self,
        what: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T> {
        self.run(what, |mut conn| cmd.query(conn.as_dyn()))
    }

    /// A value larger than `max_value_size` is refused: it could never be read back.
    fn check_size(&self, key: &str, value: &[u8]) -> Result<()> {
        if value.len() <= self.max_value_size {
            return Ok(());
        }
        Err(Error::backend(
            &self.describe,
            format!(
                "SET of key {key:?}: the value is {} bytes, more than max_value_size ({} bytes)",
                value.len(),
                self.max_value_size
            ),
        ))
    }

    /// `SET key value`, with the server TTL if there is one.
    fn set_cmd(&self, key: &str, value: &[u8]) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = self.expiration {
            cmd.arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        }
        cmd
    }
}

/// A failed command, for [`Error::Backend`]'s source.
#[derive(Debug)]
struct CommandError {
    command: &'static str,
    failure: Failure,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.command, self.failure)
    }
}

impl std::error::Error for CommandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.failure)
    }
}

/// A key that holds another type than a string reads as a miss (as `MGET` reports it).
fn wrong_type_is_miss(
    key: &str,
    reply: RedisResult<Option<Vec<u8>>>,
) -> RedisResult<Option<Vec<u8>>> {
    match reply {
        Err(error) if error.code() == Some("WRONGTYPE") => {
            tracing::warn!(
                key,
                "a redis key holds another type than a string; treating it as a miss"
            );
            Ok(None)
        }
        reply => reply,
    }
}

/// A pipeline of `GET`s of `keys` (a multi-key read on a cluster).
fn gets(keys: &[&str]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("GET").arg(*key);
    }
    pipe
}

/// A pipeline of `DEL`s of `keys`, replies ignored (a multi-key delete on a cluster).
fn dels(keys: &[&str]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("DEL").arg(*key).ignore();
    }
    pipe
}

/// A reply to a multi-key read must hold one value per key: any other count is a broken
/// server (or a reply out of step with its request), and the connection is dropped (a
/// parse error marks it broken).
fn reply_count(asked: usize, values: Vec<Option<Vec<u8>>>) -> RedisResult<Vec<Option<Vec<u8>>>> {
    if values.len() == asked {
        return Ok(values);
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Parse,
        "wrong number of values in the reply",
        format!("asked for {asked} keys, got {} values", values.len()),
    )))
}

impl RedisBackend {
    fn new(shared: Shared) -> Self {
        let shared = Arc::new(shared);
        near::start(&shared);
        RedisBackend { shared }
    }

    /// The `redis` backend (one server) from its arguments (see the [module docs](self)).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown or malformed argument. The server is not
    /// contacted.
    pub fn from_arguments(args: &Arguments) -> Result<Self> {
        config::standalone(args).map(Self::new)
    }

    /// The `redis_cluster` backend from its arguments (see the [module docs](self)).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown or malformed argument. No node is
    /// contacted.
    pub fn cluster_from_arguments(args: &Arguments) -> Result<Self> {
        config::cluster(args).map(Self::new)
    }

    /// The `redis_sentinel` backend from its arguments (see the [module docs](self)).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown or malformed argument. No node is
    /// contacted.
    pub fn sentinel_from_arguments(args: &Arguments) -> Result<Self> {
        config::sentinel(args).map(Self::new)
    }

    /// The backend and its server(s), as error messages name them
    /// (`redis at 127.0.0.1:6379`).
    pub fn describe(&self) -> &str {
        &self.shared.describe
    }

    /// The async twin of this backend: the same server, settings, health record
    /// (`dead_retry`) and distributed lock, on async connections (see the
    /// `async_backend` module's docs). Every redis flavour has one (`redis`,
    /// `redis_sentinel`, `redis_cluster`).
    ///
    /// A region uses it for its async methods, however it was configured (by name or with
    /// `RegionConfig::with_backend`).
    #[cfg(feature = "tokio")]
    pub fn async_backend(&self) -> Option<Arc<dyn dogpile_core::backend::AsyncCacheBackend>> {
        async_backend::AsyncRedis::for_shared(&self.shared)
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("server", &self.shared.describe)
            .field("expiration", &self.shared.expiration)
            .field("lock", &self.shared.lock)
            .finish()
    }
}

impl CacheBackend for RedisBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let ticket = match self.shared.near_lookup(key) {
            near::Lookup::Hit(value) => return Ok(Some(value)),
            near::Lookup::Miss(ticket) => ticket,
        };
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        let value: Option<Vec<u8>> = self.shared.run("GET", |mut conn| {
            wrong_type_is_miss(key, cmd.query(conn.as_dyn()))
        })?;
        self.shared.near_fill(key, ticket, value.as_deref());
        Ok(value)
    }

    fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.shared.check_size(key, &value)?;
        let cmd = self.shared.set_cmd(key, &value);
        let set = self.shared.query("SET", &cmd);
        self.shared.near_forget([key]);
        set
    }

    fn delete(&self, key: &str) -> Result<()> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        let deleted = self.shared.query("DEL", &cmd);
        self.shared.near_forget([key]);
        deleted
    }

    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let tickets = match self.shared.near_lookup_multi(keys) {
            Ok(values) => return Ok(values),
            Err(tickets) => tickets,
        };
        let values = self.shared.run("MGET", |conn| {
            let values: Vec<Option<Vec<u8>>> = match conn {
                Conn::Server(conn) => redis::cmd("MGET").arg(keys).query(conn)?,
                // MGET across slots fails: a pipeline of GETs is one round trip per node.
                Conn::Cluster(mut conn) => gets(keys).query(&mut conn)?,
            };
            reply_count(keys.len(), values)
        })?;
        self.shared.near_fill_multi(keys, &tickets, &values);
        Ok(values)
    }

    fn set_multi(&self, items: Vec<(&str, Vec<u8>)>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let shared = &self.shared;
        for (key, value) in &items {
            shared.check_size(key, value)?;
        }
        let mut pipe = redis::pipe();
        for (key, value) in &items {
            pipe.add_command(shared.set_cmd(key, value)).ignore();
        }
        let set = shared.run("SET (pipeline)", |mut conn| pipe.exec(conn.as_dyn()));
        shared.near_forget(items.iter().map(|(key, _)| *key));
        set
    }

    /// The server (`INFO server`), or each master of a cluster.
    fn servers(&self) -> Option<Vec<dogpile_core::backend::ServerStatus>> {
        use dogpile_core::backend::ServerStatus;
        let mut info = redis::cmd("INFO");
        info.arg("server");
        let version = |text: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix("redis_version:"))
                .map(|version| version.trim().to_owned())
        };
        let status =
            |address: String, tls: bool, started: Instant, reply: Result<String>| match reply {
                Ok(text) => ServerStatus::up(address, tls, started.elapsed(), version(&text)),
                Err(error) => ServerStatus::down(address, tls, error),
            };
        Some(match &self.shared.pools {
            Pools::Server(pool) => {
                let connector = pool.connector();
                let tls = connection::is_tls(&connector.tls);
                let address = connector.server.address();
                let started = Instant::now();
                let reply = self.shared.query::<String>("INFO", &info);
                vec![status(
                    address.unwrap_or_else(|| self.shared.describe.clone()),
                    tls,
                    started,
                    reply,
                )]
            }
            Pools::Cluster(cluster) => match cluster.masters() {
                Ok(masters) => masters
                    .into_iter()
                    .map(|node| {
                        let started = Instant::now();
                        let reply = info
                            .query::<String>(&mut cluster.handle_on(node.clone()))
                            .map_err(|e| self.shared.error("INFO", Failure::Redis(e)));
                        status(node, cluster.tls(), started, reply)
                    })
                    .collect(),
                Err(error) => {
                    let error = self.shared.error("CLUSTER SLOTS", Failure::Redis(error));
                    vec![ServerStatus::down(
                        self.shared.describe.clone(),
                        cluster.tls(),
                        error,
                    )]
                }
            },
        })
    }

    /// `SCAN` with `MATCH` (and `COUNT 1000`), one round trip per batch; on a cluster, on
    /// every master (from the slot map) in turn.
    fn keys(&self, pattern: &str, found: &mut dyn FnMut(String) -> bool) -> Result<()> {
        let masters: Vec<Option<String>> = match &self.shared.pools {
            Pools::Server(_) => vec![None],
            Pools::Cluster(cluster) => cluster
                .masters()
                .map_err(|error| self.shared.error("CLUSTER SLOTS", Failure::Redis(error)))?
                .into_iter()
                .map(Some)
                .collect(),
        };
        for master in masters {
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, batch): (u64, Vec<Vec<u8>>) = match (&self.shared.pools, &master) {
                    (Pools::Cluster(cluster), Some(node)) => cmd
                        .query(&mut cluster.handle_on(node.clone()))
                        .map_err(|error| self.shared.error("SCAN", Failure::Redis(error)))?,
                    _ => self.shared.query("SCAN", &cmd)?,
                };
                for key in batch {
                    // Keys this library writes are UTF-8; another writer's binary keys are
                    // shown with replacement characters.
                    if !found(String::from_utf8_lossy(&key).into_owned()) {
                        return Ok(());
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let deleted = self.shared.run("DEL", |conn| match conn {
            Conn::Server(conn) => redis::cmd("DEL").arg(keys).exec(conn),
            // DEL across slots fails: a pipeline of DELs is one round trip per node.
            Conn::Cluster(mut conn) => dels(keys).exec(&mut conn),
        });
        self.shared.near_forget(keys.iter().copied());
        deleted
    }

    #[cfg(feature = "tokio")]
    fn async_twin(&self) -> Option<Arc<dyn dogpile_core::backend::AsyncCacheBackend>> {
        RedisBackend::async_backend(self)
    }

    /// With `distributed_lock`, keys that begin with `lock_prefix` are the locks'.
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .lock_key_prefix(self.shared.lock.as_ref().map(|lock| lock.prefix.clone()))
    }

    fn publish(&self, channel: &str, message: &[u8]) -> Result<()> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(message);
        self.shared.query::<i64>("PUBLISH", &cmd).map(drop)
    }

    /// Subscribes on a connection of its own to the server; `None` for a cluster.
    fn subscribe(
        &self,
        channel: &str,
    ) -> Result<Option<Box<dyn dogpile_core::backend::Subscription>>> {
        match &self.shared.pools {
            Pools::Server(pool) => {
                let describe = &self.shared.describe;
                let subscribed =
                    subscription::RedisSubscription::open(pool.connector(), channel, describe)?;
                Ok(Some(Box::new(subscribed)))
            }
            Pools::Cluster(_) => Ok(None),
        }
    }

    fn get_mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        let settings = self.shared.lock.as_ref()?;
        Some(Box::new(lock::RedisLock::new(
            self.shared.clone(),
            &settings.prefix,
            key,
        )))
    }
}

pub(crate) fn redis(args: &Arguments) -> Result<Arc<dyn CacheBackend>> {
    Ok(Arc::new(RedisBackend::from_arguments(args)?))
}

pub(crate) fn redis_cluster(args: &Arguments) -> Result<Arc<dyn CacheBackend>> {
    Ok(Arc::new(RedisBackend::cluster_from_arguments(args)?))
}

pub(crate) fn redis_sentinel(args: &Arguments) -> Result<Arc<dyn CacheBackend>> {
    Ok(Arc::new(RedisBackend::sentinel_from_arguments(args)?))
}
