//! memcached's meta text protocol, without I/O: requests written into a buffer, and a
//! parser that takes the bytes read so far and says "need more", "here is a reply" or
//! "this is not memcached". The blocking driver (`connection.rs`) feeds it from a
//! `TcpStream`; an async driver can feed the same [`ReadBuffer`] from tokio I/O.
//!
//! Only what the backend uses is here: `mg` (get, with `v` for the value, `c` for the CAS
//! id), `ms` (set, with `T` for the TTL and `ME` for add), `md` (delete, with `C` for a
//! compare-and-delete), and the classic `get k1 k2 ...` for many keys at once. That one
//! is not a pipeline of `mg`s because memcached serves at most 20 requests of a
//! connection per turn of its event loop (`-R`, `reqs_per_event`): 100 `mg`s take five
//! turns and five reply packets, one `get` of 100 keys takes one (measured here: about
//! 80 µs against 30 µs on loopback). Replies are parsed
//! under two bounds, so no reply can make a caller allocate without limit: a status line
//! is at most [`MAX_LINE`] bytes, and a value at most the caller's `max_value_size`.
//! Every length is checked before it is added to, so no length can overflow.

use std::fmt;
use std::ops::Range;

/// The longest status line accepted, `\r\n` included. memcached's own lines are a
/// few dozen bytes (a key is at most 250, and the backend asks for no key back).
pub(crate) const MAX_LINE: usize = 2048;

/// One reply, its value (if any) as `D`: a range of the read buffer when just parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply<D = Range<usize>> {
    /// `VA`: a value, with its CAS id when `c` was asked for.
    Value { data: D, cas: Option<u64> },
    /// `VALUE <key> <flags> <bytes>`: one value of a classic `get`.
    Item { key: D, data: D },
    /// `END`: the end of a classic `get`'s values.
    End,
    /// `HD`: success (stored, deleted, or an item exists when no value was asked for).
    Done,
    /// `EN`: no such item (a miss).
    Miss,
    /// `NS`: not stored (an `add` on a key that exists).
    NotStored,
    /// `EX`: the CAS id did not match.
    Exists,
    /// `NF`: not found (a delete or CAS store of a missing item).
    NotFound,
    /// `VERSION <version>`: the answer to a classic `version`.
    Version(String),
    /// `SERVER_ERROR`, `CLIENT_ERROR` or `ERROR`, with the server's message.
    Error(String),
}

/// A reply that memcached would never send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProtocolError {
    /// No `\r\n` within [`MAX_LINE`] bytes.
    LineTooLong,
    /// A status line that is not one of memcached's (shown escaped and cut).
    Malformed(String),
    /// A value larger than `max_value_size`.
    TooLarge { announced: u64, limit: usize },
    /// A value not followed by `\r\n`: its announced length is wrong.
    BadLength { announced: usize },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::LineTooLong => write!(
                f,
                "protocol error: a reply line longer than {MAX_LINE} bytes"
            ),
            ProtocolError::Malformed(line) => {
                write!(f, "protocol error: unexpected reply line {line}")
            }
            ProtocolError::TooLarge { announced, limit } => write!(
                f,
                "the server announced a value of {announced} bytes, more than max_value_size \
                 ({limit} bytes); raise max_value_size if memcached runs with a larger \
                 item size limit (-I)"
            ),
            ProtocolError::BadLength { announced } => write!(
                f,
                "protocol error: a value announced as {announced} bytes is not followed by \
                 the end of line there"
            ),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// What [`parse`] found at the start of the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// The reply is not complete: at least this many bytes (counted from the start) are
    /// needed before it can be.
    Incomplete { needed: usize },
    /// A whole reply, `len` bytes long; value ranges are relative to the start. `opaque`
    /// is the `O` flag a meta reply echoes from its request.
    Reply {
        reply: Reply,
        len: usize,
        opaque: Option<u64>,
    },
}

