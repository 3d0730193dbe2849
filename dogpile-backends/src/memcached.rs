//! The `memcached` backend (aliases `dogpile.cache.memcached`, `dogpile.cache.pylibmc`,
//! `dogpile.cache.bmemcached`, `dogpile.cache.pymemcache`), on a small client of
//! memcached's meta text protocol written here.
//!
//! # Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `url` | required | one server or several, comma separated: `"127.0.0.1:11211, 10.0.0.2:11211"`, each `host[:port]` with or without `memcache://`; the port defaults to 11211 |
//! | `memcached_expire_time` | none | server-side TTL of every value, in seconds (rounded up to whole seconds); make it longer than the region's expiration time, which the region checks itself |
//! | `distributed_lock` | `false` | use a lock on the memcached servers as the dogpile lock, shared by every process (see below) |
//! | `lock_timeout` | `30` | seconds after which memcached drops a lock whose holder never released it (a holder that died); `0` means never, as in dogpile |
//! | `lock_sleep` | `0.1` | the longest pause, in seconds, between two tries of a waiting lock |
//! | `lock_blocking_timeout` | `lock_timeout` + 2, or 30 when `lock_timeout` is 0 | how long, in seconds, a caller waits for the lock before the region gives up with `Error::LockTimeout` |
//! | `pool_size` (alias `connection_pool`, redis's name) | `10` | connections per server, at most (opened as needed), for sync callers and as many for async ones |
//! | `socket_timeout` | `3` | seconds a connection may take to connect, and a command to send its request and read its whole reply |
//! | `dead_retry` | `5` | seconds a server that could not be reached is left alone: its commands fail at once meanwhile; `0` tries it on every command |
//! | `max_value_size` | `1114112` (1 MiB + 64 KiB) | the largest value, in bytes, stored or read: memcached's default item size limit is 1 MiB; raise both together (`memcached -I 8m`, `max_value_size` 8388608) |
//!
//! Unknown arguments are rejected, and so are dogpile's client-specific ones (`binary`,
//! `behaviors`, `min_compress_len`, `username`, ...), which have no meaning here.
//!
//! ```no_run
//! use std::time::Duration;
//! use dogpile_core::{CacheRegion, RegionConfig};
//!
//! let region = CacheRegion::new();
//! region.configure(
//!     RegionConfig::new("memcached")
//!         .expiration_time(Duration::from_secs(600))
//!         .argument("url", "10.0.0.1:11211, 10.0.0.2:11211")
//!         .argument("memcached_expire_time", 3600)
//!         .argument("distributed_lock", true),
//! )?;
//! # Ok::<(), dogpile_core::Error>(())
//! ```
//!
//! # Servers and keys
//!
//! Keys are spread over the servers by consistent hashing (a ketama ring, as libketama
//! builds it): adding or removing one of `n` servers moves about `1/n` of the keys. A
//! server that is down is not skipped: its keys fail (or, failing open, are computed
//! uncached) rather than moving to another server and back.
//!
//! Keys that memcached cannot take (empty, over 250 bytes, with whitespace, control or
//! non-ASCII characters) are stored under `~sha1~` + their SHA-1 ([`memcached_key`]), so
//! any key works and none can inject a protocol command; other keys are stored as they
//! are. Values are the region's bytes, unchanged, with client flags 0: what pymemcache
//! and pylibmc store for bytes, so Python and Rust processes share one cache.
//!
//! memcached refuses values larger than its item size limit, 1 MiB by default, and this
//! backend refuses values larger than `max_value_size`: to cache larger values, raise
//! both. The error for a value too large names the key and the server.
//!
//! # The client
//!
//! The client speaks memcached's meta text protocol (`mg`, `ms`, `md`; memcached 1.6 and
//! later), and the classic `get` of many keys for `get_multi` (see `protocol.rs` for
//! why). Requests, the parser and each command's reply handling are written once,
//! without I/O (`protocol.rs`, `command.rs`), and driven by blocking sockets for sync
//! callers (`connection.rs`) and by tokio's sockets for async ones (`async_pool.rs`). It is
//! written here because no crate met this backend's bounds (checked 2026-12): the
//! `memcache` crate (0.21, binary protocol) writes each request in several unbuffered
//! writes and reads in small reads (a hit cost 2.7x a bare `get`, and a 100-key
//! `get_multi` 201 packets), panics on a reply whose body is shorter than its extras (a
//! length underflow; in release builds a 4 GiB allocation), and has per-read timeouts
//! only; `memcache-async` allocates whatever length a reply announces and is async only;
//! `async-memcached` is tokio only, grows its buffer without bound on an endless line,
//! has no deadlines, and pulls in a fault-injection proxy crate as a normal dependency.
//!
//! From async code (a region's `_async` methods) the backend is its native async twin
//! ([`CacheBackend::async_twin`]): the same servers, ring, commands and limits on
//! tokio's `TcpStream`s, with a pool of its own per server (`pool_size` connections at
//! most, as the blocking one). Nothing runs on tokio's blocking pool and no thread is
//! taken per call (a server given by host name is resolved by tokio on its blocking pool,
//! once per new connection). The servers' health is one record for both paths, so a
//! server that sync callers found down (`dead_retry`) fails async calls fast too, and
//! the other way. An async call has one deadline: `socket_timeout` from its start covers
//! waiting for a pooled connection, connecting, sending and reading the whole reply, so
//! a stalled server holds no task longer, however many wait for its connections.
//!
//! What the client guarantees, whatever a server sends:
//! - one deadline per command: `socket_timeout` covers sending the request and reading
//!   the whole reply, however slowly it trickles in;
//! - memory: a status line is at most 2 KiB and a value at most `max_value_size`; a reply
//!   announcing more is an error before anything is allocated for it;
//! - no panic on any byte sequence; every length is checked before it is used;
//! - every meta request carries an opaque (`O<n>`) that its reply must echo, and a
//!   multi-key `get` is preceded by one such request: a reply meant for another request
//!   (stale, or sent twice) is an error, never taken for this one's answer;
//! - a connection on which anything failed (I/O error, timeout, garbage, a value too
//!   large, an error reply, bytes beyond the expected replies) is dropped, never used
//!   again, so no command can read another command's reply.
//!
//! # The distributed lock
//!
//! With `distributed_lock`, the dogpile lock on a key is the memcached key `_lock` + the
//! key, taken with `ms ... ME` (memcached's `add`), holding a token of its holder and
//! dropped by memcached after `lock_timeout`. Release deletes it only while it still
//! holds the holder's token: it reads the token with its CAS id, and deletes with
//! `md ... C<cas>`, so a lock that expired and was taken by another process is never
//! removed by the old holder.
//!
//! No lock is stranded by a caller that goes away: each acquire's token is known before
//! its `add` is sent, an async `add` runs in a task of its own (so its reply is always
//! read), and a lock that a dropped handle or a cancelled async call may hold is released
//! by its token when that token is dropped (by a task spawned on the runtime, for async
//! callers).
//!
//! # Failures
//!
//! Every error is an [`Error::Backend`](dogpile_core::Error::Backend) that names the
//! server (`memcached at 10.0.0.1:11211`) and the command and key. A command never waits
//! longer than about `socket_timeout` (twice, when a pooled connection turns out to be
//! dead and a fresh one is tried). A refused connection is an error at once, naming the
//! refusal (then `dead_retry` applies): connections are opened on the caller's thread,
//! by a pool that starts no thread of its own (`pool.rs`), so a server that keeps
//! failing costs no thread either. Connections are re-established when the server comes
//! back, without restarting the program. `get_multi` sends one request per server (per
//! 100 keys), answered in one round trip; `set_multi` and `delete_multi` send one
//! pipeline of `ms` or `md` per server (per 100 keys, and per 1 MiB of values), whose
//! replies come in order, each with its request's opaque.

