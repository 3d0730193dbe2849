//! The commands of the memcached client, without I/O: what each writes and how it reads
//! its replies, and the [`Codec`] that runs one command's exchange on a connection's
//! buffers. The blocking driver (`connection.rs`) and the async one
//! (`async_connection.rs`) only move bytes: they send [`Codec::pieces`], read into
//! [`Codec::spare`] until [`Codec::advance`] says the answer is whole, and take it with
//! [`Codec::finish`], all under one deadline of their own.
//!
//! Every check of a reply lives here, so both drivers hold the same guarantees: meta
//! replies echo their requests' opaques, in order; no byte may follow the last expected
//! reply; values larger than `max_value_size` are refused (on the way out before anything
//! is sent, on the way in before anything is allocated, by the parser); and a connection
//! is *broken* from the moment a command starts until it finishes well, so that one on
//! which anything failed, or whose command was left midway (a cancelled future), is never
//! used again.

use std::fmt;
use std::io;
use std::time::Duration;

use super::protocol::{self, shown, Mode, ProtocolError, ReadBuffer, Reply};

/// Values at most this long are copied into the request, to go out in one write; longer
/// ones are written from where they are.
const COPIED_VALUE: usize = 16 * 1024;

/// A write buffer grown past this for a large request is dropped after it.
const WRITE_BUFFER_AT_REST: usize = 64 * 1024;

/// Values written from where they are: (offset in the write buffer, value).
pub(crate) type Splices<'v> = Vec<(usize, &'v [u8])>;

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

/// One command: the request it writes and how it reads its replies.
pub(crate) trait Command {
    /// What the replies read so far made of the answer.
    type State: Default;
    /// The answer.
    type Output;

    /// Writes the request into `codec` (values longer than a few KiB into `splices`),
    /// or refuses it before anything is sent.
    fn request<'v>(&'v self, codec: &mut Codec, splices: &mut Splices<'v>) -> Outcome<()>;

    /// Takes one reply (its opaque already checked): `true` when the answer is whole.
    fn take(&self, state: &mut Self::State, reply: Reply<&[u8]>) -> Outcome<bool>;

    /// The answer, from the state of the whole exchange.
    fn output(&self, state: Self::State) -> Self::Output;
}

/// A connection's buffers and the state of its exchanges (see the [module docs](self)).
pub(crate) struct Codec {
    read: ReadBuffer,
    write: Vec<u8>,
    max_value_size: usize,
    /// True from the start of a command until it finished well.
    broken: bool,
    /// The opaque of the last request: meta replies must echo theirs, in order.
    opaque: u64,
}

/// One command under way on a [`Codec`].
pub(crate) struct Exchange<'c, C: Command> {
    command: &'c C,
    state: C::State,
    splices: Splices<'c>,
    /// The opaque the next meta reply must echo.
    expected: u64,
}

impl Codec {
    pub(crate) fn new(max_value_size: usize) -> Self {
        Codec {
            read: ReadBuffer::new(),
            write: Vec::with_capacity(512),
            max_value_size,
            broken: false,
            opaque: 0,
        }
    }

