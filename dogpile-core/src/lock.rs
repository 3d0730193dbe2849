//! The dogpile lock: one in-process lock per key, plus the distributed lock a backend may
//! supply.
//!
//! The in-process locks live in a registry keyed by the (mangled) cache key. An entry exists
//! only while somebody holds or waits for that key's lock, so the registry never grows
//! beyond the number of keys in use at once.
//!
//! Waiting is built on [`event_listener`]: a blocked thread waits on a listener with a
//! deadline, and a task could await the same listener, so sync and async callers would share
//! one lock per key. A caller that created a value under the lock *hands it off* to the
//! callers waiting on that key in this process: they return it without reading the backend
//! again (which matters when the backend is down: its creator runs once per wave of
//! callers, not once per caller).
//!
//! A distributed lock ([`CacheMutex`]) only needs a non-blocking try and a release. The
//! backoff-and-deadline loop is here, once: [`Backoff`] tells a waiting caller how long to
//! pause between tries and when its time is up, and [`acquire_until`] is the blocking loop
//! on top of it.

use std::any::Any;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use event_listener::{Event, EventListener, Listener};

use crate::error::Result;

/// A lock shared with other processes, supplied by a backend (dogpile's `CacheMutex`).
///
/// Implement the two required methods; the region does the waiting (a bounded, jittered
/// backoff between [`try_acquire`](Self::try_acquire)s, within the caller's time budget).
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
/// use dogpile_core::{CacheMutex, Result};
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