#[cfg(feature = "tokio")]
mod async_backend;
#[cfg(feature = "tokio")]
mod async_pool;
mod command;
mod connection;
mod dump;
mod keys;
mod lock;
mod pool;
mod protocol;
mod ring;
mod server;

use std::borrow::Cow;
use std::fmt;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dogpile_core::backend::{key_matches, Arguments, CacheBackend, Capabilities, ServerStatus};
use dogpile_core::lock::CacheMutex;
use dogpile_core::Result;

pub use keys::{memcached_key, MANGLED_PREFIX, MAX_KEY_LEN};

use command::{Delete, DeleteMany, Get, GetMany, Store, StoreMany, Version};
use keys::display_key;
use lock::{LockSettings, MemcachedLock};
use protocol::Mode;
use ring::Ring;
use server::{PoolSettings, Server};

/// The arguments this backend accepts.
const ARGUMENTS: &[&str] = &[
    "url",
    "memcached_expire_time",
    "distributed_lock",
    "lock_timeout",
    "lock_sleep",
    "lock_blocking_timeout",
    "pool_size",
    "connection_pool",
    "socket_timeout",
    "dead_retry",
    "max_value_size",
];

const DEFAULT_PORT: u16 = 11211;
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_LOCK_SLEEP: Duration = Duration::from_millis(100);
const DEFAULT_POOL_SIZE: u32 = 10;
const DEFAULT_SOCKET_TIMEOUT: Duration = Duration::from_secs(3);
/// memcached's default item size limit (1 MiB), plus headroom.
pub const DEFAULT_MAX_VALUE_SIZE: usize = (1 << 20) + (64 << 10);

