//! Issue 18, item 6, against real servers: a cancelled async call never strands a
//! distributed lock. Storms of `get_or_create_async` futures over 100 keys, dropped at
//! random points (as request timeouts drop them), on redis and memcached with
//! `distributed_lock` and `lock_timeout` 30: a second after each storm no lock key is
//! left, and every key is created again at once (a stranded lock would block its next
//! creator for the whole `lock_timeout`).

#[path = "support/memcached_server.rs"]
mod memcached_server;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dogpile::{CacheRegion, CreateOptions, RegionConfig};
use memcached_server::MemcachedServer;
use redis_server::RedisServer;

const KEYS: usize = 100;
const CALLS: usize = 2000;
const STORMS: usize = 3;
/// Values expire at once, so that calls keep taking the lock (waiting for a missing
/// value, or regenerating a stale one).
const EXPIRATION: Duration = Duration::from_millis(10);
/// The creator: slow enough that many calls are dropped while one holds the lock.
const CREATOR: Duration = Duration::from_millis(5);

fn region(backend: &str, url: String) -> Arc<CacheRegion> {
    let region = CacheRegion::builder().name("storm").build();
    region
        .configure(
            RegionConfig::new(backend)
                .expiration_time(EXPIRATION)
                .argument("url", url)
                .argument("distributed_lock", true)
                .argument("lock_timeout", 30),
        )
        .unwrap();
    Arc::new(region)
}

fn key(i: usize) -> String {
    format!("storm-{i}")
}

/// A small, seeded pseudo-random sequence (xorshift), so a failing storm can be re-run.
fn random(state: &AtomicU64) -> u64 {
    let mut x = state.load(Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state.store(x, Relaxed);
    x
}

/// `CALLS` calls on `KEYS` keys, started at random over 1 s, each dropped after a
/// random timeout between nothing and 20 ms (so calls are dropped at every point:
/// reading, waiting for or taking the lock, creating, storing, releasing, and some end);
/// returns once every call has ended, with how many were dropped.
async fn storm(region: &Arc<CacheRegion>, seed: u64) -> usize {
    let state = AtomicU64::new(seed | 1);
    region
        .delete_multi_async(&(0..KEYS).map(key).collect::<Vec<_>>())
        .await
        .unwrap();
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let key = key(random(&state) as usize % KEYS);
            let start = Duration::from_micros(random(&state) % 1_000_000);
            let timeout = Duration::from_micros(random(&state) % 20_000);
            let region = region.clone();
            tokio::spawn(async move {
                tokio::time::sleep(start).await;
                let call = region.get_or_create_async(&key, || async {
                    tokio::time::sleep(CREATOR).await;
                    7u32
                });
                tokio::time::timeout(timeout, call).await.is_err()
            })
        })
        .collect();
    let mut dropped = 0;
    for call in calls {
        dropped += usize::from(call.await.unwrap());
    }
    dropped
}

/// A storm drops many calls (and, unless the machine is overloaded, lets others end).
fn judge_storm(round: usize, dropped: usize) {
    println!("storm {round}: {dropped} of {CALLS} calls dropped");
    assert!(
        dropped > CALLS / 20,
        "storm {round}: {dropped} of {CALLS} calls dropped"
    );
}

/// After a storm: every key is created again, each within 100 ms (a stranded lock makes
/// its creator wait; the call's budget of 2 s ends such a wait with an error).
async fn every_key_is_created_again_at_once(region: &CacheRegion) {
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    region.delete_multi_async(&keys).await.unwrap();
    for key in &keys {
        let started = Instant::now();
        let options = CreateOptions::new().time_budget(Duration::from_secs(2));
        let value = region
            .get_or_create_with_async(key, options, || async { 8u32 })
            .await;
        assert_eq!(value.unwrap(), 8, "{key}");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(100), "{key} took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancellation_storm_strands_no_redis_lock() {
    let server = RedisServer::start();
    let region = region("redis", server.url());
    for round in 0..STORMS {
        let dropped = storm(&region, 0x5eed + round as u64).await;
        judge_storm(round, dropped);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut client = server.client();
        let left: Vec<String> = redis::cmd("KEYS").arg("_lock*").query(&mut client).unwrap();
        assert!(left.is_empty(), "storm {round}: locks left: {left:?}");
        every_key_is_created_again_at_once(&region).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancellation_storm_strands_no_memcached_lock() {
    let server = MemcachedServer::start();
    let region = region("memcached", server.addr());
    for round in 0..STORMS {
        let dropped = storm(&region, 0xca11 + round as u64).await;
        judge_storm(round, dropped);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let left: Vec<String> = (0..KEYS)
            .map(|i| format!("_lock{}", key(i)))
            .filter(|lock| server.raw_get(lock).is_some())
            .collect();
        assert!(left.is_empty(), "storm {round}: locks left: {left:?}");
        every_key_is_created_again_at_once(&region).await;
    }
}
