//! Redis Cluster on this crate's bounded connections (the `connection` module's, and
//! `async_connection`'s for async callers), never the `redis` crate's cluster client.
//!
//! - **Routing**: each command goes to the master of its key's slot (CRC16 of the key or
//!   of its `{hash tag}`, as the cluster computes it), from a slot map fetched with
//!   `CLUSTER SLOTS`. A request of several commands (a pipeline) is split by node: one
//!   round trip per node, the replies put back in the order asked.
//! - **Redirections**: a `MOVED` reply sends the command to the node it names and marks
//!   the slot map for a refresh (by the next request, one at a time); an `ASK` reply sends
//!   it there once, after `ASKING`. At most [`MAX_REDIRECTS`] rounds of redirections,
//!   then the request fails.
//! - **Bounds**: every round trip runs within `socket_timeout` and the byte budget of
//!   `max_value_size` (the parser's limits, as on one server); a request as a whole,
//!   slot map and redirections included, within one and a half `socket_timeout`. The
//!   slot map is fetched under the same limits, asking the nodes in turn (the `turns`
//!   module), so a hung node or an endless `CLUSTER SLOTS` reply costs one bounded try.
//! - **Failures**: a connection that saw a failure is dropped; a node found unreachable
//!   (a failed connection, a timeout) is marked down for `dead_retry` (its commands fail
//!   at once meanwhile) and the slot map refreshed, as a failover moves its slots. A
//!   pooled connection that the node closed (a restart) is replaced once, as on one
//!   server. Every error names the node.
//! - **Connections**: each node has its own, opened when a request needs one (within the
//!   round trip's time), given back after a success: at most `connection_pool` idle ones
//!   are kept per node, for blocking and for async callers each. Nodes the slot map no
//!   longer names are forgotten when it is refreshed.
//! - **TLS**: with `rediss://` nodes, every node (those the slot map names too) is reached
//!   over TLS with the one client configuration of the `ssl_*` arguments.
//!
//! A command without a key (`SCRIPT LOAD`, after a script's `NOSCRIPT`) goes to the node
//! of the previous command on the same handle, so a script is loaded where it runs.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, RedisError, RedisResult, Value};

#[cfg(feature = "tokio")]
use super::async_connection::AsyncConnection;
use super::connection::{tcp_address, Connection, Limits, Tls};
use super::turns::{Preferred, Turns};
use crate::health::Health;

/// The most rounds of `MOVED`/`ASK` redirections one request follows.
pub(crate) const MAX_REDIRECTS: usize = 5;
/// The number of hash slots.
const SLOTS: u16 = 16384;

/// The slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the first `{` and
/// the next `}`, if not empty) or of the whole key, modulo 16384.
pub(crate) fn slot_of(key: &[u8]) -> u16 {
    crc16(hash_tag(key).unwrap_or(key)) % SLOTS
}

fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Where a command goes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    /// The master of this slot.
    Slot(u16),
    /// Any node (the previous command's, else a master).
    Any,
}

/// One command of a packed request: its bytes and where it goes.
struct Command {
    bytes: Range<usize>,
    route: Route,
}

/// Commands without a key.
const KEYLESS: &[&[u8]] = &[
    b"ASKING",
    b"AUTH",
    b"CLIENT",
    b"CLUSTER",
    b"COMMAND",
    b"CONFIG",
    b"DBSIZE",
    b"ECHO",
    b"FLUSHALL",
    b"FLUSHDB",
    b"HELLO",
    b"INFO",
    b"PING",
    b"ROLE",
    b"SCAN",
    b"SCRIPT",
    b"SELECT",
    b"TIME",
    b"WAIT",
];

