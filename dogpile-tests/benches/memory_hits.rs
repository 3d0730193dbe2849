//! Cache hits on the memory backend, side by side with the peers of SPEC section 7 and
//! issue 13: a bare `RwLock<HashMap>` lookup plus clone, moka, quick_cache, the `cached`
//! crate's `#[cached]` hit, the concurrent maps the unbounded store was chosen from, and
//! per-thread unshared maps (the machine's ceiling for scaling).
//!
//! Every subject runs three ways: `1 thread`, `2 threads, hot key` (both threads read the
//! same key) and `2 threads, distinct keys`. Each sample starts its threads behind a barrier
//! and times, on the wall clock, every thread doing `iters` hits, so a `2 threads` figure is
//! the time of two hits done at once: `2 x (1 thread) / (2 threads)` is how a subject
//! scales. The run also prints the hit ratios of moka, quick_cache and the bounded region
//! on a Zipf trace, and times writes that evict, into full bounded stores.
//!
//! Run with
//! `cargo bench -p dogpile-tests --bench memory_hits -- --warm-up-time 1 --measurement-time 3`, then
//! `python3 scripts/memory_hits_table.py` for the ratios; figures in BENCHMARKS.md.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Barrier, LazyLock, RwLock};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use dogpile::clock::{Clock, SystemClock};
use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};

/// The hot key, and the second thread's key for `distinct keys`.
const KEYS: [&str; 2] = [
    "memory_hits:load_user|users|42",
    "memory_hits:load_user|users|43",
];

fn value() -> String {
    "user forty-two, a value of a few dozen bytes".to_string()
}

static UNBOUNDED: LazyLock<CacheRegion> = LazyLock::new(|| {
    let region = CacheRegion::new();
    region.configure(RegionConfig::new("memory")).unwrap();
    region
});

/// Unbounded, with an expiration time: each hit reads the clock to judge expiry.
static EXPIRING: LazyLock<CacheRegion> = LazyLock::new(|| {
    let region = CacheRegion::new();
    region
        .configure(RegionConfig::new("memory").expiration_time(Duration::from_secs(3600)))
        .unwrap();
    region
});

static BOUNDED: LazyLock<CacheRegion> = LazyLock::new(|| {
    let region = CacheRegion::new();
    region
        .configure(RegionConfig::new("memory").argument("max_entries", 10_000))
        .unwrap();
    region
});

#[cache_on_arguments(region = "UNBOUNDED", namespace = "users")]
fn load_user(id: u64) -> String {
    let _ = id;
    value()
}

#[cached::macros::cached]
fn cached_load_user(id: u64) -> String {
    let _ = id;
    value()
}

/// The wall time of `threads` threads each calling `hit(Hit { thread, key })` `iters`
/// times, started together. With `distinct`, thread `i` reads key `i`; otherwise all read
/// key 0.
fn timed<F: Fn(Hit) -> R + Sync, R>(
    threads: usize,
    distinct: bool,
    iters: u64,
    hit: &F,
) -> Duration {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let start = &start;
            s.spawn(move || {
                let key = if distinct { t } else { 0 };
                start.wait();
                for _ in 0..iters {
                    black_box(hit(black_box(Hit { thread: t, key })));
                }
            });
        }
        start.wait();
        let began = Instant::now();
        // The scope joins the threads when this closure returns.
        began
    })
    .elapsed()
}

/// Which thread makes a hit (0 or 1), and on which key (an index into [`KEYS`]).
#[derive(Clone, Copy)]
struct Hit {
    thread: usize,
    key: usize,
}

/// Benchmarks `hit` as `name` one thread, two on one key, two on distinct keys; `hit`
/// receives the key's index.
fn subject<F: Fn(usize) -> R + Sync, R>(c: &mut Criterion, name: &str, hit: F) {
    subject_per_thread(c, name, |at: Hit| hit(at.key));
}

