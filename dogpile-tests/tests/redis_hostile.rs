//! The `redis` backend against a hostile fake server (a `TcpListener` thread in this
//! process): each case ends within twice `socket_timeout`, grows memory by less than
//! 64 MB (counted by this binary's allocator), never panics, and leaves no broken
//! connection in the pool (the next call opens a new connection and gets the right
//! answer). And `redis_sentinel` with a hostile, hung or stopped (SIGSTOP) Sentinel, alone
//! or before a healthy one, and `redis_cluster` with a hostile node (its replies or its
//! slot map), sync and async, in the same bounds.

#[path = "support/fake_redis.rs"]
mod fake_redis;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use dogpile::backend::{Arguments, CacheBackend};
use dogpile::backends::RedisBackend;
use dogpile::Error;
use fake_redis::{Answer, FakeRedis};

/// Counts the bytes allocated now and the most allocated at once since the last reset.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only adds counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One hostile case at a time, so that the peak measured is this case's.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

const SOCKET_TIMEOUT: Duration = Duration::from_millis(500);
const MEMORY_LIMIT: usize = 64 << 20;

fn backend(server: &FakeRedis) -> RedisBackend {
    RedisBackend::from_arguments(&Arguments::new(
        "redis",
        [
            ("url", server.url()),
            ("socket_timeout", SOCKET_TIMEOUT.as_secs_f64().to_string()),
            // Every case is a fresh failure: the server is not marked down after one.
            ("dead_retry", "0".to_owned()),
        ],
    ))
    .expect("build a redis backend")
}

/// Runs `op` and checks that it took less than twice the socket timeout and grew memory
/// by less than the limit; `describe` says what came of it, for the messages.
fn bounded<T>(what: &str, op: impl FnOnce() -> T, describe: impl FnOnce(&T) -> String) -> T {
    let base = ALLOCATED.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let started = Instant::now();
    let outcome = op();
    let took = started.elapsed();
    let grew = PEAK.load(Ordering::SeqCst).saturating_sub(base);
    let outcome_text = describe(&outcome);
    eprintln!(
        "{what}: {took:?}, memory +{} KB: {outcome_text}",
        grew >> 10
    );
    assert!(
        took < SOCKET_TIMEOUT * 2,
        "{what} took {took:?}, more than twice socket_timeout ({outcome_text})"
    );
    assert!(
        grew < MEMORY_LIMIT,
        "{what} grew memory by {} MB ({outcome_text})",
        grew >> 20
    );
    outcome
}

/// Runs `op`, which must fail with `Error::Backend` naming `server`, within twice the
/// socket timeout and below the memory limit.
fn expect_bounded_failure<T: std::fmt::Debug>(
    what: &str,
    server: &FakeRedis,
    op: impl FnOnce() -> dogpile::Result<T>,
) -> String {
    match bounded(what, op, |outcome| format!("{outcome:?}")) {
        Err(Error::Backend { backend, source }) => {
            assert!(
                backend.contains(&server.addr()),
                "{what}: the error must name the server: {backend}: {source}"
            );
            format!("{backend}: {source}")
        }
        other => panic!("{what}: expected Error::Backend, got {other:?}"),
    }
}

/// A fake server whose first answer to `command` is `hostile` and every later one is
/// `good`.
fn hostile_once(
    command: &'static str,
    hostile: impl FnOnce() -> Answer + Send + 'static,
    good: &'static [u8],
) -> FakeRedis {
    let hostile = Arc::new(Mutex::new(Some(hostile)));
    FakeRedis::start(move |args| {
        if args[0].eq_ignore_ascii_case(command.as_bytes()) {
            if let Some(hostile) = hostile.lock().unwrap().take() {
                return hostile();
            }
        }
        Answer::Bytes(good.to_vec())
    })
}

