//! The `redis` backend against a hostile fake server (a `TcpListener` thread in this
//! process): each case ends within twice `socket_timeout`, grows memory by less than
//! 64 MB (counted by this binary's allocator), never panics, and leaves no broken
//! connection in the pool (the next call opens a new connection and gets the right
//! answer).

#[path = "support/fake_redis.rs"]
mod fake_redis;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dogpile::backends::RedisBackend;
use dogpile::{Arguments, CacheBackend, Error};
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
        ],
    ))
    .expect("build a redis backend")
}

/// Runs `op`, which must fail with `Error::Backend` naming `server`, within twice the
/// socket timeout and below the memory limit.
fn expect_bounded_failure<T: std::fmt::Debug>(
    what: &str,
    server: &FakeRedis,
    op: impl FnOnce() -> dogpile::Result<T>,
) -> String {
    let base = ALLOCATED.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let started = Instant::now();
    let outcome = op();
    let took = started.elapsed();
    let grew = PEAK.load(Ordering::SeqCst).saturating_sub(base);
    let message = match outcome {
        Err(Error::Backend { backend, source }) => {
            assert!(
                backend.contains(&server.addr()),
                "{what}: the error must name the server: {backend}: {source}"
            );
            format!("{backend}: {source}")
        }
        other => panic!("{what}: expected Error::Backend, got {other:?}"),
    };
    assert!(
        took < SOCKET_TIMEOUT * 2,
        "{what} took {took:?}, more than twice socket_timeout ({message})"
    );
    assert!(
        grew < MEMORY_LIMIT,
        "{what} grew memory by {} MB ({message})",
        grew >> 20
    );
    message
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