/// Where a command with these arguments goes.
fn route_of(args: &[&[u8]]) -> Route {
    let Some(name) = args.first() else {
        return Route::Any;
    };
    let name = name.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let keys = args
                .get(2)
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<usize>().ok());
            match keys {
                Some(n) if n > 0 => args.get(3),
                _ => None,
            }
        }
        name if KEYLESS.contains(&name) => None,
        _ => args.get(1),
    };
    key.map_or(Route::Any, |key| Route::Slot(slot_of(key)))
}

/// The commands of a packed request (RESP arrays of bulk strings, as `redis::Cmd` packs
/// them).
fn split(packed: &[u8]) -> RedisResult<Vec<Command>> {
    fn header(packed: &[u8], pos: &mut usize, kind: u8) -> Option<usize> {
        let rest = packed.get(*pos..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = rest.get(..end)?;
        let (&first, number) = line.split_first()?;
        if first != kind {
            return None;
        }
        *pos += end + 2;
        std::str::from_utf8(number).ok()?.parse().ok()
    }
    fn command(packed: &[u8], pos: &mut usize) -> Option<Command> {
        let start = *pos;
        let count = header(packed, pos, b'*')?;
        let mut args = Vec::with_capacity(count.min(16));
        for _ in 0..count {
            let len = header(packed, pos, b'$')?;
            args.push(packed.get(*pos..pos.checked_add(len)?)?);
            *pos += len + 2;
        }
        let route = route_of(&args);
        Some(Command {
            bytes: start..*pos,
            route,
        })
    }
    let mut pos = 0;
    let mut commands = Vec::new();
    while pos < packed.len() {
        match command(packed, &mut pos) {
            Some(command) if command.bytes.end <= packed.len() => commands.push(command),
            _ => {
                return Err(RedisError::from((
                    ErrorKind::Client,
                    "cannot route a command that is not an array of bulk strings",
                )))
            }
        }
    }
    Ok(commands)
}

/// The slot map: which master (`host:port`) serves which slots.
#[derive(Default, Debug)]
struct SlotMap {
    /// `(first slot, last slot, master)`, sorted.
    ranges: Vec<(u16, u16, String)>,
}

impl SlotMap {
    fn node_of(&self, slot: u16) -> Option<&str> {
        let at = self.ranges.partition_point(|(_, last, _)| *last < slot);
        self.ranges
            .get(at)
            .filter(|(first, _, _)| *first <= slot)
            .map(|(_, _, node)| node.as_str())
    }

    /// The masters, each once, in slot order.
    fn masters(&self) -> Vec<String> {
        let mut masters: Vec<String> = Vec::new();
        for (_, _, node) in &self.ranges {
            if !masters.contains(node) {
                masters.push(node.clone());
            }
        }
        masters
    }
}

/// The slot map from a `CLUSTER SLOTS` reply (`[[first, last, [host, port, ...], ...],
/// ...]`) of the node on `asked_host` (a master named with an empty host is on it).
fn parse_slots(reply: Value, asked_host: &str) -> RedisResult<SlotMap> {
    let malformed = |detail: String| {
        RedisError::from((ErrorKind::Parse, "malformed CLUSTER SLOTS reply", detail))
    };
    let Value::Array(entries) = reply.extract_error()? else {
        return Err(malformed("not an array".into()));
    };
    let mut ranges = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(fields) = entry else {
            return Err(malformed("an entry is not an array".into()));
        };
        let slot = |value: Option<&Value>| match value {
            Some(Value::Int(n)) => u16::try_from(*n).ok().filter(|n| *n < SLOTS),
            _ => None,
        };
        let (Some(first), Some(last)) = (slot(fields.first()), slot(fields.get(1))) else {
            return Err(malformed("a slot range is not two slots".into()));
        };
        let Some(Value::Array(master)) = fields.get(2) else {
            return Err(malformed(format!("no master for slots {first}-{last}")));
        };
        let host = match master.first() {
            Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
            Some(Value::SimpleString(host)) => host.clone(),
            _ => return Err(malformed(format!("no host for slots {first}-{last}"))),
        };
        let port = match master.get(1) {
            Some(Value::Int(port)) => u16::try_from(*port).ok(),
            _ => None,
        };
        let Some(port) = port else {
            return Err(malformed(format!("no port for slots {first}-{last}")));
        };
        // `?` is a master whose endpoint is unknown: its slots are not served for now.
        if host == "?" || first > last {
            continue;
        }
        let host = if host.is_empty() { asked_host } else { &host };
        ranges.push((first, last, format!("{host}:{port}")));
    }
    ranges.sort_by_key(|(first, _, _)| *first);
    Ok(SlotMap { ranges })
}

