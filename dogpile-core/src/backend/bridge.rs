//! Bridges between the two traits: how a region's async methods reach a sync backend
//! ([`async_path`]), and the sync face of an async-only backend ([`AsyncOnly`]).
//!
//! A sync backend that may block runs on tokio's blocking pool, bounded per region: at
//! most [`BLOCKING_CALLS_PER_REGION`] of a region's calls run there at once (the others
//! wait for a place), and a caller waits no longer than the backend's
//! [`call_timeout`](Capabilities#structfield.call_timeout) ([`DEFAULT_CALL_TIMEOUT`]
//! without one), for its place and its call together; past it the caller gets an error
//! naming the key and the backend. A stalled call keeps its place until it returns, so a
//! stalled backend holds a few of the pool's threads, never all of them, and the other
//! regions (and the executor) keep theirs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::async_cache_backend::AsyncCacheBackend;
use super::cache_backend::CacheBackend;
use super::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::lock::distributed::AsyncCacheMutex;
use crate::lock::CacheMutex;
use crate::value::Entry;

/// How many of one region's calls run on tokio's blocking pool at once.
pub const BLOCKING_CALLS_PER_REGION: usize = 8;

/// How long a caller waits for a call on the blocking pool when the backend gives no
/// [`call_timeout`](Capabilities#structfield.call_timeout).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The async path to a sync backend: its own async twin; direct calls for a backend that
/// never blocks; tokio's blocking pool for every other, bounded per region (one path is
/// built per region).
pub(crate) fn async_path(backend: &Arc<dyn CacheBackend>) -> Arc<dyn AsyncCacheBackend> {
    if let Some(twin) = backend.async_twin() {
        return twin;
    }
    let capabilities = backend.capabilities();
    let places = Arc::new(Places::new(
        capabilities.call_timeout.unwrap_or(DEFAULT_CALL_TIMEOUT),
    ));
    if capabilities.nonblocking {
        Arc::new(Direct(backend.clone(), places))
    } else {
        Arc::new(OnBlockingPool {
            backend: backend.clone(),
            places,
        })
    }
}

/// A sync backend whose calls never block, called on the task (its distributed lock, if
/// it has one, on the blocking pool, in the region's places).
struct Direct(Arc<dyn CacheBackend>, Arc<Places>);

#[async_trait]
impl AsyncCacheBackend for Direct {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    async fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.0.set(key, value)
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.0.delete(key)
    }
    async fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        self.0.get_multi(keys)
    }
    async fn set_multi(&self, items: Vec<(&str, Vec<u8>)>) -> Result<()> {
        self.0.set_multi(items)
    }
    async fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        self.0.delete_multi(keys)
    }
    fn get_mutex(&self, key: &str) -> Option<Box<dyn AsyncCacheMutex>> {
        BlockingMutex::of(&*self.0, key, &self.1)
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    async fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        self.0.get_entry(key)
    }
    async fn set_entry(&self, key: &str, entry: Entry) -> Result<()> {
        self.0.set_entry(key, entry)
    }
    async fn get_entries(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.0.get_entries(keys)
    }
    async fn set_entries(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        self.0.set_entries(items)
    }
}

/// A sync backend that may block, called on tokio's blocking pool (see the [module
/// docs](self)).
struct OnBlockingPool {
    backend: Arc<dyn CacheBackend>,
    places: Arc<Places>,
}

/// A region's places on the blocking pool, and how long its callers wait.
struct Places {
    permits: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
}

/// The name errors give a sync backend on the blocking pool.
const ON_THE_BLOCKING_POOL: &str = "a sync backend on tokio's blocking pool";

impl Places {
    fn new(timeout: Duration) -> Self {
        Places {
            permits: Arc::new(tokio::sync::Semaphore::new(BLOCKING_CALLS_PER_REGION)),
            timeout,
        }
    }

    /// Runs `f` on tokio's blocking pool once this region has a place there, waiting for
    /// both no longer than the timeout; `what` names the call (and its key) in errors. A
    /// panic there is a backend error.
    async fn run<R, F>(&self, what: impl FnOnce() -> String, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce() -> Result<R> + Send + 'static,
    {
        let deadline = tokio::time::Instant::from_std(Instant::now() + self.timeout);
        let permit =
            match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_closed)) => unreachable!("the semaphore is never closed"),
                Err(_) => {
                    return Err(self.stalled(what(), "every place of this region stayed taken"));
                }
            };
        // The place goes with the call: a call that outlives its caller keeps it.
        let call = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        });
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => Err(Error::backend(
                ON_THE_BLOCKING_POOL,
                format!("{}: the call did not complete: {error}", what()),
            )),
            Err(_) => Err(self.stalled(what(), "the call is still running")),
        }
    }

    /// The error of a call `what` that did not end within the timeout.
    fn stalled(&self, what: String, waiting: &str) -> Error {
        Error::backend(
            ON_THE_BLOCKING_POOL,
            format!(
                "{what}: no answer within {:?} ({waiting}); the backend is stalled or too \
                 slow (at most {BLOCKING_CALLS_PER_REGION} calls of a region run at once, \
                 and its call_timeout sets the wait)",
                self.timeout
            ),
        )
    }
}

