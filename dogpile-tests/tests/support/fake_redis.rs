//! A fake redis server for the hostile-server tests: a `TcpListener` thread on a free
//! loopback port that speaks just enough RESP to be connected to, and answers each command
//! as the test says (trickled, endless, lying about lengths, truncated, short).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How the fake server answers one command.
pub enum Answer {
    /// These bytes, at once.
    Bytes(Vec<u8>),
    /// These bytes, one every `interval`.
    Trickle(Vec<u8>, Duration),
    /// These bytes, then the `pattern` bytes over and over, without end (until the client
    /// goes away).
    Endless(Vec<u8>, &'static [u8]),
    /// These bytes, then nothing more: the connection stays open and silent.
    Stall(Vec<u8>),
    /// These bytes, then the connection is closed.
    Close(Vec<u8>),
}

type Answerer = dyn Fn(&[Vec<u8>]) -> Answer + Send + Sync;

/// A running fake server; its threads end when their clients go away.
pub struct FakeRedis {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl FakeRedis {
    /// Starts a server that answers connection set-up commands (`CLIENT`, `AUTH`,
    /// `SELECT`, `HELLO`, `PING`) with `+OK` and every other command with `answer`.
    pub fn start(answer: impl Fn(&[Vec<u8>]) -> Answer + Send + Sync + 'static) -> FakeRedis {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("cannot bind the fake redis server: {e}"));
        let addr = listener.local_addr().expect("local address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let answer: Arc<Answerer> = Arc::new(answer);
        {
            let accepted = accepted.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let answer = answer.clone();
                    thread::spawn(move || serve(stream, &*answer));
                }
            });
        }
        FakeRedis { addr, accepted }
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// How many connections the server accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, answer: &Answerer) {
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while let Some(command) = read_command(&mut reader) {
        let name = command
            .first()
            .map(|c| c.to_ascii_uppercase())
            .unwrap_or_default();
        let reply = match name.as_slice() {
            b"CLIENT" | b"AUTH" | b"SELECT" | b"HELLO" | b"PING" => {
                Answer::Bytes(b"+OK\r\n".to_vec())
            }
            _ => answer(&command),
        };
        let open = match reply {
            Answer::Bytes(bytes) => writer.write_all(&bytes).is_ok(),
            Answer::Trickle(bytes, interval) => bytes.iter().all(|byte| {
                thread::sleep(interval);
                writer.write_all(&[*byte]).is_ok()
            }),
            Answer::Endless(head, pattern) => {
                let chunk: Vec<u8> = pattern
                    .iter()
                    .copied()
                    .cycle()
                    .take(64 * 1024 / pattern.len() * pattern.len())
                    .collect();
                if writer.write_all(&head).is_ok() {
                    while writer.write_all(&chunk).is_ok() {}
                }
                false
            }
            Answer::Stall(bytes) => {
                let _ = writer.write_all(&bytes);
                // Silent until the client goes away.
                let mut sink = [0u8; 1024];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                false
            }
            Answer::Close(bytes) => {
                let _ = writer.write_all(&bytes);
                false
            }
        };
        if !open {
            return;
        }
    }
}

/// Reads one command (a RESP array of bulk strings); `None` at end of stream or on
/// anything else.
fn read_command(reader: &mut impl BufRead) -> Option<Vec<Vec<u8>>> {
    let count = read_header(reader, b'*')?;
    (0..count)
        .map(|_| {
            let len = read_header(reader, b'$')?;
            let mut arg = vec![0; len + 2];
            reader.read_exact(&mut arg).ok()?;
            arg.truncate(len);
            Some(arg)
        })
        .collect()
}

fn read_header(reader: &mut impl BufRead, kind: u8) -> Option<usize> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).ok()?;
    let text = std::str::from_utf8(line.strip_prefix(&[kind])?).ok()?;
    text.trim_end().parse().ok()
}
