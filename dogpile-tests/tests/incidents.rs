//! Issue 18, "Incidents": the dogpile holds when the origin fails or the caller gives up.
//! In-process guarantees here (against the memory backends); the distributed locks of
//! redis and memcached under a cancellation storm are in `tests/incidents_servers.rs`.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use dogpile::{CacheRegion, Error, RegionConfig};

const CALLERS: usize = 8;
const ROUNDS: usize = 3;
/// How long the failing creator takes.
const CREATOR: Duration = Duration::from_millis(200);
/// Every caller of a wave is answered within this (issue 18: one run, not one per waiter).
const WAVE: Duration = Duration::from_millis(600);

/// An application's error: it takes dogpile's errors through `From`.
#[derive(Debug)]
enum AppError {
    Cache(Error),
    Origin(String),
}

impl From<Error> for AppError {
    fn from(error: Error) -> Self {
        AppError::Cache(error)
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Cache(error) => write!(f, "cache: {error}"),
            AppError::Origin(why) => write!(f, "origin: {why}"),
        }
    }
}

fn region(backend: &str) -> Arc<CacheRegion> {
    let region = CacheRegion::builder().name("incidents").build();
    region
        .configure(RegionConfig::new(backend).expiration_time(Duration::from_secs(3600)))
        .unwrap();
    Arc::new(region)
}

