//! One blocking connection to a memcached server: a `std::net::TcpStream` that moves the
//! bytes of the sans-I/O [`command`](super::command)s (their requests, their replies'
//! checks and the connection's state are there, shared with the async driver).
//!
//! Every command has one deadline, `socket_timeout` after it starts: no read or write
//! waits past what is left of it, so a server that trickles a reply one byte at a time
//! still ends the command at the deadline. (The socket's timeouts rest at 15/16 of
//! `socket_timeout` and are lowered only once a command has run longer than the rest, so
//! a command on a responsive server makes no `setsockopt` call: each costs about 0.7 µs
//! here, 4 % of a loopback hit.) A command sends its whole request in one write when it
//! is small (one packet on a `TCP_NODELAY` socket).
//!
//! A connection on which anything failed (I/O error, timeout, protocol error, a value
//! over `max_value_size`, an error reply, bytes beyond the expected replies) is marked
//! broken, and the pool drops it: whatever the server still sends on it can never be read
//! as the answer to a later command.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::command::{Codec, Command, Exchange};
pub(crate) use super::command::{Failure, Outcome};

/// A connection and its buffers.
pub(crate) struct Connection {
    socket: Socket,
    codec: Codec,
    timeout: Duration,
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
                        codec: Codec::new(max_value_size),
                        timeout,
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
        self.codec.is_broken()
    }

    /// Sends `command`'s request and reads its replies until its answer is whole, all
    /// within one deadline. Any failure leaves the connection broken.
    pub(crate) fn run<C: Command>(&mut self, command: &C) -> Outcome<C::Output> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut exchange = self.codec.begin(command)?;
        match self.exchange(&mut exchange, deadline) {
            Ok(()) => {
                let output = self.codec.finish(exchange);
                self.socket.rest().map_err(|error| {
                    self.codec.break_off();
                    Failure::Io(error)
                })?;
                Ok(output)
            }
            Err(Failure::Timeout { .. }) => Err(Failure::Timeout {
                waited: started.elapsed(),
            }),
            Err(failure) => Err(failure),
        }
    }

    fn exchange<C: Command>(
        &mut self,
        exchange: &mut Exchange<'_, C>,
        deadline: Instant,
    ) -> Outcome<()> {
        for piece in self.codec.pieces(exchange) {
            self.socket.write_all(piece, deadline)?;
        }
        while !self.codec.advance(exchange)? {
            let n = self.socket.read(self.codec.spare(), deadline)?;
            self.codec.filled(n)?;
        }
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
