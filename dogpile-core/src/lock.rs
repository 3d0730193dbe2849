//! The dogpile lock: one in-process lock per key, plus the distributed lock a backend may
//! supply.
//!
//! The in-process locks live in a registry keyed by the (mangled) cache key. An entry exists
//! only while somebody holds or waits for that key's lock, so the registry never grows
//! beyond the number of keys in use at once.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use crate::error::Result;

/// A lock shared with other processes, supplied by a backend (dogpile's `CacheMutex`).
pub trait CacheMutex: Send + Sync {
    /// Takes the lock. With `wait`, blocks until it is free (or the implementation's
    /// timeout passes); without, returns `Ok(false)` at once when another holder has it.
    fn acquire(&self, wait: bool) -> Result<bool>;

    /// Releases the lock, if this handle still holds it.
    fn release(&self) -> Result<()>;

    /// True when somebody holds the lock.
    fn locked(&self) -> Result<bool>;
}

type Map = Mutex<HashMap<String, Weak<KeyLock>>>;

/// The registry of per-key in-process locks.
#[derive(Default)]
pub(crate) struct KeyLocks {
    map: Arc<Map>,
}

struct KeyLock {
    key: String,
    held: Mutex<bool>,
    freed: Condvar,
    map: Weak<Map>,
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl KeyLocks {
    fn lock_for(&self, key: &str) -> Arc<KeyLock> {
        let mut map = lock_ignoring_poison(&self.map);
        if let Some(lock) = map.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(KeyLock {
            key: key.to_owned(),
            held: Mutex::new(false),
            freed: Condvar::new(),
            map: Arc::downgrade(&self.map),
        });
        map.insert(key.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// Blocks until this process holds `key`'s lock.
    pub(crate) fn acquire(&self, key: &str) -> KeyGuard {
        let lock = self.lock_for(key);
        let mut held = lock_ignoring_poison(&lock.held);
        while *held {
            held = lock
                .freed
                .wait(held)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *held = true;
        drop(held);
        KeyGuard { lock }
    }

    /// Takes `key`'s lock if nobody in this process holds it.
    pub(crate) fn try_acquire(&self, key: &str) -> Option<KeyGuard> {
        let lock = self.lock_for(key);
        let mut held = lock_ignoring_poison(&lock.held);
        if *held {
            return None;
        }
        *held = true;
        drop(held);
        Some(KeyGuard { lock })
    }

    /// True when some caller in this process holds `key`'s lock.
    pub(crate) fn is_locked(&self, key: &str) -> bool {
        let lock = lock_ignoring_poison(&self.map)
            .get(key)
            .and_then(Weak::upgrade);
        lock.is_some_and(|lock| *lock_ignoring_poison(&lock.held))
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

/// A held in-process key lock; released when dropped, from any thread.
pub(crate) struct KeyGuard {
    lock: Arc<KeyLock>,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        *lock_ignoring_poison(&self.lock.held) = false;
        self.lock.freed.notify_one();
    }
}

/// A held dogpile lock on one key: the in-process lock and, when the backend supplies one,
/// the distributed lock.
///
/// Dropping the handle releases both, on whichever thread drops it; this is how a
/// background runner releases the lock its job was handed.
pub struct LockHandle {
    key: String,
    local: Option<KeyGuard>,
    distributed: Option<Box<dyn CacheMutex>>,
}

impl LockHandle {
    /// The (mangled) key this handle locks.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Releases the lock now, reporting a failure to release the distributed lock.
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        let distributed = self.distributed.take().map(|mutex| mutex.release());
        self.local.take();
        distributed.unwrap_or(Ok(()))
    }
}

impl Drop for LockHandle {
    fn drop(&mut self) {
        if let Err(error) = self.release_inner() {
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

impl KeyLocks {
    /// Takes the dogpile lock on `key`: this process's lock first (so that threads of one
    /// process queue here rather than on the server), then the backend's `mutex`, if any.
    ///
    /// Returns `None` when `wait` is false and either lock is held by somebody else.
    pub(crate) fn lock(
        &self,
        key: &str,
        mutex: Option<Box<dyn CacheMutex>>,
        wait: bool,
    ) -> Result<Option<LockHandle>> {
        let local = if wait {
            self.acquire(key)
        } else {
            match self.try_acquire(key) {
                Some(guard) => guard,
                None => return Ok(None),
            }
        };
        let distributed = match mutex {
            None => None,
            Some(mutex) => {
                if !mutex.acquire(wait)? {
                    return Ok(None);
                }
                Some(mutex)
            }
        };
        Ok(Some(LockHandle {
            key: key.to_owned(),
            local: Some(local),
            distributed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::thread;

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
        let guard = locks.acquire("k");
        let waiter = {
            let locks = locks.clone();
            thread::spawn(move || drop(locks.acquire("k")))
        };
        thread::spawn(move || drop(guard)).join().unwrap();
        waiter.join().unwrap();
        assert!(!locks.is_locked("k"));
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
                        let guard = locks.acquire(&key);
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
        let held: Vec<_> = (0..10).map(|i| locks.acquire(&i.to_string())).collect();
        assert_eq!(locks.len(), 10);
        drop(held);
        assert_eq!(locks.len(), 0);
    }

    #[test]
    fn exclusive_under_contention() {
        let locks = Arc::new(KeyLocks::default());
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (locks, inside) = (locks.clone(), inside.clone());
                thread::spawn(move || {
                    for _ in 0..500 {
                        let _guard = locks.acquire("k");
                        use std::sync::atomic::Ordering::SeqCst;
                        assert_eq!(inside.fetch_add(1, SeqCst), 0);
                        inside.fetch_sub(1, SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
