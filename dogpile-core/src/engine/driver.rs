//! The one driver of the [engine](crate::engine::machine), over two kinds of I/O.
//!
//! The blocking and the async API run the same code here: [`drive`] steps one key's
//! machine, [`drive_multi`] a batch of them, [`lock`] takes a key's dogpile lock, [`store`]
//! stores a created value and hands it to the waiters, [`regenerate`] is a background
//! regeneration's whole job. What differs is an [`Io`]: how a driver reads, waits and
//! stores. The async API awaits these futures on the caller's runtime (its `Io` awaits the
//! backend's async twin and the per-key lock's listener). The blocking API's `Io` does its
//! I/O and its waiting blocking, inside futures that are complete when first polled, and
//! runs them with [`block_on`](crate::engine::block_on::block_on), which needs no runtime.
//!
//! The driver sees a region through a narrow context: its state ([`RegionState`]: locks,
//! observers, options) and the configuration in force ([`Configured`]), never its public
//! face.

use std::fmt::Display;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::clock::Clock;
use crate::engine::machine::{
    distributed_deadline, distributed_outcome, local_outcome, read_outcome, store_outcome, Batch,
    Budget, Freshness, Keep, Locked, Lookup, Machine, Settled, Signals, Step,
};
use crate::error::{Error, Result};
use crate::lock::local::{CreatorFailure, Handed, KeyGuard, LocalWait, Waiter};
use crate::region::failures::Failures;
use crate::region::options::CreateOptions;
use crate::region::state::{entry_for, Configured, MultiKeys, RegionState};
use crate::value::{Cacheable, CachedValue, Entry};

/// How a driver does what the engine asks: the only part of the blocking and the async
/// paths that differs. Every method is an associated function: a face is a type, and the
/// region and its configuration are passed in.
pub(crate) trait Io: 'static {
    /// The configuration in force, as this face holds it during a call.
    type Cfg: Deref<Target = Configured>;
    /// A held dogpile lock.
    type Handle;
    /// A backend's distributed lock.
    type Mutex;

    /// The configuration in force, or [`Error::RegionNotConfigured`].
    fn configured(region: &RegionState) -> Result<Self::Cfg>;
    /// Reads and decodes one key.
    fn read<T: Cacheable>(
        region: &RegionState,
        cfg: &Configured,
        key: &str,
    ) -> impl Future<Output = Result<Option<CachedValue<T>>>>;
    /// Reads and decodes many keys in one backend call.
    fn read_multi<T: Cacheable>(
        region: &RegionState,
        cfg: &Configured,
        keys: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<CachedValue<T>>>>>;
    /// Stores one entry.
    fn set(cfg: &Configured, key: &str, entry: Entry) -> impl Future<Output = Result<()>>;
    /// Stores many entries in one backend call.
    fn set_multi(cfg: &Configured, entries: Vec<(&str, Entry)>)
        -> impl Future<Output = Result<()>>;
    /// Removes one key.
    fn delete(cfg: &Configured, key: &str) -> impl Future<Output = Result<()>>;
    /// Removes many keys in one backend call.
    fn delete_multi(cfg: &Configured, keys: &[&str]) -> impl Future<Output = Result<()>>;
    /// Waits for a key's in-process lock, until `deadline`.
    fn wait_local(waiter: Waiter, deadline: Instant) -> impl Future<Output = LocalWait>;
    /// The backend's distributed lock on `key`, if it has one.
    fn mutex(cfg: &Configured, key: &str) -> Option<Self::Mutex>;
    /// One try of a distributed lock.
    fn try_acquire(mutex: &Self::Mutex) -> impl Future<Output = Result<bool>>;
    /// Tries a distributed lock, backing off, until `deadline`.
    fn acquire_until(mutex: &Self::Mutex, deadline: Instant) -> impl Future<Output = Result<bool>>;
    /// The distributed lock's own wait limit.
    fn wait_limit(mutex: &Self::Mutex) -> Option<Duration>;
    /// The handle of a held lock.
    fn handle(key: &str, local: KeyGuard, distributed: Option<Self::Mutex>) -> Self::Handle;
    /// Releases a held lock, handing `object` to the callers of this process waiting on
    /// its key first.
    fn hand_off(handle: Self::Handle, object: Option<Handed>) -> impl Future<Output = ()>;
    /// A call's error, with what this face knows of why (the blocking face: a lock timeout
    /// inside a tokio runtime).
    fn explain(error: Error) -> Error {
        error
    }
}

