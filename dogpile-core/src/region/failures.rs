//! Creator failures remembered per key, for `retry_after_error`: within the interval after a
//! failure, callers of this process get the stale value or the failure at once instead of
//! calling the origin again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// More remembered failures than this and the expired ones are dropped.
const TIDY_AT: usize = 1024;

/// The failures of a region's creators: when each key's last failed (clock seconds) and
/// its text.
#[derive(Default)]
pub(crate) struct Failures(Mutex<HashMap<String, (f64, String)>>);

impl Failures {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (f64, String)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The text of `key`'s failure, if it failed less than `interval` before `now`.
    pub(crate) fn recent(&self, key: &str, now: f64, interval: Duration) -> Option<String> {
        let map = self.map();
        let (at, message) = map.get(key)?;
        (now - at < interval.as_secs_f64()).then(|| message.clone())
    }

    /// Remembers that `key`'s creator failed at `now` with `message`.
    pub(crate) fn record(&self, key: &str, now: f64, message: String, interval: Duration) {
        let mut map = self.map();
        if map.len() >= TIDY_AT {
            map.retain(|_, (at, _)| now - *at < interval.as_secs_f64());
        }
        map.insert(key.to_owned(), (now, message));
    }

    /// Forgets `key`'s failure: its creator succeeded.
    pub(crate) fn clear(&self, key: &str) {
        let mut map = self.map();
        if !map.is_empty() {
            map.remove(key);
        }
    }
}
