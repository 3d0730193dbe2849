//! Warnings that do not flood the logs: each region logs the first warning of each kind,
//! then at most one per period (10 seconds), which carries the count of those left out.
//!
//! With redis down, a busy service would otherwise log a warning or three per call. Here
//! the first failure is logged at once; while it goes on, one warning per kind and region
//! every 10 seconds says how many were left out since the last one logged, in its
//! `suppressed` field:
//!
//! ```text
//! WARN dogpile_core::region: cache read failed; treating it as a miss suppressed=0 region=users key=user:5 ...
//! WARN dogpile_core::region: cache read failed; treating it as a miss suppressed=48210 region=users key=user:9 ...
//! ```
//!
//! A summary is logged with the next warning of its kind after the period, not by a timer:
//! when the failures stop, nothing more is logged.
//!
//! The warnings are `tracing` events. An application that uses the `log` crate (for
//! example `env_logger`) and installs no `tracing` subscriber gets them as `log` records,
//! through `tracing`'s `log` feature (the `log` feature of dogpile, on by default):
//!
//! ```text
//! env_logger::init();   // RUST_LOG=dogpile_core=warn
//! ```

// The region logs through this module once the engine is wired to it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};

/// How often a kind of warning is logged at most, per region.
pub(crate) const DEFAULT_PERIOD: Duration = Duration::from_secs(10);

/// The kinds of warning a region logs, each limited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WarningKind {
    /// A stored value could not be decoded (read as a miss).
    Undecodable,
    /// A backend read failed (read as a miss, failing open).
    ReadFailed,
    /// The dogpile lock could not be taken (creating without it).
    LockUnavailable,
    /// A backend write failed (the value is returned uncached).
    WriteFailed,
    /// The cache could not be used at all (decorated functions compute uncached).
    CacheUnavailable,
    /// A creator failed and the stale value was served in its place (`stale_if_error`).
    StaleIfError,
}

impl WarningKind {
    const COUNT: usize = 6;
}

/// Decides which occurrences of one kind of warning are logged.
#[derive(Debug, Default)]
struct RateLimit {
    /// The clock reading (ms) from which the next occurrence is logged.
    next_ms: AtomicU64,
    /// Occurrences left out since the last one logged.
    suppressed: AtomicU64,
}

impl RateLimit {
    fn admit(&self, now_ms: u64, period_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(next, now_ms.saturating_add(period_ms), Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

/// The rate limits of one region's warnings, one per [`WarningKind`].
pub(crate) struct RegionWarnings {
    clock: Arc<dyn Clock>,
    period_ms: u64,
    limits: [RateLimit; WarningKind::COUNT],
}

impl RegionWarnings {
    /// Limits of [`DEFAULT_PERIOD`], on `clock` (the region's).
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_period(clock, DEFAULT_PERIOD)
    }

    /// Limits of `period`, on `clock`.
    pub(crate) fn with_period(clock: Arc<dyn Clock>, period: Duration) -> Self {
        RegionWarnings {
            clock,
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
            limits: Default::default(),
        }
    }

    /// Whether this occurrence of `kind` is to be logged: `Some(n)`, with `n` the
    /// occurrences left out since the last one logged, or `None` to leave it out.
    pub(crate) fn admit(&self, kind: WarningKind) -> Option<u64> {
        let now_ms = (self.clock.now() * 1000.0) as u64; // saturates; NaN gives 0
        self.limits[kind as usize].admit(now_ms, self.period_ms)
    }
}

impl Default for RegionWarnings {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl std::fmt::Debug for RegionWarnings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionWarnings")
            .field("period_ms", &self.period_ms)
            .finish_non_exhaustive()
    }
}

/// `tracing::warn!`, rate-limited per region and kind by a [`RegionWarnings`]:
/// `warn_limited!(warnings, WarningKind::ReadFailed, region = %name, key, %error, "message")`
/// logs the event (with a `suppressed` field, the count left out since the last one) when
/// [`RegionWarnings::admit`] lets it through, and evaluates none of the fields otherwise.
macro_rules! warn_limited {
    ($warnings:expr, $kind:expr, $($event:tt)+) => {
        if let Some(suppressed) = $warnings.admit($kind) {
            ::tracing::warn!(suppressed, $($event)+);
        }
    };
}
pub(crate) use warn_limited;

#[cfg(test)]
mod tests {
    use std::sync::{Barrier, Mutex, OnceLock};

    use super::*;
    use crate::clock::ManualClock;

    fn warnings(clock: &Arc<ManualClock>) -> RegionWarnings {
        RegionWarnings::with_period(clock.clone(), Duration::from_secs(10))
    }