#[test]
fn a_short_mget_reply_is_an_error_naming_the_server() {
    let _one = one_at_a_time();
    // Two keys asked, one value answered.
    let server = hostile_once(
        "MGET",
        || Answer::Bytes(b"*1\r\n$3\r\nabc\r\n".to_vec()),
        b"*2\r\n$1\r\na\r\n$-1\r\n",
    );
    let backend = backend(&server);
    let message =
        expect_bounded_failure("short MGET", &server, || backend.get_multi(&["k1", "k2"]));
    assert!(
        message.contains("asked for 2 keys, got 1 values"),
        "{message}"
    );
    // The connection that saw the short reply is not used again.
    assert_eq!(
        backend.get_multi(&["k1", "k2"]).unwrap(),
        vec![Some(b"a".to_vec()), None]
    );
    assert_eq!(server.accepted(), 2, "a new connection after the failure");
}

/// `hostile` answers the first GET; the call fails in bounds, and the next GET gets the
/// right answer on a new connection.
fn get_survives(what: &str, hostile: impl FnOnce() -> Answer + Send + 'static) -> String {
    let _one = one_at_a_time();
    let server = hostile_once("GET", hostile, b"$4\r\ngood\r\n");
    let backend = backend(&server);
    let message = expect_bounded_failure(what, &server, || backend.get("k"));
    assert_eq!(
        backend.get("k").unwrap().as_deref(),
        Some(&b"good"[..]),
        "{what}: the next call gets its own answer"
    );
    assert_eq!(
        server.accepted(),
        2,
        "{what}: the connection that saw the failure was not used again"
    );
    message
}

#[test]
fn a_trickled_reply_ends_at_the_deadline() {
    // A byte every 0.2 s: each read gets a byte well within socket_timeout, the whole
    // reply (13 bytes) would take 2.6 s.
    let message = get_survives("trickled reply", || {
        Answer::Trickle(b"$5\r\nhello\r\n".to_vec(), Duration::from_millis(200))
    });
    assert!(message.contains("socket_timeout"), "{message}");
}

#[test]
fn an_endless_line_is_cut_short() {
    let message = get_survives("endless status line", || {
        Answer::Endless(b"+".to_vec(), b"a")
    });
    assert!(message.contains("line too long"), "{message}");
}

#[test]
fn a_huge_announced_length_is_refused_before_it_is_read() {
    let message = get_survives("a bulk string announcing 1 GB", || {
        Answer::Endless(b"$1000000000\r\n".to_vec(), b"x")
    });
    assert!(message.contains("max_value_size"), "{message}");
    let message = get_survives("an array announcing a billion elements", || {
        Answer::Endless(b"*1000000000\r\n".to_vec(), b"x")
    });
    assert!(message.contains("max_value_size"), "{message}");
    // A million one-byte strings: few bytes on the wire, far more as values in memory.
    let message = get_survives("an array of a million small strings", || {
        Answer::Endless(b"*1000000\r\n".to_vec(), b"$1\r\nx\r\n")
    });
    assert!(message.contains("max_value_size"), "{message}");
}

#[test]
fn a_value_within_the_limit_followed_by_garbage_is_an_error() {
    // 15 MB announced (under the default 16 MiB), sent, then no end of line.
    let message = get_survives("a 15 MB bulk string without its end", || {
        Answer::Endless(b"$15000000\r\n".to_vec(), b"x")
    });
    assert!(message.contains("end of line"), "{message}");
}

#[test]
fn a_truncated_reply_ends_at_the_deadline_or_at_the_close() {
    let message = get_survives("truncated reply, then silence", || {
        Answer::Stall(b"$10\r\nabc".to_vec())
    });
    assert!(message.contains("socket_timeout"), "{message}");
    let message = get_survives("truncated reply, then close", || {
        Answer::Close(b"$10\r\nabc".to_vec())
    });
    assert!(message.contains("closed the connection"), "{message}");
    get_survives("no reply at all", || Answer::Stall(Vec::new()));
}

#[test]
fn garbage_and_extra_replies_drop_the_connection() {
    get_survives("an unknown reply type", || {
        Answer::Bytes(b"?what\r\n".to_vec())
    });
    get_survives("a malformed length", || Answer::Bytes(b"$ten\r\n".to_vec()));
    // Two replies to one command: the second must never answer the next command.
    let message = get_survives("two replies for one command", || {
        Answer::Bytes(b"$3\r\none\r\n$3\r\ntwo\r\n".to_vec())
    });
    assert!(message.contains("after the reply"), "{message}");
}