/// Keys per multi-key request to one server: bounded so that a huge request can never
/// fill both directions of the socket at once, and one deadline covers a batch.
const MULTI_BATCH: usize = 100;

/// Bytes of values per `set_multi` request to one server (a larger value goes alone).
const MULTI_BATCH_BYTES: usize = 1 << 20;

/// memcached reads an expiry longer than this (30 days) as a Unix time.
const MAX_RELATIVE_EXPTIME: u64 = 30 * 24 * 3600;

/// A cache on one or more memcached servers: see the [module docs](self).
#[derive(Clone)]
pub struct MemcachedBackend {
    cluster: Arc<Cluster>,
    socket_timeout: Duration,
    expire_time: Duration,
    max_value_size: usize,
    lock: Option<LockSettings>,
}

/// The servers and the ring that spreads keys over them.
pub(crate) struct Cluster {
    servers: Vec<Server>,
    ring: Ring,
}

impl Cluster {
    /// The server that holds `server_key` (a key already made safe by [`memcached_key`]).
    pub(crate) fn server(&self, server_key: &str) -> &Server {
        &self.servers[self.ring.server_for(server_key)]
    }

    /// The indexes of `server_keys` in batches of one server each: at most
    /// [`MULTI_BATCH`] keys, and past [`MULTI_BATCH_BYTES`] of values (`bytes` of each
    /// index) only with one.
    fn batches<'a>(
        &'a self,
        server_keys: &[Cow<'_, str>],
        bytes: impl Fn(usize) -> usize,
    ) -> Vec<(&'a Server, Vec<usize>)> {
        let mut by_server: Vec<Vec<usize>> = vec![Vec::new(); self.servers.len()];
        for (index, server_key) in server_keys.iter().enumerate() {
            by_server[self.ring.server_for(server_key)].push(index);
        }
        let mut batches = Vec::new();
        for (server, indexes) in self.servers.iter().zip(by_server) {
            let mut rest = &indexes[..];
            while !rest.is_empty() {
                let mut total = 0;
                let len = rest
                    .iter()
                    .take(MULTI_BATCH)
                    .take_while(|&&i| {
                        total += bytes(i);
                        total <= MULTI_BATCH_BYTES
                    })
                    .count()
                    .max(1);
                let (batch, after) = rest.split_at(len);
                batches.push((server, batch.to_vec()));
                rest = after;
            }
        }
        batches
    }
}

