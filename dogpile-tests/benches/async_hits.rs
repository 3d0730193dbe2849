//! The async API against the sync one (SPEC section 7, "async"), on the memory backend:
//!
//! 1. a hit through `get_or_create_async`, awaited in a loop inside one `block_on` of a
//!    current_thread runtime, against a sync `get_or_create` hit, in one criterion group;
//!    and the same pair on a sync-only custom backend, which the async path reaches on
//!    tokio's blocking pool;
//! 2. an async stampede: 1000 tasks on a multi-threaded runtime call `get_or_create_async`
//!    on one expired key (a `ManualClock` moved past the expiration time) whose creator
//!    takes 50 ms. Printed as a table: creator calls (must be 1) and the latency of the
//!    stale readers (p50, p99, max), against the same 1000 tasks on a fresh key (plain
//!    hits) in the same run.
//!
//! Run with `cargo bench -p dogpile-tests --bench async_hits -- --warm-up-time 1 --measurement-time 3`;
//! figures in BENCHMARKS.md.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::Criterion;
use dogpile::backend::CacheBackend;
use dogpile::clock::ManualClock;
use dogpile::{CacheRegion, RegionConfig};

const KEY: &str = "async_hits:load_user|users|42";
const EXPIRATION: Duration = Duration::from_secs(3600);

fn value() -> String {
    "user forty-two, a value of a few dozen bytes".to_string()
}

fn memory_region(clock: Option<Arc<ManualClock>>) -> CacheRegion {
    let mut builder = CacheRegion::builder().name("async_hits");
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    let region = builder.build();
    region
        .configure(RegionConfig::new("memory").expiration_time(EXPIRATION))
        .unwrap();
    region
}

fn hits(c: &mut Criterion) {
    let region = memory_region(None);
    region.set(KEY, &value()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut group = c.benchmark_group("memory hit");
    group.bench_function("sync get_or_create", |b| {
        b.iter(|| region.get_or_create(black_box(KEY), value).unwrap())
    });
    group.bench_function("async get_or_create_async (current_thread)", |b| {
        b.iter_custom(|iters| async_hits(&runtime, &region, iters))
    });
    group.bench_function("async get_or_create_async, one block_on per call", |b| {
        b.iter(|| {
            runtime
                .block_on(region.get_or_create_async(black_box(KEY), || async { value() }))
                .unwrap()
        })
    });

    // A sync-only custom backend: the async path runs each call on tokio's blocking pool.
    let custom = CacheRegion::builder().name("async_hits_custom").build();
    custom
        .configure(RegionConfig::with_backend(Dict::default()).expiration_time(EXPIRATION))
        .unwrap();
    custom.set(KEY, &value()).unwrap();
    group.bench_function("sync get_or_create, custom sync backend", |b| {
        b.iter(|| custom.get_or_create(black_box(KEY), value).unwrap())
    });
    group.bench_function(
        "async get_or_create_async, custom sync backend (blocking pool)",
        |b| b.iter_custom(|iters| async_hits(&runtime, &custom, iters)),
    );
    group.finish();
}

/// `iters` hits through `get_or_create_async`, awaited one after the other inside one
/// `block_on`: the time per call without the runtime's entry and exit.
fn async_hits(runtime: &tokio::runtime::Runtime, region: &CacheRegion, iters: u64) -> Duration {
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let hit = region
                .get_or_create_async(black_box(KEY), || async { value() })
                .await
                .unwrap();
            black_box(hit);
        }
        start.elapsed()
    })
}

/// A sync-only custom backend, as a user would write one: a map behind a mutex.
#[derive(Default)]
struct Dict(Mutex<HashMap<String, Vec<u8>>>);

impl CacheBackend for Dict {
    fn get(&self, key: &str) -> dogpile::Result<Option<Vec<u8>>> {
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

const TASKS: usize = 1000;
const ROUNDS: usize = 5;
const CREATION: Duration = Duration::from_millis(50);

/// What one round of 1000 tasks measured.
struct Round {
    creator_calls: usize,
    /// Latencies of the tasks that did not run the creator, sorted.
    readers: Vec<Duration>,
    /// The latency of the task that ran the creator, if one did.
    creator: Option<Duration>,
}

impl Round {
    fn percentile(&self, p: f64) -> Duration {
        let rank = ((self.readers.len() as f64 * p).ceil() as usize).max(1);
        self.readers[rank - 1]
    }
}

/// 1000 tasks behind a barrier call `get_or_create_async` on one key, holding the value
/// `"old"`; when `expired`, the clock has passed its expiration time first.
fn round(runtime: &tokio::runtime::Runtime, expired: bool) -> Round {
    let clock = Arc::new(ManualClock::new(1_000_000.0));
    let region = Arc::new(memory_region(Some(clock.clone())));
    region.set(KEY, &"old".to_string()).unwrap();
    if expired {
        clock.advance(EXPIRATION * 2);
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    runtime.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (region, calls, barrier) = (region.clone(), calls.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let ran = AtomicBool::new(false);
                    let start = Instant::now();
                    let got: String = region
                        .get_or_create_async(KEY, || async {
                            ran.store(true, SeqCst);
                            calls.fetch_add(1, SeqCst);
                            tokio::time::sleep(CREATION).await;
                            "new".to_string()
                        })
                        .await
                        .unwrap();
                    let elapsed = start.elapsed();
                    let ran = ran.load(SeqCst);
                    assert_eq!(
                        got,
                        if ran { "new" } else { "old" },
                        "readers get the stale value"
                    );
                    (ran, elapsed)
                })
            })
            .collect();
        let mut readers = Vec::with_capacity(TASKS);
        let mut creator = None;
        for task in tasks {
            match task.await.unwrap() {
                (true, elapsed) => creator = Some(elapsed),
                (false, elapsed) => readers.push(elapsed),
            }
        }
        readers.sort();
        if expired {
            assert_eq!(region.get::<String>(KEY).unwrap().as_deref(), Some("new"));
        }
        Round {
            creator_calls: calls.load(SeqCst),
            readers,
            creator,
        }
    })
}

fn stampede() {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "\nasync stampede: {TASKS} tasks on one key, creator {CREATION:?}, \
         {workers} worker threads, {ROUNDS} rounds"
    );
    println!(
        "{:<7} {:<22} {:>13} {:>10} {:>10} {:>10} {:>10}",
        "round", "what", "creator calls", "p50", "p99", "max", "creator"
    );
    for n in 1..=ROUNDS {
        for (expired, what) in [
            (true, "expired: stale readers"),
            (false, "fresh: plain hits"),
        ] {
            let r = round(&runtime, expired);
            assert_eq!(
                r.creator_calls,
                usize::from(expired),
                "one creator call per expiry"
            );
            println!(
                "{:<7} {:<22} {:>13} {:>10.1?} {:>10.1?} {:>10.1?} {:>10}",
                n,
                what,
                r.creator_calls,
                r.percentile(0.50),
                r.percentile(0.99),
                r.readers.last().unwrap(),
                r.creator.map_or("-".to_string(), |d| format!("{d:.1?}")),
            );
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    hits(&mut criterion);
    criterion.final_summary();
    stampede();
}
