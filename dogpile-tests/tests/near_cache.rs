//! Issue 20, item 3: the near cache over redis (`near_cache`), against a real redis. Region
//! A keeps values in memory; region B, a plain redis region, stands for another process
//! that writes. A sees each of B's writes within 20 ms; after every connection is killed A
//! never serves the value it held; the dogpile lock and expiry behave as on plain redis.

#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dogpile::{CacheRegion, RegionConfig};
use redis_server::RedisServer;

fn near(server: &RedisServer) -> CacheRegion {
    let region = CacheRegion::new();
    region
        .configure(
            RegionConfig::new("redis")
                .argument("url", server.url())
                .argument("near_cache", true)
                .argument("near_cache_max_entries", 100)
                .expiration_time(Duration::from_secs(600)),
        )
        .unwrap();
    region
}

fn plain(server: &RedisServer) -> CacheRegion {
    let region = CacheRegion::new();
    region
        .configure(
            RegionConfig::new("redis")
                .argument("url", server.url())
                .expiration_time(Duration::from_secs(600)),
        )
        .unwrap();
    region
}

/// How long until `seen`, polling every 100 µs; panics after 5 s.
fn until(seen: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !seen() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never seen in 5 s"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
    started.elapsed()
}

/// Reads `key` through `region` until the near cache holds it (a read that does not reach
/// redis), so that what follows tests a kept value.
fn kept(server: &RedisServer, region: &CacheRegion, key: &str) {
    until(|| {
        let before = commands_processed(server);
        region.get::<u32>(key).unwrap();
        commands_processed(server) == before + 1 // only our INFO call itself
    });
}

/// The server's count of commands processed (each call of this is one more).
fn commands_processed(server: &RedisServer) -> u64 {
    let mut admin = server.client();
    let info: String = redis::cmd("INFO").arg("stats").query(&mut admin).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[test]
fn another_process_writes_and_the_near_cache_sees_it_within_20_ms() {
    let server = RedisServer::start();
    let (a, b) = (near(&server), plain(&server));
    b.set("k", &0u32).unwrap();
    kept(&server, &a, "k");
    let mut slowest = Duration::ZERO;
    for round in 1..=20u32 {
        b.set("k", &round).unwrap();
        let took = until(|| a.get::<u32>("k").unwrap() == Some(round));
        slowest = slowest.max(took);
        // Kept again before the next write, so each round tests a kept value.
        kept(&server, &a, "k");
    }
    assert!(
        slowest < Duration::from_millis(20),
        "slowest round {slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_reads_are_near_and_coherent_too() {
    let server = RedisServer::start();
    let (a, b) = (near(&server), plain(&server));
    b.set_async("k", &1u32).await.unwrap();
    assert_eq!(a.get_async::<u32>("k").await.unwrap(), Some(1));
    // Kept once the tracking connection is in place (a read that does not reach redis).
    let started = Instant::now();
    loop {
        let before = commands_processed(&server);
        assert_eq!(a.get_async::<u32>("k").await.unwrap(), Some(1));
        if commands_processed(&server) == before + 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never kept");
    }
    let before = commands_processed(&server);
    for _ in 0..100 {
        assert_eq!(a.get_async::<u32>("k").await.unwrap(), Some(1));
    }
    // Our INFO, and at most a PING or two of the tracking connection: no GET.
    assert!(
        commands_processed(&server) <= before + 3,
        "100 reads from memory"
    );
    b.set_async("k", &2u32).await.unwrap();
    let started = Instant::now();
    while a.get_async::<u32>("k").await.unwrap() != Some(2) {
        assert!(started.elapsed() < Duration::from_millis(20));
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
}

#[test]
fn after_every_connection_is_killed_the_held_value_is_never_served() {
    let server = RedisServer::start();
    let (a, b) = (near(&server), plain(&server));
    b.set("k", &1u32).unwrap();
    kept(&server, &a, "k");
    let mut admin = server.client();
    for kind in ["pubsub", "normal"] {
        let _: i64 = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", kind, "SKIPME", "yes"])
            .query(&mut admin)
            .unwrap();
    }
    b.set("k", &2u32).unwrap();
    for _ in 0..200 {
        assert_eq!(a.get::<u32>("k").unwrap(), Some(2), "served the held value");
    }
    // Tracked again: later writes are seen, and reads are kept again.
    b.set("k", &3u32).unwrap();
    until(|| a.get::<u32>("k").unwrap() == Some(3));
    kept(&server, &a, "k");
}

#[test]
fn a_flush_empties_the_near_cache() {
    let server = RedisServer::start();
    let a = near(&server);
    a.set("k", &1u32).unwrap();
    kept(&server, &a, "k");
    let mut admin = server.client();
    let _: () = redis::cmd("FLUSHALL").query(&mut admin).unwrap();
    until(|| a.get::<u32>("k").unwrap().is_none());
}

#[test]
fn the_dogpile_lock_and_expiry_behave_as_on_plain_redis() {
    let server = RedisServer::start();
    let region = CacheRegion::new();
    region
        .configure(
            RegionConfig::new("redis")
                .argument("url", server.url())
                .argument("near_cache", true)
                .argument("distributed_lock", true)
                .expiration_time(Duration::from_millis(300)),
        )
        .unwrap();
    let runs = AtomicUsize::new(0);
    let create = || {
        runs.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        7u32
    };
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| assert_eq!(region.get_or_create("k", create).unwrap(), 7));
        }
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one creator for 8 callers");
    // Kept in memory, the value still expires by the region's rule.
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(region.get::<u32>("k").unwrap(), None);
    assert_eq!(region.get_or_create("k", create).unwrap(), 7);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn near_cache_arguments_are_checked() {
    let refused = |config: RegionConfig| CacheRegion::new().configure(config).unwrap_err();
    let error = refused(
        RegionConfig::new("redis")
            .argument("url", "redis://127.0.0.1:1")
            .argument("near_cache_max_entries", 10),
    );
    assert!(
        error.to_string().contains("near_cache_max_entries"),
        "{error}"
    );
    let error = refused(
        RegionConfig::new("redis")
            .argument("url", "redis://127.0.0.1:1")
            .argument("near_cache", true)
            .argument("near_cache_max_entries", 0),
    );
    assert!(error.to_string().contains("at least 1"), "{error}");
    let error = refused(
        RegionConfig::new("redis_cluster")
            .argument("url", "redis://127.0.0.1:1")
            .argument("near_cache", true),
    );
    assert!(error.to_string().contains("near_cache"), "{error}");
}
