//! Coherence across processes (issue 20): a near-cache hit against a memory region's hit
//! and a plain redis region's hit (criterion, side by side), then how long a change takes
//! to reach another region, as p50/p99 over 1000 writes: a write seen through a near cache,
//! and a shared invalidation seen by a region of the same name (pushed by redis).
//!
//! Run with `cargo bench -p dogpile-tests --bench coherence -- --warm-up-time 1 --measurement-time 3`
//! (starts its own redis-server on a free port); figures in BENCHMARKS.md.

#[path = "../tests/support/ports.rs"]
mod ports;
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use dogpile::{CacheRegion, RegionConfig};
use redis_server::RedisServer;

const KEY: &str = "coherence:user|42";

fn value() -> String {
    "user forty-two, a value of a few dozen bytes".to_string()
}

fn region(name: &str, config: RegionConfig) -> CacheRegion {
    let region = CacheRegion::named(name);
    region.configure(config).unwrap();
    region
}

fn redis(server: &RedisServer) -> RegionConfig {
    RegionConfig::new("redis").argument("url", server.url())
}

fn hits(c: &mut Criterion) {
    let server = RedisServer::shared();
    let subjects = [
        (
            "memory region hit",
            region("memory", RegionConfig::new("memory")),
        ),
        (
            "near cache hit",
            region("near", redis(server).argument("near_cache", true)),
        ),
        ("plain redis hit", region("plain", redis(server))),
    ];
    let mut group = c.benchmark_group("coherence hit");
    for (name, region) in &subjects {
        region.set(KEY, &value()).unwrap();
        // The near cache keeps a value once its tracking connection is in place.
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(200) {
            region.get::<String>(KEY).unwrap();
        }
        group.bench_function(*name, |b| {
            b.iter(|| black_box(region.get::<String>(black_box(KEY)).unwrap()))
        });
    }
    group.finish();
    propagation(server);
}

/// p50 and p99 of `samples`, in microseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (at(0.5).as_secs_f64() * 1e6, at(0.99).as_secs_f64() * 1e6)
}

/// Waits (spinning) until `seen`, and returns how long it took.
fn until(seen: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !seen() {
        assert!(started.elapsed() < Duration::from_secs(5), "never seen");
        std::hint::spin_loop();
    }
    started.elapsed()
}

fn propagation(server: &RedisServer) {
    const WRITES: u32 = 1000;
    // A write by another process (a plain region), read through a near cache.
    let near = region("near-p", redis(server).argument("near_cache", true));
    let writer = region("writer-p", redis(server));
    writer.set(KEY, &0u32).unwrap();
    let mut samples = Vec::new();
    for i in 1..=WRITES {
        // Kept first, so the write must reach the kept value.
        until(|| near.get::<u32>(KEY).unwrap() == Some(i - 1));
        writer.set(KEY, &i).unwrap();
        samples.push(until(|| near.get::<u32>(KEY).unwrap() == Some(i)));
    }
    let (p50, p99) = percentiles(samples);
    println!("near cache, a write seen: p50 {p50:.0} us, p99 {p99:.0} us over {WRITES} writes");

    // A hard invalidation by one region, seen by another of the same name.
    let config = || {
        redis(server)
            .expiration_time(Duration::from_secs(600))
            .shared_invalidation(true)
            .invalidation_poll(Duration::from_secs(60))
    };
    let (a, b) = (region("shared-p", config()), region("shared-p", config()));
    let mut samples = Vec::new();
    for _ in 0..WRITES {
        b.set(KEY, &1u32).unwrap();
        std::thread::sleep(Duration::from_micros(50));
        a.invalidate(true).unwrap();
        samples.push(until(|| b.get::<u32>(KEY).unwrap().is_none()));
    }
    let (p50, p99) = percentiles(samples);
    println!(
        "shared invalidation, seen by another region: p50 {p50:.0} us, p99 {p99:.0} us over \
         {WRITES} invalidations"
    );
}

criterion_group!(benches, hits);
criterion_main!(benches);
