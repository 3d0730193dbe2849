//! Distributed locks: the lock a backend may supply ([`CacheMutex`], and its async twin),
//! shared with other processes, and the one backoff-and-deadline loop that waits for it.
//!
//! A distributed lock only needs a non-blocking try and a release. [`Backoff`] tells a
//! waiting caller how long to pause between tries and when its time is up, and
//! [`acquire_until`] is the blocking loop on top of it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::Result;

/// A lock shared with other processes, supplied by a backend (dogpile's `CacheMutex`).
///
/// Implement the two required methods; the region does the waiting (a bounded, jittered
/// backoff between [`try_acquire`](Self::try_acquire)s, within the caller's time budget).
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
/// use dogpile_core::Result;
/// use dogpile_core::lock::CacheMutex;
///
/// /// A "distributed" lock that is one flag shared by its handles.
/// struct FlagLock { flag: Arc<AtomicBool>, mine: AtomicBool }
///
/// impl CacheMutex for FlagLock {
///     fn try_acquire(&self) -> Result<bool> {
///         let won = self.flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok();
///         self.mine.store(won, Ordering::Release);
///         Ok(won)
///     }
///     fn release(&self) -> Result<()> {
///         if self.mine.swap(false, Ordering::AcqRel) {
///             self.flag.store(false, Ordering::Release);
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait CacheMutex: Send + Sync {
    /// One attempt to take the lock, without waiting: `Ok(true)` when this handle now holds
    /// it (or already did), `Ok(false)` when somebody else does.
    fn try_acquire(&self) -> Result<bool>;

    /// Releases the lock, if this handle still holds it.
    ///
    /// A handle dropped while it holds the lock should release it too (`Drop`), where it
    /// can: async callers reach a sync lock on tokio's blocking pool, and a caller dropped
    /// there (a request timeout) leaves the region no other way to release it.
    fn release(&self) -> Result<()>;

    /// The longest pause between two tries while waiting (dogpile's `lock_sleep`).
    fn retry_pause(&self) -> Duration {
        DEFAULT_RETRY_PAUSE
    }

    /// How long a caller may wait for this lock at most, counted from the start of its
    /// call, whatever its time budget (a backend's `lock_blocking_timeout`). `None`: the
    /// caller's time budget alone.
    fn wait_limit(&self) -> Option<Duration> {
        None
    }

    /// How often the lock must be [extended](Self::extend) while held, for a lock that
    /// expires by itself (a backend's `lock_timeout`): a third of its expiry is the usual
    /// answer. The region extends a held lock this often while its creator runs, so that a
    /// creator slower than the expiry keeps its lock. `None` (the default): the lock does
    /// not expire while held, or cannot be extended.
    fn keep_alive(&self) -> Option<Duration> {
        None
    }

    /// Pushes a held lock's expiry back by its whole length, if this handle still holds
    /// it: `Ok(false)` when it no longer does (it expired, and somebody else may hold it).
    /// Called from another thread than the holder's, while the holder's creator runs.
    fn extend(&self) -> Result<bool> {
        Ok(true)
    }
}

/// The default longest pause between two tries of a distributed lock.
pub const DEFAULT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The first pause of a [`Backoff`]; it doubles up to the lock's retry pause.
const FIRST_PAUSE: Duration = Duration::from_millis(5);

/// The pauses of a caller waiting for a distributed lock: jittered, doubling from 5 ms up to
/// `max_pause`, and never past `deadline`.
///
/// The blocking driver sleeps with `thread::sleep`; an async driver would sleep on its
/// runtime's timer. Either way the schedule is this one.
#[derive(Debug, Clone)]
pub struct Backoff {
    deadline: Instant,
    pause: Duration,
    max_pause: Duration,
}

impl Backoff {
    /// A schedule that ends at `deadline`, pausing at most `max_pause` at a time.
    pub fn new(deadline: Instant, max_pause: Duration) -> Self {
        Backoff {
            deadline,
            pause: FIRST_PAUSE.min(max_pause),
            max_pause,
        }
    }

    /// How long to pause before the next try, or `None` when the deadline has passed.
    pub fn next_pause(&mut self) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        let pause = jitter(self.pause).min(left);
        self.pause = (self.pause * 2).min(self.max_pause);
        Some(pause)
    }
}

/// Takes `mutex`, waiting (with [`Backoff`]) until `deadline` at most: `Ok(false)` when the
/// deadline passed first.
///
/// # Errors
/// The backend's error from a try.
pub fn acquire_until(mutex: &dyn CacheMutex, deadline: Instant) -> Result<bool> {
    let mut backoff = Backoff::new(deadline, mutex.retry_pause());
    loop {
        if mutex.try_acquire()? {
            return Ok(true);
        }
        match backoff.next_pause() {
            Some(pause) => std::thread::sleep(pause),
            None => return Ok(false),
        }
    }
}