/// As [`subject`], with `hit` told which thread calls it too.
fn subject_per_thread<F: Fn(Hit) -> R + Sync, R>(c: &mut Criterion, name: &str, hit: F) {
    let mut group = c.benchmark_group(name);
    for (label, threads, distinct) in [
        ("1 thread", 1, false),
        ("2 threads, hot key", 2, false),
        ("2 threads, distinct keys", 2, true),
    ] {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| timed(threads, distinct, iters, &hit))
        });
    }
    group.finish();
}

/// A value alone on its cache lines (two, for CPUs that fetch lines in pairs).
#[repr(align(128))]
struct Padded<T>(T);

fn seeded() -> ahash::RandomState {
    ahash::RandomState::new()
}

/// A `RwLock<HashMap>` split in shards by the key's hash: the sharding candidate.
struct Sharded {
    hasher: ahash::RandomState,
    shards: Vec<RwLock<HashMap<String, String, ahash::RandomState>>>,
}

impl Sharded {
    fn new(shards: usize) -> Self {
        Sharded {
            hasher: seeded(),
            shards: (0..shards)
                .map(|_| RwLock::new(HashMap::with_hasher(seeded())))
                .collect(),
        }
    }
    fn shard(&self, key: &str) -> &RwLock<HashMap<String, String, ahash::RandomState>> {
        &self.shards[self.hasher.hash_one(key) as usize % self.shards.len()]
    }
    fn insert(&self, key: &str, value: String) {
        self.shard(key)
            .write()
            .unwrap()
            .insert(key.to_owned(), value);
    }
    fn get(&self, key: &str) -> Option<String> {
        self.shard(key).read().unwrap().get(key).cloned()
    }
}

fn peers(c: &mut Criterion) {
    let owned = || KEYS.map(|k| (k.to_string(), value()));

    // Each map on cache lines of its own: two adjacent locks would share a line, and their
    // reader counts would contend as one lock's do.
    let unshared: Vec<Padded<RwLock<HashMap<String, String>>>> = (0..2)
        .map(|_| Padded(RwLock::new(HashMap::from(owned()))))
        .collect();
    // Each thread reads its own map, whichever key: on the hot key too, nothing is shared.
    subject_per_thread(c, "unshared RwLock<HashMap> per thread (ceiling)", |at| {
        unshared[at.thread]
            .0
            .read()
            .unwrap()
            .get(KEYS[at.key])
            .cloned()
    });

    let map = RwLock::new(HashMap::from(owned()));
    subject(c, "bare RwLock<HashMap> get+clone", |k| {
        map.read().unwrap().get(KEYS[k]).cloned()
    });

    let moka = moka::sync::Cache::new(10_000);
    let quick = quick_cache::sync::Cache::new(10_000);
    for (key, value) in owned() {
        moka.insert(key.clone(), value.clone());
        quick.insert(key, value);
    }
    subject(c, "moka get", |k| moka.get(KEYS[k]));
    subject(c, "quick_cache get", |k| quick.get(KEYS[k]));

    cached_load_user(42);
    cached_load_user(43);
    subject(c, "cached #[cached] hit", |k| {
        cached_load_user(42 + k as u64)
    });
}

fn candidates(c: &mut Criterion) {
    let owned = || KEYS.map(|k| (k.to_string(), value()));

    let papaya = papaya::HashMap::builder().hasher(seeded()).build();
    let scc_map = scc::HashMap::with_hasher(seeded());
    let scc_index = scc::HashIndex::with_hasher(seeded());
    let sharded = Sharded::new(64);
    for (key, value) in owned() {
        papaya.pin().insert(key.clone(), value.clone());
        let _ = scc_map.insert_sync(key.clone(), value.clone());
        let _ = scc_index.insert_sync(key.clone(), value.clone());
        sharded.insert(&key, value);
    }
    subject(c, "store: papaya pin+get+clone", |k| {
        papaya.pin().get(KEYS[k]).cloned()
    });
    subject(c, "store: scc::HashMap read_sync+clone", |k| {
        scc_map.read_sync(KEYS[k], |_, v| v.clone())
    });
    subject(c, "store: scc::HashIndex peek_with+clone", |k| {
        scc_index.peek_with(KEYS[k], |_, v| v.clone())
    });
    subject(c, "store: 64 RwLock<HashMap> shards (ahash)", |k| {
        sharded.get(KEYS[k])
    });
}