/// Parses the reply at the start of `buf`, allowing values up to `max_value_size` bytes.
pub(crate) fn parse(buf: &[u8], max_value_size: usize) -> Result<Parsed, ProtocolError> {
    let scanned = &buf[..buf.len().min(MAX_LINE)];
    let Some(newline) = scanned.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_LINE {
            Err(ProtocolError::LineTooLong)
        } else {
            Ok(Parsed::Incomplete {
                needed: buf.len() + 1,
            })
        };
    };
    let malformed = || ProtocolError::Malformed(shown(&buf[..=newline]));
    let line = buf[..newline].strip_suffix(b"\r").ok_or_else(malformed)?;
    let line_len = newline + 1;
    let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
    let code = tokens.next().ok_or_else(malformed)?;
    // The flags of a meta reply: `c` (CAS id), `O` (the request's opaque); others ignored.
    let meta_flags = |tokens: &mut dyn Iterator<Item = &[u8]>| {
        let (mut cas, mut opaque) = (None, None);
        for flag in tokens {
            let (slot, token) = match flag.split_first() {
                Some((b'c', token)) => (&mut cas, token),
                Some((b'O', token)) => (&mut opaque, token),
                _ => continue,
            };
            *slot = Some(number(token).ok_or_else(malformed)?);
        }
        Ok::<_, ProtocolError>((cas, opaque))
    };
    let status = |reply, tokens: &mut dyn Iterator<Item = &[u8]>| {
        let (_, opaque) = meta_flags(tokens)?;
        Ok(Parsed::Reply {
            reply,
            len: line_len,
            opaque,
        })
    };
    match code {
        b"VA" => {
            let size = tokens.next().and_then(number).ok_or_else(malformed)?;
            let (cas, opaque) = meta_flags(&mut tokens)?;
            let (data, len) = match value(buf, line_len, size, max_value_size)? {
                Some(found) => found,
                None => return Ok(incomplete(line_len, size)),
            };
            Ok(Parsed::Reply {
                reply: Reply::Value { data, cas },
                len,
                opaque,
            })
        }
        b"VALUE" => {
            let key = tokens.next().ok_or_else(malformed)?;
            let _flags = tokens.next().and_then(number).ok_or_else(malformed)?;
            let size = tokens.next().and_then(number).ok_or_else(malformed)?;
            if tokens.next().is_some_and(|cas| number(cas).is_none()) || tokens.next().is_some() {
                return Err(malformed());
            }
            let key_start = key.as_ptr() as usize - buf.as_ptr() as usize;
            let (data, len) = match value(buf, line_len, size, max_value_size)? {
                Some(found) => found,
                None => return Ok(incomplete(line_len, size)),
            };
            Ok(Parsed::Reply {
                reply: Reply::Item {
                    key: key_start..key_start + key.len(),
                    data,
                },
                len,
                opaque: None,
            })
        }
        b"END" if tokens.next().is_none() => status(Reply::End, &mut tokens),
        b"HD" => status(Reply::Done, &mut tokens),
        b"EN" => status(Reply::Miss, &mut tokens),
        b"NS" => status(Reply::NotStored, &mut tokens),
        b"EX" => status(Reply::Exists, &mut tokens),
        b"NF" => status(Reply::NotFound, &mut tokens),
        b"VERSION" => {
            let version = tokens.next().ok_or_else(malformed)?;
            Ok(Parsed::Reply {
                reply: Reply::Version(String::from_utf8_lossy(version).into_owned()),
                len: line_len,
                opaque: None,
            })
        }
        b"SERVER_ERROR" | b"CLIENT_ERROR" | b"ERROR" => Ok(Parsed::Reply {
            reply: Reply::Error(String::from_utf8_lossy(line).into_owned()),
            len: line_len,
            opaque: None,
        }),
        _ => Err(malformed()),
    }
}

/// The value of `size` bytes after a line of `line_len` bytes: its range and the length
/// of the whole reply, or `None` when it is not all there yet.
fn value(
    buf: &[u8],
    line_len: usize,
    size: u64,
    max_value_size: usize,
) -> Result<Option<(Range<usize>, usize)>, ProtocolError> {
    if size > max_value_size as u64 {
        return Err(ProtocolError::TooLarge {
            announced: size,
            limit: max_value_size,
        });
    }
    // Bounded by max_value_size and MAX_LINE: no overflow.
    let end = line_len + size as usize;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(ProtocolError::BadLength {
            announced: size as usize,
        });
    }
    Ok(Some((line_len..end, end + 2)))
}

/// Needs the whole value (checked against the limit already) after the line.
fn incomplete(line_len: usize, size: u64) -> Parsed {
    Parsed::Incomplete {
        needed: line_len + size as usize + 2,
    }
}

