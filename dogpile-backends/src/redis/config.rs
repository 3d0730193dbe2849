//! The arguments of the redis backends, parsed and checked, and the pools built from them.

use std::sync::Arc;
use std::time::Duration;

use dogpile_core::backend::Arguments;
use dogpile_core::{Error, Result};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use super::cluster::Cluster;
use super::connection::{Limits, Tls};
use super::pool::{Pool, Server, ServerConnector};
use super::sentinel::Sentinels;
use super::{Pools, Shared};
use crate::health::{Health, DEFAULT_DEAD_RETRY};

/// Arguments every redis backend accepts.
const COMMON: &[&str] = &[
    "username",
    "password",
    "socket_timeout",
    "connection_pool",
    "pool_size",
    "max_value_size",
    "redis_expiration_time",
    "distributed_lock",
    "lock_timeout",
    "lock_sleep",
    "lock_blocking_timeout",
    "lock_prefix",
    "thread_local_lock",
];

/// The default `socket_timeout`.
pub(crate) const DEFAULT_SOCKET_TIMEOUT: Duration = Duration::from_secs(2);
/// The default `max_value_size`: 16 MiB (redis itself takes up to 512 MiB, which no cache
/// should read into memory on one call).
pub(crate) const DEFAULT_MAX_VALUE_SIZE: usize = 16 << 20;
/// The default `connection_pool` size.
pub(crate) const DEFAULT_POOL_SIZE: u32 = 16;
/// The default `lock_timeout`.
pub(crate) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// The default `lock_sleep`.
pub(crate) const DEFAULT_LOCK_SLEEP: Duration = Duration::from_millis(100);
/// How much longer than `lock_timeout` a blocking acquire waits by default.
pub(crate) const LOCK_BLOCKING_MARGIN: Duration = Duration::from_secs(1);

/// The distributed lock's settings.
#[derive(Debug, Clone)]
pub(crate) struct LockSettings {
    /// Prefix of the lock key (`_lock` + cache key).
    pub(crate) prefix: String,
    /// The lock key's TTL: a dead holder's lock expires after this.
    pub(crate) timeout: Duration,
    /// The longest sleep between two attempts of a blocking acquire.
    pub(crate) sleep: Duration,
    /// How long a blocking acquire tries before giving up.
    pub(crate) blocking_timeout: Duration,
}

/// Settings shared by every flavour.
struct Common {
    username: Option<String>,
    password: Option<String>,
    timeout: Duration,
    pool_size: u32,
    expiration: Option<Duration>,
    lock: Option<LockSettings>,
    /// `dead_retry` (of the one server, or of each cluster node).
    dead_retry: Duration,
    max_value_size: usize,
}

impl Common {
    fn limits(&self) -> Limits {
        Limits {
            timeout: self.timeout,
            max_value_size: self.max_value_size,
        }
    }
}

