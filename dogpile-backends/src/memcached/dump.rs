//! Listing a server's keys with `lru_crawler metadump all`, for operator tools
//! ([`CacheBackend::keys`](dogpile_core::backend::CacheBackend::keys)).
//!
//! The dump runs on a connection of its own (not a pooled one: its reply is not a meta
//! reply), bounded by `socket_timeout` per read, with lines of at most 4 KiB.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

/// The longest metadump line read (a key of 250 bytes, percent-encoded, and its fields).
const MAX_LINE: u64 = 4096;

/// How long a busy crawler is waited for before the listing fails.
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// Calls `found` with every key `server` (`host:port`) holds until it returns `false`;
/// `Ok(false)` when it did.
pub(crate) fn dump_keys(
    server: &str,
    timeout: Duration,
    found: &mut dyn FnMut(String) -> bool,
) -> io::Result<bool> {
    let busy_until = Instant::now() + BUSY_WAIT;
    loop {
        let address = server
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
        let mut stream = TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(b"lru_crawler metadump all\r\n")?;
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = Read::by_ref(&mut reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the dump",
                ));
            }
            if line.last() != Some(&b'\n') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "metadump line longer than 4 KiB",
                ));
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            if text == "END" {
                return Ok(true);
            }
            if text.starts_with("BUSY") && Instant::now() < busy_until {
                thread::sleep(Duration::from_millis(50));
                break;
            }
            let Some(key) = text.split(' ').find_map(|field| field.strip_prefix("key=")) else {
                return Err(io::Error::other(format!(
                    "unexpected reply to lru_crawler metadump: {text:?}"
                )));
            };
            if !found(percent_decode(key)) {
                return Ok(false);
            }
        }
    }
}

/// Undoes metadump's URL encoding of keys (`%3A` for `:`).
fn percent_decode(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn keys_are_percent_decoded() {
        assert_eq!(percent_decode("user%3A1"), "user:1");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
        assert_eq!(percent_decode("end%41"), "endA");
    }
}
