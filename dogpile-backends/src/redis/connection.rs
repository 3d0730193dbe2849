//! A connection to one redis server whose every call is bounded in time and in memory.
//!
//! The `redis` crate's own synchronous connection bounds each `read(2)` by a socket
//! timeout, not a whole reply, and reads whatever a reply announces: a server that
//! trickles a byte every half second holds a call for as long as it likes, and an endless
//! line or a bulk string announcing a gigabyte grows memory until the allocation fails.
//! It cannot be given another stream to read from, and has no size limit. Its async
//! connection has the same parser (so a timeout around it bounds time but not memory).
//!
//! So this module speaks RESP2 itself, on the crate's types: commands are packed by
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

/// How a connection's calls are bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The longest a call (connecting included) may take.
    pub(crate) timeout: Duration,
    /// The largest value, and (with [`REPLY_FRAMING`] more) the most reply bytes, one call
    /// may read.
    pub(crate) max_value_size: usize,
}

/// Bytes a reply may take beyond `max_value_size`, for the framing around its values
/// (`$<length>\r\n`, ...).
const REPLY_FRAMING: usize = 4096;
/// What holding one reply value costs beyond its bytes (the `Value` and the allocation
/// of its data), counted against the budget.
const VALUE_COST: usize = std::mem::size_of::<Value>() + 32;
/// How deeply a reply may nest arrays (the backend's replies nest at most two deep).
const MAX_NESTING: usize = 8;
/// The longest status, error or integer line read.
const MAX_LINE: usize = 64 * 1024;
/// How much is read at a time while looking for a line end.
const CHUNK: usize = 16 * 1024;
/// The most read at a time into a bulk string (memory grows with what arrives).
const MAX_READ: usize = 256 * 1024;

/// The TLS client configuration of a `rediss://` server (`None`: plain connections only).
#[cfg(feature = "tls")]
pub(crate) type Tls = Option<std::sync::Arc<rustls::ClientConfig>>;
/// Without the `tls` feature there is nothing to configure.
#[cfg(not(feature = "tls"))]
pub(crate) type Tls = ();

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
    /// Bytes received and not parsed yet: `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    /// The socket's read and write timeouts as last set.
    read_timeout: Duration,
    write_timeout: Duration,
    open: bool,
}

/// The bounds of the call in progress.
struct Call {
    deadline: Instant,
    budget: usize,
}

fn timed_out() -> RedisError {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no complete reply within socket_timeout",
    )
    .into()
}

fn protocol(what: &'static str, detail: String) -> RedisError {
    RedisError::from((ErrorKind::Parse, what, detail))
}

