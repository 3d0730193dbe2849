//! Keeps held distributed locks alive while their creators run (issue 18, item 7): a lock
//! that expires by itself ([`CacheMutex::keep_alive`]) is extended every period until its
//! handle lets go of it, so that a creator slower than `lock_timeout` keeps its lock and
//! another process waits for its value instead of creating it again.
//!
//! Blocking callers' locks are extended by one thread for the whole process, started with
//! the first such lock; it holds each lock weakly, so a released lock drops out by itself.
//! An async caller's lock is extended by a task on its runtime, which ends likewise.
//! Extending is by the holder's token (a lock that expired and was taken by another is
//! never extended), so a tick that races the release is harmless.

use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::lock::distributed::CacheMutex;

/// One lock to keep alive.
struct Kept {
    mutex: Weak<dyn CacheMutex>,
    key: String,
    period: Duration,
    due: Instant,
}

/// The keeper thread's queue, and the bell that wakes it for a new lock.
#[derive(Default)]
struct Keeper {
    queue: Mutex<Vec<Kept>>,
    bell: Condvar,
}

/// Extends `mutex`, a held lock on `key`, every `keep_alive` period until it is dropped.
pub(crate) fn keep(key: &str, mutex: &Arc<dyn CacheMutex>) {
    let Some(period) = mutex.keep_alive() else {
        return;
    };
    static KEEPER: OnceLock<Option<Arc<Keeper>>> = OnceLock::new();
    let Some(keeper) = KEEPER.get_or_init(start) else {
        return;
    };
    let period = period.max(Duration::from_millis(1));
    keeper.lock().push(Kept {
        mutex: Arc::downgrade(mutex),
        key: key.to_owned(),
        period,
        due: Instant::now() + period,
    });
    keeper.bell.notify_one();
}

/// Starts the keeper thread; `None` (and a warning) when no thread can be started: held
/// locks then expire after their `lock_timeout`, as they did before they were kept.
fn start() -> Option<Arc<Keeper>> {
    let keeper = Arc::new(Keeper::default());
    let running = keeper.clone();
    match std::thread::Builder::new()
        .name("dogpile-lock-keeper".into())
        .spawn(move || running.run())
    {
        Ok(_) => Some(keeper),
        Err(error) => {
            tracing::warn!(%error,
                "cannot start the thread that extends distributed dogpile locks; a creator \
                 slower than lock_timeout may lose its lock");
            None
        }
    }
}

impl Keeper {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run(&self) {
        let mut queue = self.lock();
        loop {
            queue.retain(|kept| kept.mutex.strong_count() > 0);
            let now = Instant::now();
            let mut due = Vec::new();
            for kept in queue.iter_mut().filter(|kept| kept.due <= now) {
                if let Some(mutex) = kept.mutex.upgrade() {
                    due.push((mutex, kept.key.clone()));
                }
                kept.due = now + kept.period;
            }
            if due.is_empty() {
                let next = queue.iter().map(|kept| kept.due).min();
                let wait = next.map_or(Duration::from_secs(3600), |next| next - now);
                queue = self
                    .bell
                    .wait_timeout(queue, wait)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
                continue;
            }
            drop(queue);
            let mut lost = Vec::new();
            for (mutex, key) in due {
                if !extended(&key, mutex.extend()) {
                    lost.push(Arc::downgrade(&mutex));
                }
            }
            queue = self.lock();
            queue.retain(|kept| !lost.iter().any(|gone| Weak::ptr_eq(gone, &kept.mutex)));
        }
    }
}

/// What one extension came to: whether the lock is still this process's to keep. A lock
/// already gone is a warning (its creator outlived it); a failed extension, too, but the
/// lock is tried again at the next period.
pub(crate) fn extended(key: &str, extension: crate::Result<bool>) -> bool {
    match extension {
        Ok(true) => true,
        Ok(false) => {
            tracing::warn!(%key,
                "the distributed dogpile lock expired while its creator ran; another process \
                 may create the value meanwhile");
            false
        }
        Err(error) => {
            tracing::warn!(%key, %error, "failed to extend the distributed dogpile lock");
            true
        }
    }
}

/// Extends an async caller's held lock every `keep_alive` period, in a task on the current
/// runtime, until the lock is dropped.
#[cfg(feature = "tokio")]
pub(crate) fn keep_async(key: &str, mutex: &Arc<dyn crate::lock::distributed::AsyncCacheMutex>) {
    let Some(period) = mutex.keep_alive() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let period = period.max(Duration::from_millis(1));
    let (mutex, key) = (Arc::downgrade(mutex), key.to_owned());
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            ticks.tick().await;
            let Some(mutex) = mutex.upgrade() else {
                return;
            };
            if !extended(&key, mutex.extend().await) {
                return;
            }
        }
    });
}
