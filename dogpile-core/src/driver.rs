//! The one driver of the [engine](crate::engine), over two kinds of I/O.
//!
//! The blocking and the async API run the same code here: [`drive`] steps one key's
//! machine, [`drive_multi`] a batch of them, [`lock`] takes a key's dogpile lock. What
//! differs is an [`Io`]: how a driver reads, waits and stores. The async API awaits these
//! futures on the caller's runtime (its `Io` awaits the backend's async twin and the per-key
//! lock's listener). The blocking API's `Io` does its I/O and its waiting blocking, inside
//! futures that are complete when first polled, and runs them with [`block_on`], which
//! needs no runtime.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::engine::{
    distributed_deadline, distributed_outcome, local_outcome, read_outcome, store_outcome, Batch,
    Budget, Keep, Locked, Machine, Rules, Settled, Step,
};
use crate::error::{Error, Result};
use crate::lock::{Handed, KeyGuard, LocalWait, Waiter};
use crate::region::{entry_for, CacheRegion, Configured, CreateError, CreateOptions};
use crate::value::{Cacheable, CachedValue, Entry};

/// How a driver does what the engine asks: the only part of the blocking and the async
/// paths that differs.
pub(crate) trait Io {
    /// A held dogpile lock.
    type Handle;
    /// A backend's distributed lock.
    type Mutex;

    /// The region being driven.
    fn region(&self) -> &CacheRegion;
    /// Its configuration in force.
    fn cfg(&self) -> &Configured;

    /// Reads and decodes one key.
    fn read<T: Cacheable>(&self, key: &str)
        -> impl Future<Output = Result<Option<CachedValue<T>>>>;
    /// Reads and decodes many keys in one backend call.
    fn read_multi<T: Cacheable>(
        &self,
        keys: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<CachedValue<T>>>>>;
    /// Waits for a key's in-process lock, until `deadline`.
    fn wait_local(&self, waiter: Waiter, deadline: Instant) -> impl Future<Output = LocalWait>;
    /// The backend's distributed lock on `key`, if it has one.
    fn mutex(&self, key: &str) -> Option<Self::Mutex>;
    /// One try of a distributed lock.
    fn try_acquire(&self, mutex: &Self::Mutex) -> impl Future<Output = Result<bool>>;
    /// Tries a distributed lock, backing off, until `deadline`.
    fn acquire_until(
        &self,
        mutex: &Self::Mutex,
        deadline: Instant,
    ) -> impl Future<Output = Result<bool>>;
    /// The distributed lock's own wait limit.
    fn wait_limit(mutex: &Self::Mutex) -> Option<Duration>;
    /// The handle of a held lock.
    fn handle(key: &str, local: KeyGuard, distributed: Option<Self::Mutex>) -> Self::Handle;
    /// Stores one entry.
    fn set(&self, key: &str, entry: Entry) -> impl Future<Output = Result<()>>;
    /// Stores many entries in one backend call.
    fn set_multi(&self, entries: Vec<(&str, Entry)>) -> impl Future<Output = Result<()>>;
    /// Releases a held lock, handing `object` to the callers of this process waiting on
    /// its key first.
    fn hand_off(handle: Self::Handle, object: Option<Handed>) -> impl Future<Output = ()>;
}

/// Runs a future of the blocking path to completion on this thread, without a runtime:
/// the blocking `Io`'s futures never wait on anything but the thread itself, so they are
/// complete when first polled (the loop is there for robustness only).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::yield_now();
    }
}

