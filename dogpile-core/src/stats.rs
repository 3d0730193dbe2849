//! What a region did: [`RegionStats`], counted without a shared hot spot, and fed to the
//! [`metrics`](https://docs.rs/metrics) crate facade.
//!
//! See [`RegionStats`] for what is counted, how, and the names of the metrics.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crossbeam_utils::CachePadded;

/// A snapshot of what a region did since it was made (`CacheRegion::stats`).
///
/// `get` and `get_or_create` both count hits and misses; a stale value served while another
/// caller regenerates counts in `stale_served`, not in `hits`. A `get_or_create` caller
/// that waited for another caller of this process to create the value and was handed it
/// counts in `lock_waits` only, not in `misses`: 20 callers served by one creation are one
/// miss (the caller that created) and 19 lock waits, so `misses` stays what the origin saw.
///
/// Each region keeps its counts in stripes, one cache line each. A thread numbered below
/// the number of owned stripes (four per core, at most 64; numbers are given back when a
/// thread ends, and the lowest free one is given next) counts in a stripe of its own, with
/// a plain load and store (no atomic read-modify-write: a count costs about 4 ns against
/// 7 for an uncontended atomic add, BENCHMARKS.md); the threads beyond share the other
/// half of the stripes, given in turn, with atomic adds. So threads on different cores do
/// not write the same cache line. A snapshot sums the stripes: it is exact once the counted
/// operations have returned, and a sum of counts taken one after the other while
/// operations run.
///
/// # Metrics
///
/// With the `metrics` feature (on by default), every count also goes to the `metrics`
/// facade, labelled `region` with the region's name, so any exporter (Prometheus,
/// OpenTelemetry, StatsD, ...) installed by the application picks it up. Without an
/// installed recorder this costs a branch per count.
///
/// | metric | kind | counts |
/// |---|---|---|
/// | `dogpile_hits_total` | counter | fresh values returned from the cache |
/// | `dogpile_misses_total` | counter | lookups that found no usable value (absent, expired for `get`, undecodable) and were not handed one by another caller's creation |
/// | `dogpile_stale_served_total` | counter | stale values returned while another caller regenerates |
/// | `dogpile_stale_served_on_error_total` | counter | stale values returned because the creator failed (`stale_if_error`) |
/// | `dogpile_early_refreshes_total` | counter | fresh values regenerated ahead of their expiry (`early_refresh`) |
/// | `dogpile_creations_total` | counter | creator calls that returned a value |
/// | `dogpile_creation_errors_total` | counter | creator calls that failed |
/// | `dogpile_backend_errors_total` | counter | backend operations that failed |
/// | `dogpile_lock_waits_total` | counter | callers that waited for another caller's creation (counted when the wait begins) |
/// | `dogpile_creation_seconds` | histogram | how long each creator call took |
/// | `dogpile_lock_wait_seconds` | histogram | how long each lock wait took |
///
/// A region registers its metrics with the recorder in force at its first counted
/// operation, so install the exporter before the cache is first used (as for any library
/// instrumented with `metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegionStats {
    /// Fresh values returned from the cache.
    pub hits: u64,
    /// Lookups that found no usable value, and were not handed one by another caller's
    /// creation (those count in `lock_waits`).
    pub misses: u64,
    /// Stale values returned while another caller regenerated them.
    pub stale_served: u64,
    /// Stale values returned because the creator failed (`stale_if_error`), to the caller
    /// that ran it and to those it handed the value to (`retry_after_error` included).
    pub stale_served_on_error: u64,
    /// Fresh values regenerated ahead of their expiry (`early_refresh`): each a creation
    /// started by a caller that held a fresh value, which the others went on reading.
    pub early_refreshes: u64,
    /// Creator calls that returned a value.
    pub creations: u64,
    /// Creator calls that failed.
    pub creation_errors: u64,
    /// Backend operations that failed.
    pub backend_errors: u64,
    /// Callers that waited for another caller's creation (counted when the wait begins).
    pub lock_waits: u64,
    /// Total time spent in creators (successful or not); kept in nanoseconds, so it wraps
    /// after 584 years.
    pub creation_time: Duration,
    /// Total time callers spent waiting for the dogpile lock.
    pub lock_wait_time: Duration,
}