/// A single-key command, for errors: `get of key "k"`.
fn key_what<'a>(command: &'a str, key: &'a str) -> impl Fn() -> String + Sync + 'a {
    move || format!("{command} of key {}", display_key(key))
}

/// A multi-key command, for errors: `set_multi of 3 keys (first "k")`.
fn multi_what<'a>(
    command: &'a str,
    keys: &'a [&'a str],
    batch: &'a [usize],
) -> impl Fn() -> String + Sync + 'a {
    move || {
        let first = display_key(keys[batch[0]]);
        format!("{command} of {} keys (first {first})", batch.len())
    }
}

/// The keys of `batch`, as the server knows them.
fn batch_keys<'k>(server_keys: &'k [Cow<'_, str>], batch: &[usize]) -> Vec<&'k str> {
    batch.iter().map(|&i| &*server_keys[i]).collect()
}

impl MemcachedBackend {
    /// The backend from its arguments (see the [module docs](self)). No connection is made
    /// until the first command, so a server may be down when the region is configured.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](dogpile_core::Error::InvalidArgument) naming the argument
    /// that is unknown, missing or malformed.
    pub fn from_arguments(args: &Arguments) -> Result<Self> {
        args.check_known(ARGUMENTS)?;
        let settings = PoolSettings {
            size: pool_size(args)?,
            socket_timeout: positive(args, "socket_timeout")?.unwrap_or(DEFAULT_SOCKET_TIMEOUT),
            dead_retry: args
                .seconds("dead_retry")?
                .unwrap_or(crate::health::DEFAULT_DEAD_RETRY),
            max_value_size: match args.parse::<usize>("max_value_size")? {
                Some(0) => return Err(args.invalid("max_value_size", "must be at least 1 byte")),
                Some(size) => size,
                None => DEFAULT_MAX_VALUE_SIZE,
            },
        };
        let names = server_names(args)?;
        let servers = names
            .iter()
            .map(|name| Server::new(name.clone(), settings))
            .collect();
        let ring = Ring::new(&names);

        let lock = if args.bool("distributed_lock")?.unwrap_or(false) {
            let timeout = args
                .seconds("lock_timeout")?
                .unwrap_or(DEFAULT_LOCK_TIMEOUT);
            let default_wait = if timeout.is_zero() {
                Duration::from_secs(30)
            } else {
                // Past this, a dead holder's lock has expired on the server.
                Duration::from_secs(u64::from(exptime(timeout).min(1 << 20)) + 2)
            };
            Some(LockSettings {
                timeout,
                sleep: positive(args, "lock_sleep")?.unwrap_or(DEFAULT_LOCK_SLEEP),
                blocking_timeout: args
                    .seconds("lock_blocking_timeout")?
                    .unwrap_or(default_wait),
            })
        } else {
            // Still checked, so that a typo fails at configure time.
            args.seconds("lock_timeout")?;
            positive(args, "lock_sleep")?;
            args.seconds("lock_blocking_timeout")?;
            None
        };

        Ok(MemcachedBackend {
            cluster: Arc::new(Cluster { servers, ring }),
            socket_timeout: settings.socket_timeout,
            max_value_size: settings.max_value_size,
            expire_time: args
                .seconds("memcached_expire_time")?
                .unwrap_or(Duration::ZERO),
            lock,
        })
    }

    /// The servers (`host:port`), in the order given.
    pub fn servers(&self) -> Vec<&str> {
        self.cluster.servers.iter().map(Server::name).collect()
    }

    /// The server (`host:port`) that holds `key`.
    pub fn server_for(&self, key: &str) -> &str {
        self.cluster.server(&memcached_key(key)).name()
    }
}

impl MemcachedBackend {
    /// The `ms` of a value under `key`, with the server-side TTL.
    fn store<'a>(&self, server_key: &'a str, value: &'a [u8]) -> Store<'a> {
        Store {
            key: server_key,
            value,
            ttl: exptime(self.expire_time),
            mode: Mode::Set,
        }
    }

    /// The index of an item larger than `max_value_size`, refused before anything is
    /// sent by the error of its own `set`, which names its key.
    fn too_large(&self, items: &[(&str, Vec<u8>)]) -> Option<usize> {
        items
            .iter()
            .position(|(_, value)| value.len() > self.max_value_size)
    }

    /// The items of a `set_multi` batch, by their server keys.
    fn batch_items<'a>(
        server_keys: &'a [Cow<'_, str>],
        items: &'a [(&str, Vec<u8>)],
        batch: &[usize],
    ) -> Vec<(&'a str, &'a [u8])> {
        batch
            .iter()
            .map(|&i| (&*server_keys[i], items[i].1.as_slice()))
            .collect()
    }
}

