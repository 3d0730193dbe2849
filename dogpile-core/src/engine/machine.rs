//! The dogpile algorithm (SPEC 3.3), written once, as decisions that do no I/O.
//!
//! A [`Machine`] is one call's decisions about one key. A driver asks it what to do next (a
//! [`Step`]), does that (reads the backend, takes or waits for the lock, runs the creator,
//! stores), and feeds what happened back. The one driver
//! ([`driver`](crate::engine::driver)) is that loop, over blocking or async I/O. The multi
//! form runs one machine per key and batches their reads. Background regeneration is one
//! more rule ([`Step::Background`]), and so is probabilistic early recomputation
//! (`early_refresh`, XFetch): for a fresh value close to expiry, [`Machine::read`] answers
//! as for a stale one (try the lock; regenerate, or return the value when it is taken).
//! A creator's failure is one more input ([`Machine::creator_failed`]): the stale value
//! may answer it (`stale_if_error`).
//!
//! ```text
//! start ─► Read ─┬─ fresh ───────────────────────────────► Return(value)
//!                ├─ stale (serve_stale) ─► TryLock ─┬─ busy ──► Return(stale)
//!                │                                   └─ held ──► Read (again)
//!                └─ missing, or stale ───► WaitLock ─┬─ handed a value ──► Return(it)
//!                                                    ├─ handed a failure ──► Fail(CreatorFailed),
//!                                                    │                or WaitLock (again)
//!                                                    ├─ timed out ──► Fail(LockTimeout),
//!                                                    │                or Create (fail open)
//!                                                    └─ held ──► Read (again)
//! Read again ─┬─ fresh ──► Return(value)
//!             └─ else ───► Create, or Background(stale) with a runner and a stale value
//! Create ─► (driver stores) ─► stored ─► Return(value), or Fail(error) unless failing open
//! ```

use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::lock::local::{CreatorFailure, KeyGuard, LocalWait};
use crate::stats::StatsRecorder;
use crate::value::CachedValue;
use crate::warnings::{warn_limited, RegionWarnings, WarningKind};

/// What a read found, judged against expiration and invalidation.
pub(crate) enum Lookup<T> {
    Fresh(CachedValue<T>),
    Stale(CachedValue<T>),
    Missing,
}

/// How values are judged fresh, stale or absent during one call.
#[derive(Clone, Copy)]
pub(crate) struct Freshness<'a> {
    pub(crate) clock: &'a dyn Clock,
    pub(crate) expiration: Option<Duration>,
    /// The region's invalidation: values created before this time (Unix seconds) are
    /// stale, or absent when `hard`.
    pub(crate) invalidated: Option<(f64, bool)>,
}

impl Freshness<'_> {
    #[inline]
    pub(crate) fn judge<T>(&self, value: Option<CachedValue<T>>) -> Lookup<T> {
        let Some(value) = value else {
            return Lookup::Missing;
        };
        let ct = value.metadata.ct;
        if let Some((at, hard)) = self.invalidated {
            if ct < at {
                return if hard {
                    Lookup::Missing
                } else {
                    Lookup::Stale(value)
                };
            }
        }
        match self.expiration {
            Some(exp) if self.expired(ct, exp.as_secs_f64()) => Lookup::Stale(value),
            _ => Lookup::Fresh(value),
        }
    }

    /// Whether a value created at `ct` is fresh: [`judge`](Self::judge) would find it so.
    #[inline]
    pub(crate) fn is_fresh(&self, ct: f64) -> bool {
        if let Some((at, _)) = self.invalidated {
            if ct < at {
                return false;
            }
        }
        match self.expiration {
            Some(exp) => !self.expired(ct, exp.as_secs_f64()),
            None => true,
        }
    }

    /// How long ago (seconds) a value created at `ct` went stale: when it expired, or when
    /// the region was invalidated after it was made, whichever came first.
    pub(crate) fn stale_for(&self, ct: f64) -> f64 {
        let expired_at = self.expiration.map(|exp| ct + exp.as_secs_f64());
        let invalidated_at = self.invalidated.and_then(|(at, _)| (ct < at).then_some(at));
        let since = match (expired_at, invalidated_at) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return 0.0,
        };
        (self.clock.now() - since).max(0.0)
    }

    /// Whether a value created at `ct` is older than `exp` seconds: judged by the coarse
    /// clock (no system call), and by the precise one only when the coarse reading is
    /// within [`COARSE_MARGIN`] of the expiry, where its lag could decide.
    fn expired(&self, ct: f64, exp: f64) -> bool {
        let age = self.clock.now_coarse() - ct;
        age > exp || (exp - age < COARSE_MARGIN && self.clock.now() - ct > exp)
    }
}

