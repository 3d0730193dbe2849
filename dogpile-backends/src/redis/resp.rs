//! RESP2 replies parsed from received bytes, within a call's limits: the parser that the
//! blocking [`Connection`](super::connection::Connection) and the async
//! [`AsyncConnection`](super::async_connection::AsyncConnection) share.
//!
//! It does no I/O. A connection hands it the bytes it receives ([`Replies::room`],
//! [`Replies::filled`]) and asks it for the replies of the call ([`Replies::take`]), which
//! either completes them or says how many more bytes to read. The limits are all here, so
//! both connections keep them alike:
//! - a **byte budget** per call (`max_value_size` plus [`REPLY_FRAMING`]), counted on the
//!   bytes received and on what holding each value costs: a reply announcing more is
//!   refused before it is read, and an endless line stops at [`MAX_LINE`];
//! - arrays nest at most [`MAX_NESTING`] deep;
//! - bytes after the replies a call asked for are an error (the server is out of step).
//!
//! A reply is parsed again from its start when more of it arrives (a first pass checks
//! that it is whole and within the budget without copying anything; values are built
//! once, when it is). The deadline is the connection's: it bounds every read.

use std::time::Instant;

use redis::{ConnectionInfo, ErrorKind, RedisError, RedisResult, Value};

/// How a connection's calls are bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The longest a call (connecting included) may take.
    pub(crate) timeout: std::time::Duration,
    /// The largest value, and (with [`REPLY_FRAMING`] more) the most reply bytes, one call
    /// may read.
    pub(crate) max_value_size: usize,
}

impl Limits {
    /// The limits of a connection opened for one answer due by `by`, of at most
    /// `max_value_size` bytes.
    pub(crate) fn until(by: Instant, max_value_size: usize) -> Limits {
        Limits {
            timeout: by
                .saturating_duration_since(Instant::now())
                .max(std::time::Duration::from_millis(1)),
            max_value_size,
        }
    }
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
pub(crate) const CHUNK: usize = 16 * 1024;
/// The most read at a time into a bulk string (memory grows with what arrives).
const MAX_READ: usize = 256 * 1024;

/// The bounds and progress of the call in progress.
pub(crate) struct Call {
    /// When the call must have its last reply.
    pub(crate) deadline: Instant,
    /// Bytes the call may still receive or hold.
    budget: usize,
    /// Replies to read and drop before the ones returned (a pipeline's `MULTI`...).
    skip: usize,
    /// Replies to return.
    count: usize,
    /// Replies read so far.
    seen: usize,
    /// A subscribed connection's read: bytes after the replies are the next pushed
    /// messages, kept for the next read rather than refused.
    listening: bool,
}

impl Call {
    /// A call that reads `skip + count` replies by `deadline`, within `limits`.
    pub(crate) fn new(limits: &Limits, deadline: Instant, skip: usize, count: usize) -> Call {
        Call {
            deadline,
            budget: limits.max_value_size.saturating_add(REPLY_FRAMING),
            skip,
            count,
            seen: 0,
            listening: false,
        }
    }

    /// The same call on a subscribed connection (see `listening`).
    pub(crate) fn listening(mut self) -> Call {
        self.listening = true;
        self
    }

    /// The time left before the deadline, or the timeout error if there is none.
    pub(crate) fn time_left(&self) -> RedisResult<std::time::Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        Ok(left)
    }
}

/// The timeout error: the deadline passed before the reply was complete.
pub(crate) fn timed_out() -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no complete reply within socket_timeout",
    )
    .into()
}

/// The error of a call on a connection that an earlier call's failure closed.
pub(crate) fn not_connected() -> RedisError {
    std::io::Error::from(std::io::ErrorKind::NotConnected).into()
}

/// The error of a server that closed the connection mid-reply.
pub(crate) fn closed() -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the server closed the connection before the reply was complete",
    )
    .into()
}

fn protocol(what: &'static str, detail: String) -> RedisError {
    RedisError::from((ErrorKind::Parse, what, detail))
}

fn too_large(max: usize) -> RedisError {
    protocol(
        "reply larger than max_value_size",
        format!("more than {max} bytes; raise max_value_size if such values are expected"),
    )
}

/// A parse that either completed or needs more bytes (at least one, up to the number).
enum Parse<T> {
    Done(T),
    More(usize),
}

/// Bytes received and not parsed yet (`buf[start..]`), and the parser over them.
pub(crate) struct Replies {
    buf: Vec<u8>,
    start: usize,
    /// Where the read in progress writes (`buf[reading..]`).
    reading: usize,
    max_value_size: usize,
}

impl Replies {
    /// No bytes yet; values above `max_value_size` are refused.
    pub(crate) fn new(max_value_size: usize) -> Replies {
        Replies {
            buf: Vec::new(),
            start: 0,
            reading: 0,
            max_value_size,
        }
    }