    /// True once a command failed, or never finished: the connection must not be used
    /// again.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// Starts `command`: its request is written, not sent. The connection counts as
    /// broken until [`Codec::finish`].
    pub(crate) fn begin<'c, C: Command>(&mut self, command: &'c C) -> Outcome<Exchange<'c, C>> {
        if self.broken {
            // Never reached: pools drop broken connections. Refuse rather than read a
            // stale reply.
            return Err(Failure::Closed);
        }
        self.write.clear();
        let expected = self.opaque.wrapping_add(1);
        let mut splices = Splices::new();
        command.request(self, &mut splices)?;
        self.broken = true;
        Ok(Exchange {
            command,
            state: C::State::default(),
            splices,
            expected,
        })
    }

    /// The request's bytes, to be sent in this order.
    pub(crate) fn pieces<'a, C: Command>(
        &'a self,
        exchange: &'a Exchange<'_, C>,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut from = 0;
        exchange
            .splices
            .iter()
            .flat_map(move |&(at, value)| {
                let before = &self.write[from..at];
                from = at;
                [before, value]
            })
            .chain(std::iter::once_with(move || {
                let at = exchange.splices.last().map_or(0, |&(at, _)| at);
                &self.write[at..]
            }))
            .filter(|piece| !piece.is_empty())
    }

    /// Hands the replies received so far to the command: `true` when its answer is
    /// whole, `false` when more bytes must be read (into [`Codec::spare`]).
    pub(crate) fn advance<C: Command>(&mut self, exchange: &mut Exchange<'_, C>) -> Outcome<bool> {
        while let Some((reply, opaque)) = self.read.next_reply(self.max_value_size)? {
            if let Reply::Error(message) = reply {
                return Err(Failure::Server(message));
            }
            let meta = !matches!(reply, Reply::Item { .. } | Reply::End | Reply::Version(_));
            if meta {
                if opaque != Some(exchange.expected) {
                    return Err(Failure::Unexpected {
                        command: "this request",
                        reply: format!(
                            "a reply with opaque {opaque:?}, not this request's {} (another \
                             request's reply)",
                            exchange.expected
                        ),
                    });
                }
                exchange.expected = exchange.expected.wrapping_add(1);
            }
            if exchange.command.take(&mut exchange.state, reply)? {
                if !self.read.unparsed().is_empty() {
                    return Err(Failure::Unexpected {
                        command: "the last command",
                        reply: format!("bytes after its reply: {}", shown(self.read.unparsed())),
                    });
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Room to read the next bytes into.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        self.read.spare()
    }

    /// Records that `n` bytes were read into [`Codec::spare`]; none is the end of the
    /// stream.
    pub(crate) fn filled(&mut self, n: usize) -> Outcome<()> {
        if n == 0 {
            return Err(Failure::Closed);
        }
        self.read.filled(n);
        Ok(())
    }

    /// The answer of an exchange that [`Codec::advance`] said is whole; the connection
    /// may be used again.
    pub(crate) fn finish<C: Command>(&mut self, exchange: Exchange<'_, C>) -> C::Output {
        self.read.settle();
        if self.write.capacity() > WRITE_BUFFER_AT_REST {
            self.write = Vec::with_capacity(512);
        }
        self.broken = false;
        exchange.command.output(exchange.state)
    }

    /// Marks the connection broken (its driver failed after the answer was read).
    pub(crate) fn break_off(&mut self) {
        self.broken = true;
    }

    fn next_opaque(&mut self) -> u64 {
        self.opaque = self.opaque.wrapping_add(1);
        self.opaque
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

    fn push_get(&mut self, key: &str, flags: &str) {
        let opaque = self.next_opaque();
        protocol::get(&mut self.write, key, flags, opaque);
    }

    fn push_delete(&mut self, key: &str, cas: Option<u64>) {
        let opaque = self.next_opaque();
        protocol::delete(&mut self.write, key, cas, opaque);
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
}

/// The value under a key (`mg <key> v`).
pub(crate) struct Get<'k>(pub(crate) &'k str);

impl Command for Get<'_> {
    type State = Option<Vec<u8>>;
    type Output = Option<Vec<u8>>;

    fn request<'v>(&'v self, codec: &mut Codec, _: &mut Splices<'v>) -> Outcome<()> {
        codec.push_get(self.0, "v");
        Ok(())
    }

    fn take(&self, value: &mut Self::State, reply: Reply<&[u8]>) -> Outcome<bool> {
        match reply {
            Reply::Value { data, .. } => *value = Some(data.to_vec()),
            Reply::Miss => {}
            other => return Err(unexpected("mg", other)),
        }
        Ok(true)
    }

    fn output(&self, value: Self::State) -> Self::Output {
        value
    }
}

/// The value under a key with its CAS id (`mg <key> v c`).
pub(crate) struct GetWithCas<'k>(pub(crate) &'k str);

