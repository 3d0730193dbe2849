//! A real memcached for tests, on a free loopback port, stopped when dropped.
//!
//! Use it with the ports helper:
//! ```ignore
//! #[path = "support/ports.rs"]
//! mod ports;
//! #[path = "support/memcached_server.rs"]
//! mod memcached_server;
//! ```
//! The server runs as `memcached -l 127.0.0.1 -p PORT -U 0 -I 8m`: an item size limit of
//! 8 MiB, because the conformance suite stores values over memcached's default 1 MiB.
//! When memcached cannot be started the test panics and says so; it never skips.
//!
//! Besides the server, this is a bare client of memcached's text protocol, independent of
//! the crate under test: raw `set`/`get` of any bytes, counters, the exact set of keys
//! the server holds, a key's remaining TTL, and statistics.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ports::free_port;

/// A memcached process; killed when dropped.
pub struct MemcachedServer {
    port: u16,
    child: Option<Child>,
}

impl MemcachedServer {
    /// Starts memcached on a free loopback port and waits until it accepts connections.
    pub fn start() -> Self {
        let mut server = MemcachedServer {
            port: free_port(),
            child: None,
        };
        server.launch();
        server
    }

    /// A client of a server started by another process (a test's parent): never stopped.
    pub fn attach(port: u16) -> Self {
        MemcachedServer { port, child: None }
    }

