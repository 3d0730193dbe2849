//! A held dogpile lock: the in-process lock on a key and, when the backend supplies one, its
//! distributed lock; released together, on whichever thread or task lets go of them.

use std::fmt;
use std::sync::Arc;

use crate::error::Result;
use crate::lock::distributed::CacheMutex;
use crate::lock::local::{Handed, KeyGuard};

/// A held dogpile lock on one key: the in-process lock and, when the backend supplies one
/// and it could be taken, the distributed lock.
///
/// Dropping the handle releases both, on whichever thread drops it; this is how a
/// background runner releases the lock its job was handed. While it is held, a distributed
/// lock that expires by itself is extended (see `keeper.rs`).
pub(crate) struct LockHandle {
    key: String,
    local: Option<KeyGuard>,
    distributed: Option<Arc<dyn CacheMutex>>,
}

impl LockHandle {
    pub(crate) fn new(
        key: &str,
        local: Option<KeyGuard>,
        distributed: Option<Box<dyn CacheMutex>>,
    ) -> Self {
        let distributed = distributed.map(Arc::from);
        if let Some(mutex) = &distributed {
            crate::lock::keeper::keep(key, mutex);
        }
        LockHandle {
            key: key.to_owned(),
            local,
            distributed,
        }
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

/// A held dogpile lock of an async caller: the in-process lock and the backend's async
/// distributed lock.
///
/// A future that holds it and is dropped (cancelled, timed out) releases the in-process
/// lock at once, without I/O, and a waiter takes over; a distributed lock it held is
/// released by a task spawned on the current runtime (with no runtime left, by the lock's
/// own `Drop` where it has one, as the built-in locks do, or else it expires after the
/// backend's `lock_timeout`). A future dropped while it was still acquiring the distributed
/// lock leaves that to the lock: the built-in ones release what such an acquire took.
#[cfg(feature = "tokio")]
pub(crate) struct AsyncLockHandle {
    key: String,
    local: Option<KeyGuard>,
    distributed: Option<Arc<dyn crate::lock::distributed::AsyncCacheMutex>>,
}

#[cfg(feature = "tokio")]
impl AsyncLockHandle {
    pub(crate) fn new(
        key: &str,
        local: KeyGuard,
        distributed: Option<Box<dyn crate::lock::distributed::AsyncCacheMutex>>,
    ) -> Self {
        let distributed = distributed.map(Arc::from);
        if let Some(mutex) = &distributed {
            crate::lock::keeper::keep_async(key, mutex);
        }
        AsyncLockHandle {
            key: key.to_owned(),
            local: Some(local),
            distributed,
        }
    }

    /// Hands `value` to this process's waiters, then releases the distributed lock.
    pub(crate) async fn hand_off(mut self, value: Option<Handed>) {
        if let (Some(local), Some(value)) = (self.local.take(), value) {
            local.hand_off(value);
        }
        self.local.take();
        if let Some(mutex) = self.distributed.take() {
            if let Err(error) = mutex.release().await {
                tracing::warn!(key = %self.key, %error, "failed to release the distributed dogpile lock");
            }
        }
    }
}

#[cfg(feature = "tokio")]
impl Drop for AsyncLockHandle {
    fn drop(&mut self) {
        self.local.take();
        let Some(mutex) = self.distributed.take() else {
            return;
        };
        // Dropped while holding the distributed lock: the future was cancelled.
        let key = std::mem::take(&mut self.key);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = mutex.release().await {
                        tracing::warn!(%key, %error, "failed to release the distributed dogpile lock of a cancelled call");
                    }
                });
            }
            Err(_) => tracing::warn!(%key,
                "a cancelled call held the distributed dogpile lock and no runtime is left to release it; unless the lock releases itself when dropped, it expires after the backend's lock_timeout"),
        }
    }
}
