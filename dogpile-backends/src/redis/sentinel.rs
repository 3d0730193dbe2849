//! Sentinel: the master of a service found through its Sentinel nodes, on this crate's
//! bounded connections (the `connection` module's, and `async_connection`'s for async
//! callers), never the `redis` crate's Sentinel client.
//!
//! Each new connection to the master is made by a lookup:
//! - the Sentinels are asked in turn (`SENTINEL GET-MASTER-ADDR-BY-NAME <service>`),
//!   starting with the one that answered last (redis-py moves it to the front of its list
//!   alike), so a Sentinel that went away costs only the lookups that found it gone;
//! - the master a Sentinel names is connected to, and asked `ROLE`: one that is not a
//!   master (a Sentinel may name an old master for a moment after a failover, as
//!   Sentinel's client guidelines warn) is refused, and the next Sentinel asked;
//! - the whole lookup, the master's connection included, runs within one
//!   `socket_timeout`, and each Sentinel gets an equal share of the time left when it is
//!   asked: a Sentinel that is down, hung or stopped (`SIGSTOP`: the kernel still accepts
//!   its connections, nothing answers) costs one bounded try, and the next one is asked in
//!   time;
//! - a Sentinel's reply is read within [`SENTINEL_REPLY`] bytes (an address is a few
//!   dozen), so a broken or hostile Sentinel cannot make the lookup allocate more;
//! - with `rediss://` Sentinels, the Sentinels and the master are reached over TLS, with
//!   the one client configuration the `ssl_*` arguments give (the `tls` module).
//!
//! When every Sentinel failed, the error names each one with its reason.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, RedisError, RedisResult, Value};

#[cfg(feature = "tokio")]
use super::async_connection::AsyncConnection;
use super::connection::{Connection, Limits, Tls};

/// The most bytes a Sentinel's reply may take (beyond the framing every reply may have).
pub(crate) const SENTINEL_REPLY: usize = 1024;

/// The Sentinel nodes of one service, and how to reach the master they name.
pub(crate) struct Sentinels {
    /// The Sentinel nodes, with `sentinel_password` as their credentials.
    nodes: Vec<ConnectionInfo>,
    /// The service's name (`service_name`).
    service: String,
    /// The master's settings (database, credentials); its address is a Sentinel's answer.
    master: ConnectionInfo,
    /// The master is reached over TLS (the Sentinels are).
    master_tls: bool,
    /// The node asked first: the last one that answered.
    first: AtomicUsize,
}

/// One lookup in progress: which Sentinel to ask next, by when, and what failed so far.
struct Lookup<'a> {
    sentinels: &'a Sentinels,
    /// When the master's connection must be open.
    deadline: Instant,
    /// The Sentinel asked first (read once: another lookup may change it meanwhile).
    start: usize,
    /// Sentinels asked so far.
    asked: usize,
    /// `(sentinel, reason)` of each failed try.
    failures: Vec<(String, RedisError)>,
}

/// One Sentinel to ask: its index, address and the deadline of its answer.
struct Try<'a> {
    index: usize,
    node: &'a ConnectionInfo,
    by: Instant,
}

impl Sentinels {
    /// The Sentinels `nodes` of `service`, whose master is reached with `master`'s
    /// settings (its address is replaced by a Sentinel's answer), over TLS if `master_tls`.
    pub(crate) fn new(
        nodes: Vec<ConnectionInfo>,
        service: String,
        master: ConnectionInfo,
        master_tls: bool,
    ) -> Self {
        Sentinels {
            nodes,
            service,
            master,
            master_tls,
            first: AtomicUsize::new(0),
        }
    }

