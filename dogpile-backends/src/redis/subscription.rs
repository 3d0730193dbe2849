//! Pub/sub for a region's shared invalidation (`CacheBackend::publish` and `subscribe`):
//! `PUBLISH` on a pooled connection, and `SUBSCRIBE` on a connection of its own to the one
//! server (direct or the Sentinel master), read by the same bounded reader as every reply,
//! so a message is limited by `max_value_size` and must arrive whole within its wait.
//! A cluster's regions are not pushed to (their processes poll the record).

use std::time::Duration;

use dogpile_core::backend::Subscription;
use dogpile_core::{Error, Result};
use redis::{ConnectionLike, Value};

use super::connection::Connection;
use super::pool::{Connect, ServerConnector};

/// A connection subscribed to one channel.
pub(crate) struct RedisSubscription {
    conn: Connection,
    channel: String,
    describe: String,
}

impl RedisSubscription {
    /// Opens a connection to the server and subscribes it to `channel`.
    pub(crate) fn open(
        connector: &ServerConnector,
        channel: &str,
        describe: &str,
    ) -> Result<RedisSubscription> {
        let failed = |error: redis::RedisError| {
            Error::backend(describe, format!("SUBSCRIBE {channel}: {error}"))
        };
        let mut conn = connector.connect().map_err(failed)?;
        let mut cmd = redis::cmd("SUBSCRIBE");
        cmd.arg(channel);
        conn.req_packed_command(&cmd.get_packed_command())
            .map_err(failed)?;
        Ok(RedisSubscription {
            conn,
            channel: channel.to_owned(),
            describe: describe.to_owned(),
        })
    }
}

impl Subscription for RedisSubscription {
    fn next(&mut self, wait: Duration) -> Result<Option<Vec<u8>>> {
        let message = self.conn.listen(wait).map_err(|error| {
            let text = format!("SUBSCRIBE {}: {error}", self.channel);
            Error::backend(&self.describe, text)
        })?;
        // Anything else the server pushes on the connection is an empty message.
        Ok(message.map(|message| match pushed(message) {
            Some(Value::BulkString(bytes)) => bytes,
            _ => Vec::new(),
        }))
    }
}

/// The payload of a message pushed to a subscribed connection (`["message", channel,
/// payload]`, RESP2 or RESP3; `Nil` when it has none); `None` for anything else the server
/// sends there (a subscription's confirmation, a pong).
pub(super) fn pushed(message: Value) -> Option<Value> {
    let (Value::Array(parts) | Value::Push { data: parts, .. }) = message else {
        return None;
    };
    let mut parts = parts.into_iter();
    if !matches!(parts.next(), Some(Value::BulkString(kind)) if kind == b"message") {
        return None;
    }
    Some(parts.nth(1).unwrap_or(Value::Nil))
}