impl RegionStats {
    /// `hits / (hits + misses + stale_served + stale_served_on_error)`: the share of lookups answered with a fresh
    /// value from the cache; `None` before the first lookup. Callers handed another
    /// caller's value (`lock_waits`) are in neither part.
    pub fn hit_ratio(&self) -> Option<f64> {
        let lookups = self.hits + self.misses + self.stale_served + self.stale_served_on_error;
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }
}

/// What is counted; the index of its counter in a stripe and of its metric.
#[derive(Clone, Copy)]
enum Count {
    Hits,
    Misses,
    StaleServed,
    Creations,
    CreationErrors,
    BackendErrors,
    LockWaits,
    StaleServedOnError,
    EarlyRefreshes,
}

/// What is timed; the index of its total in a stripe and of its histogram.
#[derive(Clone, Copy)]
enum Time {
    Creation,
    LockWait,
}

const COUNTS: usize = 9;
const TIMES: usize = 2;

/// One stripe: every count of a region, on its own cache line(s).
#[derive(Default)]
struct Stripe {
    counts: [AtomicU64; COUNTS],
    nanos: [AtomicU64; TIMES],
}

/// Counts what one region does: held by the region, called by its operations.
pub struct StatsRecorder {
    stripes: Box<[CachePadded<Stripe>]>,
    #[cfg(feature = "metrics")]
    metrics: metrics_handles::Lazy,
}

impl StatsRecorder {
    /// A recorder for the region named `region` (the `region` label of its metrics).
    pub fn new(region: &str) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = region;
        StatsRecorder {
            // Owned stripes, then as many shared ones.
            stripes: (0..2 * stripe_count())
                .map(|_| Default::default())
                .collect(),
            #[cfg(feature = "metrics")]
            metrics: metrics_handles::Lazy::new(region),
        }
    }

    /// Labels the metrics of a region named after it was made (from its configuration's
    /// prefix), as long as they are not registered yet (they are at the first count).
    pub(crate) fn name_region(&self, region: &str) {
        #[cfg(feature = "metrics")]
        self.metrics.rename(region);
        #[cfg(not(feature = "metrics"))]
        let _ = region;
    }

    /// Adds `n` to this thread's counter at `at` (of a stripe's `counts`, or `nanos`).
    #[inline]
    fn bump(&self, at: impl Fn(&Stripe) -> &AtomicU64, n: u64) {
        match slot() {
            Slot::Own(i) => {
                // No other thread writes this stripe while this one holds its number.
                let counter = at(&self.stripes[i]);
                counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
            }
            Slot::Shared(i) => {
                at(&self.stripes[self.stripes.len() / 2 + i]).fetch_add(n, Relaxed);
            }
        }
    }

    #[inline]
    fn add(&self, count: Count) {
        self.bump(|stripe| &stripe.counts[count as usize], 1);
        #[cfg(feature = "metrics")]
        self.metrics.get().counters[count as usize].increment(1);
    }

    fn add_timed(&self, count: Count, time: Time, elapsed: Duration) {
        self.add(count);
        self.add_time(time, elapsed);
    }

    fn add_time(&self, time: Time, elapsed: Duration) {
        self.bump(|stripe| &stripe.nanos[time as usize], nanos(elapsed));
        #[cfg(feature = "metrics")]
        self.metrics.get().histograms[time as usize].record(elapsed.as_secs_f64());
    }

    /// A fresh value was returned from the cache.
    #[inline]
    pub fn hit(&self) {
        self.add(Count::Hits);
    }

    /// A lookup found no usable value.
    #[inline]
    pub fn miss(&self) {
        self.add(Count::Misses);
    }

    /// A stale value was returned while another caller regenerates it.
    #[inline]
    pub fn stale_served(&self) {
        self.add(Count::StaleServed);
    }

    /// A stale value was returned because the creator failed (`stale_if_error`).
    #[inline]
    pub fn stale_served_on_error(&self) {
        self.add(Count::StaleServedOnError);
    }

    /// A fresh value is regenerated ahead of its expiry (`early_refresh`).
    #[inline]
    pub fn early_refresh(&self) {
        self.add(Count::EarlyRefreshes);
    }

    /// A creator returned a value after running for `elapsed`.
    pub fn creation(&self, elapsed: Duration) {
        self.add_timed(Count::Creations, Time::Creation, elapsed);
    }

    /// A creator failed after running for `elapsed`.
    pub fn creation_error(&self, elapsed: Duration) {
        self.add_timed(Count::CreationErrors, Time::Creation, elapsed);
    }

    /// A backend operation failed.
    pub fn backend_error(&self) {
        self.add(Count::BackendErrors);
    }

    /// A caller waited `elapsed` for the dogpile lock held by another caller.
    pub fn lock_wait(&self, elapsed: Duration) {
        self.add_timed(Count::LockWaits, Time::LockWait, elapsed);
    }

    /// A caller began waiting for the dogpile lock held by another caller: counted at
    /// once, so that waits under way show in an incident; its time is added by
    /// [`lock_wait_ended`](Self::lock_wait_ended).
    pub fn lock_wait_began(&self) {
        self.add(Count::LockWaits);
    }

    /// A wait counted by [`lock_wait_began`](Self::lock_wait_began) ended after `elapsed`.
    pub fn lock_wait_ended(&self, elapsed: Duration) {
        self.add_time(Time::LockWait, elapsed);
    }

    /// The counts so far, summed over the stripes.
    pub fn snapshot(&self) -> RegionStats {
        let mut counts = [0u64; COUNTS];
        let mut nanos = [0u64; TIMES];
        for stripe in self.stripes.iter() {
            for (total, count) in counts.iter_mut().zip(&stripe.counts) {
                *total = total.wrapping_add(count.load(Relaxed));
            }
            for (total, time) in nanos.iter_mut().zip(&stripe.nanos) {
                *total = total.wrapping_add(time.load(Relaxed));
            }
        }
        RegionStats {
            hits: counts[Count::Hits as usize],
            misses: counts[Count::Misses as usize],
            stale_served: counts[Count::StaleServed as usize],
            creations: counts[Count::Creations as usize],
            creation_errors: counts[Count::CreationErrors as usize],
            backend_errors: counts[Count::BackendErrors as usize],
            lock_waits: counts[Count::LockWaits as usize],
            stale_served_on_error: counts[Count::StaleServedOnError as usize],
            early_refreshes: counts[Count::EarlyRefreshes as usize],
            creation_time: Duration::from_nanos(nanos[Time::Creation as usize]),
            lock_wait_time: Duration::from_nanos(nanos[Time::LockWait as usize]),
        }
    }
}