impl Command for GetWithCas<'_> {
    type State = Option<(Vec<u8>, u64)>;
    type Output = Option<(Vec<u8>, u64)>;

    fn request<'v>(&'v self, codec: &mut Codec, _: &mut Splices<'v>) -> Outcome<()> {
        codec.push_get(self.0, "v c");
        Ok(())
    }

    fn take(&self, value: &mut Self::State, reply: Reply<&[u8]>) -> Outcome<bool> {
        match reply {
            Reply::Value {
                data,
                cas: Some(cas),
            } => *value = Some((data.to_vec(), cas)),
            Reply::Miss => {}
            other => return Err(unexpected("mg with c", other)),
        }
        Ok(true)
    }

    fn output(&self, value: Self::State) -> Self::Output {
        value
    }
}

/// The values under many keys, in one request (the start mark, then `get k1 k2 ...`):
/// the index of each key that has one, with its value. memcached answers in the order
/// asked (once per key asked, for a key asked twice), so each value goes to the next key
/// asked with its name; a value for any other key is a protocol error.
pub(crate) struct GetMany<'k>(pub(crate) &'k [&'k str]);

#[derive(Default)]
pub(crate) struct Found {
    /// The first key a value may still be for.
    next: usize,
    /// Whether the mark's reply came.
    marked: bool,
    values: Vec<(usize, Vec<u8>)>,
}

impl Command for GetMany<'_> {
    type State = Found;
    type Output = Vec<(usize, Vec<u8>)>;

    fn request<'v>(&'v self, codec: &mut Codec, _: &mut Splices<'v>) -> Outcome<()> {
        let opaque = codec.next_opaque();
        protocol::get_many(&mut codec.write, self.0, opaque);
        Ok(())
    }

    fn take(&self, found: &mut Found, reply: Reply<&[u8]>) -> Outcome<bool> {
        match reply {
            Reply::Done | Reply::Miss if !found.marked => found.marked = true,
            Reply::Item { key, data } if found.marked => {
                let at = self.0[found.next..]
                    .iter()
                    .position(|asked| asked.as_bytes() == key)
                    .ok_or_else(|| Failure::Unexpected {
                        command: "get",
                        reply: format!(
                            "VALUE for key {}, not asked for (or out of order)",
                            shown(key)
                        ),
                    })?;
                found.values.push((found.next + at, data.to_vec()));
                found.next += at + 1;
            }
            Reply::End if found.marked => return Ok(true),
            other => return Err(unexpected("get", other)),
        }
        Ok(false)
    }

    fn output(&self, found: Found) -> Self::Output {
        found.values
    }
}

/// Stores a value under a key (`ms`): `false` when `add` found the key taken.
pub(crate) struct Store<'k> {
    pub(crate) key: &'k str,
    pub(crate) value: &'k [u8],
    pub(crate) ttl: u32,
    pub(crate) mode: Mode,
}

impl Command for Store<'_> {
    type State = bool;
    type Output = bool;

    fn request<'v>(&'v self, codec: &mut Codec, splices: &mut Splices<'v>) -> Outcome<()> {
        codec.check_size(self.value)?;
        codec.push_store(self.key, self.value, self.ttl, self.mode, splices);
        Ok(())
    }

    fn take(&self, stored: &mut bool, reply: Reply<&[u8]>) -> Outcome<bool> {
        match reply {
            Reply::Done => *stored = true,
            Reply::NotStored if self.mode == Mode::Add => {}
            // The item changed or went: not swapped.
            Reply::Exists | Reply::NotFound if matches!(self.mode, Mode::Swap(_)) => {}
            other => return Err(unexpected("ms", other)),
        }
        Ok(true)
    }

    fn output(&self, stored: bool) -> bool {
        stored
    }
}

/// Stores every value in one pipelined request (answered in order, each reply with its
/// request's opaque).
pub(crate) struct StoreMany<'k> {
    pub(crate) items: &'k [(&'k str, &'k [u8])],
    pub(crate) ttl: u32,
}