fn regions(c: &mut Criterion) {
    for key in KEYS {
        UNBOUNDED.set(key, &value()).unwrap();
        BOUNDED.set(key, &value()).unwrap();
        EXPIRING.set(key, &value()).unwrap();
    }
    subject(c, "region get_or_create (unbounded)", |k| {
        UNBOUNDED.get_or_create(KEYS[k], value).unwrap()
    });
    subject(
        c,
        "region get_or_create (unbounded, expiration_time)",
        |k| EXPIRING.get_or_create(KEYS[k], value).unwrap(),
    );
    subject(c, "region get_or_create (max_entries)", |k| {
        BOUNDED.get_or_create(KEYS[k], value).unwrap()
    });
    load_user(42);
    load_user(43);
    subject(c, "#[cache_on_arguments] hit", |k| load_user(42 + k as u64));

    let mut group = c.benchmark_group("clock");
    group.bench_function("SystemClock::now (SystemTime::now)", |b| {
        b.iter(|| SystemClock.now())
    });
    group.bench_function("SystemClock::now_coarse", |b| {
        b.iter(|| SystemClock.now_coarse())
    });
    group.finish();

    let mut group = c.benchmark_group("keys");
    group.bench_function("#[cache_on_arguments] key only", |b| {
        b.iter(|| load_user_key(black_box(42)))
    });
    group.bench_function("format! of the same key", |b| {
        b.iter(|| {
            format!(
                "{}:{}|{}|{}",
                module_path!(),
                "load_user",
                "users",
                black_box(42u64)
            )
        })
    });
    group.finish();
}

/// A Zipf(s) sampler over `0..n` by inverse CDF, driven by a seeded splitmix64.
struct Zipf {
    cdf: Vec<f64>,
    state: u64,
}

impl Zipf {
    fn new(n: usize, s: f64, seed: u64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for rank in 1..=n {
            sum += 1.0 / (rank as f64).powf(s);
            cdf.push(sum);
        }
        for p in &mut cdf {
            *p /= sum;
        }
        Zipf { cdf, state: seed }
    }
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let u = ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&p| p < u) as u64
    }
}

/// Prints the hit ratios of moka, quick_cache and the `memory` backend with `max_entries`
/// on a Zipf (s = 0.9) trace of 1M requests over 100k keys into 10k entries: a miss inserts.
fn zipf_hit_ratios(_: &mut Criterion) {
    const REQUESTS: usize = 1_000_000;
    let trace: Vec<u64> = {
        let mut zipf = Zipf::new(100_000, 0.9, 42);
        (0..REQUESTS).map(|_| zipf.next()).collect()
    };
    let ratio = |hits: usize| 100.0 * hits as f64 / REQUESTS as f64;
    let moka = moka::sync::Cache::new(10_000);
    let quick = quick_cache::sync::Cache::new(10_000);
    let region = CacheRegion::new();
    region
        .configure(RegionConfig::new("memory").argument("max_entries", 10_000))
        .unwrap();
    let (mut moka_hits, mut quick_hits, mut region_hits) = (0, 0, 0);
    for &key in &trace {
        if moka.get(&key).is_some() {
            moka_hits += 1;
        } else {
            moka.insert(key, ());
        }
        if quick.get(&key).is_some() {
            quick_hits += 1;
        } else {
            quick.insert(key, ());
        }
        let key = key.to_string();
        if region.get::<u8>(&key).unwrap().is_some() {
            region_hits += 1;
        } else {
            region.set(&key, &0u8).unwrap();
        }
    }
    println!(
        "zipf s=0.9, 1M requests, 100k keys, 10k entries: hit ratio moka {:.2} %, quick_cache {:.2} %, memory max_entries {:.2} %",
        ratio(moka_hits),
        ratio(quick_hits),
        ratio(region_hits)
    );
}