impl std::fmt::Debug for StatsRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsRecorder")
            .field("stripes", &self.stripes.len())
            .field("stats", &self.snapshot())
            .finish()
    }
}

fn nanos(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

/// Owned stripes per region (and as many shared): four per core (so that threads given
/// shared stripes in turn rarely share one while running at once), a power of two, at
/// most 64.
fn stripe_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores * 4).next_power_of_two().min(64)
    })
}

/// Where a thread counts: the owned stripe of its number, or a shared one.
#[derive(Clone, Copy)]
enum Slot {
    Own(usize),
    Shared(usize),
}

/// Numbers given back by threads that ended, the lowest given first.
static FREE: Mutex<BinaryHeap<Reverse<usize>>> = Mutex::new(BinaryHeap::new());

/// A thread's number, given at its first count and given back when it ends.
struct Number(Cell<usize>);

impl Drop for Number {
    fn drop(&mut self) {
        let number = self.0.get();
        if number != usize::MAX {
            let mut free = FREE.lock().unwrap_or_else(PoisonError::into_inner);
            free.push(Reverse(number));
        }
    }
}

/// This thread's slot.
#[inline]
fn slot() -> Slot {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: Number = const { Number(Cell::new(usize::MAX)) };
    }
    let owned = stripe_count();
    let number = NUMBER.try_with(|number| match number.0.get() {
        usize::MAX => {
            let free = FREE.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let given = free.map_or_else(|| NEXT.fetch_add(1, Relaxed), |Reverse(n)| n);
            number.0.set(given);
            given
        }
        given => given,
    });
    match number {
        Ok(number) if number < owned => Slot::Own(number),
        Ok(number) => Slot::Shared(number & (owned - 1)),
        // Counted while the thread ends, after its number went back.
        Err(_) => Slot::Shared(0),
    }
}

#[cfg(feature = "metrics")]
mod metrics_handles {
    use std::sync::OnceLock;

    use metrics::{Counter, Histogram, Unit};

    use super::{COUNTS, TIMES};