impl Command for StoreMany<'_> {
    type State = usize;
    type Output = ();

    fn request<'v>(&'v self, codec: &mut Codec, splices: &mut Splices<'v>) -> Outcome<()> {
        for (_, value) in self.items {
            codec.check_size(value)?;
        }
        for (key, value) in self.items {
            codec.push_store(key, value, self.ttl, Mode::Set, splices);
        }
        Ok(())
    }

    fn take(&self, stored: &mut usize, reply: Reply<&[u8]>) -> Outcome<bool> {
        match reply {
            Reply::Done => {
                *stored += 1;
                Ok(*stored == self.items.len())
            }
            other => Err(unexpected("a pipeline of ms", other)),
        }
    }

    fn output(&self, _: usize) {}
}

/// The server's version (the classic `version`), for an operator's `ping`.
pub(crate) struct Version;

impl Command for Version {
    type State = String;
    type Output = String;

    fn request<'v>(&'v self, codec: &mut Codec, _: &mut Splices<'v>) -> Outcome<()> {
        codec.write.extend_from_slice(b"version\r\n");
        Ok(())
    }

    fn take(&self, version: &mut String, reply: Reply<&[u8]>) -> Outcome<bool> {
        match reply {
            Reply::Version(found) => *version = found,
            other => return Err(unexpected("version", other)),
        }
        Ok(true)
    }

    fn output(&self, version: String) -> String {
        version
    }
}

/// Deletes a key (`md`), only while its CAS id is the one given, if one is: true when an
/// item was deleted.
pub(crate) struct Delete<'k> {
    pub(crate) key: &'k str,
    pub(crate) cas: Option<u64>,
}

impl Command for Delete<'_> {
    type State = bool;
    type Output = bool;

    fn request<'v>(&'v self, codec: &mut Codec, _: &mut Splices<'v>) -> Outcome<()> {
        codec.push_delete(self.key, self.cas);
        Ok(())
    }

    fn take(&self, deleted: &mut bool, reply: Reply<&[u8]>) -> Outcome<bool> {
        match reply {
            Reply::Done => *deleted = true,
            Reply::NotFound => {}
            Reply::Exists if self.cas.is_some() => {}
            other => return Err(unexpected("md", other)),
        }
        Ok(true)
    }

    fn output(&self, deleted: bool) -> bool {
        deleted
    }
}

/// Deletes every key in one pipelined request (`md`s answered in order).
pub(crate) struct DeleteMany<'k>(pub(crate) &'k [&'k str]);

impl Command for DeleteMany<'_> {
    type State = usize;
    type Output = ();

    fn request<'v>(&'v self, codec: &mut Codec, _: &mut Splices<'v>) -> Outcome<()> {
        for key in self.0 {
            codec.push_delete(key, None);
        }
        Ok(())
    }

    fn take(&self, answered: &mut usize, reply: Reply<&[u8]>) -> Outcome<bool> {
        match reply {
            Reply::Done | Reply::NotFound => {
                *answered += 1;
                Ok(*answered == self.0.len())
            }
            other => Err(unexpected("a pipeline of md", other)),
        }
    }

    fn output(&self, _: usize) {}
}

