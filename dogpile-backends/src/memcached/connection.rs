//! One blocking connection to a memcached server, driving the sans-io [`protocol`]
//! with a `std::net::TcpStream`.
//!
//! Every command has one deadline, `socket_timeout` after it starts: no read or write
//! waits past what is left of it, so a server that trickles a reply one byte at a time
//! still ends the command at the deadline. (The socket's timeouts rest at 15/16 of
//! `socket_timeout` and are lowered only once a command has run longer than the rest, so
//! a command on a responsive server makes no `setsockopt` call: each costs about 0.7 µs
//! here, 4 % of a loopback hit.) A command sends its
//! whole request in one write when it is small (one packet on a `TCP_NODELAY` socket),
//! and reads replies through one [`ReadBuffer`].
//!
//! A connection on which anything failed (I/O error, timeout, protocol error, a value
//! over `max_value_size`, an error reply, bytes beyond the expected replies) is marked
//! broken, and the pool drops it: whatever the server still sends on it can never be read
//! as the answer to a later command.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::protocol::{self, shown, Mode, ProtocolError, ReadBuffer, Reply};

/// Values at most this long are copied into the request, to go out in one write; longer
/// ones are written from where they are.
const COPIED_VALUE: usize = 16 * 1024;

/// A write buffer grown past this for a large request is dropped after it.
const WRITE_BUFFER_AT_REST: usize = 64 * 1024;

/// Values written from where they are: (offset in the write buffer, value).
type Splices<'v> = Vec<(usize, &'v [u8])>;

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection could not be made.
    Connect(io::Error),
    /// Every pooled connection stayed in use for this long (`socket_timeout`).
    Busy { waited: Duration },
    /// The deadline passed before the reply was whole.
    Timeout { waited: Duration },
    /// The server closed the connection (before or in the middle of a reply).
    Closed,
    /// A read or write failed.
    Io(io::Error),
    /// The server sent something memcached never sends.
    Protocol(ProtocolError),
    /// A reply memcached sends, but not to this command.
    Unexpected {
        command: &'static str,
        reply: String,
    },
    /// The server answered with an error (`SERVER_ERROR ...`).
    Server(String),
    /// A value to store is larger than `max_value_size`; nothing was sent.
    ValueTooLarge { len: usize, limit: usize },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(error) => write!(f, "cannot connect: {error}"),
            Failure::Busy { waited } => write!(
                f,
                "no connection: every one of pool_size stayed in use for {:.3}s (raise \
                 pool_size)",
                waited.as_secs_f64()
            ),
            Failure::Timeout { waited } => write!(
                f,
                "no whole reply within socket_timeout ({:.3}s)",
                waited.as_secs_f64()
            ),
            Failure::Closed => write!(f, "the server closed the connection"),
            Failure::Io(error) => write!(f, "{error}"),
            Failure::Protocol(error) => write!(f, "{error}"),
            Failure::Unexpected { command, reply } => {
                write!(f, "protocol error: unexpected reply {reply} to {command}")
            }
            Failure::Server(message) if message.contains("too large") => write!(
                f,
                "the value is larger than the server's item size limit (1 MiB unless \
                 memcached was started with a larger -I, e.g. -I 8m): {message}"
            ),
            Failure::Server(message) => write!(f, "the server answered {message}"),
            Failure::ValueTooLarge { len, limit } => write!(
                f,
                "the value ({len} bytes) is larger than max_value_size ({limit} bytes), the \
                 item size limit this backend reads back; raise max_value_size (and \
                 memcached's -I) to cache it"
            ),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Connect(error) | Failure::Io(error) => Some(error),
            Failure::Protocol(error) => Some(error),
            _ => None,
        }
    }
}

impl From<ProtocolError> for Failure {
    fn from(error: ProtocolError) -> Self {
        Failure::Protocol(error)
    }
}

pub(crate) type Outcome<T> = std::result::Result<T, Failure>;

/// A connection and its buffers.
pub(crate) struct Connection {
    socket: Socket,
    read: ReadBuffer,
    write: Vec<u8>,
    timeout: Duration,
    max_value_size: usize,
    broken: bool,
    /// The opaque of the last request: meta replies must echo theirs, in order.
    opaque: u64,
    /// The opaque of the first request of the command being sent.
    first_opaque: u64,
}