    /// The counters' names and descriptions, in the order of `Count`.
    const COUNTERS: [(&str, &str); COUNTS] = [
        ("dogpile_hits_total", "fresh values returned from the cache"),
        (
            "dogpile_misses_total",
            "cache lookups that found no usable value",
        ),
        (
            "dogpile_stale_served_total",
            "stale values returned while another caller regenerates them",
        ),
        (
            "dogpile_creations_total",
            "creator calls that returned a value",
        ),
        ("dogpile_creation_errors_total", "creator calls that failed"),
        (
            "dogpile_backend_errors_total",
            "cache backend operations that failed",
        ),
        (
            "dogpile_lock_waits_total",
            "callers that waited for another caller's creation",
        ),
        (
            "dogpile_stale_served_on_error_total",
            "stale values returned because the creator failed (stale_if_error)",
        ),
        (
            "dogpile_early_refreshes_total",
            "fresh values regenerated ahead of their expiry (early_refresh)",
        ),
    ];

    /// The histograms' names and descriptions, in the order of `Time`.
    const HISTOGRAMS: [(&str, &str); TIMES] = [
        (
            "dogpile_creation_seconds",
            "how long each creator call took",
        ),
        (
            "dogpile_lock_wait_seconds",
            "how long each wait for the dogpile lock took",
        ),
    ];

    /// The handles of one region's metrics, looked up once.
    pub(super) struct Handles {
        pub(super) counters: [Counter; COUNTS],
        pub(super) histograms: [Histogram; TIMES],
    }

    /// Handles registered at the first count, with the recorder in force then.
    pub(super) struct Lazy {
        region: String,
        /// The name the region was given after it was made, if any.
        renamed: OnceLock<String>,
        handles: OnceLock<Handles>,
    }

    impl Lazy {
        pub(super) fn new(region: &str) -> Self {
            Lazy {
                region: region.to_owned(),
                renamed: OnceLock::new(),
                handles: OnceLock::new(),
            }
        }

        /// The `region` label of handles registered from now on.
        pub(super) fn rename(&self, region: &str) {
            let _ = self.renamed.set(region.to_owned());
        }

        #[inline]
        pub(super) fn get(&self) -> &Handles {
            self.handles.get_or_init(|| self.register())
        }

