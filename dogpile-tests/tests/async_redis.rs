//! The async API against a real redis (issue "Async: get_or_create_async on the same
//! engine", `redis` backend): the region's async methods reach redis on async
//! connections, never on tokio's blocking pool; the dogpile lock's guarantees for tasks,
//! in one region and across two regions sharing a distributed lock (as two processes
//! would); a cancelled holder's distributed lock released; TLS; and the async
//! connection's bounds against a hostile fake server (as `tests/redis_hostile.rs` does
//! for the blocking one).

#[path = "support/blocking_pool.rs"]
mod blocking_pool;
#[path = "support/fake_redis.rs"]
mod fake_redis;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blocking_pool::with_the_blocking_pool_busy;
use dogpile::backend::{Arguments, AsyncCacheBackend, CacheBackend, Entry, ProxyBackend};
use dogpile::backends::RedisBackend;
use dogpile::{CacheRegion, Error, RegionConfig};
use fake_redis::{Answer, FakeRedis};
use redis_server::RedisServer;
use tokio::sync::{oneshot, Barrier};

const HOUR: Duration = Duration::from_secs(3600);
const PATIENCE: Duration = Duration::from_secs(20);

/// A key no other test (or run) uses.
fn fresh_key(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "async-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, SeqCst)
    )
}

/// A region on `server`, configured by name (as applications do), with `extra` arguments.
fn region_on(server: &RedisServer, extra: &[(&str, &str)]) -> Arc<CacheRegion> {
    let region = CacheRegion::new();
    let mut config = RegionConfig::new("redis")
        .expiration_time(HOUR)
        .argument("url", server.url());
    for (name, value) in extra {
        config = config.argument(*name, *value);
    }
    region.configure(config).expect("configure a redis region");
    Arc::new(region)
}

fn locked_region(server: &RedisServer) -> Arc<CacheRegion> {
    region_on(
        server,
        &[("distributed_lock", "true"), ("lock_sleep", "0.01")],
    )
}

/// Sets, reads, deletes and creates `key` under the distributed lock, from async code.
async fn set_get_delete_create(region: &CacheRegion, key: &str) {
    region.set_async(key, &1u32).await.unwrap();
    assert_eq!(region.get_async::<u32>(key).await.unwrap(), Some(1));
    region.delete_async(key).await.unwrap();
    let created = region
        .get_or_create_async(key, || async { 2u32 })
        .await
        .unwrap();
    assert_eq!(created, 2, "created under the distributed lock");
}

#[test]
fn async_calls_never_use_the_blocking_pool() {
    let server = RedisServer::shared();
    // Configured before any runtime exists: configuring needs none.
    let region = locked_region(server);
    let key = fresh_key("no-blocking-pool");
    let work = async {
        set_get_delete_create(&region, &key).await;
        let keys = [key.clone(), fresh_key("no-blocking-pool")];
        let values = region.get_multi_async::<u32, _>(&keys).await.unwrap();
        assert_eq!(values, vec![Some(2), None]);
    };
    with_the_blocking_pool_busy(work, "the async calls");
}

/// A proxy that counts the reads each of its faces sees.
#[derive(Default)]
struct SeenReads {
    sync: AtomicUsize,
    async_: AtomicUsize,
}

struct CountReads(Arc<SeenReads>);

#[dogpile::backend::async_trait]
impl ProxyBackend for CountReads {
    fn get(&self, key: &str, next: &dyn CacheBackend) -> dogpile::Result<Option<Entry>> {
        self.0.sync.fetch_add(1, SeqCst);
        next.get_entry(key)
    }
    async fn get_async(
        &self,
        key: &str,
        next: &dyn AsyncCacheBackend,
    ) -> dogpile::Result<Option<Entry>> {
        self.0.async_.fetch_add(1, SeqCst);
        next.get_entry(key).await
    }
}

