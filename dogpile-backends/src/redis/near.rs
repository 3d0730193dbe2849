//! The near cache (`near_cache`): values read from redis kept in this process's memory and
//! served from there, kept coherent by the server's client-side caching (`CLIENT
//! TRACKING`, SPEC 10).
//!
//! # Consistency
//!
//! One connection of its own per backend is the tracking connection: it turns tracking on
//! in broadcast mode (`CLIENT TRACKING ON REDIRECT <its own id> BCAST`) and subscribes to
//! `__redis__:invalidate`, so the server tells it of every key written by anyone (any
//! client, this process included) after that moment; each key it names leaves the near
//! cache, and a flush (`FLUSHALL`, `FLUSHDB`) empties it. Reads are served from memory only
//! while that connection is known good:
//! - it is in place before anything is kept: the near cache starts empty and serves
//!   nothing until tracking is on;
//! - when the connection fails, closes, or stalls (a `PING` every second that is not
//!   answered within `socket_timeout`), the near cache is emptied and bypassed before any
//!   further read is served from it, until a new tracking connection is in place;
//! - a fill races an invalidation and loses: a read from redis is kept only if no
//!   invalidation of its key's shard arrived between the read being sent and the value
//!   being kept (checked after keeping it, too);
//! - each hit first asks the tracking connection's socket, without reading it
//!   (`recv(MSG_PEEK | MSG_DONTWAIT)` on a duplicate, on Unix), whether the server sent
//!   anything the tracking thread has not read yet, or closed it: then the hit goes to
//!   redis instead. So an invalidation that reached this machine, or a connection that was
//!   closed, is honoured before the tracking thread has even run.
//!
//! So a value is never served after the server's invalidation of it, or the close of the
//! tracking connection, reached this machine. What remains is the time the message takes to
//! arrive (a loopback round trip), and the time a silent stall takes to be noticed (at most
//! about one second plus `socket_timeout`), during which reads may serve values written
//! elsewhere meanwhile.
//!
//! Broadcast mode costs one message per written key, for every key of the server, whatever
//! this process reads; it suits a redis used as a cache by a few regions. The near cache
//! holds at most `near_cache_max_entries` keys (the bounded memory store's S3-FIFO
//! eviction). Writes through this backend drop their key from the near cache at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dogpile_core::backend::CacheBackend;
use dogpile_core::Result;
use redis::{ConnectionLike, Value};

use super::connection::Connection;
use super::pool::{Connect, ServerConnector};
use super::{Pools, Shared};
use crate::memory::MemoryBackend;

/// The default `near_cache_max_entries`.
pub(crate) const DEFAULT_MAX_ENTRIES: u64 = 10_000;

/// How often the tracking connection is checked with a `PING` when no message comes.
const PING_EVERY: Duration = Duration::from_secs(1);

/// The pause before a new tracking connection after one failed.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Shards of fill tickets: an invalidation of a key spoils the fills of its shard only.
const SHARDS: usize = 64;

/// The channel the server sends invalidations on.
const CHANNEL: &str = "__redis__:invalidate";

/// A near cache: see the [module docs](self).
pub(crate) struct Near {
    store: ArcSwap<MemoryBackend>,
    max_entries: u64,
    /// How long an unanswered `PING` on the tracking connection means a stall.
    socket_timeout: Duration,
    /// The tracking connection is in place: reads may be served from `store`.
    tracked: AtomicBool,
    /// The tracking connection's socket, asked on each hit whether the server sent anything
    /// the tracking thread has not read yet (an invalidation on its way) or closed it: then
    /// the hit goes to redis. None where the socket cannot be duplicated.
    #[cfg(unix)]
    unread: arc_swap::ArcSwapOption<super::connection::Unread>,
    /// Per shard, invalidations so far: a fill keeps its value only if its shard's count
    /// did not move.
    epochs: [AtomicU64; SHARDS],
    hasher: ahash::RandomState,
}

