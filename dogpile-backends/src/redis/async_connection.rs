//! The async twin of the bounded [`Connection`](super::connection::Connection): one
//! connection to one redis server on tokio's sockets, with the same limits, from the same
//! parser (the `resp` module).
//!
//! - a **deadline** per call: the whole exchange (writing the command, reading the last
//!   byte of its reply) runs under one `tokio::time::timeout_at`, so a server that
//!   trickles, stalls or never reads cannot hold a call past `socket_timeout`;
//! - the **byte budget** of `max_value_size` and the nesting and line limits, which are
//!   the parser's;
//! - a connection that saw any failure, or whose call was dropped midway (a cancelled
//!   future), is closed and never used again: a late reply is never read as another
//!   call's.
//!
//! TLS (`rediss://`) goes through tokio-rustls with the very client configuration the
//! blocking connection uses (the `tls` module builds it once, from the `ssl_*`
//! arguments). A host given by name is resolved by tokio, which asks the system resolver
//! on its blocking pool: once per new connection, never per command (an IP address is not
//! resolved).

use std::time::Instant;

use redis::{ConnectionAddr, ConnectionInfo, RedisResult, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::connection::{unsupported, Tls};
use super::resp::{not_connected, timed_out, Call, Limits, Replies, Setup};

/// A byte stream a connection runs on (TCP, TLS over TCP, a Unix socket).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An async connection to one redis server (see the [module docs](self)).
pub(crate) struct AsyncConnection {
    stream: Box<dyn Io>,
    limits: Limits,
    replies: Replies,
    /// False once a call failed or was dropped midway.
    open: bool,
}

impl AsyncConnection {
    /// Connects to `info`'s server, authenticates and selects its database, all before
    /// `deadline`.
    pub(crate) async fn open(
        info: &ConnectionInfo,
        limits: Limits,
        tls: &Tls,
        deadline: Instant,
    ) -> RedisResult<AsyncConnection> {
        let stream = tokio::time::timeout_at(deadline.into(), connect(info, tls))
            .await
            .map_err(|_| timed_out())??;
        let mut conn = AsyncConnection {
            stream,
            limits,
            replies: Replies::new(limits.max_value_size),
            open: true,
        };
        for setup in Setup::commands(info) {
            let call = Call::new(&limits, deadline, 0, 1);
            setup.check(conn.call_until(&setup.packed, call).await?.pop())?;
        }
        Ok(conn)
    }

    /// Sends `packed` and reads `skip + count` replies, returning the last `count`,
    /// within `socket_timeout` and the byte budget. Any failure closes the connection.
    pub(crate) async fn call(
        &mut self,
        packed: &[u8],
        skip: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let deadline = Instant::now() + self.limits.timeout;
        let call = Call::new(&self.limits, deadline, skip, count);
        self.call_until(packed, call).await
    }

    /// Sends one command and reads its reply, all before `deadline`.
    pub(crate) async fn call_by(&mut self, packed: &[u8], deadline: Instant) -> RedisResult<Value> {
        Ok(self
            .calls_by(packed, 1, deadline)
            .await?
            .pop()
            .unwrap_or(Value::Nil))
    }

    /// Sends `packed` and reads `count` replies, all before `deadline`.
    pub(crate) async fn calls_by(
        &mut self,
        packed: &[u8],
        count: usize,
        deadline: Instant,
    ) -> RedisResult<Vec<Value>> {
        let call = Call::new(&self.limits, deadline, 0, count);
        self.call_until(packed, call).await
    }

    /// Sends `packed` and reads the replies `call` asks for, before its deadline.
    async fn call_until(&mut self, packed: &[u8], mut call: Call) -> RedisResult<Vec<Value>> {
        if !self.open {
            return Err(not_connected());
        }
        // Closed until the call completes: one dropped midway leaves it closed.
        self.open = false;
        let deadline = call.deadline;
        let outcome = tokio::time::timeout_at(deadline.into(), self.exchange(packed, &mut call))
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        self.open = outcome.is_ok();
        outcome
    }

    async fn exchange(&mut self, packed: &[u8], call: &mut Call) -> RedisResult<Vec<Value>> {
        self.stream.write_all(packed).await?;
        self.stream.flush().await?;
        let mut values = Vec::new();
        while let Some(want) = self.replies.take(call, &mut values)? {
            let room = self.replies.room(call, want)?;
            let n = self.stream.read(room).await?;
            self.replies.filled(call, n)?;
        }
        Ok(values)
    }
}

#[cfg_attr(not(feature = "tls"), allow(unused_variables))]
async fn connect(info: &ConnectionInfo, tls: &Tls) -> RedisResult<Box<dyn Io>> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => Ok(Box::new(tcp(host, *port).await?)),
        #[cfg(feature = "tls")]
        ConnectionAddr::TcpTls { host, port, .. } if tls.is_some() => {
            let config = tls.clone().expect("checked by the guard");
            let tcp = tcp(host, *port).await?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(super::tls::server_name(host)?, tcp)
                .await?;
            Ok(Box::new(stream))
        }
        #[cfg(unix)]
        ConnectionAddr::Unix(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
        other => Err(unsupported(other)),
    }
}

async fn tcp(host: &str, port: u16) -> RedisResult<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
