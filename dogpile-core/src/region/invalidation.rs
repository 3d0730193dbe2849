//! A region's invalidation: the time before which values are stale (soft) or absent
//! (hard), set by [`invalidate`](crate::CacheRegion::invalidate), and, with
//! `shared_invalidation`, shared by every process whose region has the same name on the same
//! backend (SPEC 10).
//!
//! A shared invalidation is a record in the backend, under [`record_key`]: JSON
//! `{"at": <Unix seconds>, "hard": <bool>}`, the latest invalidation of that name (as
//! dogpile.cache's default strategy keeps only the latest). `invalidate` writes it and
//! announces it on the channel of the same name, where the backend pushes messages
//! ([`CacheBackend::subscribe`]: redis); a thread per region reads it when configured,
//! when told, and every `invalidation_poll`, and takes it when it is newer than what this
//! process knows. The record persists, so a process that was away, or starts later,
//! honours it; Python's dogpile.cache shares it through `python/dogpile_shared_invalidation.py`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::backend::{CacheBackend, Subscription};
use crate::error::Result;

/// How often a region reads its shared invalidation record by default.
pub(crate) const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// The pause before subscribing again after a subscription is lost (at most the poll).
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(100);

/// The invalidation this process knows for one region.
#[derive(Default)]
pub(crate) struct Invalidation {
    /// Unix seconds, as `f64` bits; 0: never invalidated.
    at: AtomicU64,
    hard: AtomicBool,
    /// Serializes writers, so that `at` and `hard` change together.
    writing: Mutex<()>,
}

impl Invalidation {
    /// When values were last invalidated, and whether hard; `None`: never.
    #[inline]
    pub(crate) fn get(&self) -> Option<(f64, bool)> {
        let at = f64::from_bits(self.at.load(Ordering::SeqCst));
        (at > 0.0).then(|| (at, self.hard.load(Ordering::SeqCst)))
    }

    /// Invalidates values created before `at`.
    pub(crate) fn set(&self, at: f64, hard: bool) {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.store(at, hard);
    }

    /// Takes another process's invalidation when it is newer than this one's.
    fn merge(&self, at: f64, hard: bool) -> bool {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let newer = self.get().is_none_or(|(known, _)| at > known);
        if newer {
            self.store(at, hard);
        }
        newer
    }

    fn store(&self, at: f64, hard: bool) {
        // `at` zeroed first, so a reader never pairs the new `hard` with the old time.
        self.at.store(0, Ordering::SeqCst);
        self.hard.store(hard, Ordering::SeqCst);
        self.at.store(at.to_bits(), Ordering::SeqCst);
    }
}

/// The backend key (and pushed channel) of the shared invalidation record of the region
/// named `region`.
pub(crate) fn record_key(region: &str) -> String {
    format!("_dogpile_invalidation:{region}")
}

/// `shared_invalidation` of a configured region: the backend its record is in, where, and
/// how often it is read. Held by the region's configuration alone, so that its watching
/// thread ends when the configuration is replaced or dropped.
pub(crate) struct Shared {
    pub(crate) region: String,
    pub(crate) key: String,
    pub(crate) poll: Duration,
    backend: Arc<dyn CacheBackend>,
}

impl Shared {
    pub(crate) fn new(region: &str, poll: Duration, backend: Arc<dyn CacheBackend>) -> Self {
        Shared {
            region: region.to_owned(),
            key: record_key(region),
            poll,
            backend,
        }
    }

    /// Writes this process's invalidation as the record, and announces it.
    pub(crate) fn write(&self, at: f64, hard: bool) -> Result<()> {
        let record = serde_json::json!({ "at": at, "hard": hard }).to_string();
        self.backend.set(&self.key, record.clone().into_bytes())?;
        if let Err(error) = self.backend.publish(&self.key, record.as_bytes()) {
            tracing::warn!(region = %self.region, %error,
                "invalidation recorded but not announced; other processes see it at their next poll");
        }
        Ok(())
    }