/// How far the coarse clock may lag the precise one, with room to spare (a kernel tick is
/// 1 to 10 ms).
const COARSE_MARGIN: f64 = 0.05;

/// Where a call's decisions are reported: the region's name (for logs), its statistics,
/// and its rate-limited warnings.
#[derive(Clone, Copy)]
pub(crate) struct Signals<'a> {
    pub(crate) region: &'a str,
    pub(crate) stats: &'a StatsRecorder,
    pub(crate) warnings: &'a RegionWarnings,
}

impl Signals<'_> {
    /// Counts a failed backend call (not a value that failed to encode).
    fn failed(&self, error: &Error) {
        if matches!(error, Error::Backend { .. }) {
            self.stats.backend_error();
        }
    }
}

/// The rules of one call.
#[derive(Clone, Copy)]
pub(crate) struct Rules {
    /// A caller that finds a stale value returns it while another regenerates.
    pub(crate) serve_stale: bool,
    /// Backend errors are misses (reads), or ignored (lock, writes).
    pub(crate) fail_open: bool,
    /// The winner on a stale value hands the creator to the background runner.
    pub(crate) background: bool,
    /// With `background`: the winner waits a while for the regeneration (`soft_timeout`),
    /// and its lookup is counted by what it answers with
    /// ([`Machine::background_answered`]).
    pub(crate) soft_timeout: bool,
    /// Values need the dogpile lock; false for a store that keeps nothing, where every
    /// caller creates its own.
    pub(crate) lock: bool,
    /// When the creator fails, a stale value that went stale no longer ago than this is
    /// the answer (`stale_if_error`).
    pub(crate) stale_if_error: Option<Duration>,
    /// XFetch's beta (`early_refresh`): a fresh value may be refreshed before it expires;
    /// 0 is off.
    pub(crate) early_refresh: f64,
    /// A caller handed the failure of the creator it waited for answers with it
    /// ([`Error::CreatorFailed`]); otherwise it takes the lock and creates itself (a form
    /// whose error type cannot be built from [`Error`]).
    pub(crate) share_failures: bool,
}

/// One call's time budget: all of its waiting (the in-process lock, the distributed lock)
/// ends by one deadline. Its clock starts when the call first finds it must lock or wait,
/// so a fresh hit never reads it; the read before is bounded by the backend's own timeout.
pub(crate) struct Budget {
    length: Duration,
    started: Option<Instant>,
}

impl Budget {
    pub(crate) fn new(length: Duration) -> Self {
        Budget {
            length,
            started: None,
        }
    }

    /// When the budget's clock started (now, if it had not).
    pub(crate) fn started(&mut self) -> Instant {
        *self.started.get_or_insert_with(Instant::now)
    }

    /// When the call's waiting must end.
    pub(crate) fn deadline(&mut self) -> Instant {
        let started = self.started();
        started
            .checked_add(self.length)
            .unwrap_or(started + Duration::from_secs(86_400 * 365))
    }

    /// How long the call has waited so far.
    pub(crate) fn spent(&mut self) -> Duration {
        self.started().elapsed()
    }
}