/// What a call's creator or the cache failed with.
pub(crate) enum CreateError<E> {
    Cache(Error),
    Creator(E),
}

/// A creator: a closure whose future makes the value or fails (on the blocking face the
/// future is ready when made).
pub(crate) trait Creator<T, E>: FnOnce() -> Self::Made {
    /// The creator's future.
    type Made: Future<Output = std::result::Result<T, E>>;
}

impl<T, E, F, Fut> Creator<T, E> for F
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    type Made = Fut;
}

/// The background rule's hand-over: gets the configuration, the key, the creator and the
/// held lock, and regenerates in the background.
pub(crate) trait Detach<IO: Io, F>: FnOnce(&IO::Cfg, &str, F, Option<IO::Handle>) {}

impl<IO: Io, F, D: FnOnce(&IO::Cfg, &str, F, Option<IO::Handle>)> Detach<IO, F> for D {}

/// A creator's error as the driver sees it: what it hands to the callers of this process
/// waiting on its key (issue 18: a failing origin is called once per wave, not once per
/// waiter).
pub(crate) trait CreatorError {
    /// The text the waiters fail with ([`Error::CreatorFailed`]); `None`: nothing is
    /// handed, and a waiter takes the lock and creates itself.
    fn failure(&self) -> Option<String>;
}

impl CreatorError for Error {
    fn failure(&self) -> Option<String> {
        Some(self.to_string())
    }
}

/// The error of a `try_` form's creator: its waiters fail with its text. The caller that
/// ran the creator gets the error itself back.
pub(crate) struct Told<E>(pub(crate) E);

impl<E: Display> CreatorError for Told<E> {
    fn failure(&self) -> Option<String> {
        Some(self.0.to_string())
    }
}

impl<E: From<Error>> CreateError<Told<E>> {
    /// The error a `try_` form's caller gets: the cache's, through `From`, or its
    /// creator's own.
    pub(crate) fn into_caller(self) -> E {
        match self {
            CreateError::Cache(error) => error.into(),
            CreateError::Creator(Told(error)) => error,
        }
    }
}

/// The error of a fail-open form's creator (a memoized function's, of any type): not
/// handed, since its waiters cannot fail with it; they create in turn.
pub(crate) struct Untold<E>(pub(crate) E);

impl<E> CreatorError for Untold<E> {
    fn failure(&self) -> Option<String> {
        None
    }
}

/// A creator succeeded: `retry_after_error` forgets the key's last failure.
fn creation_succeeded(failures: &Failures, cfg: &Configured, key: &str) {
    if cfg.retry_after_error.is_some() {
        failures.clear(key);
    }
}

/// A creator failed: its text, remembered (at `now`) for `retry_after_error`.
fn creation_failed(
    failures: &Failures,
    cfg: &Configured,
    key: &str,
    now: impl FnOnce() -> f64,
    error: &impl CreatorError,
) -> String {
    let text = error.failure();
    let text = text.unwrap_or_else(|| "the creator returned an error".into());
    if let Some(interval) = cfg.retry_after_error {
        failures.record(key, now(), text.clone(), interval);
    }
    text
}

/// Releases the lock of a caller whose creator failed, handing the failure (when it can be
/// told) to this process's waiters first.
fn hand_failure<IO: Io>(
    handle: Option<IO::Handle>,
    error: &impl CreatorError,
) -> impl Future<Output = ()> {
    // The text is taken before the future, which so holds no reference to the error.
    let failure = error
        .failure()
        .map(|message| Arc::new(CreatorFailure { message }) as Handed);
    async move {
        if let Some(handle) = handle {
            IO::hand_off(handle, failure).await;
        }
    }
}

/// `stale_if_error`: when the machine's stale value may answer a failure (`message`), it is
/// the answer, handed to this process's waiters too.
async fn stale_on_failure<IO: Io, T: Cacheable>(
    machine: &mut Machine<'_, T>,
    handle: &mut Option<IO::Handle>,
    message: &str,
) -> Option<T> {
    let stale = machine.creator_failed(&message)?;
    let answer = stale.payload.clone();
    if let Some(handle) = handle.take() {
        IO::hand_off(handle, Some(Arc::new(stale) as Handed)).await;
    }
    Some(answer)
}