/// What the near cache had for a key.
pub(crate) enum Lookup {
    /// The bytes kept for it.
    Hit(Vec<u8>),
    /// Nothing kept: read redis, then [`fill`](Near::fill) with this ticket (`None`: the
    /// near cache is not tracked, keep nothing).
    Miss(Option<u64>),
}

impl Near {
    pub(crate) fn new(max_entries: u64, socket_timeout: Duration) -> Result<Near> {
        Ok(Near {
            socket_timeout,
            store: ArcSwap::from_pointee(MemoryBackend::bounded(max_entries)?),
            max_entries,
            tracked: AtomicBool::new(false),
            #[cfg(unix)]
            unread: arc_swap::ArcSwapOption::empty(),
            epochs: std::array::from_fn(|_| AtomicU64::new(0)),
            hasher: ahash::RandomState::new(),
        })
    }

    fn epoch(&self, key: &str) -> &AtomicU64 {
        &self.epochs[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// The kept bytes of `key`, or a ticket to fill it with.
    #[inline]
    pub(crate) fn lookup(&self, key: &str) -> Lookup {
        let Some(ticket) = self.ticket(key) else {
            return Lookup::Miss(None);
        };
        match self.store.load().get(key) {
            Ok(Some(bytes)) => Lookup::Hit(bytes),
            _ => Lookup::Miss(Some(ticket)),
        }
    }

    /// A ticket to fill `key` with, taken before reading it; `None` while untracked, or
    /// while the tracking connection has something unread (or was closed).
    fn ticket(&self, key: &str) -> Option<u64> {
        if !self.tracked.load(Ordering::Acquire) {
            return None;
        }
        #[cfg(unix)]
        if self
            .unread
            .load()
            .as_ref()
            .is_some_and(|unread| unread.stirred())
        {
            return None;
        }
        Some(self.epoch(key).load(Ordering::Acquire))
    }

    /// Keeps what a read of `key` returned, unless an invalidation of its shard came since
    /// the ticket was taken.
    pub(crate) fn fill(&self, key: &str, ticket: Option<u64>, value: Option<&[u8]>) {
        let (Some(ticket), Some(value)) = (ticket, value) else {
            return;
        };
        let epoch = self.epoch(key);
        if epoch.load(Ordering::Acquire) != ticket {
            return;
        }
        let store = self.store.load();
        let _ = store.set(key, value.to_vec());
        // An invalidation between the check and the set: it wins.
        if epoch.load(Ordering::Acquire) != ticket || !self.tracked.load(Ordering::Acquire) {
            let _ = store.delete(key);
        }
    }

    /// Drops `key` (written here, or told by the server).
    pub(crate) fn invalidate(&self, key: &str) {
        self.epoch(key).fetch_add(1, Ordering::AcqRel);
        let _ = self.store.load().delete(key);
    }

    /// Drops everything.
    fn flush(&self) {
        for epoch in &self.epochs {
            epoch.fetch_add(1, Ordering::AcqRel);
        }
        if let Ok(empty) = MemoryBackend::bounded(self.max_entries) {
            self.store.store(Arc::new(empty));
        }
    }

    /// The tracking connection is lost: nothing is served from memory until a new one is
    /// in place, and what was kept is dropped.
    fn lost(&self) {
        self.tracked.store(false, Ordering::Release);
        #[cfg(unix)]
        self.unread.store(None);
        self.flush();
    }

    /// Watches `conn`, the new tracking connection, for bytes its thread has not read yet.
    fn watch(&self, conn: &Connection) {
        #[cfg(unix)]
        self.unread.store(conn.unread().ok().map(Arc::new));
        #[cfg(not(unix))]
        let _ = conn;
    }

    /// A new tracking connection is in place: from now on reads are kept and served.
    fn track(&self) {
        self.flush();
        self.tracked.store(true, Ordering::Release);
    }

    /// A message on the tracking connection: the keys it invalidates, or a flush.
    fn told(&self, message: Value) {
        // Not a message: a subscription confirmation or a pong.
        let Some(payload) = super::subscription::pushed(message) else {
            return;
        };
        match payload {
            Value::Array(keys) => {
                for key in keys {
                    if let Value::BulkString(key) = key {
                        self.invalidate(&String::from_utf8_lossy(&key));
                    }
                }
            }
            // No keys: the server flushed its data.
            _ => self.flush(),
        }
    }
}

/// Starts the thread that keeps `shared`'s tracking connection (it ends with the backend).
pub(crate) fn start(shared: &Arc<Shared>) {
    if shared.near.is_none() {
        return;
    }
    let watched = Arc::downgrade(shared);
    let describe = shared.describe.clone();
    let spawned = std::thread::Builder::new()
        .name("dogpile-near-cache".into())
        .spawn(move || run(&watched));
    if let Err(error) = spawned {
        tracing::warn!(backend = %describe, %error,
            "cannot start the near cache's tracking thread; reads go to redis");
    }
}

fn run(watched: &Weak<Shared>) {
    loop {
        let Some(shared) = watched.upgrade() else {
            return;
        };
        let Some(near) = &shared.near else {
            return;
        };
        near.lost();
        let conn = match &shared.pools {
            Pools::Server(pool) => tracking(pool.connector()),
            Pools::Cluster(_) => return,
        };
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(error) => {
                tracing::debug!(backend = %shared.describe, %error,
                    "cannot open the near cache's tracking connection; reads go to redis");
                drop(shared);
                std::thread::sleep(RETRY_PAUSE);
                continue;
            }
        };
        near.watch(&conn);
        near.track();
        let describe = shared.describe.clone();
        drop(shared);
        let error = listen(watched, &mut conn);
        tracing::debug!(backend = %describe, %error,
            "near cache tracking connection lost; emptied, and bypassed until tracked again");
    }
}

/// A connection with tracking on in broadcast mode, subscribed to its invalidations.
fn tracking(connector: &ServerConnector) -> redis::RedisResult<Connection> {
    let mut conn = connector.connect()?;
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut conn)?;
    redis::cmd("CLIENT")
        .arg(&["TRACKING", "ON", "REDIRECT"])
        .arg(id)
        .arg("BCAST")
        .query::<()>(&mut conn)?;
    conn.req_packed_command(&redis::cmd("SUBSCRIBE").arg(CHANNEL).get_packed_command())?;
    Ok(conn)
}