/// A random 64-bit number (std's randomly keyed hasher over a counter, the process id and
/// the time): enough for lock tokens and jitter, not for secrets.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish()
}

/// A token that no other acquire, in this process or another, uses: the value a
/// distributed lock stores so that only its holder releases it.
pub fn lock_token() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

/// A random number in [0, 1).
pub(crate) fn unit_random() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// `pause` scaled by a random factor in [0.5, 1), so that waiters do not poll in step.
fn jitter(pause: Duration) -> Duration {
    pause.mul_f64(0.5 + unit_random() / 2.0)
}

/// An async lock shared with other processes: the async twin of [`CacheMutex`].
#[cfg(feature = "tokio")]
#[async_trait::async_trait]
pub trait AsyncCacheMutex: Send + Sync {
    /// One attempt to take the lock, without waiting.
    ///
    /// The future may be dropped at any await (the caller's request timed out): a lock it
    /// took, or may have taken (a command sent, its reply not read), must not be left held,
    /// for example by knowing its token before sending and releasing by that token when
    /// dropped, or by running the attempt in a task of its own.
    async fn try_acquire(&self) -> Result<bool>;

    /// Releases the lock, if this handle still holds it.
    async fn release(&self) -> Result<()>;

    /// The longest pause between two tries while waiting.
    fn retry_pause(&self) -> Duration {
        DEFAULT_RETRY_PAUSE
    }

    /// How long a caller may wait for this lock at most, from the start of its call.
    fn wait_limit(&self) -> Option<Duration> {
        None
    }

    /// How often a held lock must be [extended](Self::extend), as
    /// [`CacheMutex::keep_alive`].
    fn keep_alive(&self) -> Option<Duration> {
        None
    }

    /// Pushes a held lock's expiry back, as [`CacheMutex::extend`]; run by a task of its
    /// own while the holder's creator runs.
    async fn extend(&self) -> Result<bool> {
        Ok(true)
    }
}

/// Takes `mutex`, pausing on tokio's timer between tries (with [`Backoff`]) until
/// `deadline` at most: `Ok(false)` when the deadline passed first.
///
/// # Errors
/// The backend's error from a try.
#[cfg(feature = "tokio")]
pub async fn acquire_until_async(mutex: &dyn AsyncCacheMutex, deadline: Instant) -> Result<bool> {
    let mut backoff = Backoff::new(deadline, mutex.retry_pause());
    loop {
        if mutex.try_acquire().await? {
            return Ok(true);
        }
        match backoff.next_pause() {
            Some(pause) => tokio::time::sleep(pause).await,
            None => return Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::thread;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    struct Flag(Arc<AtomicBool>, AtomicBool);

    impl CacheMutex for Flag {
        fn try_acquire(&self) -> Result<bool> {
            let won = self
                .0
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            self.1.store(won, Ordering::Release);
            Ok(won)
        }
        fn release(&self) -> Result<()> {
            if self.1.swap(false, Ordering::AcqRel) {
                self.0.store(false, Ordering::Release);
            }
            Ok(())
        }
        fn retry_pause(&self) -> Duration {
            Duration::from_millis(20)
        }
    }

    #[test]
    fn acquire_until_waits_for_a_release_and_gives_up_at_the_deadline() {
        let shared = Arc::new(AtomicBool::new(false));
        let a = Flag(shared.clone(), AtomicBool::new(false));
        let b = Flag(shared.clone(), AtomicBool::new(false));
        assert!(a.try_acquire().unwrap());
        let started = Instant::now();
        assert!(!acquire_until(&b, started + Duration::from_millis(60)).unwrap());
        assert!(started.elapsed() >= Duration::from_millis(60));
        thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(30));
                a.release().unwrap();
            });
            assert!(acquire_until(&b, far()).unwrap());
        });
    }

    #[test]
    fn backoff_doubles_within_bounds_and_ends_at_the_deadline() {
        let mut backoff = Backoff::new(far(), Duration::from_millis(40));
        let pauses: Vec<_> = (0..6).map(|_| backoff.next_pause().unwrap()).collect();
        for (pause, cap) in pauses.iter().zip([5, 10, 20, 40, 40, 40]) {
            let cap = Duration::from_millis(cap);
            assert!(*pause >= cap / 2 && *pause < cap, "{pause:?} vs {cap:?}");
        }
        let mut done = Backoff::new(Instant::now(), Duration::from_millis(40));
        assert_eq!(done.next_pause(), None);
    }

    #[test]
    fn tokens_are_unique() {
        let tokens: std::collections::HashSet<_> = (0..10_000).map(|_| lock_token()).collect();
        assert_eq!(tokens.len(), 10_000);
    }
}
