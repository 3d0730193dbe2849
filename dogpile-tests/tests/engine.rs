//! The dogpile engine's guarantees beyond SPEC 3.3's basics (issue "One dogpile engine"):
//! one time budget per call, hand-off of a created value to the callers waiting in this
//! process (also when storing it failed), distributed-lock waits that end by one deadline,
//! and multi calls that never deadlock. Against in-process backends; the same guarantees
//! against real, hung redis and memcached servers are in `tests/engine_servers.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dogpile::backend::CacheBackend;
use dogpile::lock::CacheMutex;
use dogpile::{cache_on_arguments, CacheRegion, CreateOptions, Error, RegionConfig};

const PATIENCE: Duration = Duration::from_secs(20);

/// A byte store whose writes can be made to fail, and whose every key has a distributed
/// lock that can be held "by another process".
#[derive(Clone, Default)]
struct Store {
    values: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    fail_writes: Arc<AtomicBool>,
    fail_reads: Arc<AtomicBool>,
    /// Keys whose distributed lock somebody else holds.
    held_elsewhere: Arc<Mutex<Vec<String>>>,
    with_lock: bool,
}

impl CacheBackend for Store {
    fn get(&self, key: &str) -> dogpile::Result<Option<Vec<u8>>> {
        if self.fail_reads.load(SeqCst) {
            return Err(Error::backend("store at 127.0.0.1:1", "connection refused"));
        }
        Ok(self.values.lock().unwrap().get(key).cloned())
    }
    fn set(&self, key: &str, value: Vec<u8>) -> dogpile::Result<()> {
        if self.fail_writes.load(SeqCst) {
            return Err(Error::backend("store at 127.0.0.1:1", "connection refused"));
        }
        self.values.lock().unwrap().insert(key.to_owned(), value);
        Ok(())
    }
    fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.values.lock().unwrap().remove(key);
        Ok(())
    }
    fn get_mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        self.with_lock.then(|| {
            Box::new(ElsewhereLock {
                key: key.to_owned(),
                held_elsewhere: self.held_elsewhere.clone(),
            }) as Box<dyn CacheMutex>
        })
    }
}

/// A distributed lock that is free unless the test says another process holds it; it
/// gives callers 2 s at most (as `lock_blocking_timeout = 2`).
struct ElsewhereLock {
    key: String,
    held_elsewhere: Arc<Mutex<Vec<String>>>,
}

impl CacheMutex for ElsewhereLock {
    fn try_acquire(&self) -> dogpile::Result<bool> {
        Ok(!self.held_elsewhere.lock().unwrap().contains(&self.key))
    }
    fn release(&self) -> dogpile::Result<()> {
        Ok(())
    }
    fn retry_pause(&self) -> Duration {
        Duration::from_millis(50)
    }
    fn wait_limit(&self) -> Option<Duration> {
        Some(Duration::from_secs(2))
    }
}

fn region_on(store: &Store, budget: Option<Duration>) -> Arc<CacheRegion> {
    let mut builder = CacheRegion::builder().name("engine");
    if let Some(budget) = budget {
        builder = builder.time_budget(budget);
    }
    let region = builder.build();
    region
        .configure(RegionConfig::with_backend(store.clone()))
        .unwrap();
    Arc::new(region)
}

/// Runs `f` on `n` threads released together; returns each result with its latency.
fn race<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<(T, Duration)> {
    let barrier = Arc::new(Barrier::new(n));
    let f = Arc::new(f);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, f) = (barrier.clone(), f.clone());
            thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                let out = f(i);
                (out, started.elapsed())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn waiters_are_handed_the_value_even_when_storing_it_fails() {
    for _ in 0..20 {
        let store = Store::default();
        store.fail_writes.store(true, SeqCst);
        let region = region_on(&store, None);
        let calls = Arc::new(AtomicUsize::new(0));
        let results = {
            let (region, calls) = (region.clone(), calls.clone());
            race(16, move |_| {
                region.get_or_create("k", || {
                    calls.fetch_add(1, SeqCst);
                    thread::sleep(Duration::from_millis(20));
                    7u32
                })
            })
        };
        assert_eq!(calls.load(SeqCst), 1, "one creator call for the whole wave");
        let failed = results.iter().filter(|(r, _)| r.is_err()).count();
        assert!(
            failed <= 1,
            "only the creator's own call reports the failed write"
        );
        for (result, _) in &results {
            match result {
                Ok(value) => assert_eq!(*value, 7),
                Err(error) => assert!(matches!(error, Error::Backend { .. }), "{error}"),
            }
        }
    }
}