fn owned(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

fn borrowed(keys: &[String]) -> Vec<&str> {
    keys.iter().map(String::as_str).collect()
}

/// Items to store, with owned keys (to send to the blocking pool).
fn owned_items<V>(items: Vec<(&str, V)>) -> (Vec<String>, Vec<V>) {
    items
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .unzip()
}

/// Items to store, with keys borrowed back from [`owned_items`].
fn borrowed_items<V>(keys: &[String], values: Vec<V>) -> Vec<(&str, V)> {
    borrowed(keys).into_iter().zip(values).collect()
}

impl OnBlockingPool {
    /// Runs `call` with the backend on tokio's blocking pool, in one of the region's
    /// places; `what` names the call (`get of key "k"`) in errors.
    async fn run<R, F>(&self, what: impl FnOnce() -> String, call: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&dyn CacheBackend) -> Result<R> + Send + 'static,
    {
        let backend = self.backend.clone();
        self.places.run(what, move || call(&*backend)).await
    }
}

/// `get of key "k"`, for errors.
fn of_key(operation: &str, key: &str) -> String {
    format!("{operation} of key {key:?}")
}

/// `get_multi of 3 keys (first "k")`, for errors.
fn of_keys(operation: &str, first: Option<&str>, count: usize) -> String {
    match first {
        Some(first) => format!("{operation} of {count} keys (first {first:?})"),
        None => format!("{operation} of no key"),
    }
}

#[async_trait]
impl AsyncCacheBackend for OnBlockingPool {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_owned();
        let what = of_key("get", &key);
        self.run(|| what, move |backend| backend.get(&key)).await
    }
    async fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        let key = key.to_owned();
        let what = of_key("set", &key);
        self.run(|| what, move |backend| backend.set(&key, value))
            .await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        let what = of_key("delete", &key);
        self.run(|| what, move |backend| backend.delete(&key)).await
    }
    async fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let what = || of_keys("get_multi", keys.first().copied(), keys.len());
        let keys = owned(keys);
        self.run(what, move |backend| backend.get_multi(&borrowed(&keys)))
            .await
    }
    async fn set_multi(&self, items: Vec<(&str, Vec<u8>)>) -> Result<()> {
        let what = of_keys("set_multi", items.first().map(|(key, _)| *key), items.len());
        let (keys, values) = owned_items(items);
        self.run(
            || what,
            move |backend| backend.set_multi(borrowed_items(&keys, values)),
        )
        .await
    }
    async fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        let what = || of_keys("delete_multi", keys.first().copied(), keys.len());
        let keys = owned(keys);
        self.run(what, move |backend| backend.delete_multi(&borrowed(&keys)))
            .await
    }
    fn get_mutex(&self, key: &str) -> Option<Box<dyn AsyncCacheMutex>> {
        BlockingMutex::of(&*self.backend, key, &self.places)
    }
    fn capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }
    async fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        let key = key.to_owned();
        let what = of_key("get", &key);
        self.run(|| what, move |backend| backend.get_entry(&key))
            .await
    }
    async fn set_entry(&self, key: &str, entry: Entry) -> Result<()> {
        let key = key.to_owned();
        let what = of_key("set", &key);
        self.run(|| what, move |backend| backend.set_entry(&key, entry))
            .await
    }
    async fn get_entries(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let what = || of_keys("get_multi", keys.first().copied(), keys.len());
        let keys = owned(keys);
        self.run(what, move |backend| backend.get_entries(&borrowed(&keys)))
            .await
    }
    async fn set_entries(&self, items: Vec<(&str, Entry)>) -> Result<()> {
        let what = of_keys("set_multi", items.first().map(|(key, _)| *key), items.len());
        let (keys, entries) = owned_items(items);
        self.run(
            || what,
            move |backend| backend.set_entries(borrowed_items(&keys, entries)),
        )
        .await
    }
}