/// Reads the tracking connection until it fails or stalls (or the backend is gone);
/// returns why it ended.
fn listen(watched: &Weak<Shared>, conn: &mut Connection) -> String {
    let ping = redis::cmd("PING").get_packed_command();
    let mut unanswered: Option<Instant> = None;
    loop {
        match conn.listen(PING_EVERY) {
            Ok(Some(message)) => {
                let Some(shared) = watched.upgrade() else {
                    return "the backend is gone".into();
                };
                if let Some(near) = &shared.near {
                    near.told(message);
                }
                // Any reply shows the connection alive; a pong may still be on its way.
                unanswered = None;
            }
            Ok(None) => {
                let Some(shared) = watched.upgrade() else {
                    return "the backend is gone".into();
                };
                let Some(stalled) = shared.near.as_ref().map(|near| near.socket_timeout) else {
                    return "the near cache is gone".into();
                };
                if unanswered.is_some_and(|sent| sent.elapsed() > stalled) {
                    return format!("no answer to PING within {stalled:?}");
                }
                if unanswered.is_none() {
                    if let Err(error) = conn.send_only(&ping) {
                        return error.to_string();
                    }
                    unanswered = Some(Instant::now());
                }
            }
            Err(error) => return error.to_string(),
        }
    }
}

/// The near cache as the backend's reads and writes use it: each a no-op without one.
impl Shared {
    /// Before reading `key`: the near cache's bytes, or a ticket for [`near_fill`](Self::near_fill).
    #[inline]
    pub(crate) fn near_lookup(&self, key: &str) -> Lookup {
        match &self.near {
            Some(near) => near.lookup(key),
            None => Lookup::Miss(None),
        }
    }

