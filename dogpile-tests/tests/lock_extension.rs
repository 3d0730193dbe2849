//! Issue 18, item 7: a creator that runs longer than the distributed lock's `lock_timeout`
//! keeps its lock (the region extends it while the creator runs), so a second process
//! waits for the value instead of running a second creator. Two regions of one name on one
//! real redis stand for two processes: a 2.5 s creator with `lock_timeout` 1.

#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use dogpile::{CacheRegion, RegionConfig};
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