/// A sync distributed lock, tried and released on the blocking pool, in its region's
/// places.
///
/// A blocking task runs to its end even when the call that started it is dropped (a
/// request timeout): a lock it takes after its caller is gone is released by the task
/// itself, and one its caller may still hold is released when this handle is dropped.
struct BlockingMutex {
    mutex: Arc<dyn CacheMutex>,
    key: String,
    places: Arc<Places>,
    state: Arc<std::sync::Mutex<Holding>>,
}

/// Who is answerable for a [`BlockingMutex`]'s lock.
#[derive(Default)]
struct Holding {
    /// A try took the lock and told the handle: the handle releases it.
    held: bool,
    /// The handle is gone: a try that takes the lock releases it at once.
    abandoned: bool,
}

impl BlockingMutex {
    /// `backend`'s distributed lock on `key`, if it has one, for async callers.
    fn of(
        backend: &dyn CacheBackend,
        key: &str,
        places: &Arc<Places>,
    ) -> Option<Box<dyn AsyncCacheMutex>> {
        let mutex = backend.get_mutex(key)?;
        Some(Box::new(BlockingMutex {
            mutex: Arc::from(mutex),
            key: key.to_owned(),
            places: places.clone(),
            state: Arc::default(),
        }))
    }

    fn holding(state: &std::sync::Mutex<Holding>) -> std::sync::MutexGuard<'_, Holding> {
        state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl AsyncCacheMutex for BlockingMutex {
    async fn try_acquire(&self) -> Result<bool> {
        let (mutex, state) = (self.mutex.clone(), self.state.clone());
        let acquire = move || {
            if !mutex.try_acquire()? {
                return Ok(false);
            }
            let mut holding = Self::holding(&state);
            if holding.abandoned {
                drop(holding);
                mutex.release()?;
                return Ok(false);
            }
            holding.held = true;
            Ok(true)
        };
        self.places
            .run(|| of_key("lock acquire", &self.key), acquire)
            .await
    }
    async fn release(&self) -> Result<()> {
        let (mutex, state) = (self.mutex.clone(), self.state.clone());
        let release = move || {
            Self::holding(&state).held = false;
            mutex.release()
        };
        self.places
            .run(|| of_key("lock release", &self.key), release)
            .await
    }
    fn retry_pause(&self) -> Duration {
        self.mutex.retry_pause()
    }
    fn wait_limit(&self) -> Option<Duration> {
        self.mutex.wait_limit()
    }
    fn keep_alive(&self) -> Option<Duration> {
        self.mutex.keep_alive()
    }
    async fn extend(&self) -> Result<bool> {
        let mutex = self.mutex.clone();
        self.places
            .run(|| of_key("lock extend", &self.key), move || mutex.extend())
            .await
    }
}

impl Drop for BlockingMutex {
    fn drop(&mut self) {
        let held = {
            let mut holding = Self::holding(&self.state);
            holding.abandoned = true;
            std::mem::take(&mut holding.held)
        };
        if !held {
            return;
        }
        let mutex = self.mutex.clone();
        let release = move || {
            if let Err(error) = mutex.release() {
                tracing::warn!(%error, "failed to release the distributed dogpile lock of a dropped call");
            }
        };
        // Off the executor when there is one; a thread with no runtime may block.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(release)),
            Err(_) => release(),
        }
    }
}

/// The sync face of a region configured with an async-only backend: every call is an error
/// that says to use the async methods, and the backend itself is the async twin.
pub(crate) struct AsyncOnly {
    name: String,
    backend: Arc<dyn AsyncCacheBackend>,
}

impl AsyncOnly {
    /// The sync face of `backend`, named `name` in errors.
    pub(crate) fn new(name: String, backend: Arc<dyn AsyncCacheBackend>) -> Self {
        AsyncOnly { name, backend }
    }

    fn refuse<T>(&self) -> Result<T> {
        Err(Error::backend(
            &self.name,
            "this backend is async only: call the region's _async methods (get_async, \
             get_or_create_async, ...) from async code",
        ))
    }
}

impl CacheBackend for AsyncOnly {
    fn get(&self, _: &str) -> Result<Option<Vec<u8>>> {
        self.refuse()
    }
    fn set(&self, _: &str, _: Vec<u8>) -> Result<()> {
        self.refuse()
    }
    fn delete(&self, _: &str) -> Result<()> {
        self.refuse()
    }
    fn set_entry(&self, _: &str, _: Entry) -> Result<()> {
        self.refuse()
    }
    fn set_entries(&self, _: Vec<(&str, Entry)>) -> Result<()> {
        self.refuse()
    }
    fn capabilities(&self) -> Capabilities {
        self.backend.capabilities().nonblocking(false)
    }
    fn async_twin(&self) -> Option<Arc<dyn AsyncCacheBackend>> {
        Some(self.backend.clone())
    }
}