/// Takes the dogpile lock on `key` (this process's first, then the backend's distributed
/// lock, if any): at once or not at all, or waiting until the budget's deadline (and the
/// distributed lock's own wait limit).
pub(crate) async fn lock<IO: Io, T: Cacheable>(
    region: &RegionState,
    cfg: &Configured,
    key: &str,
    wait: bool,
    budget: &mut Budget,
) -> (Locked<T>, Option<IO::Handle>) {
    let local = if wait {
        let deadline = budget.deadline();
        loop {
            let waiter = region.locks.waiter(key);
            let waited = match waiter.check() {
                // Handed a value between starting to wait and checking: a wait all the same.
                Some(done @ LocalWait::HandedOff(_)) => {
                    region.stats.lock_wait(Duration::ZERO);
                    done
                }
                Some(done) => done,
                None => timed_wait(region, key, IO::wait_local(waiter, deadline)).await,
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
    let Some(mutex) = IO::mutex(cfg, key) else {
        return (Locked::Held, Some(IO::handle(key, local, None)));
    };
    let acquired = match IO::try_acquire(&mutex).await {
        Ok(false) if wait => {
            let deadline = distributed_deadline(budget, IO::wait_limit(&mutex));
            timed_wait(region, key, IO::acquire_until(&mutex, deadline)).await
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

/// Awaits a lock held by another caller in a `dogpile.lock_wait` span, counting the wait
/// when it begins and its time when it ends.
async fn timed_wait<R>(region: &RegionState, key: &str, wait: impl Future<Output = R>) -> R {
    let span = tracing::debug_span!("dogpile.lock_wait", region = %region.name, key);
    let started = Instant::now();
    region.stats.lock_wait_began();
    let waited = wait.instrument(span).await;
    region.stats.lock_wait_ended(started.elapsed());
    waited
}

/// Runs a creator in a `dogpile.create` span, counting it and its time; returns its
/// outcome and how long it took. A blocking creator does its work when called, an async
/// one when awaited: both are timed.
pub(crate) async fn timed_creation<T, E, Fut>(
    signals: &Signals<'_>,
    key: &str,
    create: impl FnOnce() -> Fut,
) -> (std::result::Result<T, E>, Duration)
where
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let span = tracing::debug_span!("dogpile.create", region = %signals.region, key);
    let started = Instant::now();
    let creating = span.in_scope(create);
    let created = creating.instrument(span).await;
    let took = started.elapsed();
    match &created {
        Ok(_) => signals.stats.creation(took),
        Err(_) => signals.stats.creation_error(took),
    }
    (created, took)
}

/// Stores a created value (when `should_cache`), hands it to this process's waiters and
/// releases the lock; the store's outcome is for [`Machine::stored`] to judge.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn store<IO: Io, T: Cacheable>(
    cfg: &Configured,
    now: f64,
    took: Option<f64>,
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
    let (entry, object) = entry_for(cfg, key, value, now, took);
    let stored = match entry {
        Ok(entry) => IO::set(cfg, key, entry).await,
        Err(error) => Err(error),
    };
    if let Some(handle) = handle {
        IO::hand_off(handle, Some(object)).await;
    }
    stored
}

/// A background regeneration's whole job: runs the creator, stores its value, hands it to
/// this process's waiters and releases the lock. Nobody is left to tell of a failure: a
/// failed store is a warning.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn regenerate<IO: Io, T: Cacheable, X: CreatorError, Fut>(
    signals: Signals<'_>,
    clock: &dyn Clock,
    failures: &Failures,
    cfg: &Configured,
    key: &str,
    creator: impl FnOnce() -> Fut,
    handle: Option<IO::Handle>,
) where
    Fut: Future<Output = std::result::Result<T, X>>,
{
    let (created, took) = timed_creation(&signals, key, creator).await;
    let value = match created {
        Ok(value) => {
            creation_succeeded(failures, cfg, key);
            value
        }
        Err(error) => {
            creation_failed(failures, cfg, key, || clock.now(), &error);
            return hand_failure::<IO>(handle, &error).await;
        }
    };
    // Recorded with the value when `early_refresh` scales by it.
    let took = (cfg.early_refresh > 0.0).then_some(took.as_secs_f64());
    let stored = store::<IO, T>(cfg, clock.now(), took, key, &value, true, handle).await;
    let _ = store_outcome(&signals, key, true, stored);
}

/// `soft_timeout`: waits until `deadline` for the regeneration of `key` this caller handed
/// to the background, and returns its value; `None` when it is not done by then, or failed.
async fn regenerated<IO: Io, T: Cacheable>(
    region: &RegionState,
    cfg: &Configured,
    freshness: Freshness<'_>,
    key: &str,
    deadline: Instant,
) -> Option<T> {
    let waiter = region.locks.waiter(key);
    let waited = match waiter.check() {
        Some(done) => done,
        None => timed_wait(region, key, IO::wait_local(waiter, deadline)).await,
    };
    match waited {
        LocalWait::HandedOff(handed) => handed
            .downcast_ref::<CachedValue<T>>()
            .map(|value| value.payload.clone()),
        // Done before this caller began to wait (a runner that ran it at once): its value
        // is in the cache.
        LocalWait::Held(guard) => {
            drop(guard);
            let read = IO::read::<T>(region, cfg, key).await.ok().flatten();
            match freshness.judge(read) {
                Lookup::Fresh(value) => Some(value.payload),
                Lookup::Stale(_) | Lookup::Missing => None,
            }
        }
        LocalWait::TimedOut => None,
    }
}

/// `get_or_create` on one key: the engine's machine stepped from its first read to the
/// call's answer. `detach`, with the background rule, hands the creator and the held lock
/// to whoever regenerates in the background.
pub(crate) async fn drive<IO, T, E, F, D>(
    region: &RegionState,
    key: &str,
    options: &CreateOptions<'_, T>,
    creator: &mut Option<F>,
    fail_open: bool,
    mut detach: Option<D>,
) -> std::result::Result<T, CreateError<E>>
where
    IO: Io,
    T: Cacheable,
    E: CreatorError,
    F: Creator<T, E>,
    D: Detach<IO, F>,
{
    let cfg = IO::configured(region).map_err(CreateError::Cache)?;
    let key = &*region.backend_key(&cfg, key).map_err(CreateError::Cache)?;
    let mut rules = region.rules(&cfg, fail_open, detach.is_some());
    if let Some(window) = options.stale_if_error {
        rules.stale_if_error = Some(window);
    }
    let freshness = region.freshness(&cfg, options.expiration);
    let mut machine = Machine::new(region.signals(), key, freshness, rules);
    let mut budget = Budget::new(options.time_budget.unwrap_or(region.time_budget));
    let mut handle = None;
    let mut step = Step::Read;
    loop {
        step = match step {
            Step::Return(value) => {
                // A lock taken and not needed (the value read under it was fresh) is
                // released before the answer, not when the handle is dropped (on the
                // async face, by a spawned task).
                if let Some(handle) = handle {
                    IO::hand_off(handle, None).await;
                }
                return Ok(value);
            }
            Step::Fail(error) => return Err(CreateError::Cache(IO::explain(error))),
            Step::Read => machine.read(IO::read(region, &cfg, key).await),
            Step::TryLock | Step::WaitLock => {
                let wait = matches!(step, Step::WaitLock);
                let locked;
                (locked, handle) = lock::<IO, T>(region, &cfg, key, wait, &mut budget).await;
                machine.locked(locked)
            }
            Step::Create => {
                if let Some(interval) = cfg.retry_after_error {
                    let now = region.clock.now();
                    if let Some(message) = region.failures.recent(key, now, interval) {
                        // `retry_after_error`: the origin failed a moment ago; its failure
                        // (or the stale value) is the answer, without calling it again.
                        if let Some(answer) =
                            stale_on_failure::<IO, T>(&mut machine, &mut handle, &message).await
                        {
                            return Ok(answer);
                        }
                        if rules.share_failures {
                            let failure = Error::CreatorFailed {
                                region: region.signals().region.to_owned(),
                                key: key.to_owned(),
                                message,
                            };
                            hand_failure::<IO>(handle.take(), &failure).await;
                            return Err(CreateError::Cache(failure));
                        }
                    }
                }
                let Some(creator) = creator.take() else {
                    unreachable!("the engine asks for one creation per call")
                };
                let (created, took) = timed_creation(&region.signals(), key, creator).await;
                let value = match created {
                    Ok(value) => {
                        creation_succeeded(&region.failures, &cfg, key);
                        value
                    }
                    Err(error) => {
                        let now = || region.clock.now();
                        let text = creation_failed(&region.failures, &cfg, key, now, &error);
                        if let Some(answer) =
                            stale_on_failure::<IO, T>(&mut machine, &mut handle, &text).await
                        {
                            return Ok(answer);
                        }
                        hand_failure::<IO>(handle.take(), &error).await;
                        return Err(CreateError::Creator(error));
                    }
                };
                let should_cache = options.should_cache(&value);
                let now = region.clock.now();
                // Recorded with the value when `early_refresh` scales by it.
                let recorded = (rules.early_refresh > 0.0).then_some(took.as_secs_f64());
                let stored = store::<IO, T>(
                    &cfg,
                    now,
                    recorded,
                    key,
                    &value,
                    should_cache,
                    handle.take(),
                )
                .await;
                machine.stored(value, stored)
            }
            Step::Background(stale) => match (creator.take(), detach.take()) {
                (Some(creator), Some(detach)) => {
                    if let Some(interval) = cfg.retry_after_error {
                        let now = region.clock.now();
                        if region.failures.recent(key, now, interval).is_some() {
                            // `retry_after_error`: the origin failed a moment ago; the stale
                            // value, without calling it again.
                            if let Some(handle) = handle.take() {
                                IO::hand_off(handle, None).await;
                            }
                            machine.background_answered(false);
                            return Ok(stale);
                        }
                    }
                    detach(&cfg, key, creator, handle.take());
                    if let Some(timeout) = cfg.soft_timeout.filter(|_| rules.soft_timeout) {
                        let deadline = (Instant::now() + timeout).min(budget.deadline());
                        let fresh = regenerated::<IO, T>(region, &cfg, freshness, key, deadline);
                        let fresh = fresh.await;
                        machine.background_answered(fresh.is_some());
                        return Ok(fresh.unwrap_or(stale));
                    }
                    return Ok(stale);
                }
                _ => unreachable!("the background rule is only set with a detach"),
            },
        };
    }
}

/// Drives a multi call: one machine per distinct key, their reads batched into one
/// `get_multi` and their stores into one `set_multi`, their locks taken in key order (so
/// two multi calls never wait on each other in a cycle), all within one time budget.
/// `creator` gets the keys that need a value, as given, and returns their values in order.
pub(crate) async fn drive_multi<IO, T, K, F, Fut>(
    region: &RegionState,
    keys: &[K],
    options: &CreateOptions<'_, T>,
    creator: F,
    fail_open: bool,
) -> Result<Vec<T>>
where
    IO: Io,
    T: Cacheable,
    K: AsRef<str>,
    F: FnOnce(Vec<String>) -> Fut,
    Fut: Future<Output = Vec<T>>,
{
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let cfg = &*IO::configured(region)?;
    let MultiKeys { inputs, unique } = region.distinct_keys(cfg, keys)?;
    let rules = region.rules(cfg, fail_open, false);
    let distinct: Vec<&str> = unique.iter().map(|(key, _)| key.as_str()).collect();
    let freshness = region.freshness(cfg, options.expiration);
    let mut batch: Batch<'_, T, IO::Handle> =
        Batch::new(region.signals(), &distinct, freshness, rules);
    let mut budget = Budget::new(options.time_budget.unwrap_or(region.time_budget));
    loop {
        let reading = batch.reads();
        if !reading.is_empty() {
            let keys: Vec<&str> = reading.iter().map(|&i| distinct[i]).collect();
            let read = IO::read_multi(region, cfg, &keys).await;
            let read = read_outcome(&region.signals(), keys[0], rules.fail_open, read)?;
            batch.read(&reading, read);
            continue;
        }
        let locking = batch.locks();
        if locking.is_empty() {
            break;
        }
        for (i, wait) in locking {
            let (locked, handle) = lock::<IO, T>(region, cfg, distinct[i], wait, &mut budget).await;
            batch.locked(i, locked, handle);
        }
    }
    let Settled {
        mut values,
        creating,
    } = batch.settle().map_err(IO::explain)?;
    if !creating.is_empty() {
        let (indices, handles): (Vec<usize>, Vec<Option<IO::Handle>>) =
            creating.into_iter().unzip();
        let keys: Vec<&str> = indices.iter().map(|&i| distinct[i]).collect();
        let originals: Vec<String> = indices.iter().map(|&i| unique[i].1.clone()).collect();
        let asked = originals.len();
        let created = timed_creation(&region.signals(), keys[0], || async {
            Ok::<_, Error>(creator(originals).await)
        })
        .await
        .0?;
        let created = region.check_created(created, asked)?;
        let (entries, objects) =
            region.encode_created(cfg, &keys, &created, options, rules.fail_open)?;
        let stored = if entries.is_empty() {
            Ok(())
        } else {
            IO::set_multi(cfg, entries).await
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
