//! What counting a hit costs: the region's striped counter against one shared `AtomicU64`
//! (`fetch_add`), from one thread and from two threads at once. Run with
//! `cargo bench -p dogpile-core --bench stats`; figures in BENCHMARKS.md.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use dogpile_core::__private::StatsRecorder;

/// Runs `op` `iters` times on each of `threads` threads started together; the time is the
/// slowest thread's, so it is the time per operation per thread.
fn on_threads(threads: usize, iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        op();
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

fn counting(c: &mut Criterion) {
    let stats = StatsRecorder::new("bench");
    let shared = AtomicU64::new(0);
    let striped_hit = || black_box(&stats).hit();
    let shared_add = || {
        black_box(&shared).fetch_add(1, Ordering::Relaxed);
    };
    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!("count a hit, {threads} thread(s)"));
        group.bench_function("shared AtomicU64 fetch_add", |b| {
            b.iter_custom(|iters| on_threads(threads, iters, &shared_add))
        });
        group.bench_function("StatsRecorder::hit (striped)", |b| {
            b.iter_custom(|iters| on_threads(threads, iters, &striped_hit))
        });
        group.finish();
    }
    // Every count was made: the benchmark measured real increments.
    assert!(stats.snapshot().hits > 0 && shared.load(Ordering::Relaxed) > 0);
}

criterion_group!(benches, counting);
criterion_main!(benches);
