//! A connection to one redis server whose every call is bounded in time and in memory.
//!
//! The `redis` crate's own synchronous connection bounds each `read(2)` by a socket
//! timeout, not a whole reply, and reads whatever a reply announces: a server that
//! trickles a byte every half second holds a call for as long as it likes, and an endless
//! line or a bulk string announcing a gigabyte grows memory until the allocation fails.
//! It cannot be given another stream to read from, and has no size limit. Its async
//! connection has the same parser (so a timeout around it bounds time but not memory).
//!
//! So this module speaks RESP2 itself (the parser and its limits are the `resp` module's,
//! shared with the async connection), on the crate's types: commands are packed by
//! `redis::Cmd`/`redis::Pipeline`, replies come back as `redis::Value`, and the
//! connection implements `redis::ConnectionLike`, so everything above it (typed replies,
//! scripts, pipelines) is the crate's. What it adds:
//! - a **deadline** per call (`socket_timeout` from the start of the call to the last byte
//!   of its reply), whatever the server sends or withholds;
//! - a **byte budget** per call (`max_value_size`): a reply announcing more is refused
//!   before it is read, and an endless line stops at the budget; memory grows with the
//!   bytes actually received, never with what a reply announces;
//! - a connection that saw any failure closes itself ([`is_open`] is false from then
//!   on), so the pool drops it and no later call can read a late reply as its own.
//!
//! Other designs weighed: the crate's async connection under a tokio timeout would bound
//! time but not memory, and sync calls would need an internal runtime (a thread hop per
//! call, and `block_on` panics inside a caller's own tokio runtime). This connection
//! uses no runtime: a sync call inside an async task blocks its thread as any blocking
//! I/O does, and is bounded like any other.
//!
//! [`is_open`]: redis::ConnectionLike::is_open

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, RedisError, RedisResult, Value};

pub(crate) use super::resp::Limits;
use super::resp::{not_connected, timed_out, Call, Replies, Setup};

/// The TLS client configuration of a `rediss://` server (`None`: plain connections only).
#[cfg(feature = "tls")]
pub(crate) type Tls = Option<std::sync::Arc<rustls::ClientConfig>>;
/// Without the `tls` feature there is nothing to configure.
#[cfg(not(feature = "tls"))]
pub(crate) type Tls = ();

/// Whether connections made with `tls` are encrypted.
pub(crate) fn is_tls(tls: &Tls) -> bool {
    #[cfg(feature = "tls")]
    return tls.is_some();
    #[cfg(not(feature = "tls"))]
    {
        let () = tls;
        false
    }
}

/// The byte stream under a connection.
enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

fn set_socket_timeouts(
    s: &TcpStream,
    read: Option<Duration>,
    write: Option<Duration>,
) -> io::Result<()> {
    if let Some(t) = read {
        s.set_read_timeout(Some(t))?;
    }
    if let Some(t) = write {
        s.set_write_timeout(Some(t))?;
    }
    Ok(())
}

impl Stream {
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => set_socket_timeouts(s, read, write)?,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => set_socket_timeouts(&s.sock, read, write)?,
            #[cfg(unix)]
            Stream::Unix(s) => {
                if let Some(t) = read {
                    s.set_read_timeout(Some(t))?;
                }
                if let Some(t) = write {
                    s.set_write_timeout(Some(t))?;
                }
            }
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.flush(),
            #[cfg(unix)]
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// A connection to one redis server (see the [module docs](self)).
pub(crate) struct Connection {
    stream: Stream,
    limits: Limits,
    db: i64,
    /// Bytes received and not parsed yet, and the parser over them.
    replies: Replies,
    /// The socket's read and write timeouts as last set.
    read_timeout: Duration,
    write_timeout: Duration,
    open: bool,
}

impl Connection {
    /// Connects to `info`'s server, authenticates and selects its database, all within
    /// `limits.timeout`.
    pub(crate) fn open(
        info: &ConnectionInfo,
        limits: Limits,
        tls: &Tls,
    ) -> RedisResult<Connection> {
        Connection::open_until(info, limits, tls, Instant::now() + limits.timeout)
    }