/// A redirection in a reply: `MOVED`/`ASK` and the node named.
fn redirect(value: &Value) -> Option<(bool, String)> {
    let Value::ServerError(error) = value else {
        return None;
    };
    let asking = match error.code() {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let node = error.details()?.split_ascii_whitespace().nth(1)?;
    Some((asking, node.to_owned()))
}

/// A cluster node: its connections and its health.
struct Node {
    /// `host:port`, as the slot map names it.
    addr: String,
    info: ConnectionInfo,
    idle: Mutex<Vec<Connection>>,
    #[cfg(feature = "tokio")]
    idle_async: Mutex<Vec<AsyncConnection>>,
    health: Health,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A node's error, naming it.
fn at_node(addr: &str, error: &RedisError) -> RedisError {
    let kind = match error.kind() {
        // A server error keeps its code (`MOVED`, `WRONGTYPE`, ...) in the reply values, not
        // here: what fails a request is I/O, limits or the client.
        ErrorKind::Io => ErrorKind::Io,
        ErrorKind::Parse => ErrorKind::Parse,
        _ => ErrorKind::Client,
    };
    RedisError::from((kind, "cluster node failed", format!("{addr}: {error}")))
}

/// One request in progress: its commands, where each goes next, and the replies so far.
struct Exchange<'a> {
    packed: &'a [u8],
    commands: Vec<Command>,
    /// A node named by a redirection (and whether to send `ASKING` first), or `None`:
    /// the slot map's.
    targets: Vec<Option<(String, bool)>>,
    replies: Vec<Option<Value>>,
    rounds: usize,
    /// The node of the latest command, where a command without a key goes.
    last_node: Option<String>,
    /// Every command goes to this node (`SCAN` on each master), without redirections.
    pinned: Option<String>,
}

/// The commands of a request that go to one node in one round trip.
struct Batch {
    node: String,
    /// `(command, with ASKING before it)`.
    entries: Vec<(usize, bool)>,
    bytes: Vec<u8>,
    /// Replies to read (ASKING's included).
    count: usize,
}

impl<'a> Exchange<'a> {
    fn new(
        packed: &'a [u8],
        last_node: Option<String>,
        pinned: Option<String>,
    ) -> RedisResult<Self> {
        let commands = split(packed)?;
        let n = commands.len();
        Ok(Exchange {
            packed,
            commands,
            targets: vec![None; n],
            replies: vec![None; n],
            rounds: 0,
            last_node,
            pinned,
        })
    }

    fn done(&self) -> bool {
        self.replies.iter().all(Option::is_some)
    }

    /// The round trips of the next round, one per node.
    fn batches(&mut self, map: &SlotMap) -> RedisResult<Vec<Batch>> {
        self.rounds += 1;
        if self.rounds > MAX_REDIRECTS + 1 {
            return Err(RedisError::from((
                ErrorKind::Client,
                "too many cluster redirections",
                format!("more than {MAX_REDIRECTS} rounds of MOVED/ASK"),
            )));
        }
        let mut batches: Vec<Batch> = Vec::new();
        for (index, command) in self.commands.iter().enumerate() {
            if self.replies[index].is_some() {
                continue;
            }
            let (node, asking) = match (&self.pinned, &self.targets[index], command.route) {
                (Some(node), _, _) => (node.clone(), false),
                (None, Some((node, asking)), _) => (node.clone(), *asking),
                (None, None, Route::Slot(slot)) => match map.node_of(slot) {
                    Some(node) => (node.to_owned(), false),
                    None => {
                        return Err(RedisError::from((
                            ErrorKind::Client,
                            "no cluster node serves the key's slot",
                            format!("slot {slot}"),
                        )))
                    }
                },
                (None, None, Route::Any) => {
                    match self
                        .last_node
                        .clone()
                        .or_else(|| map.masters().into_iter().next())
                    {
                        Some(node) => (node, false),
                        None => {
                            return Err(RedisError::from((
                                ErrorKind::Client,
                                "the cluster's slot map names no node",
                            )))
                        }
                    }
                }
            };
            self.last_node = Some(node.clone());
            let at = match batches.iter().position(|batch| batch.node == node) {
                Some(at) => at,
                None => {
                    batches.push(Batch {
                        node,
                        entries: Vec::new(),
                        bytes: Vec::new(),
                        count: 0,
                    });
                    batches.len() - 1
                }
            };
            let batch = &mut batches[at];
            if asking {
                batch
                    .bytes
                    .extend_from_slice(&redis::cmd("ASKING").get_packed_command());
                batch.count += 1;
            }
            batch
                .bytes
                .extend_from_slice(&self.packed[command.bytes.clone()]);
            batch.count += 1;
            batch.entries.push((index, asking));
        }
        Ok(batches)
    }

    /// Takes a batch's replies; true if one was `MOVED` (the slot map is out of date).
    fn absorb(&mut self, batch: &Batch, values: Vec<Value>) -> bool {
        let mut moved = false;
        let mut values = values.into_iter();
        for &(index, asking) in &batch.entries {
            if asking {
                // ASKING's own reply.
                values.next();
            }
            let value = values.next().unwrap_or(Value::Nil);
            match redirect(&value) {
                Some((asking, node)) if self.pinned.is_none() => {
                    moved |= !asking;
                    self.targets[index] = Some((node, asking));
                }
                _ => {
                    self.targets[index] = None;
                    self.replies[index] = Some(value);
                }
            }
        }
        moved
    }

    /// The replies, the first `skip` left out.
    fn finish(self, skip: usize) -> Vec<Value> {
        self.replies.into_iter().flatten().skip(skip).collect()
    }
}

/// The host of a node's address.
fn host_of(info: &ConnectionInfo) -> &str {
    match info.addr() {
        ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host,
        _ => "",
    }
}

/// A Redis Cluster: its slot map and its nodes (see the [module docs](self)).
pub(crate) struct Cluster {
    /// The nodes given (`url`/`startup_nodes`), asked for the slot map first.
    seeds: Vec<ConnectionInfo>,
    /// The nodes' credentials, as a connection to any of them (its address replaced).
    template: ConnectionInfo,
    /// Nodes are reached over TLS.
    tls_nodes: bool,
    tls: Tls,
    limits: Limits,
    dead_retry: Duration,
    /// Idle connections kept per node.
    keep: usize,
    map: RwLock<Arc<SlotMap>>,
    /// A `MOVED` or a node found down: the next request refreshes the map.
    stale: AtomicBool,
    /// A refresh is under way (one at a time).
    refreshing: AtomicBool,
    nodes: Mutex<HashMap<String, Arc<Node>>>,
    /// The node asked first for the slot map.
    preferred: Preferred,
}

/// A refresh of the slot map in progress; over when dropped.
struct Refreshing<'a>(&'a AtomicBool);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// `CLUSTER SLOTS`, packed.
fn slots_question() -> Vec<u8> {
    redis::cmd("CLUSTER").arg("SLOTS").get_packed_command()
}

