//! The async path of the redis backends: what a region's `*_async` methods talk to.
//!
//! # A native async client, bounded as the blocking one
//!
//! A region configured once with `redis` (or `redis_sentinel`, whose new connections
//! find the master through the Sentinels with async calls, in the same bounds as the
//! blocking ones: the `sentinel` module) serves sync and async callers: its async
//! methods reach the same server with the same settings (`socket_timeout`,
//! `max_value_size`, `connection_pool`, `dead_retry`, the distributed lock) through a
//! pool of async connections on tokio's sockets. No thread is taken per request and
//! nothing runs on tokio's blocking pool. Configuring needs no runtime: no connection is
//! made before the first call.
//!
//! Why not the `redis` crate's multiplexed connection or its connection manager, as
//! the async issue first proposed: their parser is the crate's, which reads whatever a
//! reply announces (a bulk string announcing a gigabyte is allocated, an endless line
//! grows without end), and a timeout around them bounds time but not memory. The
//! blocking side replaced the crate's connection for that reason (issue 10), so the async
//! side keeps its guarantees by sharing its parser: the `resp` module parses RESP from
//! received bytes and holds every limit, and the blocking `connection` and the async
//! `async_connection` only move bytes. Each async call takes a whole connection from the
//! pool (`connection_pool` of them at most; a call waits for a free one within
//! `socket_timeout`) rather than sharing one multiplexed connection: a call then owns its
//! reply, its deadline and its byte budget, and a connection that failed or whose call
//! was cancelled is dropped without touching other calls. A hit is one round trip, as on
//! the blocking side.
//!
//! - `dead_retry` is shared: the server's health is one record for both paths, so a
//!   server marked down by a sync call fails async calls fast too, and the other way.
//! - The distributed lock is the blocking side's (`SET NX PX` with a
//!   [`lock_token`](dogpile_core::lock::lock_token), the same compare-and-delete script), taken
//!   and released with async calls; the region waits between tries on tokio's timer. A
//!   cancelled holder's lock is released by a task the region spawns.
//! - TLS (`rediss://`) uses tokio-rustls with the configuration built once from the
//!   `ssl_*` arguments for both paths.
//!
//! # `redis_cluster`
//!
//! A cluster's async calls are the blocking side's requests on async connections, per
//! node (the `cluster` module): the same slot map, redirections, `dead_retry` records and
//! limits, one round trip per node for a multi-key operation (a pipeline of `GET`s or
//! `DEL`s, as `MGET` and `DEL` of keys in several slots fail on a cluster).

use std::sync::Arc;

use dogpile_core::backend::{async_trait, AsyncCacheBackend};
use dogpile_core::lock::AsyncCacheMutex;
use dogpile_core::Result;
use redis::{FromRedisValue, RedisResult, Value};

use super::lock::RedisLock;
use super::near::Lookup;
use super::pool::Failure;
use super::{dels, gets, reply_count, wrong_type_is_miss, Pools, Shared};

/// The async twin of a `redis` or `redis_sentinel` backend (see the [module
/// docs](self)).
pub(crate) struct AsyncRedis {
    shared: Arc<Shared>,
}

impl AsyncRedis {
    /// The async twin of the backend that `shared` is the state of, if it has one.
    pub(crate) fn for_shared(shared: &Arc<Shared>) -> Option<Arc<dyn AsyncCacheBackend>> {
        if matches!(shared.pools, Pools::Server(_)) {
            shared.async_pool.as_ref()?;
        }
        Some(Arc::new(AsyncRedis {
            shared: shared.clone(),
        }))
    }
}

/// The one value of a single command's reply, server errors as errors.
fn one<T: FromRedisValue>(mut values: Vec<Value>) -> RedisResult<T> {
    let value = values.pop().unwrap_or(Value::Nil).extract_error()?;
    Ok(redis::from_redis_value(value)?)
}

impl Shared {
    /// Sends `packed` and reads `skip + count` replies, returning the last `count`: to one
    /// server on a pooled async connection, or each command to its cluster node.
    async fn exchange_async(
        &self,
        packed: &[u8],
        skip: usize,
        count: usize,
    ) -> std::result::Result<Vec<Value>, Failure> {
        match (&self.pools, &self.async_pool) {
            (Pools::Cluster(cluster), _) => cluster
                .request_async(packed, skip)
                .await
                .map_err(Failure::Redis),
            (Pools::Server(_), Some(pool)) => pool.request(packed, skip, count).await,
            // `AsyncRedis::for_shared` makes no twin of such a backend.
            (Pools::Server(_), None) => Err(Failure::Redis(redis::RedisError::from((
                redis::ErrorKind::Client,
                "no async connections",
            )))),
        }
    }