#[test]
fn a_proxied_redis_region_keeps_its_native_async_path() {
    // With the only blocking-pool thread busy, an async call that went to the blocking pool
    // (a proxied backend without its async twin) would time out.
    let server = RedisServer::shared();
    let seen = Arc::new(SeenReads::default());
    let region = CacheRegion::new();
    region
        .configure(
            RegionConfig::new("redis")
                .expiration_time(HOUR)
                .argument("url", server.url())
                .argument("distributed_lock", true)
                .argument("lock_sleep", 0.01)
                .wrap(CountReads(seen.clone())),
        )
        .unwrap();
    let key = fresh_key("proxied");
    let work = async {
        set_get_delete_create(&region, &key).await;
    };
    with_the_blocking_pool_busy(work, "the async calls through the proxy");
    let async_reads = seen.async_.load(SeqCst);
    assert!(
        async_reads >= 3,
        "the proxy's async hook saw every async read ({async_reads})"
    );
    assert_eq!(
        seen.sync.load(SeqCst),
        0,
        "no async read reached the sync hook"
    );
    // The same region's sync calls reach the sync hook, and the same store.
    assert_eq!(region.get::<u32>(&key).unwrap(), Some(2));
    assert_eq!(seen.sync.load(SeqCst), 1);
    // The wrapped backend keeps its lock prefix: a key that would be a lock is refused.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let error = runtime
        .block_on(region.get_async::<u32>(&format!("_lock{key}")))
        .unwrap_err();
    assert!(matches!(error, Error::InvalidArgument { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_set_delete_and_multi_on_async_connections_share_the_store_with_sync_callers() {
    let server = RedisServer::shared();
    let region = region_on(server, &[]);
    let (a, b, c) = (fresh_key("a"), fresh_key("b"), fresh_key("c"));

    region.set_async(&a, &"one".to_owned()).await.unwrap();
    assert_eq!(
        region.get_async::<String>(&a).await.unwrap().as_deref(),
        Some("one")
    );
    let sync_region = region.clone();
    let key = a.clone();
    let seen = tokio::task::spawn_blocking(move || sync_region.get::<String>(&key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.as_deref(), Some("one"), "a sync caller sees it");

    region
        .set_multi_async(&[(b.as_str(), 2u32), (c.as_str(), 3u32)])
        .await
        .unwrap();
    assert_eq!(
        region
            .get_multi_async::<u32, _>(&[&b, &a, &c, &fresh_key("missing")])
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|v| v.is_some())
            .collect::<Vec<_>>(),
        vec![true, false, true, false],
        "a value of another type reads as a miss"
    );
    assert_eq!(
        region.get_multi_async::<u32, _>(&[&b, &c]).await.unwrap(),
        vec![Some(2), Some(3)]
    );
    region.delete_multi_async(&[&b, &c]).await.unwrap();
    region.delete_async(&a).await.unwrap();
    assert_eq!(
        region
            .get_multi_async::<u32, _>(&[&a, &b, &c])
            .await
            .unwrap(),
        vec![None, None, None]
    );
    let mut client = server.client();
    let exists: usize = redis::cmd("EXISTS")
        .arg(&a)
        .arg(&b)
        .arg(&c)
        .query(&mut client)
        .unwrap();
    assert_eq!(exists, 0, "deleted in redis itself");
}

/// `tasks` tasks, spread over `regions`, call `get_or_create_async` on one missing key at
/// once (behind a barrier); every one must get the created value. Returns the number of
/// creator calls.
async fn race(regions: &[Arc<CacheRegion>], tasks: usize, round: u32) -> usize {
    let key = fresh_key("race");
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(tasks));
    let tasks: Vec<_> = (0..tasks)
        .map(|n| {
            let region = regions[n % regions.len()].clone();
            let (calls, barrier, key) = (calls.clone(), barrier.clone(), key.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                region
                    .get_or_create_async(&key, || async {
                        calls.fetch_add(1, SeqCst);
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        round
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), round, "every task gets the new value");
    }
    calls.load(SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_creator_call_for_200_tasks_on_a_missing_key() {
    let server = RedisServer::shared();
    for extra in [
        &[][..],
        &[("distributed_lock", "true"), ("lock_sleep", "0.01")][..],
    ] {
        for round in 0..5u32 {
            let region = region_on(server, extra);
            assert_eq!(
                race(&[region], 200, round).await,
                1,
                "{extra:?} round {round}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_regions_with_a_distributed_lock_make_one_creator_call_for_100_tasks() {
    let server = RedisServer::shared();
    for round in 0..5u32 {
        // Two regions, two backends, two in-process lock tables: as two processes.
        let regions = [locked_region(server), locked_region(server)];
        assert_eq!(race(&regions, 100, round).await, 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_holders_distributed_lock_is_released_and_another_region_takes_over() {
    let server = RedisServer::shared();
    let mut client = server.client();
    for _ in 0..5 {
        // lock_timeout 30 s: only the release can free the lock within the test's bounds.
        let (holder_region, other) = (locked_region(server), locked_region(server));
        let key = fresh_key("cancelled");
        let lock_key = format!("_lock{key}");
        let (started_tx, started_rx) = oneshot::channel();
        let holder = {
            let key = key.clone();
            tokio::spawn(async move {
                holder_region
                    .get_or_create_async(&key, || async move {
                        started_tx.send(()).unwrap();
                        std::future::pending::<u32>().await
                    })
                    .await
            })
        };
        tokio::time::timeout(PATIENCE, started_rx)
            .await
            .unwrap()
            .unwrap();
        let held: Option<String> = redis::cmd("GET").arg(&lock_key).query(&mut client).unwrap();
        assert!(held.is_some(), "the holder took the lock in redis");

        let waiter = {
            let key = key.clone();
            tokio::spawn(async move { other.get_or_create_async(&key, || async { 7u32 }).await })
        };
        holder.abort();
        assert!(holder.await.unwrap_err().is_cancelled());
        let started = Instant::now();
        let value = tokio::time::timeout(PATIENCE, waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value.unwrap(), 7, "the other region took over");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "taken over long before lock_timeout (30 s)"
        );
        let left: Option<String> = redis::cmd("GET").arg(&lock_key).query(&mut client).unwrap();
        assert_eq!(left, None, "no lock left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_through_the_async_connection() {
    let server = RedisServer::shared_tls();
    let ca = server.tls_file("ca.crt");
    let region = region_on(server, &[("ssl_ca_certs", ca.as_str())]);
    let key = fresh_key("tls");
    region.set_async(&key, &5u32).await.unwrap();
    assert_eq!(region.get_async::<u32>(&key).await.unwrap(), Some(5));
    let sync_region = region.clone();
    let seen = tokio::task::spawn_blocking(move || sync_region.get::<u32>(&key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, Some(5));
}

// The async connection against a hostile server: each case ends within twice
// socket_timeout, and the connection that saw it is never used again.

const SOCKET_TIMEOUT: Duration = Duration::from_millis(500);

fn async_backend(server: &FakeRedis) -> Arc<dyn AsyncCacheBackend> {
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
    .async_backend()
    .expect("redis has an async twin")
}

/// A fake server whose first answer to GET is `hostile` and every later one is `good`.
fn hostile_once(hostile: impl FnOnce() -> Answer + Send + 'static) -> FakeRedis {
    let hostile = Arc::new(Mutex::new(Some(hostile)));
    FakeRedis::start(move |args| {
        if args[0].eq_ignore_ascii_case(b"GET") {
            if let Some(hostile) = hostile.lock().unwrap().take() {
                return hostile();
            }
        }
        Answer::Bytes(b"$4\r\ngood\r\n".to_vec())
    })
}

fn bytes(entry: Option<Entry>) -> Option<Vec<u8>> {
    entry.map(|entry| entry.into_bytes("test").unwrap())
}

/// `hostile` answers the first GET: the call fails with `Error::Backend` naming the
/// server within twice socket_timeout, and the next GET gets the right answer on a new
/// connection. Returns the error message.
async fn get_survives(what: &str, hostile: impl FnOnce() -> Answer + Send + 'static) -> String {
    let server = hostile_once(hostile);
    let backend = async_backend(&server);
    let started = Instant::now();
    let outcome = backend.get("k").await;
    let took = started.elapsed();
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
    assert_eq!(
        bytes(backend.get_entry("k").await.unwrap()).as_deref(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_a_trickled_reply_ends_at_the_deadline() {
    // A byte every 0.2 s: the whole reply (13 bytes) would take 2.6 s.
    let message = get_survives("trickled reply", || {
        Answer::Trickle(b"$5\r\nhello\r\n".to_vec(), Duration::from_millis(200))
    })
    .await;
    assert!(message.contains("socket_timeout"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_a_huge_announced_length_is_refused_before_it_is_read() {
    // The server stalls after the length: a client that tried to read the value would
    // time out instead of refusing it.
    let message = get_survives("a bulk string announcing 1 GB", || {
        Answer::Stall(b"$1000000000\r\n".to_vec())
    })
    .await;
    assert!(message.contains("max_value_size"), "{message}");
    let message = get_survives("an array announcing a billion elements", || {
        Answer::Stall(b"*1000000000\r\n".to_vec())
    })
    .await;
    assert!(message.contains("max_value_size"), "{message}");
    let message = get_survives("an endless status line", || {
        Answer::Endless(b"+".to_vec(), b"a")
    })
    .await;
    assert!(message.contains("line too long"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_garbage_truncation_and_extra_replies_drop_the_connection() {
    get_survives("an unknown reply type", || {
        Answer::Bytes(b"?what\r\n".to_vec())
    })
    .await;
    let message = get_survives("truncated reply, then close", || {
        Answer::Close(b"$10\r\nabc".to_vec())
    })
    .await;
    assert!(message.contains("closed the connection"), "{message}");
    let message = get_survives("two replies for one command", || {
        Answer::Bytes(b"$3\r\none\r\n$3\r\ntwo\r\n".to_vec())
    })
    .await;
    assert!(message.contains("after the reply"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_a_call_cancelled_mid_reply_leaves_no_connection_behind() {
    let server = hostile_once(|| Answer::Stall(b"$4\r\ngo".to_vec()));
    let backend = async_backend(&server);
    // Dropped while the reply is half read.
    let cancelled = tokio::time::timeout(Duration::from_millis(100), backend.get("k")).await;
    assert!(cancelled.is_err(), "the call was still waiting");
    assert_eq!(
        bytes(backend.get_entry("k").await.unwrap()).as_deref(),
        Some(&b"good"[..]),
        "the next call reads its own reply, not the rest of the cancelled one"
    );
    assert_eq!(
        server.accepted(),
        2,
        "a new connection after the cancellation"
    );
}

#[test]
fn dead_retry_is_one_record_for_sync_and_async_callers() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A port nothing listens on: connections are refused.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = || {
        RedisBackend::from_arguments(&Arguments::new(
            "redis",
            [
                ("url", format!("redis://127.0.0.1:{port}")),
                ("dead_retry", "60".to_owned()),
                ("socket_timeout", "0.5".to_owned()),
            ],
        ))
        .unwrap()
    };
    let message = |error: Error| match error {
        Error::Backend { backend, source } => format!("{backend}: {source}"),
        other => panic!("expected Error::Backend, got {other:?}"),
    };
    let marked_down = |error: Error| {
        let message = message(error);
        assert!(message.contains("marked down"), "{message}");
    };
    // Found down by a sync call: async calls fail fast.
    let backend = down();
    let first = message(dogpile::backend::CacheBackend::get(&backend, "k").unwrap_err());
    assert!(!first.contains("marked down"), "{first}");
    let twin = backend.async_backend().unwrap();
    marked_down(runtime.block_on(twin.get("k")).unwrap_err());
    // Found down by an async call: sync calls fail fast.
    let backend = down();
    let twin = backend.async_backend().unwrap();
    let first = message(runtime.block_on(twin.get("k")).unwrap_err());
    assert!(!first.contains("marked down"), "{first}");
    marked_down(dogpile::backend::CacheBackend::get(&backend, "k").unwrap_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_a_refused_connection_fails_at_once_naming_the_server() {
    // A port nothing listens on; socket_timeout is the default (2 s).
    let addr = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let region = CacheRegion::new();
    region
        .configure(RegionConfig::new("redis").argument("url", format!("redis://{addr}")))
        .unwrap();
    let started = Instant::now();
    let outcome = region.get_async::<u32>("k").await;
    let took = started.elapsed();
    let message = match outcome {
        Err(error @ Error::Backend { .. }) => error.to_string(),
        other => panic!("expected Error::Backend, got {other:?}"),
    };
    assert!(
        took < Duration::from_millis(100),
        "took {took:?}: {message}"
    );
    assert!(
        message.contains(&addr) && message.contains("refused"),
        "{message}"
    );
    let message = region.get_async::<u32>("k").await.unwrap_err().to_string();
    assert!(message.contains("marked down"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_a_certificate_the_client_does_not_trust_is_named() {
    // The system's CAs do not know the test server's CA.
    let server = RedisServer::shared_tls();
    let region = region_on(server, &[("socket_timeout", "4")]);
    let started = Instant::now();
    let outcome = region.get_async::<u32>(&fresh_key("untrusted")).await;
    let took = started.elapsed();
    let message = match outcome {
        Err(error @ Error::Backend { .. }) => error.to_string(),
        other => panic!("expected Error::Backend, got {other:?}"),
    };
    assert!(message.contains(&server.addr()), "{message}");
    assert!(message.contains("certificate"), "{message}");
    assert!(took < Duration::from_secs(2), "took {took:?}: {message}");
}