/// What the driver does next.
pub(crate) enum Step<T> {
    /// Read the key from the backend, then feed [`Machine::read`].
    Read,
    /// Take the key's lock if it is free, then feed [`Machine::locked`].
    TryLock,
    /// Wait for the key's lock until the call's [`Budget`] deadline, then feed
    /// [`Machine::locked`].
    WaitLock,
    /// Run the creator (holding the lock, if [`Machine::locked`] got it), store its value,
    /// then feed [`Machine::stored`].
    Create,
    /// Hand the creator and the held lock to the background runner; return this stale value.
    Background(T),
    /// The call's answer.
    Return(T),
    /// The call fails.
    Fail(Error),
}

/// What taking the lock came to.
pub(crate) enum Locked<T> {
    /// This caller holds the lock (and the distributed lock, if the backend has one).
    Held,
    /// This caller holds the in-process lock, but the distributed lock failed.
    DistributedFailed(Error),
    /// Somebody else holds it (only from [`Step::TryLock`]).
    Busy,
    /// The holder created a value while this caller waited, and handed it over.
    HandedOff(T),
    /// The holder's creator failed while this caller waited; its error's text.
    Failed(String),
    /// The deadline passed while waiting.
    TimedOut(Duration),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing read yet.
    First,
    /// Read again while holding the lock.
    Locked,
}

/// One call's decisions about one key.
pub(crate) struct Machine<'a, T> {
    signals: Signals<'a>,
    key: &'a str,
    freshness: Freshness<'a>,
    rules: Rules,
    phase: Phase,
    /// The stale value read, kept for `serve_stale`, the background rule and
    /// `stale_if_error`.
    stale: Option<CachedValue<T>>,
    /// The creation time of a fresh value this call found due for an early refresh: it
    /// regenerates it unless the value read under the lock is newer.
    refreshing: Option<f64>,
    /// The first read found no fresh value; its count waits for the call's outcome: stale
    /// served, a miss, or (handed another caller's value) nothing but the lock wait.
    uncounted: bool,
}

impl<'a, T> Machine<'a, T> {
    /// A machine for `key`; its first step is always [`Step::Read`].
    #[inline]
    pub(crate) fn new(
        signals: Signals<'a>,
        key: &'a str,
        freshness: Freshness<'a>,
        rules: Rules,
    ) -> Self {
        Machine {
            signals,
            key,
            freshness,
            rules,
            phase: Phase::First,
            stale: None,
            refreshing: None,
            uncounted: false,
        }
    }

    /// Counts the lookup that found no fresh value, once: a stale value served, or a miss.
    fn count_stale(&mut self, served: bool) {
        if std::mem::take(&mut self.uncounted) {
            if served {
                self.signals.stats.stale_served();
            } else {
                self.signals.stats.miss();
            }
        }
    }

    /// Feeds what a read returned.
    #[inline]
    pub(crate) fn read(&mut self, read: Result<Option<CachedValue<T>>>) -> Step<T> {
        let value = match read_outcome(&self.signals, self.key, self.rules.fail_open, read) {
            Ok(value) => value.flatten(),
            Err(error) => {
                self.count_stale(false);
                return Step::Fail(error);
            }
        };
        let lookup = self.freshness.judge(value);
        let stats = self.signals.stats;
        match (self.phase, lookup) {
            (Phase::First, Lookup::Fresh(value)) => {
                stats.hit();
                if self.rules.lock && self.due_early(&value) {
                    // Refreshed ahead by this caller if the lock is free; the others (and
                    // this one, when it is not) have the fresh value.
                    self.refreshing = Some(value.metadata.ct);
                    self.stale = Some(value);
                    return Step::TryLock;
                }
                Step::Return(value.payload)
            }
            (Phase::Locked, Lookup::Fresh(value)) => match self.refreshing {
                // Nobody renewed it meanwhile: this caller refreshes it.
                Some(ct) if value.metadata.ct <= ct => {
                    self.signals.stats.early_refresh();
                    self.stale = Some(value);
                    self.create()
                }
                _ => {
                    self.count_stale(false);
                    Step::Return(value.payload)
                }
            },
            (Phase::First, _) if !self.rules.lock => {
                stats.miss();
                Step::Create
            }
            (Phase::First, Lookup::Stale(value)) => {
                self.stale = Some(value);
                self.uncounted = true;
                if self.rules.serve_stale {
                    Step::TryLock
                } else {
                    Step::WaitLock
                }
            }
            (Phase::First, Lookup::Missing) => {
                self.uncounted = true;
                Step::WaitLock
            }
            (Phase::Locked, lookup) => {
                if let Lookup::Stale(value) = lookup {
                    // The newest stale value, for `stale_if_error`.
                    self.stale = Some(value);
                }
                self.create()
            }
        }
    }