    /// Connects to `info`'s server, authenticates and selects its database, all before
    /// `deadline`; later calls each have `limits.timeout`.
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    pub(crate) fn open_until(
        info: &ConnectionInfo,
        limits: Limits,
        tls: &Tls,
        deadline: Instant,
    ) -> RedisResult<Connection> {
        let stream = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Stream::Tcp(connect_tcp(host, *port, deadline)?),
            #[cfg(feature = "tls")]
            ConnectionAddr::TcpTls { host, port, .. } if tls.is_some() => {
                let config = tls.clone().expect("checked by the guard");
                let tcp = connect_tcp(host, *port, deadline)?;
                let conn = rustls::ClientConnection::new(config, super::tls::server_name(host)?)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let mut stream = rustls::StreamOwned::new(conn, tcp);
                handshake(&mut stream, deadline)?;
                Stream::Tls(Box::new(stream))
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            other => return Err(unsupported(other)),
        };
        stream.set_timeouts(Some(limits.timeout), Some(limits.timeout))?;
        let mut conn = Connection {
            stream,
            limits,
            db: 0,
            replies: Replies::new(limits.max_value_size),
            read_timeout: limits.timeout,
            write_timeout: limits.timeout,
            open: true,
        };
        for setup in Setup::commands(info) {
            let call = Call::new(&limits, deadline, 0, 1);
            setup.check(conn.call_until(&setup.packed, call)?.pop())?;
        }
        conn.db = info.redis_settings().db();
        Ok(conn)
    }

    /// Sends `packed` and reads the replies `call` asks for (`skip + count`, returning the
    /// last `count`), all before its deadline and within its byte budget. Any failure
    /// closes the connection.
    fn call_until(&mut self, packed: &[u8], mut call: Call) -> RedisResult<Vec<Value>> {
        if !self.open {
            return Err(not_connected());
        }
        let outcome = self.exchange(packed, &mut call);
        if outcome.is_err() {
            self.open = false;
        }
        outcome
    }

    /// Sends one command and reads its reply, all before `deadline`.
    pub(crate) fn call_by(&mut self, packed: &[u8], deadline: Instant) -> RedisResult<Value> {
        Ok(self
            .calls_by(packed, 1, deadline)?
            .pop()
            .unwrap_or(Value::Nil))
    }

    /// Sends `packed` and reads `count` replies, all before `deadline`.
    pub(crate) fn calls_by(
        &mut self,
        packed: &[u8],
        count: usize,
        deadline: Instant,
    ) -> RedisResult<Vec<Value>> {
        let call = Call::new(&self.limits, deadline, 0, count);
        self.call_until(packed, call)
    }

    fn call(&mut self, packed: &[u8], skip: usize, count: usize) -> RedisResult<Vec<Value>> {
        let deadline = Instant::now() + self.limits.timeout;
        let call = Call::new(&self.limits, deadline, skip, count);
        self.call_until(packed, call)
    }

    fn exchange(&mut self, packed: &[u8], call: &mut Call) -> RedisResult<Vec<Value>> {
        self.send(packed, call)?;
        self.receive(call)
    }

    /// Waits up to `wait` for one message pushed to a subscribed connection (`SUBSCRIBE`):
    /// `None` when none began to arrive; one that did must end by then too, and within the
    /// byte budget, or the connection closes.
    pub(crate) fn listen(&mut self, wait: Duration) -> RedisResult<Option<Value>> {
        if !self.open {
            return Err(not_connected());
        }
        let mut call = Call::new(&self.limits, Instant::now() + wait, 0, 1).listening();
        match self.receive(&mut call) {
            Ok(mut values) => Ok(values.pop()),
            Err(error) if error.is_timeout() && self.replies.nothing_received() => Ok(None),
            Err(error) => {
                self.open = false;
                Err(error)
            }
        }
    }