    fn launch(&mut self) {
        let port = self.port.to_string();
        // `-u root` is only used when running as root, where memcached requires it.
        let mut child = Command::new("memcached")
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "0",
                "-I",
                "8m",
                "-u",
                "root",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start memcached ({error}); install it (./scripts/test.sh does) \
                     to run the memcached tests"
                )
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                if stderr.contains("Address already in use") {
                    // Another test's server took the port between `free_port` and here:
                    // take another one.
                    self.port = free_port();
                    return self.launch();
                }
                panic!("memcached on port {port} could not be started ({status}): {stderr}");
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                // What answered may be another test's server on the same port, while this
                // one is failing to bind it: this one must still be running a moment later.
                std::thread::sleep(Duration::from_millis(20));
                if matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                continue;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("memcached on port {port} did not accept connections within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, as the backend's `url` argument takes it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: frozen, it still accepts
    /// connections (the kernel does) but answers nothing.
    pub fn freeze(&self, frozen: bool) {
        let pid = self
            .child
            .as_ref()
            .expect("a running server")
            .id()
            .to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Stops the server if it runs, and starts a new, empty one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn connect(&self) -> Connection {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
            .unwrap_or_else(|e| panic!("cannot connect to memcached at {}: {e}", self.addr()));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Connection {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Stores `value` under `key` as another client would (flags 0, no TTL).
    pub fn raw_set(&self, key: &str, value: &[u8]) {
        let mut c = self.connect();
        c.send(format!("set {key} 0 0 {}\r\n", value.len()).as_bytes());
        c.send(value);
        c.send(b"\r\n");
        assert_eq!(c.line(), "STORED", "raw set of {key:?}");
    }

    /// The bytes stored under `key`, read as another client would.
    pub fn raw_get(&self, key: &str) -> Option<Vec<u8>> {
        let mut c = self.connect();
        c.send(format!("get {key}\r\n").as_bytes());
        let header = c.line();
        if header == "END" {
            return None;
        }
        let len: usize = header
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected answer to get {key}: {header}"));
        let mut value = vec![0; len + 2];
        c.reader.read_exact(&mut value).unwrap();
        value.truncate(len);
        assert_eq!(c.line(), "END");
        Some(value)
    }

    /// Deletes `key` as another client would; true when it was there.
    pub fn raw_delete(&self, key: &str) -> bool {
        let mut c = self.connect();
        c.send(format!("delete {key}\r\n").as_bytes());
        match c.line().as_str() {
            "DELETED" => true,
            "NOT_FOUND" => false,
            other => panic!("unexpected answer to delete {key}: {other}"),
        }
    }

    /// Adds `by` to the counter `key` (created at 0), returning the new value.
    pub fn incr(&self, key: &str, by: u64) -> u64 {
        let mut c = self.connect();
        c.send(format!("add {key} 0 0 1\r\n0\r\n").as_bytes());
        let added = c.line();
        assert!(added == "STORED" || added == "NOT_STORED", "{added}");
        c.send(format!("incr {key} {by}\r\n").as_bytes());
        let line = c.line();
        line.parse()
            .unwrap_or_else(|_| panic!("unexpected answer to incr {key}: {line}"))
    }

    /// The counter `key` (0 when absent).
    pub fn counter(&self, key: &str) -> u64 {
        self.raw_get(key).map_or(0, |v| {
            String::from_utf8(v)
                .unwrap()
                .trim()
                .parse()
                .expect("a counter")
        })
    }

    /// The remaining TTL of `key` in seconds: `Some(-1)` for none, `None` when absent.
    pub fn ttl(&self, key: &str) -> Option<i64> {
        self.meta_flag(key, 't')
    }

    /// The client flags of `key` (`None` when absent).
    pub fn flags(&self, key: &str) -> Option<u32> {
        self.meta_flag(key, 'f')
    }

    /// The number `mg <key> <flag>` returns for `flag` (`None` when `key` is absent).
    fn meta_flag<T: std::str::FromStr>(&self, key: &str, flag: char) -> Option<T> {
        let mut c = self.connect();
        c.send(format!("mg {key} {flag}\r\n").as_bytes());
        let line = c.line();
        if line == "EN" {
            return None;
        }
        let value = line
            .split(' ')
            .find_map(|token| token.strip_prefix(flag))
            .and_then(|value| value.parse().ok());
        Some(value.unwrap_or_else(|| panic!("unexpected answer to mg {key} {flag}: {line}")))
    }

    /// Every key the server holds (unexpired), exactly.
    ///
    /// `lru_crawler metadump` walks the LRUs while memcached's LRU maintainer moves items
    /// between them, so one dump can miss an item that moved during it: dumps are taken
    /// until one lists as many items as `curr_items` counts (or 10 s pass).
    pub fn keys(&self) -> BTreeSet<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let keys = self.metadump_keys(deadline);
            if keys.len() as u64 == self.curr_items() || Instant::now() > deadline {
                return keys;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metadump_keys(&self, deadline: Instant) -> BTreeSet<String> {
        loop {
            let mut c = self.connect();
            c.send(b"lru_crawler metadump all\r\n");
            let mut keys = BTreeSet::new();
            loop {
                let line = c.line();
                if line == "END" {
                    return keys;
                }
                if line.starts_with("BUSY") && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                    break;
                }
                let key = line
                    .split(' ')
                    .find_map(|field| field.strip_prefix("key="))
                    .unwrap_or_else(|| panic!("unexpected metadump line: {line}"));
                keys.insert(percent_decode(key));
            }
        }
    }

    /// The server's `stats`.
    pub fn stats(&self) -> HashMap<String, String> {
        let mut c = self.connect();
        c.send(b"stats\r\n");
        let mut stats = HashMap::new();
        loop {
            let line = c.line();
            if line == "END" {
                return stats;
            }
            let mut parts = line.splitn(3, ' ');
            if let (Some("STAT"), Some(name), Some(value)) =
                (parts.next(), parts.next(), parts.next())
            {
                stats.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    /// How many items the server holds (`curr_items`).
    pub fn curr_items(&self) -> u64 {
        self.stats()["curr_items"].parse().unwrap()
    }

    /// Removes every item.
    pub fn flush_all(&self) {
        let mut c = self.connect();
        c.send(b"flush_all\r\n");
        assert_eq!(c.line(), "OK");
    }
}

impl Drop for MemcachedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end_matches(['\r', '\n']).to_owned()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("memcached keys here are ASCII")
}
