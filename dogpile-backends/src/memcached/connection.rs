//! One blocking connection to a memcached server, driving the sans-io [`protocol`]
//! with a `std::net::TcpStream`.
//!
//! Every command has one deadline, `socket_timeout` after it starts: before each read
//! and write the socket's timeout is set to what is left of it, so a server that trickles
//! a reply one byte at a time still ends the command at the deadline. A command sends its
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

use super::protocol::{self, Mode, ProtocolError, ReadBuffer, Reply};

/// Requests at most this long are sent with their value in one write.
const ONE_WRITE: usize = 64 * 1024;

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection could not be made.
    Connect(io::Error),
    /// The pool had no connection to give within `socket_timeout` (r2d2's message, with
    /// the last connection error).
    Pool(String),
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
            Failure::Pool(error) => write!(f, "{error}"),
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
    stream: TcpStream,
    read: ReadBuffer,
    write: Vec<u8>,
    timeout: Duration,
    max_value_size: usize,
    broken: bool,
}

impl Connection {
    /// Connects to `address` (`host:port`) within `timeout`.
    pub(crate) fn open(address: &str, timeout: Duration, max_value_size: usize) -> Outcome<Self> {
        let mut last = None;
        for addr in address.to_socket_addrs().map_err(Failure::Connect)? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(Failure::Connect)?;
                    return Ok(Connection {
                        stream,
                        read: ReadBuffer::new(),
                        write: Vec::with_capacity(512),
                        timeout,
                        max_value_size,
                        broken: false,
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
        protocol::get(self.start(), key, "v");
        self.exchange(None, 1, |reply| match reply {
            Reply::Value { data, .. } => Ok(Some(data.to_vec())),
            Reply::Miss => Ok(None),
            other => Err(unexpected("mg", other)),
        })
        .map(|mut values| values.pop().flatten())
    }

    /// The values under `keys`, in one pipelined request ended by `mn`; `found(i, value)`
    /// is called for each key `i` that has one.
    pub(crate) fn get_many(
        &mut self,
        keys: &[&str],
        mut found: impl FnMut(usize, &[u8]),
    ) -> Outcome<()> {
        let out = self.start();
        for key in keys {
            protocol::get(out, key, "v");
        }
        protocol::noop(out);
        let mut index = 0;
        self.exchange(None, keys.len() + 1, |reply| {
            let at = index;
            index += 1;
            match reply {
                Reply::Value { data, .. } if at < keys.len() => found(at, data),
                Reply::Miss if at < keys.len() => {}
                Reply::Noop if at == keys.len() => {}
                other => return Err(unexpected("a pipeline of mg", other)),
            }
            Ok(())
        })
        .map(drop)
    }

    /// Stores `value` under `key` (`ms`); `false` when `add` found the key taken.
    pub(crate) fn store(&mut self, key: &str, value: &[u8], ttl: u32, mode: Mode) -> Outcome<bool> {
        if value.len() > self.max_value_size {
            return Err(Failure::ValueTooLarge {
                len: value.len(),
                limit: self.max_value_size,
            });
        }
        protocol::set(self.start(), key, value.len(), ttl, mode);
        self.exchange(Some(value), 1, |reply| match reply {
            Reply::Done => Ok(true),
            Reply::NotStored if mode == Mode::Add => Ok(false),
            other => Err(unexpected("ms", other)),
        })
        .map(|stored| stored[0])
    }

    /// The value under `key` with its CAS id (`mg <key> v c`).
    pub(crate) fn get_with_cas(&mut self, key: &str) -> Outcome<Option<(Vec<u8>, u64)>> {
        protocol::get(self.start(), key, "v c");
        self.exchange(None, 1, |reply| match reply {
            Reply::Value {
                data,
                cas: Some(cas),
            } => Ok(Some((data.to_vec(), cas))),
            Reply::Miss => Ok(None),
            other => Err(unexpected("mg with c", other)),
        })
        .map(|mut values| values.pop().flatten())
    }

    /// Whether `key` holds an item (`mg <key>`, no value sent back).
    pub(crate) fn exists(&mut self, key: &str) -> Outcome<bool> {
        protocol::get(self.start(), key, "");
        self.exchange(None, 1, |reply| match reply {
            Reply::Done => Ok(true),
            Reply::Miss => Ok(false),
            other => Err(unexpected("mg", other)),
        })
        .map(|found| found[0])
    }

    /// Deletes `key` (`md`), only while its CAS id is `cas` when given; true when an item
    /// was deleted.
    pub(crate) fn delete(&mut self, key: &str, cas: Option<u64>) -> Outcome<bool> {
        protocol::delete(self.start(), key, cas);
        self.exchange(None, 1, |reply| match reply {
            Reply::Done => Ok(true),
            Reply::NotFound => Ok(false),
            Reply::Exists if cas.is_some() => Ok(false),
            other => Err(unexpected("md", other)),
        })
        .map(|deleted| deleted[0])
    }

    /// The write buffer, emptied, for the next request.
    fn start(&mut self) -> &mut Vec<u8> {
        self.write.clear();
        &mut self.write
    }

    /// Sends the request in the write buffer (then `value` and `\r\n`, when given) and
    /// reads `replies` replies, each handed to `each`, all within one deadline. Any
    /// failure marks the connection broken.
    fn exchange<T>(
        &mut self,
        value: Option<&[u8]>,
        replies: usize,
        mut each: impl FnMut(Reply<&[u8]>) -> Outcome<T>,
    ) -> Outcome<Vec<T>> {
        if self.broken {
            // Never reached: the pool drops broken connections. Refuse rather than read
            // a stale reply.
            return Err(Failure::Closed);
        }
        let started = Instant::now();
        let deadline = started + self.timeout;
        let outcome = self.send(value, deadline).and_then(|()| {
            let mut results = Vec::with_capacity(replies);
            while results.len() < replies {
                match self.read.next_reply(self.max_value_size)? {
                    Some(Reply::Error(message)) => return Err(Failure::Server(message)),
                    Some(reply) => results.push(each(reply)?),
                    None => self.fill(deadline)?,
                }
            }
            if !self.read.unparsed().is_empty() {
                return Err(Failure::Unexpected {
                    command: "the last command",
                    reply: format!(
                        "bytes after its replies: {:?}",
                        self.read.unparsed().escape_ascii().to_string()
                    ),
                });
            }
            Ok(results)
        });
        match outcome {
            Ok(results) => {
                self.read.settle();
                Ok(results)
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

    fn send(&mut self, value: Option<&[u8]>, deadline: Instant) -> Outcome<()> {
        let Some(value) = value else {
            return write_all(&mut self.stream, &self.write, deadline);
        };
        if self.write.len() + value.len() + 2 <= ONE_WRITE {
            self.write.extend_from_slice(value);
            self.write.extend_from_slice(b"\r\n");
            return write_all(&mut self.stream, &self.write, deadline);
        }
        write_all(&mut self.stream, &self.write, deadline)?;
        write_all(&mut self.stream, value, deadline)?;
        write_all(&mut self.stream, b"\r\n", deadline)
    }

    /// One read into the read buffer, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Instant) -> Outcome<()> {
        loop {
            self.stream
                .set_read_timeout(Some(remaining(deadline)?))
                .map_err(Failure::Io)?;
            match self.stream.read(self.read.spare()) {
                Ok(0) => return Err(Failure::Closed),
                Ok(n) => {
                    self.read.filled(n);
                    return Ok(());
                }
                Err(error) => check(error)?,
            }
        }
    }
}

fn write_all(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> Outcome<()> {
    while !bytes.is_empty() {
        stream
            .set_write_timeout(Some(remaining(deadline)?))
            .map_err(Failure::Io)?;
        match stream.write(bytes) {
            Ok(0) => return Err(Failure::Closed),
            Ok(n) => bytes = &bytes[n..],
            Err(error) => check(error)?,
        }
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
        Reply::Noop => "MN".into(),
        Reply::Error(message) => message,
    };
    Failure::Unexpected { command, reply }
}