#[test]
fn max_value_size_bounds_reads_and_writes() {
    let _one = one_at_a_time();
    let server = hostile_once(
        "GET",
        || {
            Answer::Bytes(
                b"$2000\r\n"
                    .iter()
                    .copied()
                    .chain([b'x'; 2000])
                    .chain(*b"\r\n")
                    .collect(),
            )
        },
        b"$4\r\ngood\r\n",
    );
    let small = RedisBackend::from_arguments(&Arguments::new(
        "redis",
        [
            ("url", server.url()),
            ("socket_timeout", "0.5".to_owned()),
            ("max_value_size", "1000".to_owned()),
            ("dead_retry", "0".to_owned()),
        ],
    ))
    .unwrap();
    let err = small.get("k").unwrap_err().to_string();
    assert!(err.contains("max_value_size"), "{err}");
    let err = small.set("k", vec![0; 1001]).unwrap_err().to_string();
    assert!(
        err.contains("max_value_size") && err.contains("\"k\""),
        "{err}"
    );
    assert_eq!(small.get("k").unwrap().as_deref(), Some(&b"good"[..]));
}

#[test]
fn a_server_that_never_reads_cannot_hold_a_large_write() {
    let _one = one_at_a_time();
    // Accepts connections and never reads from them: the socket buffers fill and every
    // write blocks.
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let backend = RedisBackend::from_arguments(&Arguments::new(
        "redis",
        [
            ("url", format!("redis://{addr}")),
            ("socket_timeout", "0.5".to_owned()),
        ],
    ))
    .unwrap();
    let started = Instant::now();
    let err = backend.set("k", vec![7; 15 << 20]).unwrap_err().to_string();
    let took = started.elapsed();
    assert!(err.contains("socket_timeout"), "{err}");
    assert!(took < SOCKET_TIMEOUT * 2, "a 15 MB write took {took:?}");
}

/// A loopback address that nothing listens on (bound a moment ago, then let go):
/// connections to it are refused.
fn refusing_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn a_refused_connection_fails_at_once_naming_the_server_then_dead_retry_applies() {
    // socket_timeout is the default (2 s): the refusal is known at once, and waiting for
    // a connection until then (as the pool once did, retrying) tells nothing more.
    let addr = refusing_addr();
    let backend = RedisBackend::from_arguments(&Arguments::new(
        "redis",
        [("url", format!("redis://{addr}"))],
    ))
    .unwrap();
    let started = Instant::now();
    let outcome = backend.get("k");
    let took = started.elapsed();
    let message = match outcome {
        Err(error @ Error::Backend { .. }) => error.to_string(),
        other => panic!("expected Error::Backend, got {other:?}"),
    };
    assert!(
        took < Duration::from_millis(100),
        "took {took:?}: {message}"
    );
    assert!(message.contains(&addr), "{message}");
    assert!(message.contains("refused"), "{message}");
    // Then dead_retry (5 s by default): the next call is not even tried.
    let message = backend.set("k", b"v".to_vec()).unwrap_err().to_string();
    assert!(
        message.contains(&addr) && message.contains("marked down"),
        "{message}"
    );
}

/// A `set` then a `get` of `key` on `backend`, and a `get` on its async twin, each within
/// the bounds, answering the value set.
fn set_and_get_in_bounds(
    what: &str,
    backend: &RedisBackend,
    runtime: &tokio::runtime::Runtime,
    key: &str,
) {
    let sync = bounded(
        &format!("{what}, sync"),
        || {
            backend
                .set(key, b"v".to_vec())
                .and_then(|()| backend.get(key))
        },
        |outcome| format!("{outcome:?}"),
    );
    assert_eq!(sync.unwrap().as_deref(), Some(&b"v"[..]), "{what}");
    let twin = backend.async_backend().expect("a native async twin");
    let asynchronous = bounded(
        &format!("{what}, async"),
        || runtime.block_on(twin.get(key)),
        |outcome| format!("{outcome:?}"),
    );
    assert_eq!(asynchronous.unwrap().as_deref(), Some(&b"v"[..]), "{what}");
}

// redis_sentinel: every Sentinel is asked within the call's deadline, and its reply read
// within a small byte budget.

