//! The in-process dogpile lock: one lock per key, the waits on it, and the hand-off of a
//! created value to the callers waiting on its key.
//!
//! The in-process locks live in a registry keyed by the (mangled) cache key. An entry exists
//! only while somebody holds or waits for that key's lock, so the registry never grows
//! beyond the number of keys in use at once.
//!
//! Waiting is built on [`event_listener`]: a blocked thread waits on a listener with a
//! deadline, and a task awaits the same listener, so sync and async callers share one lock
//! per key. A caller that created a value under the lock *hands it off* to the callers
//! waiting on that key in this process: they return it without reading the backend again
//! (which matters when the backend is down: its creator runs once per wave of callers, not
//! once per caller). A caller whose creator failed hands its failure off the same way
//! ([`CreatorFailure`]), so a failing origin is also called once per wave.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use event_listener::{Event, EventListener, Listener};

use crate::engine::block_on::block_on;

/// A value handed from the caller that created it to the callers waiting on its key: a
/// created value, or a [`CreatorFailure`].
pub(crate) type Handed = Arc<dyn Any + Send + Sync>;

/// What a caller whose creator failed hands to the callers waiting on its key, so that
/// they answer with its failure at once instead of each calling the origin again in turn.
#[derive(Debug)]
pub(crate) struct CreatorFailure {
    /// The creator's error, as text.
    pub(crate) message: String,
}

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
        block_on(
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;
    use std::thread;
    use std::time::Duration;

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
}