    #[test]
    fn first_is_logged_then_one_summary_per_period() {
        let clock = Arc::new(ManualClock::new(1_000.0));
        let w = warnings(&clock);
        assert_eq!(w.admit(WarningKind::ReadFailed), Some(0));
        for _ in 0..99 {
            assert_eq!(w.admit(WarningKind::ReadFailed), None);
        }
        clock.advance(Duration::from_millis(9_999));
        assert_eq!(w.admit(WarningKind::ReadFailed), None);
        clock.advance(Duration::from_millis(1));
        assert_eq!(w.admit(WarningKind::ReadFailed), Some(100));
        assert_eq!(w.admit(WarningKind::ReadFailed), None);
        // After a quiet spell longer than the period, the next one is logged at once.
        clock.advance(Duration::from_secs(60));
        assert_eq!(w.admit(WarningKind::ReadFailed), Some(1));
        assert_eq!(w.admit(WarningKind::ReadFailed), None);
    }

    #[test]
    fn kinds_and_regions_are_limited_separately() {
        let clock = Arc::new(ManualClock::new(0.0));
        let (users, orders) = (warnings(&clock), warnings(&clock));
        assert_eq!(users.admit(WarningKind::ReadFailed), Some(0));
        assert_eq!(users.admit(WarningKind::ReadFailed), None);
        assert_eq!(users.admit(WarningKind::WriteFailed), Some(0));
        assert_eq!(orders.admit(WarningKind::ReadFailed), Some(0));
        assert_eq!(users.admit(WarningKind::Undecodable), Some(0));
        assert_eq!(orders.admit(WarningKind::ReadFailed), None);
    }

    #[test]
    fn many_threads_log_once_per_period_and_lose_no_count() {
        const THREADS: usize = 16;
        const EACH: u64 = 1_000;
        for _ in 0..5 {
            let clock = Arc::new(ManualClock::new(50.0));
            let w = warnings(&clock);
            let barrier = Barrier::new(THREADS);
            let logged: Vec<Vec<u64>> = std::thread::scope(|s| {
                let threads: Vec<_> = (0..THREADS)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            (0..EACH)
                                .filter_map(|_| w.admit(WarningKind::LockUnavailable))
                                .collect()
                        })
                    })
                    .collect();
                threads.into_iter().map(|t| t.join().unwrap()).collect()
            });
            // One logged; what it reports left out (others racing it) plus what the next
            // summary reports is every other occurrence.
            let logged = logged.concat();
            assert_eq!(logged.len(), 1, "one warning in the period: {logged:?}");
            clock.advance(Duration::from_secs(10));
            let summary = w.admit(WarningKind::LockUnavailable).unwrap();
            assert_eq!(logged[0] + summary, THREADS as u64 * EACH - 1);
        }
    }

    #[test]
    fn a_period_of_zero_logs_everything() {
        let clock = Arc::new(ManualClock::new(5.0));
        let w = RegionWarnings::with_period(clock, Duration::ZERO);
        assert_eq!(w.admit(WarningKind::Undecodable), Some(0));
        assert_eq!(w.admit(WarningKind::Undecodable), Some(0));
    }

    /// A `log` logger, as env_logger is one: what an application without a `tracing`
    /// subscriber sees.
    struct Capture(Mutex<Vec<(log::Level, String, String)>>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            self.0.lock().unwrap().push((
                record.level(),
                record.target().to_owned(),
                record.args().to_string(),
            ));
        }
        fn flush(&self) {}
    }

    #[cfg(feature = "log")]
    #[test]
    fn log_users_see_the_limited_warnings() {
        static LOGGER: OnceLock<&'static Capture> = OnceLock::new();
        let logger = *LOGGER.get_or_init(|| {
            let logger = Box::leak(Box::new(Capture(Mutex::default())));
            log::set_logger(logger).unwrap();
            log::set_max_level(log::LevelFilter::Trace);
            logger
        });
        let clock = Arc::new(ManualClock::new(0.0));
        let w = warnings(&clock);
        let region = "log-test-region";
        for i in 0..5 {
            if i == 4 {
                clock.advance(Duration::from_secs(10));
            }
            warn_limited!(
                w,
                WarningKind::ReadFailed,
                region,
                key = i,
                "cache read failed"
            );
        }
        let seen: Vec<_> = logger
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, message)| message.contains(region))
            .cloned()
            .collect();
        assert_eq!(seen.len(), 2, "{seen:?}");
        for (level, target, message) in &seen {
            assert_eq!(*level, log::Level::Warn);
            assert_eq!(target, "dogpile_core::warnings::tests");
            assert!(message.starts_with("cache read failed"), "{message}");
        }
        assert!(
            seen[0].2.contains("suppressed=0") && seen[0].2.contains("key=0"),
            "{seen:?}"
        );
        assert!(
            seen[1].2.contains("suppressed=3") && seen[1].2.contains("key=4"),
            "{seen:?}"
        );
    }
}