    /// Feeds what taking the lock came to.
    pub(crate) fn locked(&mut self, locked: Locked<T>) -> Step<T> {
        if self.refreshing.is_some() && !matches!(locked, Locked::Held) {
            // An early refresh that cannot take the lock leaves it to whoever holds it:
            // this caller has its fresh value.
            if let Some(fresh) = self.stale.take() {
                return Step::Return(fresh.payload);
            }
        }
        let step = self.lock_step(locked);
        if matches!(step, Step::Fail(_) | Step::Create) {
            self.count_stale(false);
        }
        step
    }

    fn lock_step(&mut self, locked: Locked<T>) -> Step<T> {
        match locked {
            Locked::Held => {
                self.phase = Phase::Locked;
                Step::Read
            }
            Locked::DistributedFailed(error) if self.rules.fail_open => {
                self.signals.failed(&error);
                warn_limited!(self.signals.warnings, WarningKind::LockUnavailable,
                    region = %self.signals.region, key = %self.key, %error,
                    "distributed dogpile lock unavailable; creating under this process's lock only");
                self.create()
            }
            Locked::DistributedFailed(error) => {
                self.signals.failed(&error);
                Step::Fail(error)
            }
            Locked::Busy => match self.stale.take() {
                Some(stale) => {
                    self.count_stale(true);
                    Step::Return(stale.payload)
                }
                // Only a stale value makes a caller try rather than wait.
                None => Step::WaitLock,
            },
            // Another caller's creation answered this one: a lock wait (counted by the
            // driver), not a miss.
            Locked::HandedOff(value) => {
                self.uncounted = false;
                Step::Return(value)
            }
            Locked::Failed(message) if self.rules.share_failures => {
                Step::Fail(Error::CreatorFailed {
                    region: self.signals.region.to_owned(),
                    key: self.key.to_owned(),
                    message,
                })
            }
            // Waits again: the lock is free now, so this caller takes it and creates.
            Locked::Failed(_) => Step::WaitLock,
            Locked::TimedOut(waited) if self.rules.fail_open => {
                warn_limited!(self.signals.warnings, WarningKind::LockUnavailable,
                    region = %self.signals.region, key = %self.key, ?waited,
                    "time budget spent waiting for the dogpile lock; creating without it");
                Step::Create
            }
            Locked::TimedOut(waited) => Step::Fail(Error::LockTimeout {
                region: self.signals.region.to_owned(),
                key: self.key.to_owned(),
                waited,
                in_runtime: false,
            }),
        }
    }

    fn create(&mut self) -> Step<T> {
        if self.rules.background {
            if let Some(stale) = self.stale.take() {
                if !self.rules.soft_timeout {
                    self.count_stale(true);
                }
                return Step::Background(stale.payload);
            }
        }
        self.count_stale(false);
        Step::Create
    }

    /// The caller that handed a stale value's regeneration to the background and waited
    /// for it (`soft_timeout`) answers with the new value (`fresh`: a lock wait, counted by
    /// the driver) or with the stale one.
    pub(crate) fn background_answered(&mut self, fresh: bool) {
        if fresh {
            self.uncounted = false;
        } else {
            self.count_stale(true);
        }
    }