impl CacheBackend for MemcachedBackend {
    /// Each server of the ring, asked its `version`.
    fn servers(&self) -> Option<Vec<ServerStatus>> {
        let what = || "version".to_owned();
        let ping = |server: &Server| {
            let started = std::time::Instant::now();
            match server.call(&what, &Version) {
                Ok(version) => {
                    ServerStatus::up(server.name(), false, started.elapsed(), Some(version))
                }
                Err(error) => ServerStatus::down(server.name(), false, error),
            }
        };
        Some(self.cluster.servers.iter().map(ping).collect())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let server_key = memcached_key(key);
        let server = self.cluster.server(&server_key);
        server.call(&key_what("get", key), &Get(&server_key))
    }

    fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        let server_key = memcached_key(key);
        let what = || format!("set of key {} ({} bytes)", display_key(key), value.len());
        let store = self.store(&server_key, &value);
        self.cluster
            .server(&server_key)
            .call(&what, &store)
            .map(drop)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let server_key = memcached_key(key);
        let delete = Delete {
            key: &server_key,
            cas: None,
        };
        let server = self.cluster.server(&server_key);
        server.call(&key_what("delete", key), &delete).map(drop)
    }

    /// One request per server (per 100 keys), answered in one round trip.
    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let server_keys: Vec<_> = keys.iter().map(|key| memcached_key(key)).collect();
        let mut values = vec![None; keys.len()];
        for (server, batch) in self.cluster.batches(&server_keys, |_| 0) {
            let get = GetMany(&batch_keys(&server_keys, &batch));
            for (at, value) in server.call(&multi_what("get_multi", keys, &batch), &get)? {
                values[batch[at]] = Some(value);
            }
        }
        Ok(values)
    }

    /// One pipelined request per server (per 100 keys or 1 MiB of values).
    fn set_multi(&self, mut items: Vec<(&str, Vec<u8>)>) -> Result<()> {
        if let Some(i) = self.too_large(&items) {
            let (key, value) = items.swap_remove(i);
            return CacheBackend::set(self, key, value);
        }
        let server_keys: Vec<_> = items.iter().map(|(key, _)| memcached_key(key)).collect();
        let keys: Vec<&str> = items.iter().map(|(key, _)| *key).collect();
        let ttl = exptime(self.expire_time);
        for (server, batch) in self.cluster.batches(&server_keys, |i| items[i].1.len()) {
            let items = &Self::batch_items(&server_keys, &items, &batch);
            let store = StoreMany { items, ttl };
            server.call(&multi_what("set_multi", &keys, &batch), &store)?;
        }
        Ok(())
    }

    /// One pipelined request per server (per 100 keys).
    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        let server_keys: Vec<_> = keys.iter().map(|key| memcached_key(key)).collect();
        for (server, batch) in self.cluster.batches(&server_keys, |_| 0) {
            let delete = DeleteMany(&batch_keys(&server_keys, &batch));
            server.call(&multi_what("delete_multi", keys, &batch), &delete)?;
        }
        Ok(())
    }

    #[cfg(feature = "tokio")]
    fn async_twin(&self) -> Option<Arc<dyn dogpile_core::backend::AsyncCacheBackend>> {
        Some(Arc::new(async_backend::AsyncMemcached::new(self.clone())))
    }

    /// With `distributed_lock`, keys that begin with `_lock` are the locks' (dogpile's
    /// layout, shared with Python).
    fn capabilities(&self) -> Capabilities {
        Capabilities::new().lock_key_prefix(self.lock.map(|_| "_lock".to_owned()))
    }

    /// Every server's `lru_crawler metadump all`, on a connection of its own, in server
    /// order. Keys are the ones memcached holds: a key this backend had to mangle
    /// (see [`memcached_key`]) is listed mangled, and the locks' keys are listed too. The
    /// crawler walks LRUs that memcached's maintainer reorders meanwhile, so a dump may
    /// miss an item that moved during it: a listing for operators, not an exact one.
    fn keys(&self, pattern: &str, found: &mut dyn FnMut(String) -> bool) -> Result<()> {
        for server in &self.cluster.servers {
            let mut each = |key: String| !key_matches(pattern, &key) || found(key);
            let more =
                dump::dump_keys(server.name(), self.socket_timeout, &mut each).map_err(|e| {
                    dogpile_core::Error::backend(
                        format!("memcached at {}", server.name()),
                        format!("lru_crawler metadump all: {e}"),
                    )
                })?;
            if !more {
                break;
            }
        }
        Ok(())
    }

    fn get_mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        let settings = self.lock?;
        Some(Box::new(MemcachedLock::new(
            self.cluster.clone(),
            key,
            settings,
        )))
    }
}