impl Cluster {
    /// A cluster reached through `seeds`, every node with `template`'s credentials and
    /// over TLS if `template` is a `rediss://` address; calls bounded by `limits`; nodes
    /// found down left alone for `dead_retry`; at most `keep` idle connections kept per
    /// node.
    pub(crate) fn new(
        seeds: Vec<ConnectionInfo>,
        template: ConnectionInfo,
        tls: Tls,
        limits: Limits,
        (dead_retry, keep): (Duration, usize),
    ) -> Self {
        let tls_nodes = matches!(template.addr(), ConnectionAddr::TcpTls { .. });
        Cluster {
            seeds,
            template,
            tls_nodes,
            tls,
            limits,
            dead_retry,
            keep: keep.max(1),
            map: RwLock::new(Arc::default()),
            stale: AtomicBool::new(false),
            refreshing: AtomicBool::new(false),
            nodes: Mutex::new(HashMap::new()),
            preferred: Preferred::default(),
        }
    }

    /// A handle that routes each command by its key (see [`Handle`]).
    pub(crate) fn handle(&self) -> Handle<'_> {
        Handle {
            cluster: self,
            last_node: None,
            pinned: None,
        }
    }

    /// A handle that sends every command to `node` (`host:port`).
    pub(crate) fn handle_on(&self, node: String) -> Handle<'_> {
        Handle {
            cluster: self,
            last_node: None,
            pinned: Some(node),
        }
    }

    fn current(&self) -> Arc<SlotMap> {
        self.map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts `map` in use, and forgets the nodes it does not name (their connections and
    /// health records), so that nodes named by old maps or redirections do not pile up.
    fn install(&self, map: SlotMap) {
        tracing::debug!(ranges = map.ranges.len(), "redis cluster slot map fetched");
        let masters = map.masters();
        locked(&self.nodes).retain(|addr, _| masters.contains(addr));
        *self
            .map
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(map);
    }

    /// Starts a refresh unless one is under way.
    fn start_refresh(&self) -> Option<Refreshing<'_>> {
        self.refreshing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Refreshing(&self.refreshing))
    }

    /// The nodes to ask for the slot map: the seeds, then the masters known.
    fn candidates(&self) -> Vec<ConnectionInfo> {
        let mut candidates = self.seeds.clone();
        for master in self.current().masters() {
            if !candidates
                .iter()
                .any(|seed| seed.addr().to_string() == master)
            {
                if let Some(info) = self.info_of(&master) {
                    candidates.push(info);
                }
            }
        }
        candidates
    }

    /// The connection settings of the node at `addr` (`host:port`).
    fn info_of(&self, addr: &str) -> Option<ConnectionInfo> {
        let (host, port) = addr.rsplit_once(':')?;
        let port = port.parse().ok()?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addr = tcp_address(host, port, self.tls_nodes);
        Some(self.template.clone().set_addr(addr))
    }

    fn node(&self, addr: &str) -> RedisResult<Arc<Node>> {
        let mut nodes = locked(&self.nodes);
        if let Some(node) = nodes.get(addr) {
            return Ok(node.clone());
        }
        let info = self.info_of(addr).ok_or_else(|| {
            RedisError::from((
                ErrorKind::Client,
                "not a cluster node address",
                addr.to_owned(),
            ))
        })?;
        let node = Arc::new(Node {
            addr: addr.to_owned(),
            info,
            idle: Mutex::new(Vec::new()),
            #[cfg(feature = "tokio")]
            idle_async: Mutex::new(Vec::new()),
            health: Health::new(
                format!("redis_cluster node {addr}"),
                self.dead_retry,
                self.limits.timeout * 2,
            ),
        });
        nodes.insert(addr.to_owned(), node.clone());
        Ok(node)
    }

    /// When a request that starts now must be over.
    fn request_end(&self) -> Instant {
        Instant::now() + self.limits.timeout + self.limits.timeout / 2
    }

    /// The deadline of one step (a connection, a round trip) started now.
    fn step(&self, end: Instant) -> Instant {
        (Instant::now() + self.limits.timeout).min(end)
    }

    /// The deadline of a refresh of a slot map that is out of date but usable.
    fn stale_step(&self, end: Instant) -> Instant {
        (Instant::now() + self.limits.timeout / 2).min(end)
    }

    /// What a node's failure says: unreachable (I/O, a timeout) marks it down and the slot
    /// map out of date. The error names the node.
    fn failed_at(&self, node: &Node, error: &RedisError) -> RedisError {
        if error.is_io_error() {
            node.health.mark_down(error);
            self.stale.store(true, Ordering::Release);
        }
        at_node(&node.addr, error)
    }

    /// The node at `addr`, if it is not marked down.
    fn usable(&self, addr: &str) -> RedisResult<Arc<Node>> {
        let node = self.node(addr)?;
        node.health.check().map_err(|down| {
            RedisError::from((
                ErrorKind::Io,
                "cluster node marked down",
                format!("{addr}: {down}"),
            ))
        })?;
        Ok(node)
    }

    /// Keeps `conn` for the next request on its node.
    fn keep<C>(&self, idle: &Mutex<Vec<C>>, conn: C) {
        let mut idle = locked(idle);
        if idle.len() < self.keep {
            idle.push(conn);
        }
    }

    /// What a round trip on a node's connection came to: its replies (and the connection
    /// kept for the next request), `None` to try again on a fresh connection (once, when a
    /// pooled one was closed by the node: a restart), or the error naming the node.
    fn settle<C>(
        &self,
        node: &Node,
        idle: &Mutex<Vec<C>>,
        (conn, reused): (C, bool),
        outcome: RedisResult<Vec<Value>>,
        retried: &mut bool,
    ) -> Option<RedisResult<Vec<Value>>> {
        match outcome {
            Ok(values) => {
                node.health.mark_up();
                self.keep(idle, conn);
                Some(Ok(values))
            }
            Err(error) if reused && !*retried && error.is_connection_dropped() => {
                *retried = true;
                tracing::debug!(node = %node.addr, %error, "redis cluster connection went stale; retrying on another one");
                None
            }
            Err(error) => Some(Err(self.failed_at(node, &error))),
        }
    }

    // The blocking side.

    /// Fetches the slot map, asking the nodes in turn before `deadline`.
    fn refresh(&self, deadline: Instant) -> RedisResult<()> {
        let candidates = self.candidates();
        let question = slots_question();
        let mut turns = Turns::new(&candidates, &self.preferred, deadline);
        while let Some(turn) = turns.next() {
            let fetched = Connection::open_until(
                turn.node,
                Limits::until(turn.by, self.limits.max_value_size),
                &self.tls,
                turn.by,
            )
            .and_then(|mut conn| conn.call_by(&question, turn.by))
            .and_then(|reply| parse_slots(reply, host_of(turn.node)));
            let name = || format!("node {}", turn.node.addr());
            if let Some(map) = turns.outcome(&turn, name, fetched) {
                self.install(map);
                return Ok(());
            }
        }
        Err(turns.failed(ErrorKind::Client, "no cluster node gave its slot map"))
    }

    /// The slot map, fetched if there is none yet, refreshed if out of date.
    fn slot_map(&self, end: Instant) -> RedisResult<Arc<SlotMap>> {
        let map = self.current();
        if map.ranges.is_empty() {
            self.refresh(self.step(end))?;
        } else if self.stale.load(Ordering::Acquire) {
            if let Some(_refreshing) = self.start_refresh() {
                self.stale.store(false, Ordering::Release);
                if let Err(error) = self.refresh(self.stale_step(end)) {
                    tracing::warn!(%error, "redis cluster slot map refresh failed");
                    self.stale.store(true, Ordering::Release);
                }
            }
        }
        Ok(self.current())
    }

    /// One round trip to the node at `addr`: `bytes`, then `count` replies.
    fn call_node(
        &self,
        addr: &str,
        bytes: &[u8],
        count: usize,
        end: Instant,
    ) -> RedisResult<Vec<Value>> {
        let node = self.usable(addr)?;
        let mut retried = false;
        loop {
            let deadline = self.step(end);
            let pooled = locked(&node.idle).pop();
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => Connection::open_until(&node.info, self.limits, &self.tls, deadline)
                    .map_err(|error| self.failed_at(&node, &error))?,
            };
            let outcome = conn.calls_by(bytes, count, deadline);
            if let Some(done) =
                self.settle(&node, &node.idle, (conn, reused), outcome, &mut retried)
            {
                return done;
            }
        }
    }

    fn request(
        &self,
        handle: &mut Handle<'_>,
        packed: &[u8],
        skip: usize,
    ) -> RedisResult<Vec<Value>> {
        let end = self.request_end();
        let mut exchange = Exchange::new(packed, handle.last_node.take(), handle.pinned.clone())?;
        while !exchange.done() {
            let map = self.slot_map(end)?;
            for batch in exchange.batches(&map)? {
                let values = self.call_node(&batch.node, &batch.bytes, batch.count, end)?;
                if exchange.absorb(&batch, values) {
                    self.stale.store(true, Ordering::Release);
                }
            }
        }
        handle.last_node = exchange.last_node.clone();
        Ok(exchange.finish(skip))
    }

    /// The masters (`host:port`), from the slot map.
    /// Whether the nodes are reached over TLS.
    pub(crate) fn tls(&self) -> bool {
        self.tls_nodes
    }

    pub(crate) fn masters(&self) -> RedisResult<Vec<String>> {
        Ok(self.slot_map(self.request_end())?.masters())
    }

    // The async side: the same steps on async connections.

    #[cfg(feature = "tokio")]
    async fn refresh_async(&self, deadline: Instant) -> RedisResult<()> {
        let candidates = self.candidates();
        let question = slots_question();
        let mut turns = Turns::new(&candidates, &self.preferred, deadline);
        while let Some(turn) = turns.next() {
            let fetched = async {
                let limits = Limits::until(turn.by, self.limits.max_value_size);
                let mut conn = AsyncConnection::open(turn.node, limits, &self.tls, turn.by).await?;
                parse_slots(conn.call_by(&question, turn.by).await?, host_of(turn.node))
            }
            .await;
            let name = || format!("node {}", turn.node.addr());
            if let Some(map) = turns.outcome(&turn, name, fetched) {
                self.install(map);
                return Ok(());
            }
        }
        Err(turns.failed(ErrorKind::Client, "no cluster node gave its slot map"))
    }

    #[cfg(feature = "tokio")]
    async fn slot_map_async(&self, end: Instant) -> RedisResult<Arc<SlotMap>> {
        let map = self.current();
        if map.ranges.is_empty() {
            self.refresh_async(self.step(end)).await?;
        } else if self.stale.load(Ordering::Acquire) {
            if let Some(_refreshing) = self.start_refresh() {
                self.stale.store(false, Ordering::Release);
                if let Err(error) = self.refresh_async(self.stale_step(end)).await {
                    tracing::warn!(%error, "redis cluster slot map refresh failed");
                    self.stale.store(true, Ordering::Release);
                }
            }
        }
        Ok(self.current())
    }

    #[cfg(feature = "tokio")]
    async fn call_node_async(
        &self,
        addr: &str,
        bytes: &[u8],
        count: usize,
        end: Instant,
    ) -> RedisResult<Vec<Value>> {
        let node = self.usable(addr)?;
        let mut retried = false;
        loop {
            let deadline = self.step(end);
            let pooled = locked(&node.idle_async).pop();
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => AsyncConnection::open(&node.info, self.limits, &self.tls, deadline)
                    .await
                    .map_err(|error| self.failed_at(&node, &error))?,
            };
            let outcome = conn.calls_by(bytes, count, deadline).await;
            if let Some(done) = self.settle(
                &node,
                &node.idle_async,
                (conn, reused),
                outcome,
                &mut retried,
            ) {
                return done;
            }
        }
    }

    /// Sends the packed commands, each to its node, and returns their replies, the first
    /// `skip` left out (see the [module docs](self)).
    #[cfg(feature = "tokio")]
    pub(crate) async fn request_async(
        &self,
        packed: &[u8],
        skip: usize,
    ) -> RedisResult<Vec<Value>> {
        let end = self.request_end();
        let mut exchange = Exchange::new(packed, None, None)?;
        while !exchange.done() {
            let map = self.slot_map_async(end).await?;
            for batch in exchange.batches(&map)? {
                let values = self
                    .call_node_async(&batch.node, &batch.bytes, batch.count, end)
                    .await?;
                if exchange.absorb(&batch, values) {
                    self.stale.store(true, Ordering::Release);
                }
            }
        }
        Ok(exchange.finish(skip))
    }
}