        fn register(&self) -> Handles {
            let region = self.renamed.get().unwrap_or(&self.region);
            let labels = || [("region", region.clone())];
            Handles {
                counters: COUNTERS.map(|(name, description)| {
                    metrics::describe_counter!(name, description);
                    metrics::counter!(name, &labels())
                }),
                histograms: HISTOGRAMS.map(|(name, description)| {
                    metrics::describe_histogram!(name, Unit::Seconds, description);
                    metrics::histogram!(name, &labels())
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    #[test]
    fn counts_each_kind_and_sums_durations() {
        let stats = StatsRecorder::new("t");
        assert_eq!(stats.snapshot(), RegionStats::default());
        assert_eq!(stats.snapshot().hit_ratio(), None);
        for _ in 0..3 {
            stats.hit();
        }
        stats.miss();
        stats.stale_served();
        stats.creation(Duration::from_millis(5));
        stats.creation(Duration::from_millis(7));
        stats.creation_error(Duration::from_millis(1));
        stats.backend_error();
        stats.backend_error();
        stats.lock_wait(Duration::from_micros(250));
        let snapshot = stats.snapshot();
        assert_eq!(
            snapshot,
            RegionStats {
                hits: 3,
                misses: 1,
                stale_served: 1,
                creations: 2,
                creation_errors: 1,
                backend_errors: 2,
                lock_waits: 1,
                stale_served_on_error: 0,
                early_refreshes: 0,
                creation_time: Duration::from_millis(13),
                lock_wait_time: Duration::from_micros(250),
            }
        );
        assert_eq!(snapshot.hit_ratio(), Some(0.6));
    }

    #[test]
    fn no_count_is_lost_across_threads() {
        const THREADS: usize = 16;
        const PER_THREAD: u64 = 10_000;
        for _ in 0..5 {
            let stats = Arc::new(StatsRecorder::new("t"));
            let barrier = Arc::new(Barrier::new(THREADS));
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (stats, barrier) = (stats.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        for _ in 0..PER_THREAD {
                            stats.hit();
                            stats.lock_wait(Duration::from_nanos(3));
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            let snapshot = stats.snapshot();
            assert_eq!(snapshot.hits, THREADS as u64 * PER_THREAD);
            assert_eq!(snapshot.lock_waits, THREADS as u64 * PER_THREAD);
            assert_eq!(
                snapshot.lock_wait_time,
                Duration::from_nanos(3 * THREADS as u64 * PER_THREAD)
            );
        }
    }

    #[test]
    fn threads_count_in_distinct_stripes() {
        let stats = Arc::new(StatsRecorder::new("t"));
        let owned = stats.stripes.len() / 2;
        assert!(owned.is_power_of_two() && owned >= 4, "{owned}");
        // Threads running at once hold distinct numbers: as many threads as owned stripes,
        // each counting once and staying until all have, leave no stripe with two counts
        // unless other threads of the test binary hold numbers too.
        let together = Arc::new(Barrier::new(owned));
        let threads: Vec<_> = (0..owned)
            .map(|_| {
                let (stats, together) = (stats.clone(), together.clone());
                std::thread::spawn(move || {
                    stats.hit();
                    together.wait();
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let used = stats
            .stripes
            .iter()
            .filter(|s| s.counts[Count::Hits as usize].load(Relaxed) > 0)
            .count();
        assert!(used > 1, "all threads counted in one stripe");
        assert_eq!(stats.snapshot().hits, owned as u64);
    }

    #[test]
    fn a_thread_that_ended_gives_its_number_to_the_next() {
        // Threads one after another: each counts in the stripe the last one left, and no
        // count is lost across the hand-over.
        let stats = Arc::new(StatsRecorder::new("t"));
        for _ in 0..200 {
            let stats = stats.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    stats.hit();
                }
            })
            .join()
            .unwrap();
        }
        assert_eq!(stats.snapshot().hits, 200 * 50);
        let used = stats
            .stripes
            .iter()
            .filter(|s| s.counts[Count::Hits as usize].load(Relaxed) > 0)
            .count();
        // Other tests' threads may take numbers in between; without recycling, 200
        // threads would have spread over every stripe.
        assert!(used < stats.stripes.len(), "{used} stripes used");
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn counts_reach_the_metrics_recorder_labelled_by_region() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        use metrics_util::MetricKind;

        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let (users, orders) = metrics::with_local_recorder(&recorder, || {
            let users = StatsRecorder::new("users");
            let orders = StatsRecorder::new("orders");
            users.hit();
            users.hit();
            users.miss();
            users.stale_served();
            users.creation(Duration::from_millis(20));
            users.creation_error(Duration::from_millis(10));
            users.backend_error();
            users.lock_wait(Duration::from_millis(2));
            orders.hit();
            (users, orders)
        });
        // The handles were registered at the first count: later counts, outside the
        // closure, still reach the same recorder.
        users.hit();
        orders.miss();

        let values: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let (kind, key) = key.into_parts();
                let labels: Vec<_> = key
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                (kind, key.name().to_owned(), labels.join(","), value)
            })
            .collect();
        let find = |name: &str, region: &str| {
            let label = format!("region={region}");
            values
                .iter()
                .find(|(_, n, l, _)| n == name && *l == label)
                .map(|(kind, _, _, value)| (*kind, value))
                .unwrap_or_else(|| panic!("no {name}{{{label}}} in {values:?}"))
        };
        let counter = |name: &str, region: &str| match find(name, region) {
            (MetricKind::Counter, DebugValue::Counter(n)) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        };
        let histogram = |name: &str, region: &str| match find(name, region) {
            (MetricKind::Histogram, DebugValue::Histogram(values)) => {
                values.iter().map(|v| v.into_inner()).collect::<Vec<_>>()
            }
            other => panic!("{name} is not a histogram: {other:?}"),
        };
        assert_eq!(counter("dogpile_hits_total", "users"), 3);
        assert_eq!(counter("dogpile_misses_total", "users"), 1);
        assert_eq!(counter("dogpile_stale_served_total", "users"), 1);
        assert_eq!(counter("dogpile_creations_total", "users"), 1);
        assert_eq!(counter("dogpile_creation_errors_total", "users"), 1);
        assert_eq!(counter("dogpile_backend_errors_total", "users"), 1);
        assert_eq!(counter("dogpile_lock_waits_total", "users"), 1);
        assert_eq!(histogram("dogpile_creation_seconds", "users"), [0.02, 0.01]);
        assert_eq!(histogram("dogpile_lock_wait_seconds", "users"), [0.002]);
        assert_eq!(counter("dogpile_hits_total", "orders"), 1);
        assert_eq!(counter("dogpile_misses_total", "orders"), 1);
        // The striped counts agree with what the recorder saw.
        assert_eq!(users.snapshot().hits, 3);
    }
}