/// A `redis_sentinel` backend asking `sentinels` (comma separated) in that order.
fn sentinel_backend(sentinels: &str) -> RedisBackend {
    RedisBackend::sentinel_from_arguments(&Arguments::new(
        "redis_sentinel",
        [
            ("sentinels", sentinels.to_owned()),
            ("socket_timeout", SOCKET_TIMEOUT.as_secs_f64().to_string()),
            ("dead_retry", "0".to_owned()),
        ],
    ))
    .expect("build a redis_sentinel backend")
}

/// A fake Sentinel that answers every `SENTINEL` command with `answer()`.
fn fake_sentinel(answer: impl Fn() -> Answer + Send + Sync + 'static) -> FakeRedis {
    FakeRedis::start(move |_| answer())
}

/// A hostile answer, named.
type Hostile = (&'static str, fn() -> Answer);

/// Hostile Sentinel answers: a 2 GiB bulk string (and an array as large), an endless line,
/// a trickle, silence.
fn hostile_sentinel_answers() -> Vec<Hostile> {
    vec![
        ("a 2 GiB bulk reply", || {
            Answer::Endless(b"$2147483648\r\n".to_vec(), b"x")
        }),
        ("a 2 GiB array reply", || {
            Answer::Endless(b"*2\r\n$2147483648\r\n".to_vec(), b"x")
        }),
        ("an endless line", || Answer::Endless(b"+".to_vec(), b"a")),
        ("a trickled reply", || {
            Answer::Trickle(
                b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n".to_vec(),
                Duration::from_millis(100),
            )
        }),
        ("a hung Sentinel", || Answer::Stall(Vec::new())),
    ]
}

#[test]
fn sentinel_a_hostile_sentinel_alone_fails_in_bounds_naming_it() {
    let _one = one_at_a_time();
    for (what, answer) in hostile_sentinel_answers() {
        let sentinel = fake_sentinel(answer);
        let backend = sentinel_backend(&sentinel.addr());
        let message = expect_bounded_failure(what, &sentinel, || backend.get("k"));
        // A reply refused fails the call at once, saying why; a Sentinel that holds its
        // reply back fails it at the deadline.
        assert!(
            message.contains("no Sentinel named") || message.contains("timed out"),
            "{what}: {message}"
        );
    }
}

#[test]
fn sentinel_a_hostile_first_sentinel_costs_one_bounded_try_then_the_next_answers() {
    let _one = one_at_a_time();
    let setup = redis_server::RedisSentinel::shared();
    let runtime = runtime();
    for (what, answer) in hostile_sentinel_answers() {
        let hostile = fake_sentinel(answer);
        let backend = sentinel_backend(&format!("{},{}", hostile.addr(), setup.sentinel_addr()));
        for n in 0..3 {
            set_and_get_in_bounds(&format!("{what} first, call {n}"), &backend, &runtime, "k");
        }
    }
}

#[test]
fn sentinel_a_stopped_first_sentinel_costs_one_bounded_try_then_the_second_answers() {
    let _one = one_at_a_time();
    // A master, a replica and two real Sentinels; the first is stopped (SIGSTOP): the
    // kernel accepts connections to it, and it answers nothing.
    let setup = redis_server::RedisSentinel::start();
    let second = setup.add_sentinel();
    setup.sentinel.freeze(true);
    let sentinels = format!("{},{}", setup.sentinel_addr(), second.addr());
    let runtime = runtime();
    // A soak: new backends (each finds the stopped Sentinel first) and calls on them.
    let soak = Instant::now();
    let mut calls = 0;
    while soak.elapsed() < Duration::from_secs(5) {
        let backend = sentinel_backend(&sentinels);
        for n in 0..5 {
            let key = format!("k{n}");
            set_and_get_in_bounds("a stopped first Sentinel", &backend, &runtime, &key);
            calls += 3;
        }
    }
    setup.sentinel.freeze(false);
    assert!(calls > 0);
}

// redis_cluster: every round trip within socket_timeout and max_value_size, a request as a
// whole (slot map and redirections included) within twice socket_timeout.

/// A `redis_cluster` backend seeded with `nodes` (comma separated).
fn cluster_backend(nodes: &str, dead_retry: &str) -> RedisBackend {
    RedisBackend::cluster_from_arguments(&Arguments::new(
        "redis_cluster",
        [
            ("url", nodes.to_owned()),
            ("socket_timeout", SOCKET_TIMEOUT.as_secs_f64().to_string()),
            ("dead_retry", dead_retry.to_owned()),
        ],
    ))
    .expect("build a redis_cluster backend")
}

/// A fake cluster node that serves every slot itself (`CLUSTER SLOTS` names it) and
/// answers every other command with `answer`.
fn fake_cluster_node(answer: impl Fn(&[Vec<u8>]) -> Answer + Send + Sync + 'static) -> FakeRedis {
    let port = Arc::new(OnceLock::<String>::new());
    let own = port.clone();
    let node = FakeRedis::start(move |args| {
        if args[0].eq_ignore_ascii_case(b"CLUSTER") {
            let port = own.get().map(String::as_str).unwrap_or("0");
            return Answer::Bytes(
                format!("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:{port}\r\n")
                    .into_bytes(),
            );
        }
        answer(args)
    });
    let addr = node.addr();
    let (_, own_port) = addr.rsplit_once(':').expect("host:port");
    port.set(own_port.to_owned()).expect("set once");
    node
}

/// Hostile answers of a node to GET: silence, a trickle, a 2 GiB bulk string, an endless
/// line.
fn hostile_node_answers() -> Vec<Hostile> {
    vec![
        ("a hung node", || Answer::Stall(Vec::new())),
        ("a trickled reply", || {
            Answer::Trickle(b"$5\r\nhello\r\n".to_vec(), Duration::from_millis(200))
        }),
        ("a 2 GiB bulk reply", || {
            Answer::Endless(b"$2147483648\r\n".to_vec(), b"x")
        }),
        ("an endless line", || Answer::Endless(b"+".to_vec(), b"a")),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn cluster_a_hostile_node_fails_each_call_in_bounds_then_answers_again() {
    let _one = one_at_a_time();
    let runtime = runtime();
    for (what, hostile) in hostile_node_answers() {
        for asynchronous in [false, true] {
            let what = format!("{what} ({})", if asynchronous { "async" } else { "sync" });
            // Hostile to the first GET, good after.
            let first = Arc::new(Mutex::new(true));
            let node = fake_cluster_node(move |args| {
                if args[0].eq_ignore_ascii_case(b"GET")
                    && std::mem::replace(&mut *first.lock().unwrap(), false)
                {
                    return hostile();
                }
                Answer::Bytes(b"$4\r\ngood\r\n".to_vec())
            });
            let backend = cluster_backend(&node.url(), "0");
            let twin = backend.async_backend().expect("a native async twin");
            let get = || match asynchronous {
                false => backend.get("k"),
                true => runtime.block_on(twin.get("k")),
            };
            expect_bounded_failure(&what, &node, get);
            assert_eq!(
                get().unwrap().as_deref(),
                Some(&b"good"[..]),
                "{what}: the next call gets its own answer"
            );
        }
    }
}

#[test]
fn cluster_a_huge_or_endless_slot_map_is_cut_short() {
    let _one = one_at_a_time();
    let runtime = runtime();
    let answers: Vec<Hostile> = vec![
        ("an endless CLUSTER SLOTS", || {
            Answer::Endless(
                b"*100000000\r\n".to_vec(),
                b"*3\r\n:0\r\n:1\r\n*2\r\n$9\r\n127.0.0.1\r\n:1\r\n",
            )
        }),
        ("a CLUSTER SLOTS of a million entries", || {
            Answer::Endless(
                b"*1000000\r\n".to_vec(),
                b"*3\r\n:0\r\n:1\r\n*2\r\n$9\r\n127.0.0.1\r\n:1\r\n",
            )
        }),
        ("a 2 GiB host in CLUSTER SLOTS", || {
            Answer::Endless(
                b"*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$2147483648\r\n".to_vec(),
                b"x",
            )
        }),
        ("a hung CLUSTER SLOTS", || Answer::Stall(Vec::new())),
    ];
    for (what, answer) in answers {
        let node = FakeRedis::start(move |_| answer());
        let backend = cluster_backend(&node.url(), "0");
        let twin = backend.async_backend().expect("a native async twin");
        let message = expect_bounded_failure(what, &node, || backend.get("k"));
        assert!(message.contains("slot map"), "{what}: {message}");
        let message = expect_bounded_failure(&format!("{what} (async)"), &node, || {
            runtime.block_on(twin.get("k"))
        });
        assert!(message.contains("slot map"), "{what}: {message}");
    }
}

#[test]
fn cluster_a_hung_first_node_costs_one_bounded_try_then_the_next_answers() {
    let _one = one_at_a_time();
    let cluster = redis_server::RedisCluster::shared();
    let runtime = runtime();
    let hung = FakeRedis::start(|_| Answer::Stall(Vec::new()));
    let backend = cluster_backend(&format!("{},{}", hung.url(), cluster.url()), "0");
    for n in 0..3 {
        let key = format!("cluster-hung-seed-{n}");
        set_and_get_in_bounds("a hung first node", &backend, &runtime, &key);
    }
}

#[test]
fn cluster_moved_and_ask_are_followed_and_bounded() {
    let _one = one_at_a_time();
    let runtime = runtime();
    // The node the others redirect to: answers GET, and logs what it is sent.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let target = fake_cluster_node(move |args| {
        log.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&args[0]).to_ascii_uppercase());
        match args[0].to_ascii_uppercase().as_slice() {
            b"ASKING" => Answer::Bytes(b"+OK\r\n".to_vec()),
            _ => Answer::Bytes(b"$4\r\ngood\r\n".to_vec()),
        }
    });
    for redirection in ["MOVED", "ASK"] {
        let to = target.addr();
        let redirecting = fake_cluster_node(move |_| {
            Answer::Bytes(format!("-{redirection} 12182 {to}\r\n").into_bytes())
        });
        let backend = cluster_backend(&redirecting.url(), "0");
        let twin = backend.async_backend().expect("a native async twin");
        seen.lock().unwrap().clear();
        for _ in 0..2 {
            let got = bounded(
                &format!("{redirection}, sync"),
                || backend.get("foo"),
                |outcome| format!("{outcome:?}"),
            );
            assert_eq!(got.unwrap().as_deref(), Some(&b"good"[..]), "{redirection}");
            let got = bounded(
                &format!("{redirection}, async"),
                || runtime.block_on(twin.get("foo")),
                |outcome| format!("{outcome:?}"),
            );
            assert_eq!(got.unwrap().as_deref(), Some(&b"good"[..]), "{redirection}");
        }
        let seen = seen.lock().unwrap().clone();
        match redirection {
            "ASK" => assert_eq!(seen, ["ASKING", "GET"].repeat(4), "{seen:?}"),
            _ => assert_eq!(seen, ["GET"].repeat(4), "{seen:?}"),
        }
        if redirection == "MOVED" {
            // A MOVED makes the next request fetch the slot map again (a new connection).
            assert!(
                redirecting.accepted() >= 3,
                "slot map refreshed: {} connections",
                redirecting.accepted()
            );
        }
    }
    // A node that redirects to itself for ever: a bounded number of rounds, then an error.
    let own = Arc::new(OnceLock::<String>::new());
    let me = own.clone();
    let looping = fake_cluster_node(move |_| {
        Answer::Bytes(format!("-MOVED 12182 {}\r\n", me.get().unwrap()).into_bytes())
    });
    own.set(looping.addr()).unwrap();
    let backend = cluster_backend(&looping.url(), "0");
    let message = expect_bounded_failure("endless MOVED", &looping, || backend.get("foo"));
    assert!(
        message.contains("too many cluster redirections"),
        "{message}"
    );
}

#[test]
fn cluster_a_node_found_down_is_left_alone_for_dead_retry() {
    let _one = one_at_a_time();
    let node = fake_cluster_node(|_| Answer::Stall(Vec::new()));
    let backend = cluster_backend(&node.url(), "5");
    let message = expect_bounded_failure("a hung node", &node, || backend.get("k"));
    assert!(message.contains("socket_timeout"), "{message}");
    let started = Instant::now();
    let message = backend.get("k").unwrap_err().to_string();
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}: {message}",
        started.elapsed()
    );
    assert!(
        message.contains("marked down") && message.contains(&node.addr()),
        "{message}"
    );
}