/// `pause` scaled by a random factor in [0.5, 1), so that waiters do not poll in step.
fn jitter(pause: Duration) -> Duration {
    let unit = (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
    pause.mul_f64(0.5 + unit / 2.0)
}

// ----- the in-process lock ---------------------------------------------------------------

/// A value handed from the caller that created it to the callers waiting on its key.
pub(crate) type Handed = Arc<dyn Any + Send + Sync>;

type Map = Mutex<HashMap<String, Weak<KeyLock>>>;

/// The registry of per-key in-process locks.
#[derive(Default)]
pub(crate) struct KeyLocks {
    map: Arc<Map>,
}

struct KeyLock {
    key: String,
    slot: Mutex<Slot>,
    /// Notified whenever the lock is released or a value handed off.
    changed: Event,
    map: Weak<Map>,
}

#[derive(Default)]
struct Slot {
    held: bool,
    /// How many values were handed off on this entry so far.
    handoffs: u64,
    /// The latest one.
    handed: Option<Handed>,
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What waiting for a key's in-process lock ended with.
pub(crate) enum LocalWait {
    /// This caller holds the lock.
    Held(KeyGuard),
    /// The holder created a value while this caller waited, and handed it over.
    HandedOff(Handed),
    /// The deadline passed.
    TimedOut,
}

/// A caller waiting for one key's lock. Blocking and async waits step it the same way:
/// [`check`](Self::check), register a listener, check again, wait on the listener.
pub(crate) struct Waiter {
    lock: Arc<KeyLock>,
    /// Hand-offs that happened before this caller started waiting are not for it.
    seen: u64,
}

impl Waiter {
    /// Takes the lock if it is free, or the value handed off since waiting began.
    pub(crate) fn check(&self) -> Option<LocalWait> {
        let mut slot = lock_ignoring_poison(&self.lock.slot);
        if slot.handoffs != self.seen {
            if let Some(value) = &slot.handed {
                return Some(LocalWait::HandedOff(value.clone()));
            }
        }
        if slot.held {
            return None;
        }
        slot.held = true;
        Some(LocalWait::Held(KeyGuard {
            lock: self.lock.clone(),
        }))
    }

    /// A listener notified at the next release or hand-off.
    pub(crate) fn listen(&self) -> EventListener {
        self.lock.changed.listen()
    }

    /// Waits until this caller holds the lock or gets a handed-off value. `wait_on` waits
    /// on one listener (blocking the thread, or awaiting) and answers false once the
    /// caller's deadline has passed.
    pub(crate) async fn wait_with<Fut>(
        self,
        mut wait_on: impl FnMut(EventListener) -> Fut,
    ) -> LocalWait
    where
        Fut: std::future::Future<Output = bool>,
    {
        loop {
            if let Some(done) = self.check() {
                return done;
            }
            let listener = self.listen();
            if let Some(done) = self.check() {
                return done;
            }
            if !wait_on(listener).await {
                return self.check().unwrap_or(LocalWait::TimedOut);
            }
        }
    }

    /// Blocks until this caller holds the lock or gets a handed-off value, or `deadline`.
    pub(crate) fn wait_until(self, deadline: Instant) -> LocalWait {
        crate::driver::block_on(
            self.wait_with(|listener| {
                std::future::ready(listener.wait_deadline(deadline).is_some())
            }),
        )
    }
}

impl KeyLocks {
    fn lock_for(&self, key: &str) -> Arc<KeyLock> {
        let mut map = lock_ignoring_poison(&self.map);
        if let Some(lock) = map.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(KeyLock {
            key: key.to_owned(),
            slot: Mutex::default(),
            changed: Event::new(),
            map: Arc::downgrade(&self.map),
        });
        map.insert(key.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// Starts waiting for `key`'s lock.
    pub(crate) fn waiter(&self, key: &str) -> Waiter {
        let lock = self.lock_for(key);
        let seen = lock_ignoring_poison(&lock.slot).handoffs;
        Waiter { lock, seen }
    }

    /// Takes `key`'s lock if nobody in this process holds it.
    pub(crate) fn try_acquire(&self, key: &str) -> Option<KeyGuard> {
        let lock = self.lock_for(key);
        let mut slot = lock_ignoring_poison(&lock.slot);
        if slot.held {
            return None;
        }
        slot.held = true;
        drop(slot);
        Some(KeyGuard { lock })
    }

    /// True when some caller in this process holds `key`'s lock.
    pub(crate) fn is_locked(&self, key: &str) -> bool {
        let lock = lock_ignoring_poison(&self.map)
            .get(key)
            .and_then(Weak::upgrade);
        lock.is_some_and(|lock| lock_ignoring_poison(&lock.slot).held)
    }

    /// How many keys have a lock entry (held or waited for) right now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock_ignoring_poison(&self.map).len()
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        // The last user of this key's lock is gone: remove its entry, unless a new lock
        // for the same key was registered in the meantime.
        if let Some(map) = self.map.upgrade() {
            let mut map = lock_ignoring_poison(&map);
            if map.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
                map.remove(&self.key);
            }
        }
    }
}

/// A held in-process key lock; released when dropped, from any thread, without I/O (so a
/// cancelled or panicking holder always frees the key).
pub(crate) struct KeyGuard {
    lock: Arc<KeyLock>,
}

impl KeyGuard {
    /// Releases the lock, handing `value` to the callers waiting on the key.
    pub(crate) fn hand_off(self, value: Handed) {
        let mut slot = lock_ignoring_poison(&self.lock.slot);
        slot.handed = Some(value);
        slot.handoffs += 1;
        drop(slot);
        // Dropping `self` releases the lock and wakes every waiter.
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        lock_ignoring_poison(&self.lock.slot).held = false;
        self.lock.changed.notify(usize::MAX);
    }
}

/// A held dogpile lock on one key: the in-process lock and, when the backend supplies one
/// and it could be taken, the distributed lock.
///
/// Dropping the handle releases both, on whichever thread drops it; this is how a
/// background runner releases the lock its job was handed.
pub struct LockHandle {
    key: String,
    local: Option<KeyGuard>,
    distributed: Option<Box<dyn CacheMutex>>,
}

impl LockHandle {
    pub(crate) fn new(
        key: &str,
        local: Option<KeyGuard>,
        distributed: Option<Box<dyn CacheMutex>>,
    ) -> Self {
        LockHandle {
            key: key.to_owned(),
            local,
            distributed,
        }
    }

    /// The (mangled) key this handle locks.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// True when this handle holds the backend's distributed lock too.
    pub fn holds_distributed(&self) -> bool {
        self.distributed.is_some()
    }

    /// Releases the lock now, reporting a failure to release the distributed lock.
    ///
    /// # Errors
    /// The backend's error from releasing the distributed lock (the in-process lock is
    /// released in any case).
    pub fn release(mut self) -> Result<()> {
        self.local.take();
        self.release_distributed()
    }

    /// Releases the lock, handing `value` to the callers of this process waiting on the key
    /// first, then releasing the distributed lock.
    pub(crate) fn hand_off(mut self, value: Handed) {
        if let Some(local) = self.local.take() {
            local.hand_off(value);
        }
        if let Err(error) = self.release_distributed() {
            tracing::warn!(key = %self.key, %error, "failed to release the distributed dogpile lock");
        }
    }

    fn release_distributed(&mut self) -> Result<()> {
        self.distributed
            .take()
            .map_or(Ok(()), |mutex| mutex.release())
    }
}

impl Drop for LockHandle {
    fn drop(&mut self) {
        self.local.take();
        if let Err(error) = self.release_distributed() {
            tracing::warn!(key = %self.key, %error, "failed to release the distributed dogpile lock");
        }
    }
}

impl fmt::Debug for LockHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockHandle")
            .field("key", &self.key)
            .field("distributed", &self.distributed.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Barrier;
    use std::thread;

    fn acquire(locks: &KeyLocks, key: &str) -> KeyGuard {
        match locks.waiter(key).wait_until(far()) {
            LocalWait::Held(guard) => guard,
            _ => panic!("expected to hold the lock"),
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn try_acquire_fails_while_held_and_succeeds_after_release() {
        let locks = KeyLocks::default();
        let guard = locks.try_acquire("k").unwrap();
        assert!(locks.is_locked("k"));
        assert!(locks.try_acquire("k").is_none());
        assert!(locks.try_acquire("other").is_some());
        drop(guard);
        assert!(!locks.is_locked("k"));
        assert!(locks.try_acquire("k").is_some());
    }

    #[test]
    fn guard_released_on_another_thread_wakes_a_waiter() {
        let locks = Arc::new(KeyLocks::default());
        let guard = acquire(&locks, "k");
        let waiter = {
            let locks = locks.clone();
            thread::spawn(move || drop(acquire(&locks, "k")))
        };
        thread::spawn(move || drop(guard)).join().unwrap();
        waiter.join().unwrap();
        assert!(!locks.is_locked("k"));
    }

    #[test]
    fn a_wait_ends_at_its_deadline() {
        let locks = KeyLocks::default();
        let _held = locks.try_acquire("k").unwrap();
        let started = Instant::now();
        let outcome = locks
            .waiter("k")
            .wait_until(started + Duration::from_millis(50));
        assert!(matches!(outcome, LocalWait::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_hand_off_reaches_every_waiter_and_only_them() {
        let locks = Arc::new(KeyLocks::default());
        let holder = locks.try_acquire("k").unwrap();
        let waiters: Vec<Waiter> = (0..8).map(|_| locks.waiter("k")).collect();
        let threads: Vec<_> = waiters
            .into_iter()
            .map(|w| thread::spawn(move || w.wait_until(far())))
            .collect();
        holder.hand_off(Arc::new(7u32));
        for t in threads {
            match t.join().unwrap() {
                LocalWait::HandedOff(v) => assert_eq!(v.downcast_ref::<u32>(), Some(&7)),
                _ => panic!("a waiter did not get the handed-off value"),
            }
        }
        // A caller that starts after the hand-off takes the lock instead.
        assert!(matches!(
            locks.waiter("k").wait_until(far()),
            LocalWait::Held(_)
        ));
    }

    #[test]
    fn registry_keeps_only_keys_in_use() {
        let locks = Arc::new(KeyLocks::default());
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (locks, barrier) = (locks.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    for i in 0..2000 {
                        let key = format!("key-{}", (i * 7 + t) % 500);
                        let guard = acquire(&locks, &key);
                        drop(guard);
                        let _ = locks.try_acquire(&key);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            locks.len(),
            0,
            "every lock was released, so no entry may remain"
        );
        let held: Vec<_> = (0..10).map(|i| acquire(&locks, &i.to_string())).collect();
        assert_eq!(locks.len(), 10);
        drop(held);
        assert_eq!(locks.len(), 0);
    }

    #[test]
    fn exclusive_under_contention() {
        let locks = Arc::new(KeyLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (locks, inside) = (locks.clone(), inside.clone());
                thread::spawn(move || {
                    for _ in 0..500 {
                        let _guard = acquire(&locks, "k");
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
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
