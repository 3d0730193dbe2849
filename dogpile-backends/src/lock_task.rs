//! What the async distributed locks of the network backends share: an acquire that runs
//! in a task of its own.
//!
//! A caller may be dropped at any await (a request timeout). Its acquire's command, once
//! sent, may take the lock; run in a task, its reply is always read, and the token it
//! returns (the lock's holder, released when dropped armed) reaches the caller or, when
//! the caller is gone, is dropped in the task, which releases the lock.

use std::future::Future;

use dogpile_core::{Error, Result};

/// Runs `attempt` in a task of its own: its token when it took the lock, `None` when the
/// lock is held elsewhere. `server` names the backend's server and `what` the attempt,
/// for the error of a task that did not complete (the runtime shutting down).
pub(crate) async fn acquire_in_task<T: Send + 'static>(
    attempt: impl Future<Output = Result<Option<T>>> + Send + 'static,
    server: impl FnOnce() -> String,
    what: impl FnOnce() -> String,
) -> Result<Option<T>> {
    match tokio::spawn(attempt).await {
        Ok(taken) => taken,
        Err(error) => Err(Error::backend(
            server(),
            format!("{} did not complete: {error}", what()),
        )),
    }
}