    /// A duplicate of this connection's socket, to ask without reading whether the server
    /// sent something not read yet, or closed it (see [`Unread`]).
    #[cfg(unix)]
    pub(crate) fn unread(&self) -> io::Result<Unread> {
        let fd: std::os::fd::OwnedFd = match &self.stream {
            Stream::Tcp(s) => s.try_clone()?.into(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.sock.try_clone()?.into(),
            Stream::Unix(s) => s.try_clone()?.into(),
        };
        Ok(Unread(fd))
    }

    /// Sends `packed` to a subscribed connection (a `PING`), within `socket_timeout`; its
    /// reply comes with the pushed messages, to [`listen`](Self::listen).
    pub(crate) fn send_only(&mut self, packed: &[u8]) -> RedisResult<()> {
        if !self.open {
            return Err(not_connected());
        }
        let call = Call::new(&self.limits, Instant::now() + self.limits.timeout, 0, 0);
        let sent = self.send(packed, &call);
        if sent.is_err() {
            self.open = false;
        }
        sent
    }

    /// Reads the replies `call` asks for, before its deadline and within its budget.
    fn receive(&mut self, call: &mut Call) -> RedisResult<Vec<Value>> {
        let mut values = Vec::new();
        while let Some(want) = self.replies.take(call, &mut values)? {
            if let Some(t) = Self::timeout_for(self.read_timeout, self.limits.timeout, &*call)? {
                self.stream.set_timeouts(Some(t), None)?;
                self.read_timeout = t;
            }
            let room = self.replies.room(call, want)?;
            let read = loop {
                match self.stream.read(room) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            let n = read.map_err(deadline_error)?;
            self.replies.filled(call, n)?;
        }
        Ok(values)
    }

    /// The timeout a blocking read or write started now may have so that it ends by the
    /// deadline; `None` if the socket's current one already does (within a small slack,
    /// so that a plain call makes no extra system call).
    fn timeout_for(
        current: Duration,
        full: Duration,
        call: &Call,
    ) -> RedisResult<Option<Duration>> {
        let left = call.time_left()?;
        let slack = full / 32;
        if current <= left + slack && current + slack >= left {
            Ok(None)
        } else {
            Ok(Some(left))
        }
    }

    fn send(&mut self, mut bytes: &[u8], call: &Call) -> RedisResult<()> {
        while !bytes.is_empty() {
            if let Some(t) = Self::timeout_for(self.write_timeout, self.limits.timeout, call)? {
                self.stream.set_timeouts(None, Some(t))?;
                self.write_timeout = t;
            }
            match self.stream.write(bytes) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(deadline_error(e)),
            }
        }
        self.stream.flush().map_err(deadline_error)?;
        Ok(())
    }
}

/// The address of a server at `host:port`, reached over TLS if `tls`.
pub(crate) fn tcp_address(host: String, port: u16, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    }
}

/// A subscribed connection's socket, duplicated so that another thread can ask, without
/// reading or changing its blocking mode, whether the server has sent bytes the connection
/// has not read yet, or closed it.
#[cfg(unix)]
pub(crate) struct Unread(std::os::fd::OwnedFd);

#[cfg(unix)]
impl Unread {
    /// True unless the connection is open and quiet: bytes are waiting to be read (or,
    /// over TLS, a record), the server closed it, or the socket failed.
    pub(crate) fn stirred(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut byte = 0u8;
        // SAFETY: the descriptor is owned by `self` and open; the buffer is one valid,
        // writable byte, and `recv` writes at most that many. `MSG_PEEK | MSG_DONTWAIT`
        // neither consumes the byte nor blocks, nor changes the descriptor's flags.
        let received = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if received < 0 {
            let error = io::Error::last_os_error();
            return !matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            );
        }
        // A byte waiting, or 0: the server closed the connection.
        true
    }
}

/// An address this client cannot connect to.
pub(crate) fn unsupported(addr: &ConnectionAddr) -> RedisError {
    RedisError::from((
        ErrorKind::InvalidClientConfig,
        "unsupported address",
        addr.to_string(),
    ))
}

/// A socket timeout is the call's deadline passing.
fn deadline_error(error: io::Error) -> RedisError {
    if matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        timed_out()
    } else {
        error.into()
    }
}

/// Completes the TLS handshake before `deadline`.
#[cfg(feature = "tls")]
fn handshake(
    stream: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    deadline: Instant,
) -> RedisResult<()> {
    while stream.conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        set_socket_timeouts(&stream.sock, Some(left), Some(left))?;
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(deadline_error)?;
    }
    Ok(())
}

fn connect_tcp(host: &str, port: u16, deadline: Instant) -> RedisResult<TcpStream> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(error) => last = Some(error),
        }
    }
    Err(last.map(deadline_error).unwrap_or_else(timed_out))
}

impl redis::ConnectionLike for Connection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        let mut values = self.call(cmd, 0, 1)?;
        Ok(values.pop().unwrap_or(Value::Nil))
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.call(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.db
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<()>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        self.open
    }
}
