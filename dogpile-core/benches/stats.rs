//! What counting a hit costs: the region's striped counter against one shared `AtomicU64`
//! (`fetch_add`), from one thread and from two threads at once. Run with
//! `cargo bench -p dogpile-core --bench stats`; figures in BENCHMARKS.md.
//!
//! Times are each thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: on a
//! machine busy with other work, threads wait for a core, and wall time would measure that
//! wait instead of what an increment costs. Cache-line contention stalls a thread while it
//! runs, so it shows in CPU time.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dogpile_core::__private::StatsRecorder;

/// The CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(ok, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `op` `iters` times on each of `threads` threads started together; the time is the
/// threads' mean CPU time, so it is the time per operation per thread.
fn on_threads(threads: usize, iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = thread_cpu_time();
                    for _ in 0..iters {
                        op();
                    }
                    thread_cpu_time() - start
                })
            })
            .collect();
        let total: Duration = handles.into_iter().map(|h| h.join().unwrap()).sum();
        total / threads as u32
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
