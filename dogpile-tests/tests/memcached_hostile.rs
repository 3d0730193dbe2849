//! The memcached backend against fake, hostile memcached servers (a `TcpListener` thread
//! in this test): replies that trickle, never end a line, announce a huge value, stop
//! half way, lie about their lengths, or are garbage. Each call must end within 2x
//! `socket_timeout`, allocate less than 64 MB, not panic, and drop its connection: the
//! next call, once the server behaves, gets its own answer, never what was left of the
//! previous one.
//!
//! Every case runs twice: through the blocking client, and through the backend's native
//! async client (its async twin), awaited on a current-thread runtime.
//!
//! Allocations are counted per thread by a counting global allocator: the blocking client
//! does all its work on the calling thread, and so does the async one on a current-thread
//! runtime driven by the calling thread, so the calling thread's peak is the call's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[cfg(feature = "tokio")]
use dogpile::backend::AsyncCacheBackend;
use dogpile::backend::{Arguments, CacheBackend};
use dogpile::backends::MemcachedBackend;
use dogpile::{CacheRegion, Error, RegionConfig};

// ----- allocation counting --------------------------------------------------------------

struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size() as i64);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size() as i64);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        grow(-(layout.size() as i64));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grow(new_size as i64 - layout.size() as i64);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn grow(by: i64) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + by;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, returning its result, how long it took, and the most bytes this thread had
/// allocated beyond what it had at the start.
fn measured<T>(f: impl FnOnce() -> T) -> (T, Duration, i64) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let started = Instant::now();
    let result = f();
    (result, started.elapsed(), PEAK.with(Cell::get) - base)
}

// ----- the fake server -------------------------------------------------------------------