    /// Sends `packed` and reads `skip + count` replies on an async connection, then
    /// `convert`s them; the server's health is judged as on the blocking side.
    pub(crate) async fn request_async<T>(
        &self,
        what: &'static str,
        packed: &[u8],
        (skip, count): (usize, usize),
        convert: impl FnOnce(Vec<Value>) -> RedisResult<T>,
    ) -> Result<T> {
        if let Err(down) = self.health.check() {
            return Err(self.error(what, Failure::Down(down)));
        }
        let outcome = self
            .exchange_async(packed, skip, count)
            .await
            .and_then(|values| convert(values).map_err(Failure::Redis));
        self.judge(&outcome, |failure| match failure {
            Failure::Redis(error) => error.is_io_error(),
            _ => false,
        });
        outcome.map_err(|failure| self.error(what, failure))
    }

    /// Runs one command on an async connection.
    pub(crate) async fn query_async<T: FromRedisValue>(
        &self,
        what: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T> {
        self.request_async(what, &cmd.get_packed_command(), (0, 1), one)
            .await
    }

    /// Runs a pipeline of `count` commands whose replies are only checked for errors.
    async fn exec_pipeline_async(
        &self,
        what: &'static str,
        pipe: &redis::Pipeline,
        count: usize,
    ) -> Result<()> {
        self.request_async(what, &pipe.get_packed_pipeline(), (0, count), |values| {
            values
                .into_iter()
                .try_for_each(|value| value.extract_error().map(drop))
        })
        .await
    }
}

#[async_trait]
impl AsyncCacheBackend for AsyncRedis {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let ticket = match self.shared.near_lookup(key) {
            Lookup::Hit(value) => return Ok(Some(value)),
            Lookup::Miss(ticket) => ticket,
        };
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        let value: Option<Vec<u8>> = self
            .shared
            .request_async("GET", &cmd.get_packed_command(), (0, 1), |values| {
                wrong_type_is_miss(key, one(values))
            })
            .await?;
        self.shared.near_fill(key, ticket, value.as_deref());
        Ok(value)
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.shared.check_size(key, &value)?;
        let cmd = self.shared.set_cmd(key, &value);
        let set = self.shared.query_async("SET", &cmd).await;
        self.shared.near_forget([key]);
        set
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        let deleted = self.shared.query_async("DEL", &cmd).await;
        self.shared.near_forget([key]);
        deleted
    }

    async fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let tickets = match self.shared.near_lookup_multi(keys) {
            Ok(values) => return Ok(values),
            Err(tickets) => tickets,
        };
        if matches!(self.shared.pools, Pools::Cluster(_)) {
            // MGET across slots fails: a pipeline of GETs is one round trip per node.
            let packed = gets(keys).get_packed_pipeline();
            return self
                .shared
                .request_async("MGET", &packed, (0, keys.len()), |values| {
                    let values = values
                        .into_iter()
                        .map(|value| Ok(redis::from_redis_value(value.extract_error()?)?))
                        .collect::<RedisResult<Vec<Option<Vec<u8>>>>>()?;
                    reply_count(keys.len(), values)
                })
                .await;
        }
        let packed = redis::cmd("MGET").arg(keys).get_packed_command();
        let values = self
            .shared
            .request_async("MGET", &packed, (0, 1), |values| {
                reply_count(keys.len(), one(values)?)
            })
            .await?;
        self.shared.near_fill_multi(keys, &tickets, &values);
        Ok(values)
    }

    async fn set_multi(&self, items: Vec<(&str, Vec<u8>)>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let count = items.len();
        let items_keys: Vec<&str> = items.iter().map(|(key, _)| *key).collect();
        for (key, value) in items {
            self.shared.check_size(key, &value)?;
            pipe.add_command(self.shared.set_cmd(key, &value));
        }
        let keys: Vec<&str> = items_keys;
        let set = self
            .shared
            .exec_pipeline_async("SET (pipeline)", &pipe, count)
            .await;
        self.shared.near_forget(keys);
        set
    }

    async fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        if matches!(self.shared.pools, Pools::Cluster(_)) {
            // DEL across slots fails: a pipeline of DELs is one round trip per node.
            return self
                .shared
                .exec_pipeline_async("DEL", &dels(keys), keys.len())
                .await;
        }
        let deleted = self
            .shared
            .query_async("DEL", redis::cmd("DEL").arg(keys))
            .await;
        self.shared.near_forget(keys.iter().copied());
        deleted
    }

    fn get_mutex(&self, key: &str) -> Option<Box<dyn AsyncCacheMutex>> {
        let settings = self.shared.lock.as_ref()?;
        Some(Box::new(RedisLock::new(
            self.shared.clone(),
            &settings.prefix,
            key,
        )))
    }
}
