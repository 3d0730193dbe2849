//! Time as the region sees it, injectable so that expiry can be tested without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time, in Unix seconds.
pub trait Clock: Send + Sync + 'static {
    /// Now, in Unix seconds.
    fn now(&self) -> f64;
}

/// The system's wall clock (the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// A clock that moves only when told to: for tests.
///
/// ```
/// use std::time::Duration;
/// use dogpile_core::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1000.0);
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now(), 1005.0);
/// ```
#[derive(Debug)]
pub struct ManualClock {
    bits: AtomicU64,
}

impl ManualClock {
    /// A clock reading `now` (Unix seconds).
    pub fn new(now: f64) -> Self {
        ManualClock {
            bits: AtomicU64::new(now.to_bits()),
        }
    }

    /// Sets the time.
    pub fn set(&self, now: f64) {
        self.bits.store(now.to_bits(), Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        self.set(self.now() + by.as_secs_f64());
    }
}

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::SeqCst))
    }
}