impl Connection {
    /// Connects to `address` (`host:port`) within `timeout`.
    pub(crate) fn open(address: &str, timeout: Duration, max_value_size: usize) -> Outcome<Self> {
        let mut last = None;
        for addr in address.to_socket_addrs().map_err(Failure::Connect)? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    return Ok(Connection {
                        socket: Socket::new(stream, timeout).map_err(Failure::Connect)?,
                        read: ReadBuffer::new(),
                        write: Vec::with_capacity(512),
                        timeout,
                        max_value_size,
                        broken: false,
                        opaque: 0,
                        first_opaque: 1,
                    });
                }
                Err(error) => last = Some(error),
            }
        }
        Err(Failure::Connect(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address")
        })))
    }

    /// True once anything failed on this connection: it must not be used again.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// The value under `key` (`mg <key> v`).
    pub(crate) fn get(&mut self, key: &str) -> Outcome<Option<Vec<u8>>> {
        self.start();
        let opaque = self.next_opaque();
        protocol::get(&mut self.write, key, "v", opaque);
        let mut value = None;
        self.exchange(&[], |reply| match reply {
            Reply::Value { data, .. } => {
                value = Some(data.to_vec());
                Ok(true)
            }
            Reply::Miss => Ok(true),
            other => Err(unexpected("mg", other)),
        })?;
        Ok(value)
    }

    /// The values under `keys`, in one request (the start mark, then `get k1 k2 ...`);
    /// `found(i, value)` is called for each key `i` that has one. memcached answers in
    /// the order asked (once per key asked, for a key asked twice), so each value goes to
    /// the next key asked with its name; a value for any other key is a protocol error.
    pub(crate) fn get_many(
        &mut self,
        keys: &[&str],
        mut found: impl FnMut(usize, &[u8]),
    ) -> Outcome<()> {
        self.start();
        let opaque = self.next_opaque();
        protocol::get_many(&mut self.write, keys, opaque);
        let (mut next, mut marked) = (0, false);
        self.exchange(&[], |reply| match reply {
            Reply::Done | Reply::Miss if !marked => {
                marked = true;
                Ok(false)
            }
            Reply::Item { key, data } if marked => {
                let at = keys[next..]
                    .iter()
                    .position(|asked| asked.as_bytes() == key)
                    .ok_or_else(|| Failure::Unexpected {
                        command: "get",
                        reply: format!(
                            "VALUE for key {}, not asked for (or out of order)",
                            shown(key)
                        ),
                    })?;
                found(next + at, data);
                next += at + 1;
                Ok(false)
            }
            Reply::End if marked => Ok(true),
            other => Err(unexpected("get", other)),
        })
    }

    /// Stores `value` under `key` (`ms`); `false` when `add` found the key taken.
    pub(crate) fn store(&mut self, key: &str, value: &[u8], ttl: u32, mode: Mode) -> Outcome<bool> {
        self.check_size(value)?;
        self.start();
        let mut splices = Splices::new();
        self.push_store(key, value, ttl, mode, &mut splices);
        let mut stored = false;
        self.exchange(&splices, |reply| match reply {
            Reply::Done => {
                stored = true;
                Ok(true)
            }
            Reply::NotStored if mode == Mode::Add => Ok(true),
            other => Err(unexpected("ms", other)),
        })?;
        Ok(stored)
    }

    /// Stores every value in one pipelined request (answered in order, each reply with
    /// its request's opaque).
    pub(crate) fn store_many(&mut self, items: &[(&str, &[u8])], ttl: u32) -> Outcome<()> {
        if items.is_empty() {
            return Ok(());
        }
        for (_, value) in items {
            self.check_size(value)?;
        }
        self.start();
        let mut splices = Splices::new();
        for (key, value) in items {
            self.push_store(key, value, ttl, Mode::Set, &mut splices);
        }
        let mut stored = 0;
        self.exchange(&splices, |reply| match reply {
            Reply::Done => {
                stored += 1;
                Ok(stored == items.len())
            }
            other => Err(unexpected("a pipeline of ms", other)),
        })
    }

    /// Deletes every key in one pipelined request (`md`s answered in order).
    pub(crate) fn delete_many(&mut self, keys: &[&str]) -> Outcome<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.start();
        for key in keys {
            let opaque = self.next_opaque();
            protocol::delete(&mut self.write, key, None, opaque);
        }
        let mut answered = 0;
        self.exchange(&[], |reply| match reply {
            Reply::Done | Reply::NotFound => {
                answered += 1;
                Ok(answered == keys.len())
            }
            other => Err(unexpected("a pipeline of md", other)),
        })
    }

    fn check_size(&self, value: &[u8]) -> Outcome<()> {
        if value.len() > self.max_value_size {
            return Err(Failure::ValueTooLarge {
                len: value.len(),
                limit: self.max_value_size,
            });
        }
        Ok(())
    }

    /// Adds an `ms` and its value to the request: a small value copied in, a large one
    /// spliced in when sent.
    fn push_store<'v>(
        &mut self,
        key: &str,
        value: &'v [u8],
        ttl: u32,
        mode: Mode,
        splices: &mut Splices<'v>,
    ) {
        let opaque = self.next_opaque();
        protocol::set(&mut self.write, key, value.len(), ttl, mode, opaque);
        if value.len() <= COPIED_VALUE {
            self.write.extend_from_slice(value);
        } else {
            splices.push((self.write.len(), value));
        }
        self.write.extend_from_slice(b"\r\n");
    }

    /// The value under `key` with its CAS id (`mg <key> v c`).
    pub(crate) fn get_with_cas(&mut self, key: &str) -> Outcome<Option<(Vec<u8>, u64)>> {
        self.start();
        let opaque = self.next_opaque();
        protocol::get(&mut self.write, key, "v c", opaque);
        let mut value = None;
        self.exchange(&[], |reply| match reply {
            Reply::Value {
                data,
                cas: Some(cas),
            } => {
                value = Some((data.to_vec(), cas));
                Ok(true)
            }
            Reply::Miss => Ok(true),
            other => Err(unexpected("mg with c", other)),
        })?;
        Ok(value)
    }

    /// Deletes `key` (`md`), only while its CAS id is `cas` when given; true when an item
    /// was deleted.
    pub(crate) fn delete(&mut self, key: &str, cas: Option<u64>) -> Outcome<bool> {
        self.start();
        let opaque = self.next_opaque();
        protocol::delete(&mut self.write, key, cas, opaque);
        self.status("md", |reply| match reply {
            Reply::Done => Some(true),
            Reply::NotFound => Some(false),
            Reply::Exists if cas.is_some() => Some(false),
            _ => None,
        })
    }

    /// Sends the request and reads one status reply, read by `meaning`.
    fn status(
        &mut self,
        command: &'static str,
        meaning: impl Fn(&Reply<&[u8]>) -> Option<bool>,
    ) -> Outcome<bool> {
        let mut answer = false;
        self.exchange(&[], |reply| match meaning(&reply) {
            Some(yes) => {
                answer = yes;
                Ok(true)
            }
            None => Err(unexpected(command, reply)),
        })?;
        Ok(answer)
    }

    /// The opaque of the next request.
    fn next_opaque(&mut self) -> u64 {
        self.opaque = self.opaque.wrapping_add(1);
        self.opaque
    }

    /// The write buffer, emptied, for the next command.
    fn start(&mut self) -> &mut Vec<u8> {
        self.write.clear();
        self.first_opaque = self.opaque.wrapping_add(1);
        &mut self.write
    }

    /// Sends the request in the write buffer (with `splices`' values written in at their
    /// offsets) and hands each reply to `each` until it says the answer is complete, all
    /// within one deadline. Meta replies must echo their requests' opaques, in order. Any
    /// failure marks the connection broken.
    fn exchange(
        &mut self,
        splices: &[(usize, &[u8])],
        mut each: impl FnMut(Reply<&[u8]>) -> Outcome<bool>,
    ) -> Outcome<()> {
        if self.broken {
            // Never reached: the pool drops broken connections. Refuse rather than read
            // a stale reply.
            return Err(Failure::Closed);
        }
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut expected = self.first_opaque;
        let outcome = self.send(splices, deadline).and_then(|()| {
            loop {
                match self.read.next_reply(self.max_value_size)? {
                    Some((Reply::Error(message), _)) => return Err(Failure::Server(message)),
                    Some((reply, opaque)) => {
                        let meta = !matches!(reply, Reply::Item { .. } | Reply::End);
                        if meta {
                            if opaque != Some(expected) {
                                return Err(Failure::Unexpected {
                                    command: "this request",
                                    reply: format!(
                                        "a reply with opaque {opaque:?}, not this request's \
                                         {expected} (another request's reply)"
                                    ),
                                });
                            }
                            expected = expected.wrapping_add(1);
                        }
                        if each(reply)? {
                            break;
                        }
                    }
                    None => self.fill(deadline)?,
                }
            }
            if !self.read.unparsed().is_empty() {
                return Err(Failure::Unexpected {
                    command: "the last command",
                    reply: format!("bytes after its reply: {}", shown(self.read.unparsed())),
                });
            }
            Ok(())
        });
        match outcome {
            Ok(()) => {
                self.read.settle();
                if self.write.capacity() > WRITE_BUFFER_AT_REST {
                    self.write = Vec::with_capacity(512);
                }
                self.socket.rest().map_err(|error| {
                    self.broken = true;
                    Failure::Io(error)
                })
            }
            Err(Failure::Timeout { .. }) => {
                self.broken = true;
                Err(Failure::Timeout {
                    waited: started.elapsed(),
                })
            }
            Err(failure) => {
                self.broken = true;
                Err(failure)
            }
        }
    }

    fn send(&mut self, splices: &[(usize, &[u8])], deadline: Instant) -> Outcome<()> {
        let mut from = 0;
        for &(at, value) in splices {
            self.socket.write_all(&self.write[from..at], deadline)?;
            self.socket.write_all(value, deadline)?;
            from = at;
        }
        self.socket.write_all(&self.write[from..], deadline)
    }

    /// One read into the read buffer, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Instant) -> Outcome<()> {
        let n = self.socket.read(self.read.spare(), deadline)?;
        self.read.filled(n);
        Ok(())
    }
}