    /// Parses the call's replies from the bytes received so far, pushing the ones to
    /// return onto `values`: `None` when the call has them all, or `Some(want)`: read
    /// more (at least one byte, up to `want`) and call again.
    pub(crate) fn take(
        &mut self,
        call: &mut Call,
        values: &mut Vec<Value>,
    ) -> RedisResult<Option<usize>> {
        while call.seen < call.skip + call.count {
            let mut budget = call.budget;
            let end = match self.value(self.start, 0, &mut budget, false)? {
                Parse::Done((_, end)) => end,
                Parse::More(want) => return Ok(Some(want)),
            };
            let build = call.seen >= call.skip;
            if build {
                let mut again = call.budget;
                if let Parse::Done((value, _)) = self.value(self.start, 0, &mut again, true)? {
                    values.push(value);
                }
            }
            call.budget = budget;
            self.start = end;
            call.seen += 1;
        }
        if self.start < self.buf.len() && call.listening {
            return Ok(None);
        }
        if self.start < self.buf.len() {
            // More than was asked for: the server is out of step with its requests.
            return Err(protocol(
                "unexpected bytes after the reply",
                format!("{} bytes", self.buf.len() - self.start),
            ));
        }
        // A fully read buffer starts over (and a large one is given back).
        self.start = 0;
        self.buf.clear();
        if self.buf.capacity() > CHUNK * 4 {
            self.buf = Vec::new();
        }
        Ok(None)
    }

    /// Room for the next read: at most `want` bytes (and at least one) within the budget.
    pub(crate) fn room(&mut self, call: &Call, want: usize) -> RedisResult<&mut [u8]> {
        if call.budget == 0 {
            return Err(too_large(self.max_value_size));
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let want = want.clamp(1, MAX_READ).min(call.budget);
        self.reading = self.buf.len();
        self.buf.resize(self.reading + want, 0);
        Ok(&mut self.buf[self.reading..])
    }

    /// A read into [`room`](Self::room) failed: true (and the buffer emptied again) when no
    /// byte of a reply had arrived before it, so the connection is still in step.
    pub(crate) fn nothing_received(&mut self) -> bool {
        if self.start == 0 && self.reading == 0 {
            self.buf.clear();
            true
        } else {
            false
        }
    }

    /// The read into [`room`](Self::room) got `n` bytes (zero: the server closed the
    /// connection).
    pub(crate) fn filled(&mut self, call: &mut Call, n: usize) -> RedisResult<()> {
        self.buf.truncate(self.reading + n);
        if n == 0 {
            return Err(closed());
        }
        call.budget -= n;
        Ok(())
    }

    /// Where the line starting at `pos` ends (its `\r`).
    fn line_end(&self, pos: usize) -> RedisResult<Parse<usize>> {
        let pending = &self.buf[pos..];
        if let Some(at) = pending.windows(2).position(|w| w == b"\r\n") {
            return Ok(Parse::Done(pos + at));
        }
        if pending.len() > MAX_LINE {
            return Err(protocol(
                "reply line too long",
                format!("more than {MAX_LINE} bytes without an end of line"),
            ));
        }
        Ok(Parse::More(CHUNK))
    }

    fn int(line: &[u8], what: &'static str) -> RedisResult<i64> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| protocol(what, String::from_utf8_lossy(line).into_owned()))
    }

    /// The value at `pos` and where it ends; `build`: make the value (else `Nil` stands
    /// for it, and nothing is copied).
    fn value(
        &self,
        pos: usize,
        depth: usize,
        budget: &mut usize,
        build: bool,
    ) -> RedisResult<Parse<(Value, usize)>> {
        let max = self.max_value_size;
        // A value costs memory beyond its bytes on the wire: a million `$1\r\nx\r\n`
        // would take 7 MB to send and several times that to hold.
        *budget = budget
            .checked_sub(VALUE_COST)
            .ok_or_else(|| too_large(max))?;
        let end = match self.line_end(pos)? {
            Parse::Done(end) => end,
            Parse::More(want) => return Ok(Parse::More(want)),
        };
        let next = end + 2;
        let Some((&kind, rest)) = self.buf[pos..end].split_first() else {
            return Err(protocol("empty reply line", String::new()));
        };
        let value = match kind {
            b'+' if rest == b"OK" => Value::Okay,
            b'+' => Value::SimpleString(String::from_utf8_lossy(rest).into_owned()),
            // The crate's parser builds its error type from the line.
            b'-' => redis::parse_redis_value(&self.buf[pos..next])?,
            b':' => Value::Int(Self::int(rest, "malformed integer reply")?),
            b'$' => match Self::int(rest, "malformed bulk string length")? {
                -1 => Value::Nil,
                n if n < 0 => return Err(protocol("negative bulk string length", n.to_string())),
                n => {
                    let n = usize::try_from(n).map_err(|_| too_large(max))?;
                    let available = self.buf.len() - next;
                    if n > max || n.saturating_add(2) > available + *budget {
                        return Err(too_large(max));
                    }
                    if available < n + 2 {
                        return Ok(Parse::More(n + 2 - available));
                    }
                    if &self.buf[next + n..next + n + 2] != b"\r\n" {
                        return Err(protocol(
                            "bulk string without its end of line",
                            format!("{n} bytes"),
                        ));
                    }
                    let value = match build {
                        true => Value::BulkString(self.buf[next..next + n].to_vec()),
                        false => Value::Nil,
                    };
                    return Ok(Parse::Done((value, next + n + 2)));
                }
            },
            b'*' => match Self::int(rest, "malformed array length")? {
                -1 => Value::Nil,
                n if n < 0 => return Err(protocol("negative array length", n.to_string())),
                n => {
                    if depth >= MAX_NESTING {
                        return Err(protocol("reply nested too deep", depth.to_string()));
                    }
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    // Each element costs at least VALUE_COST of the budget.
                    if n.saturating_mul(VALUE_COST) > *budget {
                        return Err(too_large(max));
                    }
                    let mut items = Vec::with_capacity(if build { n.min(1024) } else { 0 });
                    let mut at = next;
                    for _ in 0..n {
                        match self.value(at, depth + 1, budget, build)? {
                            Parse::Done((item, end)) => {
                                if build {
                                    items.push(item);
                                }
                                at = end;
                            }
                            Parse::More(want) => return Ok(Parse::More(want)),
                        }
                    }
                    return Ok(Parse::Done((Value::Array(items), at)));
                }
            },
            other => {
                return Err(protocol(
                    "unexpected reply type",
                    format!("{:?}", other as char),
                ))
            }
        };
        Ok(Parse::Done((value, next)))
    }
}

/// A command sent when a connection opens (`AUTH`, `SELECT`), and what its error means.
pub(crate) struct Setup {
    /// The packed command.
    pub(crate) packed: Vec<u8>,
    kind: ErrorKind,
    what: &'static str,
}

impl Setup {
    /// The commands that set up a connection to `info`'s server, in order.
    pub(crate) fn commands(info: &ConnectionInfo) -> Vec<Setup> {
        let settings = info.redis_settings();
        let mut setup = Vec::new();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = settings.username() {
                auth.arg(username);
            }
            auth.arg(password);
            setup.push(Setup {
                packed: auth.get_packed_command(),
                kind: ErrorKind::AuthenticationFailed,
                what: "authentication failed",
            });
        }
        if settings.db() != 0 {
            setup.push(Setup {
                packed: redis::cmd("SELECT").arg(settings.db()).get_packed_command(),
                kind: ErrorKind::InvalidClientConfig,
                what: "cannot select the database",
            });
        }
        setup
    }