impl fmt::Debug for MemcachedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedBackend")
            .field("servers", &self.servers())
            .field("memcached_expire_time", &self.expire_time)
            .field("distributed_lock", &self.lock.is_some())
            .finish()
    }
}

/// `pool_size`, or its alias `connection_pool` (redis's name); not both.
fn pool_size(args: &Arguments) -> Result<u32> {
    let (name, size) = match (
        args.parse::<u32>("pool_size")?,
        args.parse::<u32>("connection_pool")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(args.invalid(
                "connection_pool",
                "is an alias of pool_size; give one of them",
            ))
        }
        (Some(size), None) => ("pool_size", size),
        (None, Some(size)) => ("connection_pool", size),
        (None, None) => return Ok(DEFAULT_POOL_SIZE),
    };
    if size == 0 {
        return Err(args.invalid(name, "must be at least 1"));
    }
    Ok(size)
}

/// The `host:port` of every server in `url`.
fn server_names(args: &Arguments) -> Result<Vec<String>> {
    let urls = args.list("url").unwrap_or_default();
    if urls.is_empty() {
        args.require("url")?;
        return Err(args.invalid("url", "names no server; give `host:port[, host:port...]`"));
    }
    let mut names: Vec<String> = Vec::with_capacity(urls.len());
    for url in &urls {
        let name = server_name(url).map_err(|reason| {
            args.invalid(
                "url",
                format!("`{url}` {reason}; expected `host[:port]` or `memcache://host[:port]`"),
            )
        })?;
        if names.contains(&name) {
            return Err(args.invalid("url", format!("server `{name}` is named twice")));
        }
        names.push(name);
    }
    Ok(names)
}

fn server_name(url: &str) -> std::result::Result<String, &'static str> {
    const NOT_AN_ADDRESS: &str = "is not a server address";
    let address = url
        .strip_prefix("memcache://")
        .or_else(|| url.strip_prefix("memcached://"))
        .unwrap_or(url);
    if address.contains("://") {
        return Err("has an unsupported scheme");
    }
    let address = address.strip_suffix('/').unwrap_or(address);
    if address.contains('@') {
        return Err("has credentials, which this backend does not support");
    }
    if address.contains(['/', '?', '#']) {
        return Err("has a path or options (use the backend's arguments instead)");
    }
    let (host, port) = match address.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, after) = bracketed.split_once(']').ok_or(NOT_AN_ADDRESS)?;
            ip.parse::<Ipv6Addr>().map_err(|_| NOT_AN_ADDRESS)?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or(NOT_AN_ADDRESS)?),
            };
            (&address[..ip.len() + 2], port)
        }
        // A bare IPv6 address: it needs brackets to be told from its port.
        None if address.matches(':').count() > 1 => return Err(NOT_AN_ADDRESS),
        None => match address.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        },
    };
    if host.is_empty() {
        return Err("names no host");
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(NOT_AN_ADDRESS);
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => {
            port.parse::<u16>().map_err(|_| NOT_AN_ADDRESS)?
        }
        Some(_) => return Err(NOT_AN_ADDRESS),
    };
    Ok(format!("{host}:{port}"))
}

