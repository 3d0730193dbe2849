//! Sentinel: the master of a service found through its Sentinel nodes, on this crate's
//! bounded connections (the `connection` module's, and `async_connection`'s for async
//! callers), never the `redis` crate's Sentinel client.
//!
//! Each new connection to the master is made by a lookup:
//! - the Sentinels are asked in turn (`SENTINEL GET-MASTER-ADDR-BY-NAME <service>`),
//!   starting with the one that answered last (the `turns` module);
//! - the master a Sentinel names is connected to, and asked `ROLE`: one that is not a
//!   master (a Sentinel may name an old master for a moment after a failover, as
//!   Sentinel's client guidelines warn) is refused, and the next Sentinel asked;
//! - the whole lookup, the master's connection included, runs within one
//!   `socket_timeout`, and each Sentinel gets an equal share of the time left when it is
//!   asked: a Sentinel that is down, hung or stopped costs one bounded try, and the next
//!   one is asked in time;
//! - a Sentinel's reply is read within [`SENTINEL_REPLY`] bytes (an address is a few
//!   dozen), so a broken or hostile Sentinel cannot make the lookup allocate more;
//! - with `rediss://` Sentinels, the Sentinels and the master are reached over TLS, with
//!   the one client configuration the `ssl_*` arguments give (the `tls` module).
//!
//! When every Sentinel failed, the error names each one with its reason.

use std::time::Instant;

use redis::{ConnectionInfo, ErrorKind, RedisError, RedisResult, Value};

#[cfg(feature = "tokio")]
use super::async_connection::AsyncConnection;
use super::connection::{tcp_address, Connection, Limits, Tls};
use super::turns::{Preferred, Turn, Turns};

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
    first: Preferred,
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
            first: Preferred::default(),
        }
    }

    fn lookup(&self, deadline: Instant) -> Turns<'_, ConnectionInfo> {
        Turns::new(&self.nodes, &self.first, deadline)
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME <service>`, packed.
    fn question(&self) -> Vec<u8> {
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.service)
            .get_packed_command()
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
        let addr = tcp_address(host, port, self.master_tls);
        Ok(self.master.clone().set_addr(addr))
    }

    /// Opens a connection to the current master, within `limits.timeout` in all (see the
    /// [module docs](self)).
    pub(crate) fn open(&self, limits: Limits, tls: &Tls) -> RedisResult<Connection> {
        let question = self.question();
        let role = role_question();
        let mut lookup = self.lookup(Instant::now() + limits.timeout);
        while let Some(ask) = lookup.next() {
            let limits_of_sentinel = Limits::until(ask.by, SENTINEL_REPLY);
            let opened = Connection::open_until(ask.node, limits_of_sentinel, tls, ask.by)
                .and_then(|mut sentinel| sentinel.call_by(&question, ask.by))
                .and_then(|answer| self.master_info(answer))
                .and_then(|master| {
                    let mut conn = Connection::open_until(&master, limits, tls, lookup.deadline)?;
                    check_role(&master, conn.call_by(&role, lookup.deadline)?)?;
                    Ok(conn)
                });
            if let Some(conn) = lookup.outcome(&ask, || sentinel_name(&ask), opened) {
                return Ok(conn);
            }
        }
        Err(failed(lookup))
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
            let limits_of_sentinel = Limits::until(ask.by, SENTINEL_REPLY);
            let opened = async {
                let mut sentinel =
                    AsyncConnection::open(ask.node, limits_of_sentinel, tls, ask.by).await?;
                let master = self.master_info(sentinel.call_by(&question, ask.by).await?)?;
                let mut conn = AsyncConnection::open(&master, limits, tls, deadline).await?;
                check_role(&master, conn.call_by(&role, deadline).await?)?;
                Ok(conn)
            }
            .await;
            if let Some(conn) = lookup.outcome(&ask, || sentinel_name(&ask), opened) {
                return Ok(conn);
            }
        }
        Err(failed(lookup))
    }
}

/// A Sentinel, as errors name it.
fn sentinel_name(ask: &Turn<'_, ConnectionInfo>) -> String {
    format!("Sentinel {}", ask.node.addr())
}

/// The error of a lookup where every Sentinel failed.
fn failed(lookup: Turns<'_, ConnectionInfo>) -> RedisError {
    lookup.failed(
        ErrorKind::MasterNameNotFoundBySentinel,
        "no Sentinel named a reachable master",
    )
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
