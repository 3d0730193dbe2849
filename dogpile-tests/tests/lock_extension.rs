//! Issue 18, item 7: a creator that runs longer than the distributed lock's `lock_timeout`
//! keeps its lock (the region extends it while the creator runs), so a second process
//! waits for the value instead of running a second creator. Two regions of one name on one
//! real redis (or memcached) stand for two processes: a 2.5 s creator with `lock_timeout` 1.

#[path = "support/memcached_server.rs"]
mod memcached_server;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use dogpile::{CacheRegion, RegionConfig};
use memcached_server::MemcachedServer;
use redis_server::RedisServer;

const CREATOR: Duration = Duration::from_millis(2500);

/// A region on the shared test redis with a distributed lock that expires after 1 s.
fn region() -> CacheRegion {
    let region = CacheRegion::builder().name("long-creator").build();
    region
        .configure(
            RegionConfig::new("redis")
                .expiration_time(Duration::from_secs(60))
                .argument("url", RedisServer::shared().url())
                .argument("distributed_lock", true)
                .argument("lock_timeout", 1),
        )
        .unwrap();
    region
}

/// Whether redis holds the lock key of `key` (`_lock` and the region's key).
fn lock_held(key: &str) -> bool {
    let mut client = RedisServer::shared().client();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("_lock*{key}"))
        .query(&mut client)
        .unwrap();
    !keys.is_empty()
}

#[test]
fn a_long_blocking_creator_keeps_its_redis_lock() {
    let (a, b) = (region(), region());
    let key = "sync-long";
    a.delete(key).unwrap();
    let runs = AtomicUsize::new(0);
    thread::scope(|s| {
        let first = s.spawn(|| {
            a.get_or_create(key, || {
                runs.fetch_add(1, Ordering::SeqCst);
                thread::sleep(CREATOR);
                1u32
            })
            .unwrap()
        });
        thread::sleep(Duration::from_millis(200));
        // Past the first `lock_timeout`, the lock is still held.
        thread::sleep(Duration::from_millis(1300));
        assert!(lock_held(key), "the lock expired under a running creator");
        let second = b
            .get_or_create(key, || {
                runs.fetch_add(1, Ordering::SeqCst);
                2u32
            })
            .unwrap();
        assert_eq!(first.join().unwrap(), 1);
        assert_eq!(second, 1, "the second process took the first one's value");
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one creator run in all");
    assert!(!lock_held(key), "the lock is released after the creation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_async_creator_keeps_its_redis_lock() {
    let (a, b) = (region(), region());
    let key = "async-long";
    a.delete_async(key).await.unwrap();
    let runs = AtomicUsize::new(0);
    let first = a.get_or_create_async(key, || async {
        runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(CREATOR).await;
        1u32
    });
    let second = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(lock_held(key), "the lock expired under a running creator");
        b.get_or_create_async(key, || async {
            runs.fetch_add(1, Ordering::SeqCst);
            2u32
        })
        .await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.unwrap(), 1);
    assert_eq!(
        second.unwrap(),
        1,
        "the second process took the first one's value"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one creator run in all");
    assert!(!lock_held(key), "the lock is released after the creation");
}

/// The memcached lock (a compare-and-swap on the holder's token renews its TTL), sync.
/// memcached counts TTLs in whole seconds, so a lock of 1 s may expire at once: 2 s here,
/// with a 4 s creator, checked at 3.2 s.
#[test]
fn a_long_blocking_creator_keeps_its_memcached_lock() {
    let server = MemcachedServer::start();
    let region = || {
        let region = CacheRegion::builder().name("long-creator").build();
        region
            .configure(
                RegionConfig::new("memcached")
                    .expiration_time(Duration::from_secs(60))
                    .argument("url", server.addr())
                    .argument("distributed_lock", true)
                    .argument("lock_timeout", 2),
            )
            .unwrap();
        region
    };
    let (a, b) = (region(), region());
    let runs = AtomicUsize::new(0);
    thread::scope(|s| {
        let first = s.spawn(|| {
            a.get_or_create("mc-long", || {
                runs.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_secs(4));
                1u32
            })
            .unwrap()
        });
        // Past the 2 s lock's expiry, whole-second clock included.
        thread::sleep(Duration::from_millis(3200));
        assert!(
            server.raw_get("_lockmc-long").is_some(),
            "the lock expired under a running creator"
        );
        let second = b
            .get_or_create("mc-long", || {
                runs.fetch_add(1, Ordering::SeqCst);
                2u32
            })
            .unwrap();
        assert_eq!(first.join().unwrap(), 1);
        assert_eq!(second, 1, "the second process took the first one's value");
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one creator run in all");
    assert!(
        server.raw_get("_lockmc-long").is_none(),
        "released after the creation"
    );
}
