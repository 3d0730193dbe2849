//! Cache hits on the memory backend, side by side with the peers of SPEC section 7:
//! a bare `RwLock<HashMap>` lookup plus clone, a bare moka get, and the `cached` crate's
//! `#[cached]` hit. Run with `cargo bench --bench memory_hits`; figures in BENCHMARKS.md.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{LazyLock, RwLock};

use criterion::{criterion_group, criterion_main, Criterion};
use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};

const KEY: &str = "memory_hits:load_user|users|42";

fn value() -> String {
    "user forty-two, a value of a few dozen bytes".to_string()
}

static UNBOUNDED: LazyLock<CacheRegion> = LazyLock::new(|| {
    let region = CacheRegion::new();
    region.configure(RegionConfig::new("memory")).unwrap();
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

fn hits(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory hit");

    let map = RwLock::new(HashMap::from([(KEY.to_string(), value())]));
    group.bench_function("RwLock<HashMap> get+clone", |b| {
        b.iter(|| map.read().unwrap().get(black_box(KEY)).cloned())
    });

    let moka = moka::sync::Cache::new(10_000);
    moka.insert(KEY.to_string(), value());
    group.bench_function("moka get", |b| b.iter(|| moka.get(black_box(KEY))));

    cached_load_user(42);
    group.bench_function("cached #[cached] hit", |b| {
        b.iter(|| cached_load_user(black_box(42)))
    });

    UNBOUNDED.set(KEY, &value()).unwrap();
    group.bench_function("region get_or_create (unbounded)", |b| {
        b.iter(|| UNBOUNDED.get_or_create(black_box(KEY), value).unwrap())
    });

    BOUNDED.set(KEY, &value()).unwrap();
    group.bench_function("region get_or_create (max_entries)", |b| {
        b.iter(|| BOUNDED.get_or_create(black_box(KEY), value).unwrap())
    });

    load_user(42);
    group.bench_function("#[cache_on_arguments] hit", |b| {
        b.iter(|| load_user(black_box(42)))
    });
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

criterion_group!(benches, hits);
criterion_main!(benches);