fn common(args: &Arguments, distributed_lock_default: bool) -> Result<Common> {
    let timeout = args
        .seconds("socket_timeout")?
        .unwrap_or(DEFAULT_SOCKET_TIMEOUT);
    if timeout.is_zero() {
        return Err(args.invalid("socket_timeout", "must be greater than zero"));
    }
    // `pool_size` is memcached's name for the same thing, accepted here too.
    let (pool_argument, pool_size) = match (
        args.parse::<u32>("connection_pool")?,
        args.parse::<u32>("pool_size")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(args.invalid(
                "pool_size",
                "give either `connection_pool` or `pool_size` (the same setting), not both",
            ))
        }
        (None, Some(size)) => ("pool_size", size),
        (size, None) => ("connection_pool", size.unwrap_or(DEFAULT_POOL_SIZE)),
    };
    if pool_size == 0 {
        return Err(args.invalid(pool_argument, "must be at least 1"));
    }
    let expiration = args
        .seconds("redis_expiration_time")?
        .filter(|ttl| !ttl.is_zero());
    if expiration.is_some_and(|ttl| ttl < Duration::from_millis(1)) {
        return Err(args.invalid("redis_expiration_time", "must be at least 0.001 seconds"));
    }
    let dead_retry = args.seconds("dead_retry")?.unwrap_or(DEFAULT_DEAD_RETRY);
    let max_value_size = args
        .parse::<usize>("max_value_size")?
        .unwrap_or(DEFAULT_MAX_VALUE_SIZE);
    if max_value_size == 0 {
        return Err(args.invalid("max_value_size", "must be at least 1 (bytes)"));
    }
    // Parsed so that a malformed value is reported; the lock handle works from any thread
    // whatever its value (see the module docs).
    args.bool("thread_local_lock")?;
    let lock_timeout = args
        .seconds("lock_timeout")?
        .unwrap_or(DEFAULT_LOCK_TIMEOUT);
    if lock_timeout < Duration::from_millis(1) {
        return Err(args.invalid(
            "lock_timeout",
            "must be at least 0.001 seconds: a lock that never expires would block everybody \
             forever after its holder died",
        ));
    }
    let lock_sleep = args.seconds("lock_sleep")?.unwrap_or(DEFAULT_LOCK_SLEEP);
    if lock_sleep.is_zero() {
        return Err(args.invalid("lock_sleep", "must be greater than zero"));
    }
    let blocking_timeout = args
        .seconds("lock_blocking_timeout")?
        .unwrap_or(lock_timeout + LOCK_BLOCKING_MARGIN);
    let prefix = args.get("lock_prefix").unwrap_or("_lock").to_owned();
    let valid_prefix = (2..=10).contains(&prefix.chars().count())
        && prefix
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if !valid_prefix {
        return Err(args.invalid(
            "lock_prefix",
            format!(
                "`{prefix}` is not 2 to 10 characters of letters, digits, `_`, `-`, `.` or `:`"
            ),
        ));
    }
    let distributed = args
        .bool("distributed_lock")?
        .unwrap_or(distributed_lock_default);
    Ok(Common {
        username: args.get("username").map(str::to_owned),
        password: args.get("password").map(str::to_owned),
        timeout,
        pool_size,
        dead_retry,
        max_value_size,
        expiration,
        lock: distributed.then_some(LockSettings {
            prefix,
            timeout: lock_timeout,
            sleep: lock_sleep,
            blocking_timeout,
        }),
    })
}

