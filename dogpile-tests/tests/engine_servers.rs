//! The engine's time guarantees against real, failing redis and memcached servers (issue
//! "One dogpile engine behind every get_or_create path"): callers queued on one key never
//! pay the backend's timeouts one after another.

#[path = "support/memcached_server.rs"]
mod memcached_server;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, LazyLock, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};
use memcached_server::MemcachedServer;
use redis_server::RedisServer;

const PATIENCE: Duration = Duration::from_secs(30);

fn region(backend: &str, url: String, args: &[(&str, &str)]) -> Arc<CacheRegion> {
    Arc::new(plain_region(backend, url, args))
}

fn plain_region(backend: &str, url: String, args: &[(&str, &str)]) -> CacheRegion {
    let region = CacheRegion::builder().name(backend).build();
    let mut config = RegionConfig::new(backend)
        .expiration_time(Duration::from_secs(600))
        .argument("url", url);
    for (name, value) in args {
        config = config.argument(*name, *value);
    }
    region.configure(config).unwrap();
    region
}

/// 8 threads call `get_or_create` on one missing key; the server hangs (SIGSTOP) while the
/// one creator (1.5 s) runs. Returns each caller's latency from the common start, and the
/// number of creator calls.
fn eight_callers_while_the_server_hangs(
    region: &Arc<CacheRegion>,
    freeze: &dyn Fn(bool),
) -> (Vec<Duration>, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(9));
    let (creating_tx, creating_rx) = mpsc::channel();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (region, calls, barrier) = (region.clone(), calls.clone(), barrier.clone());
            let creating = creating_tx.clone();
            thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                let _ = region.get_or_create("hung", || {
                    calls.fetch_add(1, SeqCst);
                    creating.send(()).unwrap();
                    thread::sleep(Duration::from_millis(1500));
                    1u32
                });
                started.elapsed()
            })
        })
        .collect();
    barrier.wait();
    creating_rx.recv_timeout(PATIENCE).unwrap();
    freeze(true);
    let latencies: Vec<Duration> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    freeze(false);
    (latencies, calls.load(SeqCst))
}

fn assert_all_within(latencies: &[Duration], bound: Duration, what: &str) {
    let slowest = latencies.iter().max().unwrap();
    assert!(
        *slowest < bound,
        "{what}: every caller must end within {bound:?}; latencies {latencies:?}"
    );
}

#[test]
fn redis_hung_while_eight_callers_wait_on_one_key() {
    let server = RedisServer::start();
    let region = region(
        "redis",
        server.url(),
        &[("socket_timeout", "1"), ("distributed_lock", "true")],
    );
    let (latencies, calls) = eight_callers_while_the_server_hangs(&region, &|f| server.freeze(f));
    assert_eq!(calls, 1);
    assert_all_within(&latencies, Duration::from_millis(4500), "redis");
}

#[test]
fn memcached_hung_while_eight_callers_wait_on_one_key() {
    let server = MemcachedServer::start();
    let region = region(
        "memcached",
        server.addr(),
        &[("socket_timeout", "1"), ("distributed_lock", "true")],
    );
    let (latencies, calls) = eight_callers_while_the_server_hangs(&region, &|f| server.freeze(f));
    assert_eq!(calls, 1);
    assert_all_within(&latencies, Duration::from_millis(4500), "memcached");
}

/// How long the body of the decorated functions below takes.
const BODY: Duration = Duration::from_millis(400);
/// The socket timeout of their regions: one failed round trip.
const ROUND_TRIP: Duration = Duration::from_millis(500);

static REDIS_SERVER: Mutex<Option<RedisServer>> = Mutex::new(None);
static MEMCACHED_SERVER: Mutex<Option<MemcachedServer>> = Mutex::new(None);