/// Keys for the write benchmarks: each thread cycles through a list of its own, twice the
/// stores' capacity, so that every write of a full store evicts.
const WRITE_KEYS: usize = 20_000;

thread_local! {
    /// Where this thread is in its list of write keys.
    static WRITTEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The next write key of this thread (`thread`'s list).
fn next_key(keys: &[Vec<String>], thread: usize) -> &str {
    let i = WRITTEN.with(|n| {
        let i = n.get();
        n.set((i + 1) % WRITE_KEYS);
        i
    });
    &keys[thread][i]
}

/// Writes into full bounded stores of 10k entries, each write evicting: the bounded
/// region's store takes its shard's lock (its reads take none), as quick_cache and moka
/// take theirs; papaya's own insert, with no eviction, shows what the map under both memory
/// stores costs. The hot-key mode writes the same list of keys from both threads.
fn writes(c: &mut Criterion) {
    let keys: Vec<Vec<String>> = (0..2)
        .map(|t| (0..WRITE_KEYS).map(|i| format!("w{t}/{i}")).collect())
        .collect();
    let region = CacheRegion::new();
    region
        .configure(RegionConfig::new("memory").argument("max_entries", 10_000))
        .unwrap();
    let unbounded = CacheRegion::new();
    unbounded.configure(RegionConfig::new("memory")).unwrap();
    let moka = moka::sync::Cache::new(10_000);
    let quick = quick_cache::sync::Cache::new(10_000);
    subject_per_thread(c, "write: region set (unbounded)", |at| {
        unbounded.set(next_key(&keys, at.key), &value()).unwrap()
    });
    subject_per_thread(c, "write: region set (max_entries)", |at| {
        region.set(next_key(&keys, at.key), &value()).unwrap()
    });
    subject_per_thread(c, "write: quick_cache insert", |at| {
        quick.insert(next_key(&keys, at.key).to_owned(), value())
    });
    subject_per_thread(c, "write: moka insert", |at| {
        moka.insert(next_key(&keys, at.key).to_owned(), value())
    });
    // The map under both memory stores, alone: whether writes scale from one thread to
    // two is papaya's to say first.
    let papaya = papaya::HashMap::builder().hasher(seeded()).build();
    subject_per_thread(c, "write: papaya insert (no eviction)", |at| {
        papaya
            .pin()
            .insert(next_key(&keys, at.key).to_owned(), value());
    });
}

/// A small struct, the payload of issue 23's first target (a fresh hit within 1.5x the
/// bare map's get + clone of the same value): a `String`'s clone costs more than the
/// region's own work, so it hides that work; this one's clone costs next to nothing.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Small {
    id: u64,
    score: u32,
    active: bool,
}

fn small_struct(c: &mut Criterion) {
    let small = |k: usize| Small {
        id: 42 + k as u64,
        score: 7,
        active: true,
    };
    let map: RwLock<HashMap<String, Small>> = RwLock::new(
        KEYS.iter()
            .enumerate()
            .map(|(k, key)| (key.to_string(), small(k)))
            .collect(),
    );
    subject(c, "small struct: bare RwLock<HashMap> get+clone", |k| {
        map.read().unwrap().get(KEYS[k]).cloned()
    });
    let region = CacheRegion::new();
    region.configure(RegionConfig::new("memory")).unwrap();
    for (k, key) in KEYS.iter().enumerate() {
        region.set(key, &small(k)).unwrap();
    }
    subject(c, "small struct: region get_or_create (unbounded)", |k| {
        region.get_or_create(KEYS[k], || small(k)).unwrap()
    });
}

criterion_group!(
    benches,
    zipf_hit_ratios,
    peers,
    candidates,
    regions,
    writes,
    small_struct
);
criterion_main!(benches);