    /// Whether a fresh value is due for an early refresh (XFetch): its remaining life is
    /// shorter than its creation time scaled by `beta` and by `-ln(u)` for a uniform `u`,
    /// which makes a refresh more likely the closer the value is to expiring.
    fn due_early(&self, value: &CachedValue<T>) -> bool {
        let beta = self.rules.early_refresh;
        let (Some(expiration), Some(took)) =
            (self.freshness.expiration, value.metadata.creation_time())
        else {
            return false;
        };
        if beta <= 0.0 {
            return false;
        }
        let u = 1.0 - crate::lock::distributed::unit_random(); // in (0, 1]
        let expires = value.metadata.ct + expiration.as_secs_f64();
        self.freshness.clock.now() - took * beta * u.ln() >= expires
    }

    /// The creator failed: the stale value to answer with instead, when `stale_if_error`
    /// allows it (it went stale no longer ago than the window); counted as stale served on error,
    /// the failure logged (rate-limited). `None`: the failure is the answer.
    pub(crate) fn creator_failed(
        &mut self,
        failure: &dyn std::fmt::Display,
    ) -> Option<CachedValue<T>> {
        if self.refreshing.is_some() {
            // An early refresh failed: the value is still fresh, and still the answer.
            warn_limited!(self.signals.warnings, WarningKind::StaleIfError,
                region = %self.signals.region, key = %self.key, error = %failure,
                "creator failed refreshing a value ahead of its expiry; keeping the fresh value");
            return self.stale.take();
        }
        let window = self.rules.stale_if_error?;
        let stale = self.stale.take()?;
        let stale_for = self.freshness.stale_for(stale.metadata.ct);
        if Duration::try_from_secs_f64(stale_for).is_ok_and(|stale_for| stale_for > window) {
            return None;
        }
        self.signals.stats.stale_served_on_error();
        warn_limited!(self.signals.warnings, WarningKind::StaleIfError,
            region = %self.signals.region, key = %self.key, error = %failure,
            "creator failed; serving the stale value (stale_if_error)");
        Some(stale)
    }

    /// Feeds what storing a created value came to; `value` is the created value.
    pub(crate) fn stored(&self, value: T, stored: Result<()>) -> Step<T> {
        match store_outcome(&self.signals, self.key, self.rules.fail_open, stored) {
            Ok(()) => Step::Return(value),
            Err(error) => Step::Fail(error),
        }
    }
}

/// The bookkeeping of a multi call: one [`Machine`] per distinct key, in key order, and the
/// lock handle (of the driver's kind `H`) each holds. Drivers batch the reads of every key
/// at [`Step::Read`] into one backend call, take the locks in key order, and create every
/// key at [`Step::Create`] with one creator call.
pub(crate) struct Batch<'a, T, H> {
    machines: Vec<Machine<'a, T>>,
    steps: Vec<Step<T>>,
    handles: Vec<Option<H>>,
}

/// A multi call once every key is settled: the values found, and the keys to create with
/// the lock handles held for them.
pub(crate) struct Settled<T, H> {
    /// One slot per key; `None` for the keys in `creating`.
    pub(crate) values: Vec<Option<T>>,
    /// The keys to create, as indices, with their lock handles.
    pub(crate) creating: Vec<(usize, Option<H>)>,
}