#[test]
fn with_the_backend_down_a_failing_open_function_runs_once_per_wave() {
    static STORE: std::sync::LazyLock<Store> = std::sync::LazyLock::new(|| {
        let store = Store::default();
        store.fail_reads.store(true, SeqCst);
        store.fail_writes.store(true, SeqCst);
        store
    });
    static REGION: std::sync::LazyLock<CacheRegion> = std::sync::LazyLock::new(|| {
        let region = CacheRegion::builder().name("down").build();
        region
            .configure(RegionConfig::with_backend(STORE.clone()))
            .unwrap();
        region
    });
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    fn expensive(id: u32) -> u32 {
        CALLS.fetch_add(1, SeqCst);
        thread::sleep(Duration::from_millis(50));
        id * 2
    }

    for round in 0..10 {
        CALLS.store(0, SeqCst);
        let results = race(8, move |_| expensive(round));
        assert!(results.iter().all(|(v, _)| *v == round * 2));
        assert_eq!(CALLS.load(SeqCst), 1, "the body runs once for 8 callers");
    }
}

/// Starts a `get_or_create` of `key` on another thread and returns once its creator runs;
/// the creator returns `value` when the returned sender is used.
fn creating(
    region: &Arc<CacheRegion>,
    key: &'static str,
    value: u32,
) -> (thread::JoinHandle<dogpile::Result<u32>>, mpsc::Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let region = region.clone();
    let holder = thread::spawn(move || {
        region.get_or_create(key, move || {
            started_tx.send(()).unwrap();
            release_rx.recv_timeout(PATIENCE).unwrap();
            value
        })
    });
    started_rx.recv_timeout(PATIENCE).unwrap();
    (holder, release_tx)
}

#[test]
fn queued_callers_share_one_budget_instead_of_paying_it_in_turn() {
    let store = Store::default();
    let region = region_on(&store, Some(Duration::from_millis(300)));
    let (holder, release_tx) = creating(&region, "slow", 1);
    let results = {
        let region = region.clone();
        race(6, move |_| region.get_or_create("slow", || 2u32))
    };
    for (result, latency) in &results {
        match result {
            Err(Error::LockTimeout { region, key, .. }) => {
                assert_eq!((region.as_str(), key.as_str()), ("engine", "slow"));
            }
            other => panic!("expected a LockTimeout, got {other:?}"),
        }
        assert!(
            *latency >= Duration::from_millis(300) && *latency < Duration::from_secs(2),
            "every queued caller ends near its own budget: {latency:?}"
        );
    }
    release_tx.send(()).unwrap();
    assert_eq!(holder.join().unwrap().unwrap(), 1);
    assert_eq!(region.get_or_create("slow", || 3u32).unwrap(), 1);
}