impl Connection {
    /// Connects to `info`'s server, authenticates and selects its database, all within
    /// `limits.timeout`.
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    pub(crate) fn open(
        info: &ConnectionInfo,
        limits: Limits,
        tls: &Tls,
    ) -> RedisResult<Connection> {
        let deadline = Instant::now() + limits.timeout;
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
            other => {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "unsupported address",
                    other.to_string(),
                )))
            }
        };
        stream.set_timeouts(Some(limits.timeout), Some(limits.timeout))?;
        let mut conn = Connection {
            stream,
            limits,
            db: 0,
            buf: Vec::new(),
            start: 0,
            read_timeout: limits.timeout,
            write_timeout: limits.timeout,
            open: true,
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = settings.username() {
                auth.arg(username);
            }
            auth.arg(password);
            if let Some(Value::ServerError(error)) = conn
                .call_until(&auth.get_packed_command(), 0, 1, deadline)?
                .pop()
            {
                return Err(RedisError::from((
                    ErrorKind::AuthenticationFailed,
                    "authentication failed",
                    error.to_string(),
                )));
            }
        }
        if settings.db() != 0 {
            let select = redis::cmd("SELECT").arg(settings.db()).get_packed_command();
            if let Some(Value::ServerError(error)) = conn.call_until(&select, 0, 1, deadline)?.pop()
            {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "cannot select the database",
                    error.to_string(),
                )));
            }
        }
        conn.db = settings.db();
        Ok(conn)
    }

    /// Sends `packed` and reads `skip + count` replies, returning the last `count`, all
    /// before `deadline` and within the byte budget. Any failure closes the connection.
    fn call_until(
        &mut self,
        packed: &[u8],
        skip: usize,
        count: usize,
        deadline: Instant,
    ) -> RedisResult<Vec<Value>> {
        if !self.open {
            return Err(io::Error::from(io::ErrorKind::NotConnected).into());
        }
        let mut call = Call {
            deadline,
            budget: self.limits.max_value_size.saturating_add(REPLY_FRAMING),
        };
        let outcome = self.exchange(packed, skip, count, &mut call);
        if outcome.is_err() {
            self.open = false;
        } else if self.start < self.buf.len() {
            // More than was asked for: the server is out of step with its requests.
            self.open = false;
            return Err(protocol(
                "unexpected bytes after the reply",
                format!("{} bytes", self.buf.len() - self.start),
            ));
        }
        outcome
    }

    fn call(&mut self, packed: &[u8], skip: usize, count: usize) -> RedisResult<Vec<Value>> {
        let deadline = Instant::now() + self.limits.timeout;
        self.call_until(packed, skip, count, deadline)
    }

    fn exchange(
        &mut self,
        packed: &[u8],
        skip: usize,
        count: usize,
        call: &mut Call,
    ) -> RedisResult<Vec<Value>> {
        self.send(packed, call)?;
        let mut values = Vec::with_capacity(count);
        for n in 0..skip + count {
            let value = self.value(call, 0)?;
            if n >= skip {
                values.push(value);
            }
        }
        // A fully read buffer starts over (and a large one is given back).
        if self.start == self.buf.len() {
            self.start = 0;
            self.buf.clear();
            if self.buf.capacity() > CHUNK * 4 {
                self.buf = Vec::new();
            }
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
        let left = call.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
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

    /// Reads more bytes into `buf`, at most `want` (and at least one), before the deadline.
    fn fill(&mut self, call: &mut Call, want: usize) -> RedisResult<()> {
        if call.budget == 0 {
            return Err(too_large(self.limits.max_value_size));
        }
        if let Some(t) = Self::timeout_for(self.read_timeout, self.limits.timeout, call)? {
            self.stream.set_timeouts(Some(t), None)?;
            self.read_timeout = t;
        }
        let want = want.clamp(1, MAX_READ).min(call.budget);
        let len = self.buf.len();
        self.buf.resize(len + want, 0);
        let read = loop {
            match self.stream.read(&mut self.buf[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match read {
            Ok(0) => {
                self.buf.truncate(len);
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection before the reply was complete",
                )
                .into())
            }
            Ok(n) => {
                self.buf.truncate(len + n);
                call.budget -= n;
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(len);
                Err(deadline_error(e))
            }
        }
    }

    /// One line, without its `\r\n`.
    fn line(&mut self, call: &mut Call) -> RedisResult<Vec<u8>> {
        // Bytes after `start` known to hold no line end.
        let mut scanned = 0;
        loop {
            let pending = &self.buf[self.start..];
            if let Some(at) = pending[scanned..].windows(2).position(|w| w == b"\r\n") {
                let end = self.start + scanned + at;
                let line = self.buf[self.start..end].to_vec();
                self.start = end + 2;
                return Ok(line);
            }
            if pending.len() > MAX_LINE {
                return Err(protocol(
                    "reply line too long",
                    format!("more than {MAX_LINE} bytes without an end of line"),
                ));
            }
            scanned = pending.len().saturating_sub(1);
            self.compact();
            self.fill(call, CHUNK)?;
        }
    }

    /// Drops the parsed bytes at the front of `buf`.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Exactly `n` bytes and the `\r\n` after them.
    fn bulk(&mut self, n: usize, call: &mut Call) -> RedisResult<Vec<u8>> {
        let buffered = self.buf.len() - self.start;
        if n > self.limits.max_value_size || n + 2 > buffered + call.budget {
            return Err(too_large(self.limits.max_value_size));
        }
        while self.buf.len() - self.start < n + 2 {
            self.compact();
            let missing = n + 2 - self.buf.len();
            self.fill(call, missing)?;
        }
        let data = self.buf[self.start..self.start + n].to_vec();
        if &self.buf[self.start + n..self.start + n + 2] != b"\r\n" {
            return Err(protocol(
                "bulk string without its end of line",
                format!("{n} bytes"),
            ));
        }
        self.start += n + 2;
        Ok(data)
    }

    fn int(line: &[u8], what: &'static str) -> RedisResult<i64> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| protocol(what, String::from_utf8_lossy(line).into_owned()))
    }

    /// One reply value.
    fn value(&mut self, call: &mut Call, depth: usize) -> RedisResult<Value> {
        // A value costs memory beyond its bytes on the wire: a million `$1\r\nx\r\n`
        // would take 7 MB to send and several times that to hold.
        call.budget = call
            .budget
            .checked_sub(VALUE_COST)
            .ok_or_else(|| too_large(self.limits.max_value_size))?;
        let line = self.line(call)?;
        let Some((&kind, rest)) = line.split_first() else {
            return Err(protocol("empty reply line", String::new()));
        };
        match kind {
            b'+' if rest == b"OK" => Ok(Value::Okay),
            b'+' => Ok(Value::SimpleString(
                String::from_utf8_lossy(rest).into_owned(),
            )),
            b'-' => {
                // The crate's parser builds its error type from the line.
                let mut raw = line.clone();
                raw.extend_from_slice(b"\r\n");
                redis::parse_redis_value(&raw)
            }
            b':' => Self::int(rest, "malformed integer reply").map(Value::Int),
            b'$' => match Self::int(rest, "malformed bulk string length")? {
                -1 => Ok(Value::Nil),
                n if n < 0 => Err(protocol("negative bulk string length", n.to_string())),
                n => {
                    let n =
                        usize::try_from(n).map_err(|_| too_large(self.limits.max_value_size))?;
                    self.bulk(n, call).map(Value::BulkString)
                }
            },
            b'*' => match Self::int(rest, "malformed array length")? {
                -1 => Ok(Value::Nil),
                n if n < 0 => Err(protocol("negative array length", n.to_string())),
                n => {
                    if depth >= MAX_NESTING {
                        return Err(protocol("reply nested too deep", depth.to_string()));
                    }
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    // Each element costs at least VALUE_COST of the budget.
                    if n.saturating_mul(VALUE_COST) > call.budget {
                        return Err(too_large(self.limits.max_value_size));
                    }
                    let mut items = Vec::with_capacity(n.min(1024));
                    for _ in 0..n {
                        items.push(self.value(call, depth + 1)?);
                    }
                    Ok(Value::Array(items))
                }
            },
            other => Err(protocol(
                "unexpected reply type",
                format!("{:?}", other as char),
            )),
        }
    }
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

fn too_large(max: usize) -> RedisError {
    protocol(
        "reply larger than max_value_size",
        format!("more than {max} bytes; raise max_value_size if such values are expected"),
    )
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