/// A socket whose reads and writes never wait past a deadline.
struct Socket {
    stream: TcpStream,
    /// The timeouts at rest, between commands.
    rest: Duration,
    /// The timeouts set on the socket now.
    read_timeout: Duration,
    write_timeout: Duration,
}

impl Socket {
    fn new(stream: TcpStream, timeout: Duration) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        let rest = (timeout - timeout / 16).max(Duration::from_micros(1));
        stream.set_read_timeout(Some(rest))?;
        stream.set_write_timeout(Some(rest))?;
        Ok(Socket {
            stream,
            rest,
            read_timeout: rest,
            write_timeout: rest,
        })
    }

    /// Some bytes into `buf` (at least one), waiting at most until `deadline`.
    fn read(&mut self, buf: &mut [u8], deadline: Instant) -> Outcome<usize> {
        loop {
            within(deadline, &mut self.read_timeout, |timeout| {
                self.stream.set_read_timeout(Some(timeout))
            })?;
            match self.stream.read(buf) {
                Ok(0) => return Err(Failure::Closed),
                Ok(n) => return Ok(n),
                Err(error) => check(error)?,
            }
        }
    }

    fn write_all(&mut self, mut bytes: &[u8], deadline: Instant) -> Outcome<()> {
        while !bytes.is_empty() {
            within(deadline, &mut self.write_timeout, |timeout| {
                self.stream.set_write_timeout(Some(timeout))
            })?;
            match self.stream.write(bytes) {
                Ok(0) => return Err(Failure::Closed),
                Ok(n) => bytes = &bytes[n..],
                Err(error) => check(error)?,
            }
        }
        Ok(())
    }

    /// Back to the timeouts at rest, after a command that lowered them.
    fn rest(&mut self) -> io::Result<()> {
        if self.read_timeout != self.rest {
            self.stream.set_read_timeout(Some(self.rest))?;
            self.read_timeout = self.rest;
        }
        if self.write_timeout != self.rest {
            self.stream.set_write_timeout(Some(self.rest))?;
            self.write_timeout = self.rest;
        }
        Ok(())
    }
}