impl<'a, T, H> Batch<'a, T, H> {
    /// A batch over distinct `keys` (sorted, so that locks are taken in one order).
    pub(crate) fn new(
        signals: Signals<'a>,
        keys: &[&'a str],
        freshness: Freshness<'a>,
        rules: Rules,
    ) -> Self {
        Batch {
            machines: keys
                .iter()
                .map(|key| Machine::new(signals, key, freshness, rules))
                .collect(),
            steps: keys.iter().map(|_| Step::Read).collect(),
            handles: keys.iter().map(|_| None).collect(),
        }
    }

    /// The keys whose machines want a read.
    pub(crate) fn reads(&self) -> Vec<usize> {
        (0..self.steps.len())
            .filter(|&i| matches!(self.steps[i], Step::Read))
            .collect()
    }

    /// Feeds one batched read of the keys at `indices`: their values in order, or `None`
    /// when the read failed and the call fails open (see [`read_outcome`]).
    pub(crate) fn read(&mut self, indices: &[usize], values: Option<Vec<Option<CachedValue<T>>>>) {
        let mut values = values.map(Vec::into_iter);
        for &i in indices {
            let value = values.as_mut().and_then(Iterator::next).flatten();
            self.steps[i] = self.machines[i].read(Ok(value));
        }
    }

    /// The keys whose machines want the lock, in key order, and whether they wait for it.
    pub(crate) fn locks(&self) -> Vec<(usize, bool)> {
        (0..self.steps.len())
            .filter_map(|i| match self.steps[i] {
                Step::TryLock => Some((i, false)),
                Step::WaitLock => Some((i, true)),
                _ => None,
            })
            .collect()
    }

    /// Feeds what taking key `i`'s lock came to.
    pub(crate) fn locked(&mut self, i: usize, locked: Locked<T>, handle: Option<H>) {
        self.handles[i] = handle;
        self.steps[i] = self.machines[i].locked(locked);
    }

    /// Once no key wants a read or a lock: the values, and the keys to create. Keys that
    /// need no creation give their lock back here.
    ///
    /// # Errors
    /// The first key's failure; the whole call fails.
    pub(crate) fn settle(self) -> Result<Settled<T, H>> {
        let mut values = Vec::with_capacity(self.steps.len());
        let mut creating = Vec::new();
        for (i, (step, handle)) in self.steps.into_iter().zip(self.handles).enumerate() {
            match step {
                Step::Return(value) => values.push(Some(value)),
                Step::Create => {
                    creating.push((i, handle));
                    values.push(None);
                }
                Step::Fail(error) => return Err(error),
                Step::Read | Step::TryLock | Step::WaitLock | Step::Background(_) => {
                    unreachable!("a batch settles only when every key is settled")
                }
            }
        }
        Ok(Settled { values, creating })
    }
}

/// What waiting for the in-process lock came to, for a caller that wants a `T`: go on to
/// the distributed lock with the guard (`Ok`), or the lock step's outcome (`Err`: a value
/// or a creator's failure handed off, or the deadline). `None`: a value of another type was
/// handed off under this key; the caller waits again, and then takes the lock and reads
/// for itself.
pub(crate) fn local_outcome<T: Clone + 'static>(
    wait: LocalWait,
    budget: &mut Budget,
) -> Option<std::result::Result<KeyGuard, Locked<T>>> {
    match wait {
        LocalWait::Held(guard) => Some(Ok(guard)),
        LocalWait::HandedOff(handed) => {
            if let Some(value) = handed.downcast_ref::<CachedValue<T>>() {
                return Some(Err(Locked::HandedOff(value.payload.clone())));
            }
            handed
                .downcast_ref::<CreatorFailure>()
                .map(|failure| Err(Locked::Failed(failure.message.clone())))
        }
        LocalWait::TimedOut => Some(Err(Locked::TimedOut(budget.spent()))),
    }
}

/// When a caller's wait for a distributed lock ends: at its budget's deadline, or sooner
/// at the lock's own wait limit, counted from the start of the budget.
pub(crate) fn distributed_deadline(budget: &mut Budget, limit: Option<Duration>) -> Instant {
    let deadline = budget.deadline();
    match limit {
        Some(limit) => deadline.min(budget.started() + limit),
        None => deadline,
    }
}

/// Which locks a caller keeps after trying the distributed one.
pub(crate) enum Keep {
    /// Both locks.
    Both,
    /// The in-process lock only (the distributed lock failed).
    LocalOnly,
    /// Neither.
    Neither,
}

/// What trying (or waiting for) the distributed lock came to.
pub(crate) fn distributed_outcome<T>(
    acquired: Result<bool>,
    wait: bool,
    budget: &mut Budget,
) -> (Locked<T>, Keep) {
    match acquired {
        Ok(true) => (Locked::Held, Keep::Both),
        Ok(false) if wait => (Locked::TimedOut(budget.spent()), Keep::Neither),
        Ok(false) => (Locked::Busy, Keep::Neither),
        Err(error) => (Locked::DistributedFailed(error), Keep::LocalOnly),
    }
}