/// Takes the dogpile lock on `key` (this process's first, then the backend's distributed
/// lock, if any): at once or not at all, or waiting until the budget's deadline (and the
/// distributed lock's own wait limit).
pub(crate) async fn lock<IO: Io, T: Cacheable>(
    io: &IO,
    key: &str,
    wait: bool,
    budget: &mut Budget,
) -> (Locked<T>, Option<IO::Handle>) {
    let region = io.region();
    let local = if wait {
        let deadline = budget.deadline();
        loop {
            let waiter = region.locks.waiter(key);
            let waited = match waiter.check() {
                Some(done) => done,
                None => timed_wait(region, key, io.wait_local(waiter, deadline)).await,
            };
            match local_outcome(waited, budget) {
                Some(Ok(guard)) => break guard,
                Some(Err(locked)) => return (locked, None),
                None => continue,
            }
        }
    } else {
        match region.locks.try_acquire(key) {
            Some(guard) => guard,
            None => return (Locked::Busy, None),
        }
    };
    let Some(mutex) = io.mutex(key) else {
        return (Locked::Held, Some(IO::handle(key, local, None)));
    };
    let acquired = match io.try_acquire(&mutex).await {
        Ok(false) if wait => {
            let deadline = distributed_deadline(budget, IO::wait_limit(&mutex));
            timed_wait(region, key, io.acquire_until(&mutex, deadline)).await
        }
        tried => tried,
    };
    let (locked, keep) = distributed_outcome(acquired, wait, budget);
    let handle = match keep {
        Keep::Both => Some(IO::handle(key, local, Some(mutex))),
        Keep::LocalOnly => Some(IO::handle(key, local, None)),
        Keep::Neither => None,
    };
    (locked, handle)
}

/// Awaits a lock held by another caller in a `dogpile.lock_wait` span, counting the wait.
async fn timed_wait<R>(region: &CacheRegion, key: &str, wait: impl Future<Output = R>) -> R {
    let span = tracing::debug_span!("dogpile.lock_wait", region = %region.name, key);
    let started = Instant::now();
    let waited = wait.instrument(span).await;
    region.stats.lock_wait(started.elapsed());
    waited
}

/// Runs a creator in a `dogpile.create` span, counting it and its time. A blocking
/// creator does its work when called, an async one when awaited: both are timed.
pub(crate) async fn timed_creation<T, E, Fut>(
    region: &CacheRegion,
    key: &str,
    create: impl FnOnce() -> Fut,
) -> std::result::Result<T, E>
where
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let span = tracing::debug_span!("dogpile.create", region = %region.name, key);
    let started = Instant::now();
    let creating = span.in_scope(create);
    let created = creating.instrument(span).await;
    match &created {
        Ok(_) => region.stats.creation(started.elapsed()),
        Err(_) => region.stats.creation_error(started.elapsed()),
    }
    created
}

/// Stores a created value (when `should_cache`), hands it to this process's waiters and
/// releases the lock; the store's outcome is for [`Machine::stored`] to judge.
pub(crate) async fn store<IO: Io, T: Cacheable>(
    io: &IO,
    now: f64,
    key: &str,
    value: &T,
    should_cache: bool,
    handle: Option<IO::Handle>,
) -> Result<()> {
    if !should_cache {
        // Not cached, so not handed off either: waiters read and create for themselves.
        if let Some(handle) = handle {
            IO::hand_off(handle, None).await;
        }
        return Ok(());
    }
    let (entry, object) = entry_for(io.cfg(), key, value, now);
    let stored = match entry {
        Ok(entry) => io.set(key, entry).await,
        Err(error) => Err(error),
    };
    if let Some(handle) = handle {
        IO::hand_off(handle, Some(object)).await;
    }
    stored
}

/// Steps one key's machine from `step` (what its first read asked for) to the call's
/// answer. `detach`, with the background rule, hands the creator and the held lock to
/// whoever regenerates in the background.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn drive<IO, T, E, F, Fut, D>(
    io: &IO,
    key: &str,
    options: &CreateOptions<'_, T>,
    creator: &mut Option<F>,
    mut machine: Machine<'_, T>,
    mut step: Step<T>,
    mut detach: Option<D>,
) -> std::result::Result<T, CreateError<E>>
where
    IO: Io,
    T: Cacheable,
    F: FnOnce() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
    D: FnOnce(F, Option<IO::Handle>),
{
    let region = io.region();
    let mut budget = Budget::new(options.time_budget.unwrap_or(region.time_budget));
    let mut handle = None;
    loop {
        step = match step {
            Step::Return(value) => return Ok(value),
            Step::Fail(error) => return Err(CreateError::Cache(error)),
            Step::Read => machine.read(io.read(key).await),
            Step::TryLock | Step::WaitLock => {
                let wait = matches!(step, Step::WaitLock);
                let locked;
                (locked, handle) = lock(io, key, wait, &mut budget).await;
                machine.locked(locked)
            }
            Step::Create => {
                let Some(creator) = creator.take() else {
                    unreachable!("the engine asks for one creation per call")
                };
                let value = timed_creation(region, key, creator)
                    .await
                    .map_err(CreateError::Creator)?;
                let should_cache = options.should_cache(&value);
                let now = region.clock.now();
                let stored = store(io, now, key, &value, should_cache, handle.take()).await;
                machine.stored(value, stored)
            }
            Step::Background(stale) => match (creator.take(), detach.take()) {
                (Some(creator), Some(detach)) => {
                    detach(creator, handle.take());
                    return Ok(stale);
                }
                _ => unreachable!("the background rule is only set with a detach"),
            },
        };
    }
}

