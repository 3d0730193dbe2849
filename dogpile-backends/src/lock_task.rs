//! What the distributed locks of the network backends share: the token of one acquire,
//! which releases the lock when it is dropped armed, and (async) an acquire that runs in
//! a task of its own.
//!
//! No lock is stranded by a caller that goes away. Each acquire's token is known before
//! its command is sent; a lock that may be held by a token nobody will release (a handle
//! dropped without a release, an async acquire whose caller was dropped with the command
//! in flight, an async release dropped midway) is released by that token when the token
//! is dropped: at once on a blocking caller's thread, or in a task spawned on the current
//! runtime for an async one. Releasing by token is harmless when the acquire never took.
//!
//! A caller may be dropped at any await (a request timeout). Its acquire's command, once
//! sent, may take the lock; run in a task ([`Held::acquire_in_task`]), its reply is always
//! read, and the token reaches the caller or, when the caller is gone, is dropped in the
//! task, which releases the lock; a release never overtakes the acquire it undoes.

use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(feature = "tokio")]
use std::future::Future;
#[cfg(feature = "tokio")]
use std::pin::Pin;

use dogpile_core::lock::lock_token;
#[cfg(feature = "tokio")]
use dogpile_core::Error;
use dogpile_core::Result;

/// A lock's place on its server, and how to release it by token.
pub(crate) trait Releaser: Send + Sync + 'static {
    /// The lock, for logs.
    fn describe(&self) -> String;

    /// Releases the lock if it holds `token`, blocking: true when it was deleted.
    fn release(&self, token: &str) -> Result<bool>;

    /// Releases the lock if it holds `token`, on the async path.
    #[cfg(feature = "tokio")]
    fn release_async<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<bool>> + Send + 'a>>;
}

/// One acquire's token, known before its command is sent, and the lock it may hold:
/// dropped armed, it releases the lock (see the [module docs](self)).
pub(crate) struct Token<R: Releaser> {
    releaser: Arc<R>,
    token: String,
    /// Taken on the async path: released by a spawned task when dropped on a runtime.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    on_async: bool,
    armed: bool,
}

impl<R: Releaser> Token<R> {
    /// A new acquire's token, armed.
    pub(crate) fn new(releaser: Arc<R>, on_async: bool) -> Self {
        Token {
            releaser,
            token: lock_token(),
            on_async,
            armed: true,
        }
    }

    /// The value the lock holds while this acquire has it.
    pub(crate) fn value(&self) -> &str {
        &self.token
    }

    /// Where the lock lives.
    #[cfg(feature = "tokio")]
    pub(crate) fn releaser(&self) -> &Arc<R> {
        &self.releaser
    }

    /// Nothing to release: the acquire was answered and did not take the lock.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }

    /// Releases the lock by this token, blocking: true when it was deleted.
    pub(crate) fn release(mut self) -> Result<bool> {
        self.armed = false;
        self.releaser.release(&self.token)
    }

    /// Releases the lock by this token on the async path. Dropped before it is done, the
    /// token is still armed and its drop releases.
    #[cfg(feature = "tokio")]
    pub(crate) async fn release_async(mut self) -> Result<bool> {
        let released = self.releaser.release_async(&self.token).await;
        self.armed = false;
        released
    }
}

impl<R: Releaser> Drop for Token<R> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (releaser, token) = (self.releaser.clone(), std::mem::take(&mut self.token));
        #[cfg(feature = "tokio")]
        if self.on_async {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let released = releaser.release_async(&token).await;
                    abandoned_released(&*releaser, released);
                });
                return;
            }
        }
        let released = releaser.release(&token);
        abandoned_released(&*releaser, released);
    }
}

/// The release of a lock whose holder let go of it without releasing it: only failures
/// are worth a word (the lock then expires after `lock_timeout`), and a quiet one, since
/// they come with a server that is down, which the calls report themselves.
fn abandoned_released(releaser: &impl Releaser, released: Result<bool>) {
    if let Err(error) = released {
        tracing::debug!(lock = %releaser.describe(), %error,
            "failed to release the distributed dogpile lock of a dropped call; it expires \
             after lock_timeout");
    }
}

/// The acquire a lock handle holds the lock by, if it holds it.
pub(crate) struct Held<R: Releaser>(Mutex<Option<Token<R>>>);

impl<R: Releaser> Held<R> {
    pub(crate) fn new() -> Self {
        Held(Mutex::new(None))
    }

    fn token(&self) -> MutexGuard<'_, Option<Token<R>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// True while this handle holds the lock.
    #[cfg(feature = "tokio")]
    pub(crate) fn is_held(&self) -> bool {
        self.token().is_some()
    }

    /// The token this handle holds the lock by, if it holds it (to extend the lock with).
    pub(crate) fn value(&self) -> Option<String> {
        self.token().as_ref().map(|token| token.value().to_owned())
    }

    /// Runs one blocking acquire with a new token, unless the lock is held already:
    /// `attempt` tells whether it took the lock. A failed attempt is not released: the
    /// caller is waiting, and the server is likely down (`dead_retry` makes later calls
    /// fail fast).
    pub(crate) fn acquire(
        &self,
        token: impl FnOnce() -> Token<R>,
        attempt: impl FnOnce(&str) -> Result<bool>,
    ) -> Result<bool> {
        let mut held = self.token();
        if held.is_some() {
            return Ok(true);
        }
        let token = token();
        let won = attempt(token.value());
        if won.as_ref().is_ok_and(|won| *won) {
            *held = Some(token);
        } else {
            token.disarm();
        }
        won
    }

    /// Runs one async acquire, `attempt`, in a task of its own: true when it took the
    /// lock (its token is then held). `attempt` returns its token when it took the lock,
    /// disarms it when the lock is held elsewhere, and drops it armed when it failed (the
    /// command may have been applied). `server` names the backend's server and `what` the
    /// attempt, for the error of a task that did not complete (the runtime shutting down).
    #[cfg(feature = "tokio")]
    pub(crate) async fn acquire_in_task(
        &self,
        attempt: impl Future<Output = Result<Option<Token<R>>>> + Send + 'static,
        server: impl FnOnce() -> String,
        what: impl FnOnce() -> String,
    ) -> Result<bool> {
        let taken = match tokio::spawn(attempt).await {
            Ok(taken) => taken?,
            Err(error) => {
                return Err(Error::backend(
                    server(),
                    format!("{} did not complete: {error}", what()),
                ))
            }
        };
        let won = taken.is_some();
        *self.token() = taken;
        Ok(won)
    }

    /// Releases the lock if this handle holds it, blocking: `None` when it held nothing,
    /// else whether the lock was deleted (`false`: it had expired).
    pub(crate) fn release(&self) -> Result<Option<bool>> {
        let token = self.token().take();
        token.map(Token::release).transpose()
    }

    /// [`Held::release`] on the async path.
    #[cfg(feature = "tokio")]
    pub(crate) async fn release_async(&self) -> Result<Option<bool>> {
        let token = self.token().take();
        match token {
            Some(token) => token.release_async().await.map(Some),
            None => Ok(None),
        }
    }
}