/// What a failed read means: an error, or (failing open) a logged warning and a miss
/// (`Ok(None)`).
#[inline]
pub(crate) fn read_outcome<V>(
    signals: &Signals<'_>,
    key: &str,
    fail_open: bool,
    read: Result<V>,
) -> Result<Option<V>> {
    match read {
        Ok(value) => Ok(Some(value)),
        Err(error) => {
            let warning = (
                WarningKind::ReadFailed,
                "cache read failed; treating it as a miss",
            );
            failed(signals, key, fail_open, error, warning).map(|()| None)
        }
    }
}

/// What a failed store means: an error, or (failing open, or in the background where
/// nobody is left to tell) a logged warning.
pub(crate) fn store_outcome(
    signals: &Signals<'_>,
    key: &str,
    fail_open: bool,
    stored: Result<()>,
) -> Result<()> {
    match stored {
        Ok(()) => Ok(()),
        Err(error) => {
            let warning = (
                WarningKind::WriteFailed,
                "cache write failed; returning the value uncached",
            );
            failed(signals, key, fail_open, error, warning)
        }
    }
}

/// A failed read or store: counted, then the error, or failing open the `warning` (its
/// kind and what the failure means) logged. Off the hit path, and not generic.
#[cold]
fn failed(
    signals: &Signals<'_>,
    key: &str,
    fail_open: bool,
    error: Error,
    (kind, consequence): (WarningKind, &'static str),
) -> Result<()> {
    signals.failed(&error);
    if !fail_open {
        return Err(error);
    }
    warn_limited!(signals.warnings, kind,
        region = %signals.region, key = %key, %error, "{consequence}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn rules(serve_stale: bool, fail_open: bool, background: bool) -> Rules {
        Rules {
            serve_stale,
            fail_open,
            background,
            soft_timeout: false,
            lock: true,
            share_failures: true,
            stale_if_error: None,
            early_refresh: 0.0,
        }
    }

    fn machine<'a>(clock: &'a ManualClock, rules: Rules) -> Machine<'a, u32> {
        use std::sync::OnceLock;
        static STATS: OnceLock<StatsRecorder> = OnceLock::new();
        static WARNINGS: OnceLock<RegionWarnings> = OnceLock::new();
        let signals = Signals {
            region: "r",
            stats: STATS.get_or_init(|| StatsRecorder::new("r")),
            warnings: WARNINGS.get_or_init(RegionWarnings::default),
        };
        let freshness = Freshness {
            clock,
            expiration: Some(Duration::from_secs(10)),
            invalidated: None,
        };
        Machine::new(signals, "k", freshness, rules)
    }

    fn value(ct: f64, v: u32) -> Result<Option<CachedValue<u32>>> {
        Ok(Some(CachedValue::new(v, ct)))
    }

    #[test]
    fn fresh_returns_without_a_lock() {
        let clock = ManualClock::new(100.0);
        let mut m = machine(&clock, rules(true, false, false));
        assert!(matches!(m.read(value(95.0, 1)), Step::Return(1)));
    }

    #[test]
    fn stale_tries_the_lock_and_serves_stale_when_busy() {
        let clock = ManualClock::new(100.0);
        let mut m = machine(&clock, rules(true, false, false));
        assert!(matches!(m.read(value(50.0, 1)), Step::TryLock));
        assert!(matches!(m.locked(Locked::Busy), Step::Return(1)));
    }

    #[test]
    fn winner_on_stale_rereads_then_creates_or_returns_what_another_made() {
        let clock = ManualClock::new(100.0);
        let mut m = machine(&clock, rules(true, false, false));
        m.read(value(50.0, 1));
        assert!(matches!(m.locked(Locked::Held), Step::Read));
        assert!(matches!(m.read(value(50.0, 1)), Step::Create));

        let mut m = machine(&clock, rules(true, false, false));
        m.read(value(50.0, 1));
        m.locked(Locked::Held);
        assert!(matches!(m.read(value(99.0, 2)), Step::Return(2)));
    }

    #[test]
    fn missing_waits_and_a_hand_off_is_the_answer() {
        let clock = ManualClock::new(100.0);
        let mut m = machine(&clock, rules(true, false, false));
        assert!(matches!(m.read(Ok(None)), Step::WaitLock));
        assert!(matches!(m.locked(Locked::HandedOff(3)), Step::Return(3)));
    }

    #[test]
    fn a_handed_failure_fails_the_waiter_or_sends_it_back_to_the_lock() {
        let clock = ManualClock::new(100.0);
        let mut m = machine(&clock, rules(true, false, false));
        assert!(matches!(m.read(Ok(None)), Step::WaitLock));
        match m.locked(Locked::Failed("db down".into())) {
            Step::Fail(Error::CreatorFailed {
                region,
                key,
                message,
            }) => assert_eq!((&*region, &*key, &*message), ("r", "k", "db down")),
            _ => panic!("expected CreatorFailed"),
        }
        let mut m = machine(
            &clock,
            Rules {
                share_failures: false,
                ..rules(true, false, false)
            },
        );
        m.read(Ok(None));
        assert!(matches!(
            m.locked(Locked::Failed("db down".into())),
            Step::WaitLock
        ));
        assert!(matches!(m.locked(Locked::Held), Step::Read));
        assert!(matches!(m.read(Ok(None)), Step::Create));
    }

    #[test]
    fn without_serve_stale_a_stale_value_waits() {
        let clock = ManualClock::new(100.0);
        let mut m = machine(&clock, rules(false, false, false));
        assert!(matches!(m.read(value(50.0, 1)), Step::WaitLock));
    }

    #[test]
    fn a_timeout_fails_or_creates_when_failing_open() {
        let clock = ManualClock::new(100.0);
        let mut m = machine(&clock, rules(true, false, false));
        m.read(Ok(None));
        match m.locked(Locked::TimedOut(Duration::from_secs(1))) {
            Step::Fail(Error::LockTimeout { region, key, .. }) => {
                assert_eq!((region.as_str(), key.as_str()), ("r", "k"));
            }
            _ => panic!("expected a LockTimeout"),
        }
        let mut m = machine(&clock, rules(true, true, false));
        m.read(Ok(None));
        assert!(matches!(
            m.locked(Locked::TimedOut(Duration::from_secs(1))),
            Step::Create
        ));
    }

    #[test]
    fn backend_errors_fail_or_are_misses_when_failing_open() {
        let clock = ManualClock::new(100.0);
        let down = || Err(Error::backend("b", "down"));
        let mut m = machine(&clock, rules(true, false, false));
        assert!(matches!(m.read(down()), Step::Fail(_)));
        let mut m = machine(&clock, rules(true, true, false));
        assert!(matches!(m.read(down()), Step::WaitLock));
        assert!(matches!(
            m.locked(Locked::DistributedFailed(Error::backend("b", "down"))),
            Step::Create
        ));
        assert!(matches!(
            m.stored(4, Err(Error::backend("b", "down"))),
            Step::Return(4)
        ));
        let m = machine(&clock, rules(true, false, false));
        assert!(matches!(
            m.stored(4, Err(Error::backend("b", "down"))),
            Step::Fail(_)
        ));
    }

    #[test]
    fn background_rule_applies_to_a_stale_winner_only() {
        let clock = ManualClock::new(100.0);
        let mut m = machine(&clock, rules(true, false, true));
        m.read(value(50.0, 1));
        m.locked(Locked::Held);
        assert!(matches!(m.read(value(50.0, 1)), Step::Background(1)));
        let mut m = machine(&clock, rules(true, false, true));
        m.read(Ok(None));
        m.locked(Locked::Held);
        assert!(matches!(m.read(Ok(None)), Step::Create));
    }
}