    /// The command's reply: an error reply fails the connection.
    pub(crate) fn check(&self, reply: Option<Value>) -> RedisResult<()> {
        match reply {
            Some(Value::ServerError(error)) => {
                Err(RedisError::from((self.kind, self.what, error.to_string())))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(max_value_size: usize) -> Limits {
        Limits {
            timeout: Duration::from_secs(1),
            max_value_size,
        }
    }

    /// Feeds `bytes` in pieces of `step` and returns the call's values.
    fn parse(bytes: &[u8], step: usize, count: usize, max: usize) -> RedisResult<Vec<Value>> {
        let limits = limits(max);
        let mut call = Call::new(&limits, Instant::now() + limits.timeout, 0, count);
        let mut replies = Replies::new(max);
        let mut values = Vec::new();
        let mut fed = 0;
        while let Some(want) = replies.take(&mut call, &mut values)? {
            let room = replies.room(&call, want)?;
            let n = room.len().min(step).min(bytes.len() - fed);
            room[..n].copy_from_slice(&bytes[fed..fed + n]);
            fed += n;
            replies.filled(&mut call, n)?;
        }
        Ok(values)
    }

    #[test]
    fn replies_parse_alike_whatever_the_pieces_they_arrive_in() {
        let bytes = b"*3\r\n$3\r\nabc\r\n$-1\r\n*1\r\n:7\r\n+OK\r\n";
        let whole = vec![
            Value::Array(vec![
                Value::BulkString(b"abc".to_vec()),
                Value::Nil,
                Value::Array(vec![Value::Int(7)]),
            ]),
            Value::Okay,
        ];
        for step in [1, 2, 5, 1000] {
            assert_eq!(
                parse(bytes, step, 2, 1 << 20).unwrap(),
                whole,
                "step {step}"
            );
        }
    }

    #[test]
    fn a_value_over_the_limit_is_refused_before_it_is_read() {
        let err = parse(b"$1000000000\r\n", 1000, 1, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("max_value_size"), "{err}");
        let err = parse(b"*100000000\r\n", 1000, 1, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("max_value_size"), "{err}");
    }

    #[test]
    fn extra_bytes_after_the_reply_are_an_error() {
        let err = parse(b"+OK\r\n+OK\r\n", 1000, 1, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("unexpected bytes"), "{err}");
    }
}