    fn lookup(&self, deadline: Instant) -> Lookup<'_> {
        Lookup {
            sentinels: self,
            deadline,
            start: self.first.load(Ordering::Relaxed),
            asked: 0,
            failures: Vec::new(),
        }
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME <service>`, packed.
    fn question(&self) -> Vec<u8> {
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.service)
            .get_packed_command()
    }

    /// The limits of a connection to a Sentinel whose answer is due by `by`.
    fn sentinel_limits(by: Instant) -> Limits {
        Limits {
            timeout: by
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
            max_value_size: SENTINEL_REPLY,
        }
    }

    /// The master's connection settings from a Sentinel's answer (`[host, port]`).
    fn master_info(&self, answer: Value) -> RedisResult<ConnectionInfo> {
        let answer = answer.extract_error()?;
        let address: Option<(String, u16)> = redis::from_redis_value(answer)?;
        let Some((host, port)) = address else {
            return Err(RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "the Sentinel knows no such service",
                self.service.clone(),
            )));
        };
        let addr = if self.master_tls {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, port)
        };
        Ok(self.master.clone().set_addr(addr))
    }

    /// Opens a connection to the current master, within `limits.timeout` in all (see the
    /// [module docs](self)).
    pub(crate) fn open(&self, limits: Limits, tls: &Tls) -> RedisResult<Connection> {
        let question = self.question();
        let role = role_question();
        let mut lookup = self.lookup(Instant::now() + limits.timeout);
        while let Some(ask) = lookup.next() {
            let limits_of_sentinel = Self::sentinel_limits(ask.by);
            let opened = Connection::open_until(ask.node, limits_of_sentinel, tls, ask.by)
                .and_then(|mut sentinel| sentinel.call_by(&question, ask.by))
                .and_then(|answer| self.master_info(answer))
                .and_then(|master| {
                    let mut conn = Connection::open_until(&master, limits, tls, lookup.deadline)?;
                    check_role(&master, conn.call_by(&role, lookup.deadline)?)?;
                    Ok(conn)
                });
            if let Some(conn) = lookup.outcome(&ask, opened) {
                return Ok(conn);
            }
        }
        Err(lookup.failed())
    }

    /// Opens an async connection to the current master before `deadline` (see the
    /// [module docs](self)).
    #[cfg(feature = "tokio")]
    pub(crate) async fn open_async(
        &self,
        limits: Limits,
        tls: &Tls,
        deadline: Instant,
    ) -> RedisResult<AsyncConnection> {
        let question = self.question();
        let role = role_question();
        let mut lookup = self.lookup(deadline);
        while let Some(ask) = lookup.next() {
            let limits_of_sentinel = Self::sentinel_limits(ask.by);
            let opened = async {
                let mut sentinel =
                    AsyncConnection::open(ask.node, limits_of_sentinel, tls, ask.by).await?;
                let master = self.master_info(sentinel.call_by(&question, ask.by).await?)?;
                let mut conn = AsyncConnection::open(&master, limits, tls, deadline).await?;
                check_role(&master, conn.call_by(&role, deadline).await?)?;
                Ok(conn)
            }
            .await;
            if let Some(conn) = lookup.outcome(&ask, opened) {
                return Ok(conn);
            }
        }
        Err(lookup.failed())
    }
}

impl<'a> Lookup<'a> {
    /// The next Sentinel to ask and its share of the time left; `None` when every one was
    /// asked or no time is left.
    fn next(&mut self) -> Option<Try<'a>> {
        let nodes = &self.sentinels.nodes;
        let remaining = nodes.len().checked_sub(self.asked).filter(|n| *n > 0)?;
        let now = Instant::now();
        let left = self.deadline.checked_duration_since(now)?;
        if left.is_zero() {
            return None;
        }
        let index = (self.start + self.asked) % nodes.len();
        self.asked += 1;
        let share = left / u32::try_from(remaining).unwrap_or(u32::MAX);
        Some(Try {
            index,
            node: &nodes[index],
            by: now + share,
        })
    }

    /// Records what asking `ask` came to: a success makes it the Sentinel asked first
    /// from now on, and is returned.
    fn outcome<T>(&mut self, ask: &Try<'_>, outcome: RedisResult<T>) -> Option<T> {
        match outcome {
            Ok(value) => {
                self.sentinels.first.store(ask.index, Ordering::Relaxed);
                Some(value)
            }
            Err(error) => {
                let sentinel = ask.node.addr().to_string();
                tracing::debug!(%sentinel, %error, "redis Sentinel lookup failed; asking the next Sentinel");
                self.failures.push((sentinel, error));
                None
            }
        }
    }

    /// The error of a lookup where every Sentinel failed (or the time ran out): an I/O
    /// error (the service is unreachable, for `dead_retry`) when every failure was one.
    fn failed(self) -> RedisError {
        let all_io = self.failures.iter().all(|(_, error)| error.is_io_error());
        let mut detail: Vec<String> = self
            .failures
            .iter()
            .map(|(sentinel, error)| format!("Sentinel {sentinel}: {error}"))
            .collect();
        let unasked = self.sentinels.nodes.len() - self.asked;
        if unasked > 0 {
            detail.push(format!("{unasked} not asked: no time left"));
        }
        RedisError::from((
            if all_io {
                ErrorKind::Io
            } else {
                ErrorKind::MasterNameNotFoundBySentinel
            },
            "no Sentinel named a reachable master",
            detail.join("; "),
        ))
    }
}

/// `ROLE`, packed.
fn role_question() -> Vec<u8> {
    redis::cmd("ROLE").get_packed_command()
}

/// A master answers `ROLE` with `["master", ...]`.
fn check_role(master: &ConnectionInfo, role: Value) -> RedisResult<()> {
    let role = role.extract_error()?;
    let is_master = match &role {
        Value::Array(fields) => match fields.first() {
            Some(Value::BulkString(name)) => name.as_slice() == b"master",
            Some(Value::SimpleString(name)) => name == "master",
            _ => false,
        },
        _ => false,
    };
    if is_master {
        return Ok(());
    }
    Err(RedisError::from((
        ErrorKind::Client,
        "the server a Sentinel named as master is not one",
        master.addr().to_string(),
    )))
}