    /// After reading `key` from redis.
    pub(crate) fn near_fill(&self, key: &str, ticket: Option<u64>, value: Option<&[u8]>) {
        if let Some(near) = &self.near {
            near.fill(key, ticket, value);
        }
    }

    /// Before reading `keys`: every value when all are kept (`Ok`), or the tickets to fill
    /// them with after one read of them all (`Err`).
    pub(crate) fn near_lookup_multi(
        &self,
        keys: &[&str],
    ) -> std::result::Result<Vec<Option<Vec<u8>>>, Vec<Option<u64>>> {
        let Some(near) = &self.near else {
            return Err(vec![None; keys.len()]);
        };
        let mut hits = Vec::with_capacity(keys.len());
        for key in keys {
            match near.lookup(key) {
                Lookup::Hit(value) => hits.push(Some(value)),
                Lookup::Miss(_) => {
                    return Err(keys.iter().map(|key| near.ticket(key)).collect());
                }
            }
        }
        Ok(hits)
    }

    /// After reading `keys` from redis.
    pub(crate) fn near_fill_multi(
        &self,
        keys: &[&str],
        tickets: &[Option<u64>],
        values: &[Option<Vec<u8>>],
    ) {
        for ((key, ticket), value) in keys.iter().zip(tickets).zip(values) {
            self.near_fill(key, *ticket, value.as_deref());
        }
    }

    /// After writing (or deleting) `keys`: they leave the near cache.
    pub(crate) fn near_forget<'k>(&self, keys: impl IntoIterator<Item = &'k str>) {
        if let Some(near) = &self.near {
            for key in keys {
                near.invalidate(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked() -> Near {
        let near = Near::new(10, Duration::from_secs(1)).unwrap();
        near.track();
        near
    }

    fn ticket(near: &Near, key: &str) -> Option<u64> {
        match near.lookup(key) {
            Lookup::Miss(ticket) => ticket,
            Lookup::Hit(_) => panic!("{key} is kept"),
        }
    }

    #[test]
    fn an_invalidation_that_races_a_fill_wins() {
        let near = tracked();
        let t = ticket(&near, "k");
        near.invalidate("k"); // the server said it changed while it was being read
        near.fill("k", t, Some(b"old"));
        assert!(matches!(near.lookup("k"), Lookup::Miss(_)));
        let t = ticket(&near, "k");
        near.fill("k", t, Some(b"new"));
        assert!(matches!(near.lookup("k"), Lookup::Hit(v) if v == b"new"));
    }

    #[test]
    fn nothing_is_kept_or_served_while_untracked() {
        let near = tracked();
        let t = ticket(&near, "k");
        near.fill("k", t, Some(b"v"));
        near.lost();
        assert!(matches!(near.lookup("k"), Lookup::Miss(None)));
        near.fill("k", t, Some(b"v"));
        near.track();
        assert!(
            matches!(near.lookup("k"), Lookup::Miss(Some(_))),
            "emptied when lost"
        );
    }

    #[test]
    fn the_server_s_messages_invalidate_keys_or_flush() {
        let near = tracked();
        for key in ["a", "b"] {
            let t = ticket(&near, key);
            near.fill(key, t, Some(b"v"));
        }
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let message = |payload| Value::Array(vec![bulk("message"), bulk(CHANNEL), payload]);
        near.told(message(Value::Array(vec![bulk("a")])));
        assert!(matches!(near.lookup("a"), Lookup::Miss(_)));
        assert!(matches!(near.lookup("b"), Lookup::Hit(_)));
        near.told(Value::Array(vec![bulk("pong"), bulk("")]));
        assert!(matches!(near.lookup("b"), Lookup::Hit(_)));
        near.told(message(Value::Nil));
        assert!(matches!(near.lookup("b"), Lookup::Miss(_)));
    }
}