static DOWN_REDIS: LazyLock<CacheRegion> = LazyLock::new(|| {
    let server = RedisServer::start();
    let region = plain_region("redis", server.url(), &[("socket_timeout", "0.5")]);
    *REDIS_SERVER.lock().unwrap() = Some(server);
    region
});
static DOWN_MEMCACHED: LazyLock<CacheRegion> = LazyLock::new(|| {
    let server = MemcachedServer::start();
    let region = plain_region("memcached", server.addr(), &[("socket_timeout", "0.5")]);
    *MEMCACHED_SERVER.lock().unwrap() = Some(server);
    region
});
static REDIS_BODY_RUNS: AtomicUsize = AtomicUsize::new(0);
static MEMCACHED_BODY_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cache_on_arguments(region = "DOWN_REDIS")]
fn on_redis(id: u32) -> u32 {
    REDIS_BODY_RUNS.fetch_add(1, SeqCst);
    thread::sleep(BODY);
    id + 1
}

#[cache_on_arguments(region = "DOWN_MEMCACHED")]
fn on_memcached(id: u32) -> u32 {
    MEMCACHED_BODY_RUNS.fetch_add(1, SeqCst);
    thread::sleep(BODY);
    id + 1
}

/// Calls `f` on 8 threads at once; returns the slowest latency.
fn eight_at_once(f: fn(u32) -> u32) -> Duration {
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                assert_eq!(f(41), 42, "failing open, the body's value");
                started.elapsed()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .max()
        .unwrap()
}

fn server_down_body_runs_once(stop: &dyn Fn(), f: fn(u32) -> u32, runs: &AtomicUsize) {
    stop();
    let slowest = eight_at_once(f);
    assert!(
        runs.load(SeqCst) <= 1,
        "the body ran {} times for one wave of 8 callers",
        runs.load(SeqCst)
    );
    // One failed round trip plus the body, with room for a loaded machine; without the
    // hand-off and the down-marking it is at least two more round trips.
    let bound = ROUND_TRIP + BODY + Duration::from_millis(350);
    assert!(
        slowest < bound,
        "slowest caller {slowest:?}, bound {bound:?}"
    );
}

#[test]
fn redis_down_a_decorated_function_runs_its_body_once_for_eight_callers() {
    let stop = || {
        LazyLock::force(&DOWN_REDIS);
        REDIS_SERVER.lock().unwrap().as_mut().unwrap().stop();
    };
    server_down_body_runs_once(&stop, on_redis, &REDIS_BODY_RUNS);
}

#[test]
fn memcached_down_a_decorated_function_runs_its_body_once_for_eight_callers() {
    let stop = || {
        LazyLock::force(&DOWN_MEMCACHED);
        MEMCACHED_SERVER.lock().unwrap().as_mut().unwrap().stop();
    };
    server_down_body_runs_once(&stop, on_memcached, &MEMCACHED_BODY_RUNS);
}

/// 4 threads call `get_or_create` on a key whose distributed lock another process holds;
/// the lock's wait limit is 2 s. Returns each caller's latency.
fn four_waiters_behind_a_held_lock(region: &Arc<CacheRegion>, key: &'static str) -> Vec<Duration> {
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (region, barrier) = (region.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                let outcome = region.get_or_create(key, || 1u32);
                assert!(
                    matches!(outcome, Err(dogpile::Error::LockTimeout { .. })),
                    "{outcome:?}"
                );
                started.elapsed()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn redis_four_waiters_behind_a_held_distributed_lock_end_by_its_wait_limit() {
    let server = RedisServer::shared();
    let region = region(
        "redis",
        server.url(),
        &[("distributed_lock", "true"), ("lock_blocking_timeout", "2")],
    );
    let key = "engine-held-elsewhere";
    redis::cmd("SET")
        .arg(format!("_lock{key}"))
        .arg("another process")
        .arg("PX")
        .arg(30_000)
        .exec(&mut server.client())
        .unwrap();
    let latencies = four_waiters_behind_a_held_lock(&region, key);
    assert_all_within(&latencies, Duration::from_secs(3), "redis");
}

#[test]
fn memcached_four_waiters_behind_a_held_distributed_lock_end_by_its_wait_limit() {
    let server = MemcachedServer::start();
    let region = region(
        "memcached",
        server.addr(),
        &[("distributed_lock", "true"), ("lock_blocking_timeout", "2")],
    );
    let key = "engine-held-elsewhere";
    server.raw_set(&format!("_lock{key}"), b"another process");
    let latencies = four_waiters_behind_a_held_lock(&region, key);
    assert_all_within(&latencies, Duration::from_secs(3), "memcached");
}