    /// Reads the record and takes it into `invalidation` when it is newer.
    fn read(&self, invalidation: &Invalidation) {
        let record = match self.backend.get(&self.key) {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(region = %self.region, %error,
                    "cannot read the shared invalidation record; trying again at the next poll");
                return;
            }
        };
        match decode(&record) {
            Some((at, hard)) => {
                if invalidation.merge(at, hard) {
                    tracing::debug!(region = %self.region, at, hard,
                        "invalidated by another process");
                }
            }
            None => tracing::warn!(region = %self.region, key = %self.key,
                "the shared invalidation record is not {{\"at\": seconds, \"hard\": bool}}; ignored"),
        }
    }
}

/// A record's time and hardness, if it is one.
fn decode(record: &[u8]) -> Option<(f64, bool)> {
    let value: serde_json::Value = serde_json::from_slice(record).ok()?;
    let at = value
        .get("at")?
        .as_f64()
        .filter(|at| at.is_finite() && *at > 0.0)?;
    Some((at, value.get("hard")?.as_bool()?))
}

/// Reads `shared`'s record once now, then keeps reading it, in a thread of its own, until
/// `shared` is dropped (with the configuration that holds it).
pub(crate) fn watch(shared: &Arc<Shared>, invalidation: &Arc<Invalidation>) {
    shared.read(invalidation);
    let (watched, invalidation) = (Arc::downgrade(shared), invalidation.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("dogpile-invalidation-{}", shared.region))
        .spawn(move || run(&watched, &invalidation));
    if let Err(error) = spawned {
        tracing::warn!(region = %shared.region, %error,
            "cannot start the thread that reads the shared invalidation record; other \
             processes' invalidations reach this one only when it is configured again");
    }
}

/// The watching thread: subscribes where the backend pushes, reads the record after each
/// message and every poll, and ends when its configuration is gone.
fn run(watched: &Weak<Shared>, invalidation: &Invalidation) {
    let mut subscription: Option<Box<dyn Subscription>> = None;
    let mut pushes = true;
    loop {
        let Some(shared) = watched.upgrade() else {
            return;
        };
        let poll = shared.poll;
        if pushes && subscription.is_none() {
            // Subscribed before the read below, so no announcement falls between them.
            match shared.backend.subscribe(&shared.key) {
                Ok(Some(subscribed)) => subscription = Some(subscribed),
                Ok(None) => pushes = false,
                Err(error) => tracing::debug!(region = %shared.region, %error,
                    "cannot subscribe to invalidations; polling meanwhile"),
            }
        }
        shared.read(invalidation);
        let region = shared.region.clone();
        drop(shared);
        if let Some(listening) = subscription.as_mut() {
            if let Err(error) = listening.next(poll) {
                tracing::debug!(%region, %error, "invalidation subscription lost; subscribing again");
                subscription = None;
                // Not in a busy loop with a server that refuses at once.
                std::thread::sleep(RESUBSCRIBE_PAUSE.min(poll));
            }
        } else {
            std::thread::sleep(poll);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_and_garbage_does_not() {
        assert_eq!(decode(br#"{"at": 12.5, "hard": true}"#), Some((12.5, true)));
        assert_eq!(decode(br#"{"at": 3, "hard": false}"#), Some((3.0, false)));
        for garbage in [
            &b""[..],
            b"[]",
            b"{\"at\": \"x\", \"hard\": true}",
            b"{\"at\": 1}",
            b"\xff",
        ] {
            assert_eq!(decode(garbage), None);
        }
    }

    #[test]
    fn only_a_newer_invalidation_is_taken() {
        let invalidation = Invalidation::default();
        assert!(invalidation.merge(10.0, true));
        assert!(!invalidation.merge(9.0, false));
        assert_eq!(invalidation.get(), Some((10.0, true)));
        invalidation.set(11.0, false);
        assert!(invalidation.merge(12.0, true));
        assert_eq!(invalidation.get(), Some((12.0, true)));
    }
}
