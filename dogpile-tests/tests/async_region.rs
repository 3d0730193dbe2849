//! The async API (issue "Async: get_or_create_async on the same engine"): the dogpile
//! lock's guarantees for tasks on a multi-threaded runtime, cancellation, panics, sync and
//! async callers sharing one lock, a ticker that keeps ticking on a current_thread runtime,
//! and custom async and sync-only backends. Against the memory backend and custom
//! backends; against a real redis in `tests/async_redis.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dogpile::backend::{async_trait, AsyncCacheBackend, CacheBackend};
use dogpile::clock::ManualClock;
use dogpile::{CacheRegion, CreateOptions, Error, RegionConfig};
use tokio::sync::{oneshot, Barrier, Notify};

const HOUR: Duration = Duration::from_secs(3600);
const PATIENCE: Duration = Duration::from_secs(20);

fn memory_region(clock: &Arc<ManualClock>) -> Arc<CacheRegion> {
    let region = CacheRegion::builder()
        .name("async")
        .clock(clock.clone())
        .build();
    region
        .configure(RegionConfig::new("memory").expiration_time(HOUR))
        .unwrap();
    Arc::new(region)
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_000_000.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_creator_call_for_250_tasks_on_a_missing_key() {
    for round in 0..10 {
        let region = memory_region(&clock());
        let calls = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(250));
        let tasks: Vec<_> = (0..250)
            .map(|_| {
                let (region, calls, barrier) = (region.clone(), calls.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    region
                        .get_or_create_async("k", || async {
                            calls.fetch_add(1, SeqCst);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            round
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), round, "waiters get the new value");
        }
        assert_eq!(calls.load(SeqCst), 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_readers_never_wait_and_one_task_regenerates() {
    let clock = clock();
    let region = memory_region(&clock);
    region.set_async("k", &1u32).await.unwrap();
    clock.advance(HOUR * 2);

    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (started_tx, started_rx) = oneshot::channel();
    let creator = {
        let (region, calls, release) = (region.clone(), calls.clone(), release.clone());
        tokio::spawn(async move {
            region
                .get_or_create_async("k", || async move {
                    calls.fetch_add(1, SeqCst);
                    started_tx.send(()).unwrap();
                    release.notified().await;
                    2u32
                })
                .await
                .unwrap()
        })
    };
    tokio::time::timeout(PATIENCE, started_rx)
        .await
        .unwrap()
        .unwrap();
    // Every other task gets the stale value while the creator is held.
    let readers: Vec<_> = (0..200)
        .map(|_| {
            let (region, calls) = (region.clone(), calls.clone());
            tokio::spawn(async move {
                region
                    .get_or_create_async("k", || async move {
                        calls.fetch_add(1, SeqCst);
                        3u32
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for reader in readers {
        let value = tokio::time::timeout(PATIENCE, reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value, 1, "a stale reader gets the stale value at once");
    }
    release.notify_one();
    assert_eq!(creator.await.unwrap(), 2);
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(region.get_async::<u32>("k").await.unwrap(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_lock_holder_releases_the_lock_and_a_waiter_takes_over() {
    for _ in 0..20 {
        let region = memory_region(&clock());
        let (started_tx, started_rx) = oneshot::channel();
        let holder = {
            let region = region.clone();
            tokio::spawn(async move {
                region
                    .get_or_create_async("k", || async move {
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
        let waiter = {
            let region = region.clone();
            tokio::spawn(async move { region.get_or_create_async("k", || async { 7u32 }).await })
        };
        tokio::task::yield_now().await;
        holder.abort();
        assert!(holder.await.unwrap_err().is_cancelled());
        let value = tokio::time::timeout(PATIENCE, waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value.unwrap(), 7, "the waiter took over");
        assert!(!region.key_is_locked("k"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_future_releases_the_lock_too() {
    let region = memory_region(&clock());
    let slow = region.get_or_create_async("k", || async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        1u32
    });
    assert!(tokio::time::timeout(Duration::from_millis(50), slow)
        .await
        .is_err());
    assert!(!region.key_is_locked("k"));
    let value = region.get_or_create_async("k", || async { 2u32 }).await;
    assert_eq!(value.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_creator_does_not_wedge_the_key() {
    let region = memory_region(&clock());
    let (started_tx, started_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let panicking = {
        let region = region.clone();
        tokio::spawn(async move {
            region
                .get_or_create_async("k", || async move {
                    started_tx.send(()).unwrap();
                    let _ = go_rx.await;
                    panic!("creator failed");
                    #[allow(unreachable_code)]
                    0u32
                })
                .await
        })
    };
    started_rx.await.unwrap();
    let waiter = {
        let region = region.clone();
        tokio::spawn(async move { region.get_or_create_async("k", || async { 5u32 }).await })
    };
    tokio::task::yield_now().await;
    go_tx.send(()).unwrap();
    assert!(panicking.await.unwrap_err().is_panic());
    let value = tokio::time::timeout(PATIENCE, waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(value.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_async_callers_share_one_lock_per_key() {
    for _ in 0..10 {
        let region = memory_region(&clock());
        let calls = Arc::new(AtomicUsize::new(0));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let sync_holder = {
            let (region, calls) = (region.clone(), calls.clone());
            std::thread::spawn(move || {
                region
                    .get_or_create("k", || {
                        calls.fetch_add(1, SeqCst);
                        started_tx.send(()).unwrap();
                        release_rx.recv_timeout(PATIENCE).unwrap();
                        11u32
                    })
                    .unwrap()
            })
        };
        started_rx.recv_timeout(PATIENCE).unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (region, calls) = (region.clone(), calls.clone());
                tokio::spawn(async move {
                    region
                        .get_or_create_async("k", || async move {
                            calls.fetch_add(1, SeqCst);
                            12u32
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        release_tx.send(()).unwrap();
        for task in tasks {
            assert_eq!(
                task.await.unwrap(),
                11,
                "async waiters get the sync creator's value"
            );
        }
        assert_eq!(sync_holder.join().unwrap(), 11);
        assert_eq!(calls.load(SeqCst), 1);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_ticker_keeps_ticking_while_100_tasks_wait_for_one_creator() {
    let region = memory_region(&clock());
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(5));
            loop {
                interval.tick().await;
                ticks.fetch_add(1, SeqCst);
            }
        })
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (region, calls) = (region.clone(), calls.clone());
            tokio::spawn(async move {
                region
                    .get_or_create_async("k", || async move {
                        calls.fetch_add(1, SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        1u32
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 1);
    }
    let waited = started.elapsed();
    ticker.abort();
    assert_eq!(calls.load(SeqCst), 1);
    assert!(waited >= Duration::from_millis(300));
    let ticks = ticks.load(SeqCst);
    assert!(
        ticks >= 25,
        "the ticker ticked {ticks} times in {waited:?}: the waiters blocked the thread"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_tasks_share_one_time_budget() {
    let region = memory_region(&clock());
    let (started_tx, started_rx) = oneshot::channel();
    let release = Arc::new(Notify::new());
    let holder = {
        let (region, release) = (region.clone(), release.clone());
        tokio::spawn(async move {
            region
                .get_or_create_async("k", || async move {
                    started_tx.send(()).unwrap();
                    release.notified().await;
                    1u32
                })
                .await
        })
    };
    started_rx.await.unwrap();
    let options = || CreateOptions::new().time_budget(Duration::from_millis(200));
    let started = Instant::now();
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let region = region.clone();
            tokio::spawn(async move {
                region
                    .get_or_create_with_async("k", options(), || async { 2u32 })
                    .await
            })
        })
        .collect();
    for waiter in waiters {
        let error = waiter.await.unwrap().unwrap_err();
        assert!(matches!(error, Error::LockTimeout { .. }), "{error}");
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    release.notify_one();
    assert_eq!(holder.await.unwrap().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_regeneration_serves_stale_to_the_winner_too() {
    let clock = clock();
    let region = memory_region(&clock);
    region.set_async("k", &1u32).await.unwrap();
    clock.advance(HOUR * 2);
    let (done_tx, done_rx) = oneshot::channel();
    let release = Arc::new(Notify::new());
    let value = {
        let release = release.clone();
        region
            .get_or_create_in_background_async("k", move || async move {
                release.notified().await;
                let _ = done_tx.send(());
                2u32
            })
            .await
            .unwrap()
    };
    assert_eq!(value, 1, "the winner returns the stale value at once");
    assert!(region.key_is_locked("k"), "the spawned task holds the lock");
    release.notify_one();
    done_rx.await.unwrap();
    let started = Instant::now();
    while region.key_is_locked("k") {
        assert!(started.elapsed() < PATIENCE);
        tokio::task::yield_now().await;
    }
    assert_eq!(region.get_async::<u32>("k").await.unwrap(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_set_delete_and_multi_forms() {
    let region = memory_region(&clock());
    region.set_async("a", &1u32).await.unwrap();
    region
        .set_multi_async(&[("b", 2u32), ("c", 3u32)])
        .await
        .unwrap();
    assert_eq!(
        region
            .get_multi_async::<u32, _>(&["a", "b", "x", "c"])
            .await
            .unwrap(),
        vec![Some(1), Some(2), None, Some(3)]
    );
    region.delete_async("a").await.unwrap();
    region.delete_multi_async(&["b"]).await.unwrap();
    assert_eq!(region.get_async::<u32>("a").await.unwrap(), None);
    assert_eq!(region.get_async::<u32>("b").await.unwrap(), None);
    assert_eq!(
        region.get("c").unwrap(),
        Some(3u32),
        "sync and async share the store"
    );

    let asked = Arc::new(Mutex::new(Vec::new()));
    let values = {
        let asked = asked.clone();
        region
            .get_or_create_multi_async(&["c", "d", "e", "d"], |missing| async move {
                asked.lock().unwrap().push(missing.clone());
                missing.iter().map(|k| k.len() as u32 * 10).collect()
            })
            .await
            .unwrap()
    };
    assert_eq!(values, vec![3, 10, 10, 10]);
    assert_eq!(
        *asked.lock().unwrap(),
        vec![vec!["d".to_string(), "e".to_string()]]
    );
    let again: Vec<u32> = region
        .get_or_create_multi_async(&["d", "e"], |_| async { panic!("all cached") })
        .await
        .unwrap();
    assert_eq!(again, vec![10, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_tasks_race_and_each_key_is_created_once() {
    let region = memory_region(&clock());
    let created = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let (region, created, barrier) = (region.clone(), created.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut keys = vec!["k1", "k2", "k3", "k4"];
                if t % 2 == 1 {
                    keys.reverse();
                }
                barrier.wait().await;
                region
                    .get_or_create_multi_async(&keys, |missing| async move {
                        created.fetch_add(missing.len(), SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        missing.iter().map(|k| k.len()).collect::<Vec<usize>>()
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), vec![2, 2, 2, 2]);
    }
    assert_eq!(created.load(SeqCst), 4, "each key created once");
}

/// An async-only store (as a user would write one).
#[derive(Clone, Default)]
struct AsyncDict(Arc<tokio::sync::Mutex<HashMap<String, Vec<u8>>>>);

#[async_trait]
impl AsyncCacheBackend for AsyncDict {
    async fn get(&self, key: &str) -> dogpile::Result<Option<Vec<u8>>> {
        Ok(self.0.lock().await.get(key).cloned())
    }
    async fn set(&self, key: &str, value: Vec<u8>) -> dogpile::Result<()> {
        self.0.lock().await.insert(key.to_owned(), value);
        Ok(())
    }
    async fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.0.lock().await.remove(key);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_async_backend_serves_the_async_api_and_refuses_sync_calls() {
    let store = AsyncDict::default();
    let region = CacheRegion::new();
    region
        .configure(RegionConfig::with_async_backend(store.clone()))
        .unwrap();
    let value = region
        .get_or_create_async("k", || async { "v".to_string() })
        .await
        .unwrap();
    assert_eq!(value, "v");
    let stored = store.0.lock().await.get("k").cloned().unwrap();
    assert!(
        stored.starts_with(b"{\"ct\":"),
        "dogpile's byte format, as every byte store"
    );
    let error = region.get::<String>("k").unwrap_err();
    assert!(error.to_string().contains("_async"), "{error}");
}

/// A sync-only store whose calls block the thread (as a sync client's would).
#[derive(Clone, Default)]
struct SlowSync(Arc<Mutex<HashMap<String, Vec<u8>>>>);

impl CacheBackend for SlowSync {
    fn get(&self, key: &str) -> dogpile::Result<Option<Vec<u8>>> {
        std::thread::sleep(Duration::from_millis(50));
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    fn set(&self, key: &str, value: Vec<u8>) -> dogpile::Result<()> {
        self.0.lock().unwrap().insert(key.to_owned(), value);
        Ok(())
    }
    fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.0.lock().unwrap().remove(key);
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_sync_only_backend_runs_on_the_blocking_pool_and_never_stalls_the_runtime() {
    let region = Arc::new(CacheRegion::new());
    region
        .configure(RegionConfig::with_backend(SlowSync::default()))
        .unwrap();
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(5));
            loop {
                interval.tick().await;
                ticks.fetch_add(1, SeqCst);
            }
        })
    };
    let started = Instant::now();
    for i in 0..4u32 {
        let key = format!("k{i}");
        assert_eq!(
            region
                .get_or_create_async(&key, || async move { i })
                .await
                .unwrap(),
            i
        );
    }
    // Each call reads twice (before and under the lock): 8 reads of 50 ms.
    let waited = started.elapsed();
    ticker.abort();
    let ticks = ticks.load(SeqCst);
    assert!(
        ticks as u128 >= waited.as_millis() / 5 / 2,
        "{ticks} ticks in {waited:?}: the backend blocked the runtime's only thread"
    );
    assert_eq!(
        region.get::<u32>("k3").unwrap(),
        Some(3),
        "the sync path sees the same store"
    );
}