#[test]
fn a_per_call_budget_overrides_the_region_and_fail_open_computes_without_the_lock() {
    let store = Store::default();
    let region = region_on(&store, None);
    let (holder, release_tx) = creating(&region, "k", 1);
    let budget = Duration::from_millis(100);
    let started = Instant::now();
    let error = region
        .get_or_create_with("k", CreateOptions::new().time_budget(budget), || 2u32)
        .unwrap_err();
    assert!(matches!(error, Error::LockTimeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let computed: Result<u32, std::convert::Infallible> =
        dogpile::__private::get_or_create_fail_open(
            &region,
            "k",
            CreateOptions::new().time_budget(budget),
            || Ok(3),
        );
    assert_eq!(
        computed.unwrap(),
        3,
        "failing open, the value is computed without the lock"
    );
    release_tx.send(()).unwrap();
    assert_eq!(holder.join().unwrap().unwrap(), 1);
}

#[test]
fn waiters_behind_a_distributed_lock_held_elsewhere_all_end_by_its_wait_limit() {
    let store = Store {
        with_lock: true,
        ..Store::default()
    };
    store.held_elsewhere.lock().unwrap().push("busy".into());
    let region = region_on(&store, None);
    let results = {
        let region = region.clone();
        race(4, move |_| region.get_or_create("busy", || 1u32))
    };
    for (result, latency) in &results {
        assert!(
            matches!(result, Err(Error::LockTimeout { .. })),
            "{result:?}"
        );
        assert!(
            *latency < Duration::from_secs(3),
            "a 2 s wait limit, counted from each call's start: {latency:?}"
        );
    }
    store.held_elsewhere.lock().unwrap().clear();
    assert_eq!(region.get_or_create("busy", || 5u32).unwrap(), 5);
}

#[test]
fn multi_calls_over_the_same_keys_in_opposite_orders_never_deadlock() {
    let store = Store::default();
    let region = region_on(&store, None);
    let creations = Arc::new(AtomicUsize::new(0));
    for round in 0..25 {
        let keys: Vec<String> = (0..6).map(|k| format!("r{round}-k{k}")).collect();
        let results = {
            let (region, creations, keys) = (region.clone(), creations.clone(), keys.clone());
            race(8, move |i| {
                let mut mine = keys.clone();
                if i % 2 == 1 {
                    mine.reverse();
                }
                region.get_or_create_multi(&mine, |missing| {
                    creations.fetch_add(missing.len(), SeqCst);
                    thread::sleep(Duration::from_millis(2));
                    missing.iter().map(|k| k.len() as u64).collect()
                })
            })
        };
        for (result, _) in results {
            assert_eq!(result.unwrap().len(), 6);
        }
    }
    assert_eq!(creations.load(SeqCst), 25 * 6, "each key created once");
}

#[test]
fn a_multi_call_hands_its_values_to_single_key_waiters() {
    for _ in 0..10 {
        let store = Store::default();
        store.fail_writes.store(true, SeqCst);
        let region = region_on(&store, None);
        let calls = Arc::new(AtomicUsize::new(0));
        let results = {
            let (region, calls) = (region.clone(), calls.clone());
            race(8, move |i| {
                if i == 0 {
                    region
                        .get_or_create_multi(&["a", "b"], |missing| {
                            if missing.contains(&"a") {
                                calls.fetch_add(1, SeqCst);
                            }
                            thread::sleep(Duration::from_millis(30));
                            missing.iter().map(|_| 9u8).collect()
                        })
                        .map(|v| v[0])
                } else {
                    region.get_or_create("a", || {
                        calls.fetch_add(1, SeqCst);
                        thread::sleep(Duration::from_millis(30));
                        9u8
                    })
                }
            })
        };
        assert_eq!(
            calls.load(SeqCst),
            1,
            "`a` is created once, by the multi or a single"
        );
        // Only calls that wrote report the failed write: the creator of `a`, and the multi
        // call (which writes `b` in any case).
        assert!(results.iter().filter(|(r, _)| r.is_err()).count() <= 2);
    }
}

/// A backend whose `get_multi` answers one value fewer than it was asked.
struct ShortMulti(Store);

impl CacheBackend for ShortMulti {
    fn get(&self, key: &str) -> dogpile::Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn set(&self, key: &str, value: Vec<u8>) -> dogpile::Result<()> {
        self.0.set(key, value)
    }
    fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.0.delete(key)
    }
    fn get_multi(&self, keys: &[&str]) -> dogpile::Result<Vec<Option<Vec<u8>>>> {
        keys.iter().skip(1).map(|key| self.0.get(key)).collect()
    }
}

#[test]
fn a_backend_answering_fewer_values_than_keys_is_an_error_never_a_wrong_pairing() {
    let region = CacheRegion::builder().name("short").build();
    region
        .configure(RegionConfig::with_backend(ShortMulti(Store::default())))
        .unwrap();
    region.set("a", &1u32).unwrap();
    region.set("b", &2u32).unwrap();
    for error in [
        region.get_multi::<u32, _>(&["a", "b"]).unwrap_err(),
        region
            .get_or_create_multi(&["a", "b"], |k| vec![0u32; k.len()])
            .unwrap_err(),
    ] {
        assert!(matches!(error, Error::Backend { .. }), "{error}");
        assert!(error.to_string().contains("1 values for 2 keys"), "{error}");
    }
}