/// Commands to a cluster through `redis::ConnectionLike`, so that typed replies, pipelines
/// and scripts are the `redis` crate's: each command goes to its key's node.
pub(crate) struct Handle<'a> {
    cluster: &'a Cluster,
    /// The node of the latest command, for one without a key.
    last_node: Option<String>,
    /// Every command goes to this node.
    pinned: Option<String>,
}

impl redis::ConnectionLike for Handle<'_> {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        let cluster = self.cluster;
        Ok(cluster.request(self, cmd, 0)?.pop().unwrap_or(Value::Nil))
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let cluster = self.cluster;
        let values = cluster.request(self, cmd, offset)?;
        if values.len() != count {
            return Err(RedisError::from((
                ErrorKind::Client,
                "wrong number of replies",
                format!("expected {count}, got {}", values.len()),
            )));
        }
        Ok(values)
    }

    fn get_db(&self) -> i64 {
        0
    }

    fn check_connection(&mut self) -> bool {
        true
    }

    fn is_open(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_clusters() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"bar"), 5061);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_eq!(slot_of(b""), 0);
    }

    #[test]
    fn commands_are_routed_by_their_key() {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg("foo");
        pipe.cmd("EVALSHA").arg("abc").arg(1).arg("bar").arg("x");
        pipe.cmd("SCRIPT").arg("LOAD").arg("return 1");
        pipe.cmd("EVAL").arg("return 1").arg(0);
        let commands = split(&pipe.get_packed_pipeline()).unwrap();
        let routes: Vec<Route> = commands.iter().map(|c| c.route).collect();
        assert_eq!(
            routes,
            [
                Route::Slot(12182),
                Route::Slot(5061),
                Route::Any,
                Route::Any
            ]
        );
        assert!(split(b"*1\r\n$3\r\nGE").is_err());
        assert!(split(b"+OK\r\n").is_err());
    }

    #[test]
    fn a_slot_map_is_read_and_looked_up() {
        let entry = |first: i64, last: i64, host: &str, port: i64| {
            Value::Array(vec![
                Value::Int(first),
                Value::Int(last),
                Value::Array(vec![Value::BulkString(host.into()), Value::Int(port)]),
            ])
        };
        let map = parse_slots(
            Value::Array(vec![
                entry(5461, 10922, "10.0.0.2", 7001),
                entry(0, 5460, "", 7000),
                entry(10923, 16383, "?", 7002),
            ]),
            "10.0.0.1",
        )
        .unwrap();
        assert_eq!(map.node_of(0), Some("10.0.0.1:7000"));
        assert_eq!(map.node_of(5461), Some("10.0.0.2:7001"));
        assert_eq!(map.node_of(10922), Some("10.0.0.2:7001"));
        assert_eq!(map.node_of(16000), None);
        assert!(parse_slots(Value::Int(1), "h").is_err());
        assert!(parse_slots(Value::Array(vec![Value::Nil]), "h").is_err());
    }
}
