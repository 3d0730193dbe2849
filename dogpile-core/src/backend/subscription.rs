//! Messages a backend's servers push to every process (redis: pub/sub), which a region
//! uses to hear of another process's invalidation at once instead of at its next poll.

use std::time::Duration;

use crate::error::Result;

/// A subscription to one channel of a backend ([`CacheBackend::subscribe`]).
///
/// [`CacheBackend::subscribe`]: crate::backend::CacheBackend::subscribe
pub trait Subscription: Send {
    /// Waits up to `wait` for the next message: `Ok(None)` when none came. An error means
    /// the subscription is lost (the connection failed); the caller subscribes again.
    fn next(&mut self, wait: Duration) -> Result<Option<Vec<u8>>>;
}