/// One wave's answers: the callers that got the creator's own error, and those handed
/// the failure (checked to name the region, the key and the creator's text).
fn judge(results: &[(Result<u32, AppError>, Duration)], key: &str) -> (usize, usize) {
    let (mut own, mut handed) = (0, 0);
    for (result, latency) in results {
        assert!(*latency < WAVE, "a caller waited {latency:?}");
        match result {
            Err(AppError::Origin(why)) => {
                assert_eq!(why, "database is down");
                own += 1;
            }
            Err(AppError::Cache(
                error @ Error::CreatorFailed {
                    region,
                    key: k,
                    message,
                },
            )) => {
                assert_eq!((region.as_str(), k.as_str()), ("incidents", key));
                assert_eq!(message, "origin: database is down");
                let text = error.to_string();
                assert!(
                    text.contains("incidents") && text.contains(key) && text.contains("down"),
                    "{text}"
                );
                handed += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    (own, handed)
}

#[test]
fn a_failing_creator_runs_once_per_wave_and_its_waiters_get_its_failure() {
    for backend in ["memory", "memory_serialized"] {
        for round in 0..ROUNDS {
            let region = region(backend);
            let calls = Arc::new(AtomicUsize::new(0));
            let barrier = Arc::new(Barrier::new(CALLERS));
            let key = format!("user:{round}");
            let threads: Vec<_> = (0..CALLERS)
                .map(|_| {
                    let (region, calls, barrier, key) =
                        (region.clone(), calls.clone(), barrier.clone(), key.clone());
                    thread::spawn(move || {
                        barrier.wait();
                        let started = Instant::now();
                        let result = region.try_get_or_create(&key, || -> Result<u32, AppError> {
                            calls.fetch_add(1, SeqCst);
                            thread::sleep(CREATOR);
                            Err(AppError::Origin("database is down".into()))
                        });
                        (result, started.elapsed())
                    })
                })
                .collect();
            let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            assert_eq!(
                calls.load(SeqCst),
                1,
                "{backend}, round {round}: one creator run"
            );
            assert_eq!(
                judge(&results, &key),
                (1, CALLERS - 1),
                "{backend}, round {round}"
            );
            assert!(!region.key_is_locked(&key));
            // Nothing was cached; the next wave calls the origin again.
            assert_eq!(region.get_or_create(&key, || 5u32).unwrap(), 5);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_async_creator_runs_once_per_wave_and_its_waiters_get_its_failure() {
    for backend in ["memory", "memory_serialized"] {
        for round in 0..ROUNDS {
            let region = region(backend);
            let calls = Arc::new(AtomicUsize::new(0));
            let barrier = Arc::new(tokio::sync::Barrier::new(CALLERS));
            let key = format!("user:{round}");
            let tasks: Vec<_> = (0..CALLERS)
                .map(|_| {
                    let (region, calls, barrier, key) =
                        (region.clone(), calls.clone(), barrier.clone(), key.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        let started = Instant::now();
                        let result = region
                            .try_get_or_create_async(&key, || async {
                                calls.fetch_add(1, SeqCst);
                                tokio::time::sleep(CREATOR).await;
                                Err::<u32, _>(AppError::Origin("database is down".into()))
                            })
                            .await;
                        (result, started.elapsed())
                    })
                })
                .collect();
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap());
            }
            assert_eq!(
                calls.load(SeqCst),
                1,
                "{backend}, round {round}: one creator run"
            );
            assert_eq!(
                judge(&results, &key),
                (1, CALLERS - 1),
                "{backend}, round {round}"
            );
            assert!(!region.key_is_locked(&key));
            let value = region.get_or_create_async(&key, || async { 5u32 }).await;
            assert_eq!(value.unwrap(), 5);
        }
    }
}

#[test]
fn sync_and_async_waiters_share_one_failure() {
    let region = region("memory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(CALLERS));
    let threads: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (region, calls, barrier) = (region.clone(), calls.clone(), barrier.clone());
            let handle = runtime.handle().clone();
            thread::spawn(move || {
                let create = || {
                    calls.fetch_add(1, SeqCst);
                    thread::sleep(CREATOR);
                    Err::<u32, _>(AppError::Origin("database is down".into()))
                };
                barrier.wait();
                let started = Instant::now();
                let result = if i % 2 == 0 {
                    region.try_get_or_create("k", create)
                } else {
                    handle.block_on(region.try_get_or_create_async("k", || async { create() }))
                };
                (result, started.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(judge(&results, "k"), (1, CALLERS - 1));
}

/// A sync backend whose distributed lock takes a while to answer, as a remote one does:
/// async callers reach it on tokio's blocking pool.
#[derive(Clone, Default)]
struct SlowLockStore {
    values: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>>,
    /// The keys whose distributed lock is held.
    held: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Tries under way.
    trying: Arc<AtomicUsize>,
}

impl dogpile::backend::CacheBackend for SlowLockStore {
    fn get(&self, key: &str) -> dogpile::Result<Option<Vec<u8>>> {
        Ok(self.values.lock().unwrap().get(key).cloned())
    }
    fn set(&self, key: &str, value: Vec<u8>) -> dogpile::Result<()> {
        self.values.lock().unwrap().insert(key.to_owned(), value);
        Ok(())
    }
    fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.values.lock().unwrap().remove(key);
        Ok(())
    }
    fn get_mutex(&self, key: &str) -> Option<Box<dyn dogpile::lock::CacheMutex>> {
        Some(Box::new(SlowLock {
            key: key.to_owned(),
            held: self.held.clone(),
            trying: self.trying.clone(),
            mine: std::sync::atomic::AtomicBool::new(false),
        }))
    }
}

/// Takes 50 ms to answer a try (the round trip); has no `Drop` of its own, so the region
/// alone must see that a lock taken for a dropped call is released.
struct SlowLock {
    key: String,
    held: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    trying: Arc<AtomicUsize>,
    mine: std::sync::atomic::AtomicBool,
}

impl dogpile::lock::CacheMutex for SlowLock {
    fn try_acquire(&self) -> dogpile::Result<bool> {
        self.trying.fetch_add(1, SeqCst);
        thread::sleep(Duration::from_millis(50));
        let won = self.held.lock().unwrap().insert(self.key.clone());
        self.mine.store(won, SeqCst);
        self.trying.fetch_sub(1, SeqCst);
        Ok(won)
    }
    fn release(&self) -> dogpile::Result<()> {
        if self.mine.swap(false, SeqCst) {
            self.held.lock().unwrap().remove(&self.key);
        }
        Ok(())
    }
}

/// Waits (a few ms at a time, 2 s at most) until no try is under way and no distributed
/// lock is held.
async fn all_released(store: &SlowLockStore) -> bool {
    for _ in 0..400 {
        if store.trying.load(SeqCst) == 0 && store.held.lock().unwrap().is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_call_dropped_while_a_sync_lock_is_taken_on_the_blocking_pool_leaves_it_free() {
    let store = SlowLockStore::default();
    let region = CacheRegion::builder().name("incidents").build();
    region
        .configure(RegionConfig::with_backend(store.clone()))
        .unwrap();
    for round in 0..10u64 {
        // Dropped while the pool's task is taking the lock (it answers after 50 ms).
        let key = format!("k{round}");
        let call = region.get_or_create_async(&key, || async { 1u32 });
        let timeout = Duration::from_millis(5 + round * 4);
        assert!(tokio::time::timeout(timeout, call).await.is_err());
        assert!(
            all_released(&store).await,
            "round {round}: the lock was left held"
        );
        // The key is free for the next creator at once.
        let started = Instant::now();
        let options = dogpile::CreateOptions::new().time_budget(Duration::from_secs(1));
        let value = region
            .get_or_create_with_async(&key, options, || async { 2u32 })
            .await;
        assert_eq!(value.unwrap(), 2);
        assert!(started.elapsed() < Duration::from_millis(500));
        // Dropped while holding it, during the creation.
        let key = format!("held{round}");
        let call = region.get_or_create_async(&key, || async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            3u32
        });
        assert!(tokio::time::timeout(Duration::from_millis(80), call)
            .await
            .is_err());
        assert!(
            all_released(&store).await,
            "round {round}: the lock was left held"
        );
    }
}

/// Issue 18, item 8: callers handed a value by a creator in this process are lock waits,
/// not misses; the caller that created is the one miss.
#[test]
fn callers_handed_a_value_count_as_lock_waits_not_misses() {
    const WAITERS: usize = 19;
    for round in 0..ROUNDS {
        let region = region("memory");
        let barrier = Arc::new(Barrier::new(WAITERS + 1));
        let threads: Vec<_> = (0..=WAITERS)
            .map(|_| {
                let (region, barrier) = (region.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    region
                        .get_or_create("k", || {
                            thread::sleep(Duration::from_millis(100));
                            7u32
                        })
                        .unwrap()
                })
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().unwrap(), 7);
        }
        let stats = region.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.creations, stats.lock_waits),
            (0, 1, 1, WAITERS as u64),
            "round {round}: {stats:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_callers_handed_a_value_count_as_lock_waits_not_misses() {
    const WAITERS: usize = 19;
    for round in 0..ROUNDS {
        let region = region("memory_serialized");
        let barrier = Arc::new(tokio::sync::Barrier::new(WAITERS + 1));
        let tasks: Vec<_> = (0..=WAITERS)
            .map(|_| {
                let (region, barrier) = (region.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    region
                        .get_or_create_async("k", || async {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            7u32
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 7);
        }
        let stats = region.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.creations, stats.lock_waits),
            (0, 1, 1, WAITERS as u64),
            "round {round}: {stats:?}"
        );
    }
}