/// What the fake answers to a read (`mg`, `get`) or, for `OnStore`, to a store.
#[derive(Clone, Debug)]
enum Behaviour {
    /// Like memcached: the value of key `k` is `value of k`; stores are `HD`.
    Good,
    /// The good reply, one byte every `interval`.
    Trickle(Duration),
    /// `VA 5 ` and then `a`s without end.
    EndlessLine,
    /// A header announcing `len` bytes, then zeros without end.
    Huge(&'static str),
    /// These bytes, then the connection closed.
    Truncated(&'static [u8]),
    /// These bytes, then nothing (the connection left open).
    Send(&'static [u8]),
    /// The good reply, then another reply nobody asked for (in the same packet).
    Extra,
    /// The good reply, then a moment later the same reply again (a stale one).
    Late,
    /// Reads nothing more after the request line, and answers nothing, for 1.5 s.
    Stall,
}

struct Fake {
    addr: String,
    behaviour: Arc<Mutex<Behaviour>>,
    /// Connections the client closed (seen as end of stream or a failed write).
    closed_by_client: Arc<AtomicUsize>,
}

impl Fake {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let behaviour = Arc::new(Mutex::new(Behaviour::Good));
        let closed_by_client = Arc::new(AtomicUsize::new(0));
        let (b, c) = (behaviour.clone(), closed_by_client.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (b, c) = (b.clone(), c.clone());
                thread::spawn(move || {
                    if serve(stream, &b) {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Fake {
            addr,
            behaviour,
            closed_by_client,
        }
    }

    fn behave(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn closed_by_client(&self) -> usize {
        self.closed_by_client.load(Ordering::SeqCst)
    }

    /// Waits until the client has closed more than `before` connections.
    fn wait_closed(&self, before: usize, case: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.closed_by_client() <= before {
            assert!(
                Instant::now() < deadline,
                "{case}: the client kept the connection open after its failure"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

fn good_value(key: &str) -> Vec<u8> {
    format!("value of {key}").into_bytes()
}

/// The good reply to one request line (reading a store's data from `reader`): meta
/// replies echo the request's `O` flag, as memcached does.
fn good_reply(line: &str, reader: &mut impl Read) -> Vec<u8> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let opaque: String = words
        .iter()
        .find(|word| word.starts_with('O'))
        .map(|word| format!(" {word}"))
        .unwrap_or_default();
    match words.as_slice() {
        ["mg", key, flags @ ..] if flags.contains(&"v") => {
            let value = good_value(key);
            let mut reply = format!("VA {}{opaque}\r\n", value.len()).into_bytes();
            reply.extend_from_slice(&value);
            reply.extend_from_slice(b"\r\n");
            reply
        }
        ["mg", ..] => format!("EN{opaque}\r\n").into_bytes(),
        ["get", keys @ ..] => {
            let mut reply = Vec::new();
            for key in keys {
                let value = good_value(key);
                reply.extend_from_slice(format!("VALUE {key} 0 {}\r\n", value.len()).as_bytes());
                reply.extend_from_slice(&value);
                reply.extend_from_slice(b"\r\n");
            }
            reply.extend_from_slice(b"END\r\n");
            reply
        }
        ["ms", _, len, ..] => {
            let mut data = vec![0; len.parse::<usize>().unwrap() + 2];
            reader.read_exact(&mut data).unwrap();
            format!("HD{opaque}\r\n").into_bytes()
        }
        ["md", ..] => format!("HD{opaque}\r\n").into_bytes(),
        _ => b"ERROR\r\n".to_vec(),
    }
}

/// Serves one connection; true when the client closed it.
fn serve(stream: TcpStream, behaviour: &Mutex<Behaviour>) -> bool {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
        // The mark before a multi-key get (`mg _ O<n>`, no value) is answered well, so
        // that the hostile reply is the one to the `get`.
        let mark = line.starts_with("mg ") && !line.split_whitespace().any(|word| word == "v");
        let behaviour = match mark {
            true => Behaviour::Good,
            false => behaviour.lock().unwrap().clone(),
        };
        if let Behaviour::Stall = behaviour {
            thread::sleep(Duration::from_millis(1500));
            // Whatever the client sent, then the end of the stream once it gave up.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
            return true;
        }
        let good = good_reply(line.trim_end(), &mut reader);
        let sent = match behaviour {
            Behaviour::Stall => unreachable!("answered above"),
            Behaviour::Good => writer.write_all(&good),
            Behaviour::Trickle(interval) => good.iter().try_for_each(|byte| {
                thread::sleep(interval);
                writer.write_all(&[*byte])
            }),
            Behaviour::EndlessLine => writer
                .write_all(b"VA 5 ")
                .and_then(|()| endless(&mut writer, b'a')),
            Behaviour::Huge(header) => writer
                .write_all(header.as_bytes())
                .and_then(|()| endless(&mut writer, 0)),
            Behaviour::Truncated(bytes) => {
                let _ = writer.write_all(bytes);
                return false;
            }
            Behaviour::Send(bytes) => writer.write_all(bytes),
            Behaviour::Extra => {
                let mut both = good.clone();
                both.extend(good_reply("mg stale v O999", &mut reader));
                writer.write_all(&both)
            }
            Behaviour::Late => writer.write_all(&good).and_then(|()| {
                thread::sleep(Duration::from_millis(100));
                writer.write_all(&good)
            }),
        };
        if sent.is_err() {
            return true;
        }
    }
}

/// Writes `byte` until the client goes away (an error).
fn endless(writer: &mut TcpStream, byte: u8) -> std::io::Result<()> {
    let chunk = vec![byte; 64 * 1024];
    loop {
        writer.write_all(&chunk)?;
    }
}

// ----- the tests -------------------------------------------------------------------------

const SOCKET_TIMEOUT: Duration = Duration::from_millis(500);

/// The faces a case runs through: blocking, then async (with the `tokio` feature).
const FACES: &[bool] = if cfg!(feature = "tokio") {
    &[false, true]
} else {
    &[false]
};

/// The backend under test through one of its faces: its blocking methods, or its async
/// twin's awaited on a current-thread runtime that the calling thread drives.
struct Client {
    backend: MemcachedBackend,
    #[cfg(feature = "tokio")]
    nonblocking: Option<(
        std::sync::Arc<dyn AsyncCacheBackend>,
        tokio::runtime::Runtime,
    )>,
}

impl Client {
    #[cfg_attr(not(feature = "tokio"), allow(unused_variables))]
    fn new(fake: &Fake, nonblocking: bool) -> Self {
        let backend = backend(fake);
        Client {
            #[cfg(feature = "tokio")]
            nonblocking: nonblocking.then(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                (
                    backend.async_twin().expect("a native async client"),
                    runtime,
                )
            }),
            backend,
        }
    }

    /// The async twin and the runtime to await it on, for the async face.
    #[cfg(feature = "tokio")]
    fn twin(&self) -> Option<(&dyn AsyncCacheBackend, &tokio::runtime::Runtime)> {
        let (twin, runtime) = self.nonblocking.as_ref()?;
        Some((&**twin, runtime))
    }

    fn get(&self, key: &str) -> dogpile::Result<Option<Vec<u8>>> {
        #[cfg(feature = "tokio")]
        if let Some((twin, runtime)) = self.twin() {
            return runtime.block_on(twin.get(key));
        }
        self.backend.get(key)
    }

    fn get_multi(&self, keys: &[&str]) -> dogpile::Result<Vec<Option<Vec<u8>>>> {
        #[cfg(feature = "tokio")]
        if let Some((twin, runtime)) = self.twin() {
            return runtime.block_on(twin.get_multi(keys));
        }
        self.backend.get_multi(keys)
    }

    fn set(&self, key: &str, value: Vec<u8>) -> dogpile::Result<()> {
        #[cfg(feature = "tokio")]
        if let Some((twin, runtime)) = self.twin() {
            return runtime.block_on(twin.set(key, value));
        }
        self.backend.set(key, value)
    }
}

fn backend(fake: &Fake) -> MemcachedBackend {
    MemcachedBackend::from_arguments(&Arguments::new(
        "memcached",
        [
            ("url", fake.addr.as_str()),
            ("socket_timeout", "0.5"),
            // One connection: a broken one kept in the pool would be the next one used.
            ("pool_size", "1"),
            // The server is tried again at once, so the next call shows the connection.
            ("dead_retry", "0"),
        ],
    ))
    .unwrap()
}

/// `call` fails against `behaviour` within the bounds, and the next calls get their own
/// answers once the server behaves; through each face in turn (the error is the last
/// face's).
fn hostile_case<T: std::fmt::Debug>(
    case: &str,
    behaviour: Behaviour,
    call: impl Fn(&Client) -> dogpile::Result<T>,
) -> Error {
    let mut errors: Vec<Error> = FACES
        .iter()
        .map(|&nonblocking| {
            let face = if nonblocking { "async" } else { "blocking" };
            hostile_case_on(
                &format!("{case} ({face})"),
                behaviour.clone(),
                nonblocking,
                &call,
            )
        })
        .collect();
    errors.pop().expect("one face at least")
}

fn hostile_case_on<T: std::fmt::Debug>(
    case: &str,
    behaviour: Behaviour,
    nonblocking: bool,
    call: &impl Fn(&Client) -> dogpile::Result<T>,
) -> Error {
    let fake = Fake::start();
    let backend = Client::new(&fake, nonblocking);
    // A connection is open and pooled before the server turns hostile.
    assert_eq!(
        backend.get("warm").unwrap(),
        Some(good_value("warm")),
        "{case}"
    );
    // (A truncating server closes the connection itself.)
    let server_closes = matches!(behaviour, Behaviour::Truncated(_));
    fake.behave(behaviour);
    let closed = fake.closed_by_client();
    let (outcome, took, allocated) = measured(|| call(&backend));
    let error = match outcome {
        Err(error) => error,
        Ok(value) => panic!("{case}: expected an error, got {value:?}"),
    };
    let message = error.to_string();
    assert!(matches!(error, Error::Backend { .. }), "{case}: {message}");
    assert!(message.contains(&fake.addr), "{case}: {message}");
    assert!(
        took < 2 * SOCKET_TIMEOUT,
        "{case}: took {took:?}, socket_timeout is {SOCKET_TIMEOUT:?}: {message}"
    );
    assert!(
        allocated < 64 << 20,
        "{case}: the call allocated {allocated} bytes: {message}"
    );
    if !server_closes {
        fake.wait_closed(closed, case);
    }

    fake.behave(Behaviour::Good);
    for key in ["next", "after"] {
        assert_eq!(
            backend.get(key).unwrap(),
            Some(good_value(key)),
            "{case}: {key}"
        );
    }
    assert_eq!(
        backend.get_multi(&["m1", "m2"]).unwrap(),
        [Some(good_value("m1")), Some(good_value("m2"))],
        "{case}"
    );
    error
}

fn get(key: &'static str) -> impl Fn(&Client) -> dogpile::Result<Option<Vec<u8>>> {
    move |backend| backend.get(key)
}

#[test]
fn a_trickled_reply_ends_at_socket_timeout_over_the_whole_reply() {
    // 19 bytes at 100 ms each: every read gets a byte well within socket_timeout, so only
    // a deadline over the whole reply ends the call before the reply does (1.9 s).
    let error = hostile_case(
        "trickle",
        Behaviour::Trickle(Duration::from_millis(100)),
        get("k"),
    );
    assert!(
        error.to_string().contains("socket_timeout"),
        "names the timeout: {error}"
    );
}

#[test]
fn a_trickled_get_multi_ends_at_socket_timeout() {
    hostile_case(
        "trickled get_multi",
        Behaviour::Trickle(Duration::from_millis(40)),
        |backend| backend.get_multi(&["a", "b"]),
    );
}

#[test]
fn an_endless_line_is_cut_off_at_once() {
    let error = hostile_case("endless line", Behaviour::EndlessLine, get("k"));
    assert!(error.to_string().contains("longer than"), "{error}");
}

#[test]
fn a_huge_announced_length_is_refused_before_allocating() {
    for header in [
        "VA 1000000000\r\n",
        "VA 1114113\r\n",
        "VA 18446744073709551615\r\n",
    ] {
        let error = hostile_case(header, Behaviour::Huge(header), get("k"));
        assert!(error.to_string().contains("max_value_size"), "{error}");
    }
    let error = hostile_case(
        "huge get_multi value",
        Behaviour::Huge("VALUE a 0 4000000000\r\n"),
        |backend| backend.get_multi(&["a"]),
    );
    assert!(error.to_string().contains("max_value_size"), "{error}");
}

#[test]
fn a_truncated_reply_is_an_error() {
    for bytes in [&b"VA 100\r\nabc"[..], b"VA 1", b"", b"VALUE a 0 3\r\nab"] {
        hostile_case(
            &format!("truncated {:?}", bytes.escape_ascii().to_string()),
            Behaviour::Truncated(bytes),
            get("k"),
        );
    }
}

#[test]
fn lengths_that_do_not_add_up_are_errors_not_panics() {
    let cases: &[(&str, &[u8])] = &[
        ("data longer than announced", b"VA 3\r\nabcdefgh\r\n"),
        (
            "data shorter than announced",
            b"VA 12\r\nab\r\nEN\r\nEN\r\nEN\r\n",
        ),
        ("a negative length", b"VA -1\r\n"),
        ("a length that overflows", b"VA 99999999999999999999999\r\n"),
        (
            "a length past usize after the header",
            b"VA 18446744073709551614\r\n",
        ),
        ("a zero length with data", b"VA 0\r\nxy\r\n"),
    ];
    for (case, bytes) in cases {
        hostile_case(case, Behaviour::Send(bytes), get("k"));
    }
    hostile_case(
        "get_multi value shorter than announced",
        Behaviour::Send(b"VALUE a 0 5\r\nab\r\nEND\r\n"),
        |backend| backend.get_multi(&["a", "b"]),
    );
}

#[test]
fn garbage_and_replies_to_other_commands_are_errors() {
    let cases: &[(&str, &[u8])] = &[
        (
            "binary garbage",
            b"\x81\x00\x00\x05\xff\xfe\x00\x00\x00\x00\x00\x00",
        ),
        ("text garbage", b"HELLO WORLD\r\n"),
        ("a classic reply to mg", b"STORED\r\n"),
        ("a bare newline", b"\n"),
        ("a status where a value was asked for", b"HD\r\n"),
    ];
    for (case, bytes) in cases {
        hostile_case(case, Behaviour::Send(bytes), get("k"));
    }
    hostile_case(
        "a value for a store",
        Behaviour::Send(b"VA 2\r\nhi\r\n"),
        |backend| backend.set("k", b"v".to_vec()),
    );
    for (case, bytes) in [
        (
            "get_multi values for keys not asked for",
            &b"VALUE zz 0 1\r\nz\r\nEND\r\n"[..],
        ),
        (
            "get_multi values out of order",
            b"VALUE b 0 1\r\nb\r\nVALUE a 0 1\r\na\r\nEND\r\n",
        ),
        (
            "get_multi with more values than keys",
            b"VALUE a 0 1\r\na\r\nVALUE b 0 1\r\nb\r\nVALUE b 0 1\r\nb\r\nEND\r\n",
        ),
    ] {
        let error = hostile_case(case, Behaviour::Send(bytes), |backend| {
            backend.get_multi(&["a", "b"])
        });
        assert!(
            error.to_string().contains("not asked for"),
            "{case}: {error}"
        );
    }
}

#[test]
fn a_server_that_stops_reading_and_answering_ends_at_socket_timeout() {
    // A store of 1 MiB: the write fills the socket buffers, or the reply never comes;
    // either way one deadline covers both.
    let error = hostile_case("stalled store", Behaviour::Stall, |backend| {
        backend.set("k", vec![7; 1 << 20])
    });
    assert!(error.to_string().contains("socket_timeout"), "{error}");
    hostile_case("stalled get", Behaviour::Stall, get("k"));
}

#[test]
fn a_reply_followed_by_one_nobody_asked_for_drops_the_connection() {
    // A server that answers twice: the second answer must never become the reply to the
    // next command.
    let error = hostile_case("an extra reply", Behaviour::Extra, get("k"));
    assert!(error.to_string().contains("after its reply"), "{error}");
}

#[test]
fn an_error_reply_names_the_server_message_and_drops_the_connection() {
    let error = hostile_case(
        "server error",
        Behaviour::Send(b"SERVER_ERROR out of memory storing object\r\n"),
        get("k"),
    );
    assert!(error.to_string().contains("out of memory"), "{error}");
}

#[test]
fn a_stale_reply_that_arrives_late_is_never_taken_for_the_next_ones() {
    for &nonblocking in FACES {
        a_stale_reply_on(nonblocking);
    }
}

fn a_stale_reply_on(nonblocking: bool) {
    // The server answers, and 100 ms later sends the same answer again. The call after
    // that reads the stale answer first: the opaque it echoes is the previous request's,
    // so the call fails and drops the connection instead of returning `value of k`.
    let fake = Fake::start();
    let backend = Client::new(&fake, nonblocking);
    fake.behave(Behaviour::Late);
    assert_eq!(backend.get("k").unwrap(), Some(good_value("k")));
    fake.behave(Behaviour::Good);
    thread::sleep(Duration::from_millis(300));
    let closed = fake.closed_by_client();
    match backend.get("other") {
        Ok(value) => panic!(
            "the stale reply was taken for this one: {:?}",
            value.map(String::from_utf8)
        ),
        Err(error) => assert!(error.to_string().contains("another request"), "{error}"),
    }
    fake.wait_closed(closed, "stale reply");
    assert_eq!(backend.get("other").unwrap(), Some(good_value("other")));
}

/// A server that accepts every connection and closes it at once, as a proxy whose
/// upstream is down does; its address.
fn accepts_and_closes() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    addr
}

/// The threads of this process now (Linux's `/proc/self/status`).
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no thread count in /proc/self/status:\n{status}"))
}

#[test]
fn a_server_that_accepts_and_closes_costs_no_threads() {
    // Every call finds its connection closed, retries on a fresh one, closed again: with
    // dead_retry 0 the server is never left alone, so each call connects twice. Nothing
    // the pool does for that may start threads (it once started 3 per failed call, until
    // spawning failed and a call panicked).
    let addr = accepts_and_closes();
    let region = CacheRegion::new();
    region
        .configure(
            RegionConfig::new("memcached")
                .argument("url", addr.as_str())
                .argument("socket_timeout", "0.5")
                .argument("dead_retry", "0"),
        )
        .unwrap();
    let mut most = threads();
    for call in 0..2000 {
        let error = match region.get::<u32>("k") {
            Err(error) => error,
            Ok(value) => panic!("call {call}: expected an error, got {value:?}"),
        };
        assert!(
            matches!(error, Error::Backend { .. }),
            "call {call}: {error}"
        );
        assert!(error.to_string().contains(&addr), "call {call}: {error}");
        most = most.max(threads());
        // Checked at every call, so that a regression stops at once rather than taking
        // the machine's threads.
        assert!(most < 64, "call {call}: {most} threads in the process");
    }
}

/// A loopback address that nothing listens on (bound a moment ago, then let go):
/// connections to it are refused.
fn refusing_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The bound on a refused connection's error: a refusal is known at once.
const REFUSED_WITHIN: Duration = Duration::from_millis(100);

/// The region's first call against `addr` fails within [`REFUSED_WITHIN`] (its
/// `socket_timeout` is the default, 3 s), naming the server and the refusal; the next
/// one is refused at once as well, because the server is marked down (`dead_retry`).
fn refused_at_once(
    addr: &str,
    call: impl Fn(&CacheRegion) -> dogpile::Result<Option<u32>>,
    face: &str,
) {
    let region = CacheRegion::new();
    region
        .configure(RegionConfig::new("memcached").argument("url", addr))
        .unwrap();
    let started = Instant::now();
    let outcome = call(&region);
    let took = started.elapsed();
    let message = match outcome {
        Err(error @ Error::Backend { .. }) => error.to_string(),
        other => panic!("{face}: expected Error::Backend, got {other:?}"),
    };
    assert!(took < REFUSED_WITHIN, "{face}: took {took:?}: {message}");
    assert!(message.contains(addr), "{face}: {message}");
    assert!(message.contains("refused"), "{face}: {message}");
    let message = call(&region).unwrap_err().to_string();
    assert!(
        message.contains(addr) && message.contains("marked down"),
        "{face}: {message}"
    );
}

#[test]
fn a_refused_connection_fails_at_once_naming_the_server() {
    refused_at_once(&refusing_addr(), |region| region.get("k"), "sync");
}

#[cfg(feature = "tokio")]
#[test]
fn a_refused_connection_fails_at_once_from_async_code_too() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    refused_at_once(
        &refusing_addr(),
        |region| runtime.block_on(region.get_async("k")),
        "async",
    );
}