fn known(extra: &[&'static str]) -> Vec<&'static str> {
    let mut known = extra.to_vec();
    known.extend_from_slice(COMMON);
    known
}

/// Applies `db`, `username` and `password` over what `info` (from a URL) says.
fn with_credentials(info: ConnectionInfo, db: Option<i64>, common: &Common) -> ConnectionInfo {
    let mut redis = info.redis_settings().clone();
    if let Some(db) = db {
        redis = redis.set_db(db);
    }
    if let Some(username) = &common.username {
        redis = redis.set_username(username);
    }
    if let Some(password) = &common.password {
        redis = redis.set_password(password);
    }
    info.set_redis_settings(redis)
}

/// The connection to the server at `url`. A TLS URL (`rediss://`, `valkeys://`, with
/// `#insecure` as its only fragment) is read here rather than by the `redis` crate, whose
/// parser accepts one only with its own TLS features: dogpile's TLS is its own (rustls, in
/// `tls.rs`), so the `tls` feature leaves the redis crate's features as the application
/// chose them (its `tls-rustls` without `tokio-rustls-comp` breaks `tokio-comp`).
fn server_info(url: &str) -> std::result::Result<ConnectionInfo, String> {
    let tls_scheme = url.split_once("://").and_then(|(scheme, rest)| {
        match scheme.to_ascii_lowercase().as_str() {
            "rediss" => Some(("redis", rest)),
            "valkeys" => Some(("valkey", rest)),
            _ => None,
        }
    });
    let Some((plain, rest)) = tls_scheme else {
        return url.into_connection_info().map_err(|e| e.to_string());
    };
    if !cfg!(feature = "tls") {
        return Err("a TLS URL needs dogpile's `tls` feature".into());
    }
    let (rest, insecure) = match rest.split_once('#') {
        None => (rest, false),
        Some((rest, "insecure")) => (rest, true),
        Some(_) => return Err("`#insecure` is the only fragment a TLS URL takes".into()),
    };
    let info = format!("{plain}://{rest}")
        .into_connection_info()
        .map_err(|e| e.to_string())?;
    match info.addr().clone() {
        ConnectionAddr::Tcp(host, port) => Ok(info.set_addr(ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            tls_params: None,
        })),
        other => Err(format!("a TLS URL names a TCP server, not {other}")),
    }
}

/// `redis`: one server, from `url` or `host`/`port`/`db`.
pub(crate) fn standalone(args: &Arguments) -> Result<Shared> {
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut own = vec![
        "url",
        "host",
        "port",
        "db",
        "dead_retry",
        "near_cache",
        "near_cache_max_entries",
    ];
    #[cfg(feature = "tls")]
    own.extend_from_slice(super::tls::ARGUMENTS);
    args.check_known(&known(&own))?;
    let common = common(args, false)?;
    let timeout = common.timeout;
    let db = args.parse::<i64>("db")?;
    let info = match args.get("url") {
        Some(url) => {
            for conflicting in ["host", "port"] {
                if args.get(conflicting).is_some() {
                    return Err(
                        args.invalid(conflicting, "give either `url` or `host`/`port`, not both")
                    );
                }
            }
            server_info(url.trim()).map_err(|e| {
                // `shown`: the URL's password never reaches the message.
                let url = args.shown("url").unwrap_or_default();
                args.invalid("url", format!("`{url}` is not a redis URL: {e}"))
            })?
        }
        None => {
            let host = args.get("host").unwrap_or("localhost").trim();
            if host.is_empty() {
                return Err(args.invalid("host", "must not be empty"));
            }
            let port = args.parse::<u16>("port")?.unwrap_or(6379);
            (host, port)
                .into_connection_info()
                .map_err(|e| args.invalid("host", e.to_string()))?
        }
    };
    let info = with_credentials(info, db, &common);
    let describe = describe_server("redis", info.addr(), info.redis_settings().db());
    let client = redis::Client::open(info).map_err(|e| {
        args.invalid(
            if args.get("url").is_some() {
                "url"
            } else {
                "host"
            },
            e.to_string(),
        )
    })?;
    let info = client.get_connection_info().clone();
    let tls = tls_config(args, info.addr())?;
    let mut shared = one_server(describe, Server::Direct(info), tls, common);
    shared.near = near_cache(args, timeout)?;
    Ok(shared)
}

/// The near cache of the `near_cache` and `near_cache_max_entries` arguments, if asked for.
fn near_cache(args: &Arguments, socket_timeout: Duration) -> Result<Option<super::near::Near>> {
    let max_entries = args.parse::<u64>("near_cache_max_entries")?;
    if !args.bool("near_cache")?.unwrap_or(false) {
        if max_entries.is_some() {
            return Err(args.invalid(
                "near_cache_max_entries",
                "applies with `near_cache = true` only",
            ));
        }
        return Ok(None);
    }
    let max_entries = max_entries.unwrap_or(super::near::DEFAULT_MAX_ENTRIES);
    super::near::Near::new(max_entries, socket_timeout)
        .map(Some)
        .map_err(|_| args.invalid("near_cache_max_entries", "must be at least 1"))
}

/// The shared state of a backend on one server (direct or through Sentinel): a pool of
/// blocking connections, and one of async connections with the same settings.
fn one_server(describe: String, server: Server, tls: Tls, common: Common) -> Shared {
    let server = Arc::new(server);
    #[cfg(feature = "tokio")]
    let async_pool = super::pool::AsyncPool::new(
        server.clone(),
        common.limits(),
        tls.clone(),
        common.pool_size,
    );
    let connector = ServerConnector {
        server,
        limits: common.limits(),
        tls,
    };
    #[cfg_attr(not(feature = "tokio"), allow(unused_mut))]
    let mut shared = settings(
        describe,
        Pools::Server(Pool::new(connector, common.pool_size, common.timeout)),
        common,
    );
    #[cfg(feature = "tokio")]
    {
        shared.async_pool = Some(async_pool);
    }
    shared
}

/// The TLS configuration for a `rediss://` address; the `ssl_*` arguments are refused for
/// a plain one (they would have no effect).
#[cfg(feature = "tls")]
fn tls_config(args: &Arguments, addr: &ConnectionAddr) -> Result<Tls> {
    match addr {
        ConnectionAddr::TcpTls { insecure, .. } => {
            super::tls::client_config(args, *insecure).map(Some)
        }
        _ => match super::tls::ARGUMENTS
            .iter()
            .find(|name| args.get(name).is_some())
        {
            Some(name) => Err(args.invalid(
                name,
                "applies to TLS connections only: give a `rediss://` URL",
            )),
            None => Ok(None),
        },
    }
}

/// Without the `tls` feature, `rediss://` URLs are refused when they are parsed.
#[cfg(not(feature = "tls"))]
fn tls_config(_args: &Arguments, _addr: &ConnectionAddr) -> Result<Tls> {
    Ok(())
}

fn describe_server(backend: &str, addr: &ConnectionAddr, db: i64) -> String {
    match db {
        0 => format!("{backend} at {addr}"),
        db => format!("{backend} at {addr} (db {db})"),
    }
}

/// The backend's shared state. A cluster is never marked down as a whole (each of its
/// nodes is, in the `cluster` module).
fn settings(describe: String, pools: Pools, common: Common) -> Shared {
    let dead_retry = match pools {
        Pools::Server(_) => common.dead_retry,
        Pools::Cluster(_) => Duration::ZERO,
    };
    Shared {
        health: Health::new(describe.clone(), dead_retry, common.timeout * 2),
        max_value_size: common.max_value_size,
        describe,
        pools,
        expiration: common.expiration,
        lock: common.lock,
        near: None,
        #[cfg(feature = "tokio")]
        async_pool: None,
    }
}

/// A node address given as `host:port` or as a URL.
fn node_url(node: &str) -> String {
    if node.contains("://") {
        node.to_owned()
    } else {
        format!("redis://{node}")
    }
}

/// Node `n` (from 0) of `argument` is not an address. The message shows the list with
/// its passwords redacted, never the node's raw text.
fn not_a_node(args: &Arguments, argument: &str, n: usize, error: &dyn std::fmt::Display) -> Error {
    let list = args.shown(argument).unwrap_or_default();
    args.invalid(
        argument,
        format!("node {} of `{list}` is not a node address: {error}", n + 1),
    )
}

/// `redis_cluster`: the nodes from `url` (comma separated) or `startup_nodes`.
pub(crate) fn cluster(args: &Arguments) -> Result<Shared> {
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut own = vec!["url", "startup_nodes", "dead_retry"];
    #[cfg(feature = "tls")]
    own.extend_from_slice(super::tls::ARGUMENTS);
    args.check_known(&known(&own))?;
    let common = common(args, false)?;
    let (argument, nodes) = match (args.list("url"), args.list("startup_nodes")) {
        (Some(_), Some(_)) => {
            return Err(args.invalid(
                "startup_nodes",
                "give either `url` or `startup_nodes`, not both",
            ))
        }
        (Some(nodes), None) => ("url", nodes),
        (None, Some(nodes)) => ("startup_nodes", nodes),
        (None, None) => {
            return Err(args.invalid(
                "url",
                "required: the cluster's nodes, comma separated (or give `startup_nodes`)",
            ))
        }
    };
    if nodes.is_empty() {
        return Err(args.invalid(argument, "names no node"));
    }
    let infos = node_infos(args, argument, &nodes)?;
    // A cluster has database 0 only.
    let infos: Vec<ConnectionInfo> = infos
        .into_iter()
        .map(|info| with_credentials(info, Some(0), &common))
        .collect();
    let describe = format!(
        "redis_cluster at {}",
        infos
            .iter()
            .map(|info| info.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let template = infos[0].clone();
    let tls = tls_config(args, template.addr())?;
    let cluster = Cluster::new(
        infos,
        template,
        tls,
        common.limits(),
        (
            common.dead_retry,
            usize::try_from(common.pool_size).unwrap_or(usize::MAX),
        ),
    );
    Ok(settings(
        describe,
        Pools::Cluster(Box::new(cluster)),
        common,
    ))
}

/// The nodes of `argument` (`host:port` or URLs), all TLS (`rediss://`) or none.
fn node_infos(args: &Arguments, argument: &str, nodes: &[String]) -> Result<Vec<ConnectionInfo>> {
    let mut infos: Vec<ConnectionInfo> = Vec::with_capacity(nodes.len());
    for (n, node) in nodes.iter().enumerate() {
        let info = server_info(&node_url(node)).map_err(|e| not_a_node(args, argument, n, &e))?;
        let tls = |info: &ConnectionInfo| matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        if infos.first().is_some_and(|first| tls(first) != tls(&info)) {
            return Err(args.invalid(
                argument,
                "mixes TLS (`rediss://`) and plain nodes: give all of them one way",
            ));
        }
        infos.push(info);
    }
    Ok(infos)
}

/// `redis_sentinel`: the master of `service_name` as the `sentinels` report it.
pub(crate) fn sentinel(args: &Arguments) -> Result<Shared> {
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut own = vec![
        "sentinels",
        "service_name",
        "db",
        "sentinel_password",
        "dead_retry",
    ];
    #[cfg(feature = "tls")]
    own.extend_from_slice(super::tls::ARGUMENTS);
    args.check_known(&known(&own))?;
    // As dogpile.cache: Sentinel setups default to the distributed lock.
    let common = common(args, true)?;
    let db = args.parse::<i64>("db")?;
    let sentinels = args.list("sentinels").ok_or_else(|| {
        args.invalid(
            "sentinels",
            "required: the Sentinel nodes, host:port, comma separated",
        )
    })?;
    if sentinels.is_empty() {
        return Err(args.invalid("sentinels", "names no Sentinel node"));
    }
    let mut nodes = node_infos(args, "sentinels", &sentinels)?;
    for info in &mut nodes {
        // A Sentinel's own credentials: the URL's, `sentinel_password` over its password.
        let own = info.redis_settings();
        let mut settings = redis::RedisConnectionInfo::default();
        if let Some(username) = own.username() {
            settings = settings.set_username(username);
        }
        if let Some(password) = args.get("sentinel_password").or(own.password()) {
            settings = settings.set_password(password);
        }
        *info = info.clone().set_redis_settings(settings);
    }
    let service = args
        .get("service_name")
        .unwrap_or("mymaster")
        .trim()
        .to_owned();
    if service.is_empty() {
        return Err(args.invalid("service_name", "must not be empty"));
    }
    let describe = format!(
        "redis_sentinel `{service}` via {}",
        nodes
            .iter()
            .map(|node| node.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let first = nodes[0].addr().clone();
    let master_tls = matches!(first, ConnectionAddr::TcpTls { .. });
    // The master's settings on a placeholder address (a Sentinel's answer replaces it).
    let master = with_credentials(
        first
            .clone()
            .into_connection_info()
            .map_err(|e| args.invalid("sentinels", e.to_string()))?,
        db,
        &common,
    );
    // The Sentinels and the master are reached alike, over TLS with `rediss://`.
    let tls = tls_config(args, &first)?;
    let server = Server::Sentinel(Sentinels::new(nodes, service, master, master_tls));
    Ok(one_server(describe, server, tls, common))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "tls")]
    fn tls_urls_are_read_without_the_redis_crates_tls() {
        let tls = |url: &str| match server_info(url).unwrap().addr().clone() {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => (host, port, insecure),
            other => panic!("{url}: not TLS: {other:?}"),
        };
        assert_eq!(tls("rediss://cache:6380/2"), ("cache".into(), 6380, false));
        assert_eq!(tls("REDISS://cache"), ("cache".into(), 6379, false));
        assert_eq!(tls("rediss://cache:1#insecure"), ("cache".into(), 1, true));
        assert_eq!(tls("valkeys://cache:7"), ("cache".into(), 7, false));
        let info = server_info("rediss://u:secret@cache:6380/3").unwrap();
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.redis_settings().username(), Some("u"));
        let err = server_info("rediss://cache#other").unwrap_err();
        assert!(err.contains("#insecure"), "{err}");
        assert!(matches!(
            server_info("redis://cache:6379").unwrap().addr(),
            ConnectionAddr::Tcp(..)
        ));
    }

    #[test]
    #[cfg(not(feature = "tls"))]
    fn tls_urls_need_the_tls_feature() {
        let err = server_info("rediss://cache:6380").unwrap_err();
        assert!(err.contains("`tls` feature"), "{err}");
    }
}