/// Lowers a socket timeout (`current`, set with `set`) to what is left until `deadline`
/// when it is longer; a timeout error when nothing is left.
fn within(
    deadline: Instant,
    current: &mut Duration,
    set: impl FnOnce(Duration) -> io::Result<()>,
) -> Outcome<()> {
    let left = remaining(deadline)?;
    if *current > left {
        set(left).map_err(Failure::Io)?;
        *current = left;
    }
    Ok(())
}

/// What is left until `deadline`, or a timeout when nothing is.
fn remaining(deadline: Instant) -> Outcome<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Failure::Timeout {
            waited: Duration::ZERO,
        })
    } else {
        Ok(left)
    }
}

/// `Ok` for an interrupted call (to be repeated), a timeout for a socket timeout (the
/// caller's loop sees the deadline passed), and the error otherwise.
fn check(error: io::Error) -> Outcome<()> {
    match error.kind() {
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(()),
        _ => Err(Failure::Io(error)),
    }
}

fn unexpected(command: &'static str, reply: Reply<&[u8]>) -> Failure {
    let reply = match reply {
        Reply::Value { data, .. } => format!("VA (a value of {} bytes)", data.len()),
        Reply::Done => "HD".into(),
        Reply::Miss => "EN".into(),
        Reply::NotStored => "NS".into(),
        Reply::Exists => "EX".into(),
        Reply::NotFound => "NF".into(),
        Reply::Item { key, data } => {
            format!("VALUE for key {} ({} bytes)", shown(key), data.len())
        }
        Reply::End => "END".into(),
        Reply::Error(message) => message,
    };
    Failure::Unexpected { command, reply }
}