fn positive(args: &Arguments, name: &str) -> Result<Option<Duration>> {
    match args.seconds(name)? {
        Some(d) if d.is_zero() => Err(args.invalid(name, "must be more than 0 seconds")),
        other => Ok(other),
    }
}

/// memcached's expiry for a TTL: whole seconds, rounded up; `0` for none. TTLs over 30
/// days are sent as a Unix time, which is how memcached reads them.
pub(crate) fn exptime(ttl: Duration) -> u32 {
    if ttl.is_zero() {
        return 0;
    }
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    if seconds <= MAX_RELATIVE_EXPTIME {
        return seconds as u32;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(now.saturating_add(seconds)).unwrap_or(u32::MAX)
}

/// Registration shim so the factory signature matches [`dogpile_core::__private::BuiltinBackend`].
pub(crate) fn memcached(args: &Arguments) -> Result<Arc<dyn CacheBackend>> {
    Ok(Arc::new(MemcachedBackend::from_arguments(args)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> Arguments {
        Arguments::new("memcached", pairs.iter().copied())
    }

    fn invalid_argument(pairs: &[(&str, &str)]) -> (String, String) {
        match MemcachedBackend::from_arguments(&args(pairs)) {
            Err(dogpile_core::Error::InvalidArgument {
                argument, reason, ..
            }) => (argument, reason),
            Err(other) => panic!("expected InvalidArgument for {pairs:?}, got {other}"),
            Ok(backend) => panic!("expected InvalidArgument for {pairs:?}, got {backend:?}"),
        }
    }

    #[test]
    fn urls_are_parsed_in_dogpile_forms() {
        let backend = MemcachedBackend::from_arguments(&args(&[(
            "url",
            "127.0.0.1:11311, memcache://10.0.0.2, memcached://[::1]:11411,cache.local:1",
        )]))
        .unwrap();
        assert_eq!(
            backend.servers(),
            [
                "127.0.0.1:11311",
                "10.0.0.2:11211",
                "[::1]:11411",
                "cache.local:1"
            ]
        );
    }

    /// Arguments, the argument the error must name, and a part of its reason.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

    #[test]
    fn bad_arguments_are_named() {
        let cases: &[Case<'_>] = &[
            (&[], "url", "required"),
            (&[("url", " , ")], "url", "no server"),
            (&[("url", "redis://127.0.0.1:6379")], "url", "scheme"),
            (&[("url", "127.0.0.1:99999")], "url", "not a server address"),
            (&[("url", "127.0.0.1:1?timeout=3")], "url", "options"),
            (&[("url", "u:p@127.0.0.1:1")], "url", "credentials"),
            (&[("url", "a:1, memcache://a:1")], "url", "twice"),
            (&[("url", "a"), ("binary", "true")], "binary", "unknown"),
            (
                &[("url", "a"), ("pool_size", "0")],
                "pool_size",
                "at least 1",
            ),
            (&[("url", "a"), ("pool_size", "many")], "pool_size", "many"),
            (
                &[("url", "a"), ("connection_pool", "0")],
                "connection_pool",
                "at least 1",
            ),
            (
                &[("url", "a"), ("pool_size", "2"), ("connection_pool", "2")],
                "connection_pool",
                "alias of pool_size",
            ),
            (
                &[("url", "a"), ("max_value_size", "0")],
                "max_value_size",
                "at least 1",
            ),
            (
                &[("url", "a"), ("max_value_size", "1m")],
                "max_value_size",
                "1m",
            ),
            (
                &[("url", "[::1"), ("pool_size", "1")],
                "url",
                "not a server address",
            ),
            (&[("url", "::1:11211")], "url", "not a server address"),
            (&[("url", "a b:1")], "url", "not a server address"),
            (&[("url", "memcache://")], "url", "no host"),
            (
                &[("url", "a"), ("socket_timeout", "0")],
                "socket_timeout",
                "more than 0",
            ),
            (
                &[("url", "a"), ("socket_timeout", "-1")],
                "socket_timeout",
                "-1",
            ),
            (
                &[("url", "a"), ("dead_retry", "x")],
                "dead_retry",
                "seconds",
            ),
            (
                &[("url", "a"), ("memcached_expire_time", "soon")],
                "memcached_expire_time",
                "soon",
            ),
            (
                &[("url", "a"), ("distributed_lock", "maybe")],
                "distributed_lock",
                "boolean",
            ),
            (
                &[
                    ("url", "a"),
                    ("distributed_lock", "true"),
                    ("lock_timeout", "x"),
                ],
                "lock_timeout",
                "seconds",
            ),
            (
                &[("url", "a"), ("lock_timeout", "x")],
                "lock_timeout",
                "seconds",
            ),
            (
                &[
                    ("url", "a"),
                    ("distributed_lock", "true"),
                    ("lock_sleep", "0"),
                ],
                "lock_sleep",
                "more than 0",
            ),
            (
                &[("url", "a"), ("lock_blocking_timeout", "NaN")],
                "lock_blocking_timeout",
                "seconds",
            ),
        ];
        for (pairs, argument, reason) in cases {
            let (got_argument, got_reason) = invalid_argument(pairs);
            assert_eq!(&got_argument, argument, "{pairs:?}: {got_reason}");
            assert!(got_reason.contains(reason), "{pairs:?}: {got_reason}");
        }
    }

    #[test]
    fn lock_settings_defaults() {
        let backend = MemcachedBackend::from_arguments(&args(&[
            ("url", "a"),
            ("distributed_lock", "yes"),
            ("lock_timeout", "1.5"),
        ]))
        .unwrap();
        let lock = backend.lock.unwrap();
        assert_eq!(lock.timeout, Duration::from_millis(1500));
        // Rounded up to memcached's 2 seconds, plus 2 for the server clock's granularity.
        assert_eq!(lock.blocking_timeout, Duration::from_secs(4));
        assert_eq!(lock.sleep, DEFAULT_LOCK_SLEEP);
        let never = MemcachedBackend::from_arguments(&args(&[
            ("url", "a"),
            ("distributed_lock", "true"),
            ("lock_timeout", "0"),
        ]))
        .unwrap();
        assert_eq!(
            never.lock.unwrap().blocking_timeout,
            Duration::from_secs(30)
        );
        let off = MemcachedBackend::from_arguments(&args(&[("url", "a")])).unwrap();
        assert!(off.lock.is_none() && CacheBackend::get_mutex(&off, "k").is_none());
    }

    #[test]
    fn exptime_rounds_up_and_switches_to_unix_time_past_30_days() {
        assert_eq!(exptime(Duration::ZERO), 0);
        assert_eq!(exptime(Duration::from_millis(1)), 1);
        assert_eq!(exptime(Duration::from_millis(1500)), 2);
        assert_eq!(exptime(Duration::from_secs(3600)), 3600);
        assert_eq!(
            exptime(Duration::from_secs(MAX_RELATIVE_EXPTIME)),
            2_592_000
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let absolute = u64::from(exptime(Duration::from_secs(MAX_RELATIVE_EXPTIME + 1)));
        assert!(
            (now + MAX_RELATIVE_EXPTIME..now + MAX_RELATIVE_EXPTIME + 10).contains(&absolute),
            "{absolute}"
        );
        assert_eq!(exptime(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