/// A decimal number of at most 20 digits (no sign, no spaces), as memcached writes them.
fn number(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 20 || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// Bytes from a server, escaped and cut for an error message.
pub(crate) fn shown(bytes: &[u8]) -> String {
    const SHOWN: usize = 60;
    let cut = &bytes[..bytes.len().min(SHOWN)];
    let text: String = cut.escape_ascii().to_string();
    if bytes.len() > SHOWN {
        format!("\"{text}\"... ({} bytes)", bytes.len())
    } else {
        format!("\"{text}\"")
    }
}

/// Bytes read from a connection and not yet parsed. Reads go into [`ReadBuffer::spare`];
/// [`ReadBuffer::next_reply`] takes whole replies off the front. It grows only as far as
/// one reply needs (so never past `MAX_LINE + max_value_size + 2` plus one read), and
/// shrinks back after a large value.
#[derive(Debug)]
pub(crate) struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes the reply at `start` needs, from `start` (from the last `Incomplete`).
    needed: usize,
}

/// A reply taken off a [`ReadBuffer`], with the opaque it echoes (meta replies only).
pub(crate) type Received<'a> = (Reply<&'a [u8]>, Option<u64>);

/// The size of one read, and of the buffer at rest.
const CHUNK: usize = 16 * 1024;

impl ReadBuffer {
    pub(crate) fn new() -> Self {
        ReadBuffer {
            data: vec![0; CHUNK],
            start: 0,
            end: 0,
            needed: 0,
        }
    }

    /// Room to read into: at least what the pending reply needs, or one chunk.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let wanted = self.needed.max(self.end - self.start + CHUNK);
        if self.start + wanted > self.data.len() {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if wanted > self.data.len() {
                self.data.resize(wanted, 0);
            }
        }
        &mut self.data[self.end..]
    }

    /// Records that `n` bytes were read into [`ReadBuffer::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end += n;
        debug_assert!(self.end <= self.data.len());
    }

    /// The next whole reply, with its value as a slice, and its opaque; `None` when more
    /// bytes are needed.
    pub(crate) fn next_reply(
        &mut self,
        max_value_size: usize,
    ) -> Result<Option<Received<'_>>, ProtocolError> {
        let base = self.start;
        match parse(&self.data[base..self.end], max_value_size)? {
            Parsed::Incomplete { needed } => {
                self.needed = needed;
                Ok(None)
            }
            Parsed::Reply { reply, len, opaque } => {
                self.needed = 0;
                self.start += len;
                let reply = match reply {
                    Reply::Value { data, cas } => Reply::Value {
                        data: &self.data[base + data.start..base + data.end],
                        cas,
                    },
                    Reply::Item { key, data } => Reply::Item {
                        key: &self.data[base + key.start..base + key.end],
                        data: &self.data[base + data.start..base + data.end],
                    },
                    Reply::End => Reply::End,
                    Reply::Done => Reply::Done,
                    Reply::Miss => Reply::Miss,
                    Reply::NotStored => Reply::NotStored,
                    Reply::Exists => Reply::Exists,
                    Reply::NotFound => Reply::NotFound,
                    Reply::Version(version) => Reply::Version(version),
                    Reply::Error(message) => Reply::Error(message),
                };
                Ok(Some((reply, opaque)))
            }
        }
    }

    /// Bytes received and not parsed (a server that sent more than was asked for).
    pub(crate) fn unparsed(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// After a command: drops a buffer grown for a large value back to one chunk.
    pub(crate) fn settle(&mut self) {
        if self.start == self.end && self.data.len() > CHUNK {
            self.data = vec![0; CHUNK];
            self.start = 0;
            self.end = 0;
        }
    }
}

/// `mg <key> [flags] O<opaque>\r\n`: `v` asks for the value, `c` for its CAS id, none
/// for `HD`/`EN` only. Every meta request carries an opaque that its reply echoes, so a
/// reply can be checked to be this request's.
pub(crate) fn get(out: &mut Vec<u8>, key: &str, flags: &str, opaque: u64) {
    out.extend_from_slice(b"mg ");
    out.extend_from_slice(key.as_bytes());
    if !flags.is_empty() {
        out.push(b' ');
        out.extend_from_slice(flags.as_bytes());
    }
    end_meta(out, opaque);
}

fn end_meta(out: &mut Vec<u8>, opaque: u64) {
    push_number(out, b" O", opaque);
    out.extend_from_slice(b"\r\n");
}