fn unexpected(command: &'static str, reply: Reply<&[u8]>) -> Failure {
    let reply = match reply {
        Reply::Value { data, .. } => format!("VA (a value of {} bytes)", data.len()),
        Reply::Done => "HD".into(),
        Reply::Miss => "EN".into(),
        Reply::NotStored => "NS".into(),
        Reply::Exists => "EX".into(),
        Reply::NotFound => "NF".into(),
        Reply::Version(version) => format!("VERSION {version}"),
        Reply::Item { key, data } => {
            format!("VALUE for key {} ({} bytes)", shown(key), data.len())
        }
        Reply::End => "END".into(),
        Reply::Error(message) => message,
    };
    Failure::Unexpected { command, reply }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `command` on a codec against `replies`, fed in steps of `step` bytes; the
    /// request it sent and its outcome.
    fn run<C: Command>(command: &C, replies: &[u8], step: usize) -> (Vec<u8>, Outcome<C::Output>) {
        let mut codec = Codec::new(64 * 1024);
        let mut exchange = match codec.begin(command) {
            Ok(exchange) => exchange,
            Err(failure) => return (Vec::new(), Err(failure)),
        };
        let sent: Vec<u8> = codec.pieces(&exchange).flatten().copied().collect();
        let mut fed = 0;
        let outcome = loop {
            match codec.advance(&mut exchange) {
                Ok(true) => break Ok(codec.finish(exchange)),
                Ok(false) => {}
                Err(failure) => break Err(failure),
            }
            let spare = codec.spare();
            let n = step.min(spare.len()).min(replies.len() - fed);
            spare[..n].copy_from_slice(&replies[fed..fed + n]);
            fed += n;
            if let Err(failure) = codec.filled(n) {
                break Err(failure);
            }
        };
        (sent, outcome)
    }

    #[test]
    fn commands_write_their_requests_and_read_their_replies_split_anywhere() {
        for step in [1, 3, 1000] {
            let (sent, value) = run(&Get("k"), b"VA 2 O1\r\nhi\r\n", step);
            assert_eq!(sent, b"mg k v O1\r\n");
            assert_eq!(value.unwrap(), Some(b"hi".to_vec()));
            let (sent, found) = run(
                &GetMany(&["a", "b", "a"]),
                b"EN O1\r\nVALUE a 0 1\r\nx\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
                step,
            );
            assert_eq!(sent, b"mg _ O1\r\nget a b a\r\n");
            assert_eq!(found.unwrap(), [(0, b"x".to_vec()), (2, b"x".to_vec())]);
            let (_, cas) = run(&GetWithCas("k"), b"VA 1 c9 O1\r\nt\r\n", step);
            assert_eq!(cas.unwrap(), Some((b"t".to_vec(), 9)));
        }
    }

    #[test]
    fn large_values_are_spliced_and_sent_in_order() {
        let big = vec![b'x'; COPIED_VALUE + 1];
        let items: [(&str, &[u8]); 3] = [("a", b"1"), ("b", &big), ("c", b"3")];
        let (sent, stored) = run(
            &StoreMany {
                items: &items,
                ttl: 0,
            },
            b"",
            1,
        );
        assert!(stored.is_err(), "no reply");
        let mut expected = b"ms a 1 O1\r\n1\r\n".to_vec();
        expected.extend_from_slice(format!("ms b {} O2\r\n", big.len()).as_bytes());
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"\r\nms c 1 O3\r\n3\r\n");
        assert_eq!(sent, expected);
    }

    #[test]
    fn a_failed_or_unfinished_command_leaves_the_connection_broken() {
        let mut codec = Codec::new(1024);
        let too_large = Store {
            key: "k",
            value: &[0; 2000],
            ttl: 0,
            mode: Mode::Set,
        };
        // Refused before anything is sent: the connection stays usable.
        assert!(matches!(
            codec.begin(&too_large),
            Err(Failure::ValueTooLarge { .. })
        ));
        assert!(!codec.is_broken());
        let exchange = codec.begin(&Get("k")).unwrap();
        drop(exchange);
        assert!(codec.is_broken(), "left midway");
        assert!(matches!(codec.begin(&Get("k")), Err(Failure::Closed)));
        for (replies, why) in [
            (&b"VA 1 O7\r\nx\r\n"[..], "another request"),
            (b"EN O1\r\nEN O2\r\n", "after its reply"),
            (b"SERVER_ERROR out of memory\r\n", "out of memory"),
            (b"VA 1 O1\r\nx\r\nEN", "after its reply"),
        ] {
            let error = run(&Get("k"), replies, 1000).1.unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        }
    }
}