/// The keys of a multi call: in the caller's order (mangled), and distinct, sorted, with
/// the key each was given as.
pub(crate) struct MultiKeys {
    pub(crate) inputs: Vec<String>,
    pub(crate) unique: Vec<(String, String)>,
}

/// Drives a multi call: one machine per distinct key, their reads batched into one
/// `get_multi` and their stores into one `set_multi`, their locks taken in key order (so
/// two multi calls never wait on each other in a cycle), all within one time budget.
/// `creator` gets the keys that need a value, as given, and returns their values in order.
pub(crate) async fn drive_multi<IO, T, F, Fut>(
    io: &IO,
    keys: MultiKeys,
    options: &CreateOptions<'_, T>,
    creator: F,
    rules: Rules,
) -> Result<Vec<T>>
where
    IO: Io,
    T: Cacheable,
    F: FnOnce(Vec<String>) -> Fut,
    Fut: Future<Output = Vec<T>>,
{
    let (region, cfg) = (io.region(), io.cfg());
    let MultiKeys { inputs, unique } = keys;
    let distinct: Vec<&str> = unique.iter().map(|(key, _)| key.as_str()).collect();
    let freshness = region.freshness(cfg, options.expiration);
    let mut batch: Batch<'_, T, IO::Handle> =
        Batch::new(region.signals(), &distinct, freshness, rules);
    let mut budget = Budget::new(options.time_budget.unwrap_or(region.time_budget));
    loop {
        let reading = batch.reads();
        if !reading.is_empty() {
            let keys: Vec<&str> = reading.iter().map(|&i| distinct[i]).collect();
            let read = io.read_multi(&keys).await;
            let read = read_outcome(&region.signals(), keys[0], rules.fail_open, read)?;
            batch.read(&reading, read);
            continue;
        }
        let locking = batch.locks();
        if locking.is_empty() {
            break;
        }
        for (i, wait) in locking {
            let (locked, handle) = lock(io, distinct[i], wait, &mut budget).await;
            batch.locked(i, locked, handle);
        }
    }
    let Settled {
        mut values,
        creating,
    } = batch.settle()?;
    if !creating.is_empty() {
        let (indices, handles): (Vec<usize>, Vec<Option<IO::Handle>>) =
            creating.into_iter().unzip();
        let keys: Vec<&str> = indices.iter().map(|&i| distinct[i]).collect();
        let originals: Vec<String> = indices.iter().map(|&i| unique[i].1.clone()).collect();
        let asked = originals.len();
        let created = timed_creation(region, keys[0], || async {
            Ok::<_, Error>(creator(originals).await)
        })
        .await?;
        let created = region.check_created(created, asked)?;
        let (entries, objects) =
            region.encode_created(cfg, &keys, &created, options, rules.fail_open)?;
        let stored = if entries.is_empty() {
            Ok(())
        } else {
            io.set_multi(entries).await
        };
        for (handle, object) in handles.into_iter().zip(objects) {
            if let Some(handle) = handle {
                IO::hand_off(handle, object).await;
            }
        }
        for (i, value) in indices.into_iter().zip(created) {
            values[i] = Some(value);
        }
        store_outcome(&region.signals(), keys[0], rules.fail_open, stored)?;
    }
    region.assemble(cfg, &inputs, &distinct, values)
}