/// `mg _ O<opaque>\r\n` then `get <key> <key>...\r\n`: the classic get of many keys,
/// answered with a `VALUE` for each key found, in the order asked, then `END`. The
/// classic replies carry no opaque, so a meta request goes first whose `HD`/`EN` echoes
/// one: it marks where this request's replies start. (Before the `get`, not after it:
/// memcached sends a `get`'s reply in a packet of its own when a request follows it.)
pub(crate) fn get_many(out: &mut Vec<u8>, keys: &[&str], opaque: u64) {
    get(out, "_", "", opaque);
    out.extend_from_slice(b"get");
    for key in keys {
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// How `ms` stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Always (memcached's `set`).
    Set,
    /// Only when the key is absent (`add`, `ME`).
    Add,
    /// Only while the item still has this CAS id (`C<cas>`; `cas` in the classic protocol).
    Swap(u64),
}

/// `ms <key> <len> [T<ttl>] [ME] O<opaque>\r\n`, the line before a value of `len` bytes (which the
/// caller sends, followed by `\r\n`). Client flags stay 0, as pymemcache and pylibmc
/// store raw bytes, so both read what the other wrote.
pub(crate) fn set(out: &mut Vec<u8>, key: &str, len: usize, ttl: u32, mode: Mode, opaque: u64) {
    out.extend_from_slice(b"ms ");
    out.extend_from_slice(key.as_bytes());
    push_number(out, b" ", len as u64);
    if ttl != 0 {
        push_number(out, b" T", u64::from(ttl));
    }
    match mode {
        Mode::Set => {}
        Mode::Add => out.extend_from_slice(b" ME"),
        Mode::Swap(cas) => push_number(out, b" C", cas),
    }
    end_meta(out, opaque);
}

/// `md <key> [C<cas>] O<opaque>\r\n`: with a CAS id, deletes only the item that still
/// has it.
pub(crate) fn delete(out: &mut Vec<u8>, key: &str, cas: Option<u64>, opaque: u64) {
    out.extend_from_slice(b"md ");
    out.extend_from_slice(key.as_bytes());
    if let Some(cas) = cas {
        push_number(out, b" C", cas);
    }
    end_meta(out, opaque);
}

fn push_number(out: &mut Vec<u8>, prefix: &[u8], n: u64) {
    use std::io::Write;
    out.extend_from_slice(prefix);
    let _ = write!(out, "{n}");
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    fn reply(buf: &[u8]) -> (Reply, usize) {
        match parse(buf, MAX).unwrap() {
            Parsed::Reply { reply, len, .. } => (reply, len),
            other => panic!("{other:?} for {buf:?}"),
        }
    }

    #[test]
    fn replies_parse() {
        assert_eq!(
            reply(b"VA 3\r\nabc\r\nEN\r\n"),
            (
                Reply::Value {
                    data: 6..9,
                    cas: None
                },
                11
            )
        );
        assert_eq!(
            reply(b"VA 0 c77\r\n\r\n"),
            (
                Reply::Value {
                    data: 10..10,
                    cas: Some(77)
                },
                12
            )
        );
        assert_eq!(
            reply(b"VALUE k:1 0 2\r\nab\r\nEND\r\n"),
            (
                Reply::Item {
                    key: 6..9,
                    data: 15..17
                },
                19
            )
        );
        assert_eq!(
            reply(b"VALUE k 7 0 99\r\n\r\n").0,
            Reply::Item {
                key: 6..7,
                data: 16..16
            }
        );
        assert_eq!(reply(b"END\r\n"), (Reply::End, 5));
        assert_eq!(reply(b"EN\r\n"), (Reply::Miss, 4));
        assert_eq!(
            parse(b"VA 1 c5 O77 t-1\r\nx\r\n", MAX),
            Ok(Parsed::Reply {
                reply: Reply::Value {
                    data: 17..18,
                    cas: Some(5)
                },
                len: 20,
                opaque: Some(77)
            })
        );
        assert_eq!(
            parse(b"EN O9\r\n", MAX),
            Ok(Parsed::Reply {
                reply: Reply::Miss,
                len: 7,
                opaque: Some(9)
            })
        );
        assert_eq!(reply(b"HD\r\n"), (Reply::Done, 4));
        assert_eq!(reply(b"NS\r\n"), (Reply::NotStored, 4));
        assert_eq!(
            reply(b"VERSION 1.6.18\r\n"),
            (Reply::Version("1.6.18".into()), 16)
        );
        assert_eq!(reply(b"EX\r\n"), (Reply::Exists, 4));
        assert_eq!(reply(b"NF\r\n"), (Reply::NotFound, 4));
        assert_eq!(
            reply(b"SERVER_ERROR object too large for cache\r\n").0,
            Reply::Error("SERVER_ERROR object too large for cache".into())
        );
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete_and_asks_for_more() {
        let whole = b"VA 5 c9\r\nhello\r\n";
        for cut in 0..whole.len() {
            match parse(&whole[..cut], MAX).unwrap() {
                Parsed::Incomplete { needed } => assert!(needed > cut, "{cut}"),
                other => panic!("{cut}: {other:?}"),
            }
        }
        assert!(matches!(
            parse(whole, MAX),
            Ok(Parsed::Reply { len: 16, .. })
        ));
    }

    #[test]
    fn lies_and_garbage_are_errors_never_panics_or_huge_needs() {
        let too_large = format!("VA {} \r\n", MAX + 1);
        let cases: &[&[u8]] = &[
            b"VA 5\r\nabcdefgh\r\n",
            b"VA 5\r\nabc\r\nEN\r\n",
            b"VA -1\r\n",
            b"VA 18446744073709551615\r\n",
            b"VA 99999999999999999999999\r\n",
            b"VA\r\n",
            b"VA 3 cx\r\nabc\r\n",
            b"VALUE k 0\r\n",
            b"VALUE k 0 3 x\r\nabc\r\n",
            b"VALUE k 0 3 1 2\r\nabc\r\n",
            b"VALUE k 0 3\r\nabcd\r\n",
            b"VALUE k 0 18446744073709551615\r\n",
            b"HD Ox\r\n",
            b"END O1\r\n",
            b"STORED\r\n",
            b"\r\n",
            b"HD\n",
            b"\x00\xff\r\n",
            too_large.as_bytes(),
        ];
        for case in cases {
            assert!(parse(case, MAX).is_err(), "{:?}", case.escape_ascii());
        }
        assert_eq!(
            parse(&[b'a'; MAX_LINE], MAX),
            Err(ProtocolError::LineTooLong)
        );
        // Every byte sequence either parses, asks for at most one value's worth, or fails.
        let mut seed = 0x2545_f491_u64;
        for _ in 0..20_000 {
            let len = (seed % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let alphabet = b"VALUEHDNM 0123456789c\r\n\xff";
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            if let Ok(Parsed::Incomplete { needed }) = parse(&bytes, MAX) {
                assert!(needed <= MAX_LINE + MAX + 2, "{needed}");
            }
        }
    }

    #[test]
    fn the_buffer_takes_replies_split_anywhere_and_stays_bounded() {
        let mut stream = Vec::new();
        for i in 0..50u8 {
            stream.extend_from_slice(b"VA 300\r\n");
            stream.extend(std::iter::repeat_n(i, 300));
            stream.extend_from_slice(b"\r\nEN\r\n");
        }
        stream.extend_from_slice(b"END\r\n");
        for step in [1, 7, 301, 5000] {
            let mut buffer = ReadBuffer::new();
            let (mut fed, mut values, mut misses) = (0, 0u8, 0);
            loop {
                match buffer.next_reply(MAX).unwrap().map(|(reply, _)| reply) {
                    Some(Reply::Value { data, .. }) => {
                        assert_eq!(data, &[values; 300][..]);
                        values += 1;
                    }
                    Some(Reply::Miss) => misses += 1,
                    Some(Reply::End) => break,
                    Some(other) => panic!("{other:?}"),
                    None => {
                        let spare = buffer.spare();
                        let n = step.min(spare.len()).min(stream.len() - fed);
                        spare[..n].copy_from_slice(&stream[fed..fed + n]);
                        buffer.filled(n);
                        fed += n;
                    }
                }
                assert!(buffer.data.len() <= 2 * CHUNK + MAX + MAX_LINE);
            }
            assert_eq!((values, misses, fed), (50, 50, stream.len()));
            assert!(buffer.unparsed().is_empty());
        }
    }

    #[test]
    fn requests_are_meta_commands() {
        let mut out = Vec::new();
        get(&mut out, "k", "v", 1);
        get(&mut out, "k", "", 2);
        set(&mut out, "k", 3, 0, Mode::Set, 3);
        set(&mut out, "k", 3, 60, Mode::Add, 4);
        delete(&mut out, "k", None, 5);
        delete(&mut out, "k", Some(42), 6);
        get_many(&mut out, &["a", "b"], 7);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "mg k v O1\r\nmg k O2\r\nms k 3 O3\r\nms k 3 T60 ME O4\r\nmd k O5\r\n\
             md k C42 O6\r\nmg _ O7\r\nget a b\r\n"
        );
    }
}
