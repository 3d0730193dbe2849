//! Every operation a region offers, written once, generic over the driver's [`Io`]: the
//! blocking face (`blocking.rs`) runs each with `block_on`, the async face (`nonblocking.rs`)
//! awaits it. A behaviour added here (a rule, a count, a refusal) reaches both faces.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::clock::Clock;
use crate::engine::block_on::block_on;
use crate::engine::driver::{self, CreateError, Creator, CreatorError, Io, Told};
use crate::engine::machine::{Lookup, Signals};
use crate::error::{Error, Result};
use crate::region::failures::Failures;
use crate::region::io::BlockingIo;
use crate::region::options::{CreateOptions, Expiration};
use crate::region::state::{entry_of, Configured, RegionState};
use crate::region::view;
use crate::stats::StatsRecorder;
use crate::value::{Cacheable, CachedValue, Entry};
use crate::warnings::RegionWarnings;

pin_project_lite::pin_project! {
    /// What an operation comes to: its answer at once (a fresh hit on a store that never
    /// blocks: no future is built), or the future of the whole operation. The blocking
    /// face [`block`](Flow::block)s on it; the async face awaits it (it is a future).
    #[project = FlowProj]
    #[allow(missing_docs)] // the fields, which the variants' docs name
    pub enum Flow<R, Fut> {
        /// Answered: the answer, taken when polled.
        Done { answer: Option<R> },
        /// Still to run: the whole operation.
        Pending { #[pin] future: Fut },
    }
}

impl<R, Fut> Flow<R, Fut> {
    /// Answered at once.
    #[inline(always)]
    pub(crate) fn done(answer: R) -> Self {
        Flow::Done {
            answer: Some(answer),
        }
    }

    /// The whole operation, to run.
    #[inline]
    pub(crate) fn pending(future: Fut) -> Self {
        Flow::Pending { future }
    }
}

impl<R, Fut: Future<Output = R>> Flow<R, Fut> {
    /// The answer, on the blocking face: the future is run on this thread.
    #[inline(always)]
    pub fn block(self) -> R {
        match self {
            Flow::Done { answer } => answer.expect("a Flow is blocked on once"),
            Flow::Pending { future } => block_on(future),
        }
    }
}

impl<R, Fut: Future<Output = R>> Future for Flow<R, Fut> {
    type Output = R;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        match self.project() {
            FlowProj::Done { answer } => Poll::Ready(
                answer
                    .take()
                    .expect("a Flow is not polled after it answered"),
            ),
            FlowProj::Pending { future } => future.poll(cx),
        }
    }
}

/// The value under `key` with its metadata, or `None` when absent, expired or invalidated
/// (unless `ignore_expiration`); counted as a hit or a miss.
pub(crate) async fn get<IO: Io, T: Cacheable>(
    region: &RegionState,
    key: &str,
    expiration: Option<Expiration>,
    ignore_expiration: bool,
) -> Result<Option<CachedValue<T>>> {
    let cfg = IO::configured(region)?;
    let key = region.backend_key(&cfg, key)?;
    let value = region.counted(IO::read(region, &cfg, &key).await)?;
    let value = if ignore_expiration {
        value
    } else {
        match region.freshness(&cfg, expiration).judge(value) {
            Lookup::Fresh(value) => Some(value),
            Lookup::Stale(_) | Lookup::Missing => None,
        }
    };
    region.count_lookup(&value);
    Ok(value)
}

/// The values of many keys, in order, read in one backend call.
pub(crate) async fn get_multi<IO: Io, T: Cacheable, K: AsRef<str>>(
    region: &RegionState,
    keys: &[K],
) -> Result<Vec<Option<T>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let cfg = IO::configured(region)?;
    let mangled = region.backend_keys(&cfg, keys)?;
    let refs: Vec<&str> = mangled.iter().map(|k| &**k).collect();
    let values = region.counted(IO::read_multi(region, &cfg, &refs).await)?;
    let freshness = region.freshness(&cfg, None);
    Ok(values
        .into_iter()
        .map(|value| {
            let value = match freshness.judge(value) {
                Lookup::Fresh(value) => Some(value.payload),
                Lookup::Stale(_) | Lookup::Missing => None,
            };
            region.count_lookup(&value);
            value
        })
        .collect())
}

/// Stores `value` under `key`, created now.
pub(crate) async fn set<IO: Io, T: Cacheable>(
    region: &RegionState,
    key: &str,
    value: &T,
) -> Result<()> {
    // A store that never blocks, kept in this thread's view: stored at once.
    let kept = |cfg: &Configured| {
        let key = region.backend_key(cfg, key)?;
        let entry = entry_of(cfg, &key, value, region.clock.now())?;
        region.counted(cfg.backend.set_entry(&key, entry))
    };
    if let Some(stored) = view::with_kept(region, kept) {
        return stored;
    }
    let cfg = IO::configured(region)?;
    let key = region.backend_key(&cfg, key)?;
    let entry = entry_of(&cfg, &key, value, region.clock.now())?;
    region.counted(IO::set(&cfg, &key, entry).await)
}

/// Stores many values in one backend call.
pub(crate) async fn set_multi<IO: Io, T: Cacheable, K: AsRef<str>>(
    region: &RegionState,
    items: &[(K, T)],
) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let cfg = IO::configured(region)?;
    let now = region.clock.now();
    let mangled = items
        .iter()
        .map(|(k, _)| region.backend_key(&cfg, k.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    let entries = mangled
        .iter()
        .zip(items)
        .map(|(key, (_, value))| Ok((&**key, entry_of(&cfg, key, value, now)?)))
        .collect::<Result<Vec<_>>>()?;
    region.counted(IO::set_multi(&cfg, entries).await)
}

/// Removes `key`.
pub(crate) async fn delete<IO: Io>(region: &RegionState, key: &str) -> Result<()> {
    let cfg = IO::configured(region)?;
    let key = region.backend_key(&cfg, key)?;
    region.counted(IO::delete(&cfg, &key).await)
}

/// Removes many keys in one backend call.
pub(crate) async fn delete_multi<IO: Io, K: AsRef<str>>(
    region: &RegionState,
    keys: &[K],
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let cfg = IO::configured(region)?;
    let mangled = region.backend_keys(&cfg, keys)?;
    let refs: Vec<&str> = mangled.iter().map(|k| &**k).collect();
    region.counted(IO::delete_multi(&cfg, &refs).await)
}

/// A fresh hit on a backend that never blocks (memory), served at once: the common case of
/// `get_or_create`, on either face, with no future built. `None`: anything else (a miss, a
/// stale value, an error, a backend that may block), which the whole operation handles.
///
/// The configuration comes from this thread's view (`view.rs`) when it keeps it, else from
/// the region.
#[inline(always)]
pub(crate) fn fresh_hit<T: Cacheable>(
    region: &RegionState,
    key: &str,
    expiration: Option<Expiration>,
) -> Option<T> {
    if let Some(answer) = view::with_kept(region, |cfg| fresh_hit_in(region, cfg, key, expiration))
    {
        return answer;
    }
    let cfg = region.configured().ok()?;
    if !cfg.fresh_hits {
        return None;
    }
    fresh_hit_in(region, &cfg, key, expiration)
}

/// [`fresh_hit`] under the configuration `cfg` (one with `fresh_hits`). A typed value is
/// judged where the store lends it, and only its payload is cloned.
#[inline(always)]
fn fresh_hit_in<T: Cacheable>(
    region: &RegionState,
    cfg: &Configured,
    key: &str,
    expiration: Option<Expiration>,
) -> Option<T> {
    // The backend key, without building a `Result` around it (this path's most costly
    // copy); a key that `backend_key` refuses is the whole operation's to refuse.
    let key = region.mangle(key);
    if cfg.is_lock_key(&key) {
        return None;
    }
    let freshness = region.freshness(cfg, expiration);
    let payload = if cfg.stores_objects {
        let mut payload = None;
        cfg.backend
            .get_with(&key, &mut |entry| {
                if let Some(Entry::Object(object)) = entry {
                    // Another type, or a stale value: the whole operation's business.
                    if let Some(value) = object.downcast_ref::<CachedValue<T>>() {
                        if freshness.is_fresh(value.metadata.ct) {
                            payload = Some(value.payload.clone());
                        }
                    }
                }
            })
            .ok()?;
        payload?
    } else {
        let value = BlockingIo::read_now(region, cfg, &key).ok()??;
        match freshness.judge(Some(value)) {
            Lookup::Fresh(value) => value.payload,
            Lookup::Stale(_) | Lookup::Missing => return None,
        }
    };
    region.stats.hit();
    Some(payload)
}

/// No background rule: the caller always creates.
pub(crate) type NoDetach<IO, F> = fn(&<IO as Io>::Cfg, &str, F, Option<<IO as Io>::Handle>);

/// `get_or_create`: the [driver](driver::drive), which steps the engine's machine.
pub(crate) use driver::drive as get_or_create;

/// `try_get_or_create` past the fresh hit (each face answers that first, with
/// [`fresh_hit`], before it builds this future): the whole operation. The creator's error
/// is the caller's, and so is the cache's, through `From`.
pub(crate) async fn try_get_or_create<IO, T, E, F>(
    region: &RegionState,
    key: &str,
    options: CreateOptions<'_, T>,
    creator: F,
) -> std::result::Result<T, E>
where
    IO: Io,
    T: Cacheable,
    E: From<Error> + std::fmt::Display,
    F: Creator<T, E>,
{
    // Its error wrapped as one whose text the waiters are handed: the callers that
    // waited for a creator that failed get [`Error::CreatorFailed`], through `From`.
    let creator = move || {
        let creating = creator();
        async move { creating.await.map_err(Told) }
    };
    let (mut creator, detach) = (Some(creator), None::<NoDetach<IO, _>>);
    let call = get_or_create::<IO, T, _, _, _>(region, key, &options, &mut creator, false, detach);
    call.await.map_err(CreateError::into_caller)
}

/// `get_or_create_multi`: one machine per distinct key (see the
/// [driver](driver::drive_multi)).
pub(crate) use driver::drive_multi as get_or_create_multi;

/// What a background regeneration takes along: owned, so that it outlives the call that
/// handed it over.
pub(crate) struct Detached {
    name: String,
    stats: Arc<StatsRecorder>,
    warnings: Arc<RegionWarnings>,
    clock: Arc<dyn Clock>,
    failures: Arc<Failures>,
    cfg: Arc<Configured>,
    key: String,
}

impl Detached {
    pub(crate) fn new(region: &RegionState, cfg: Arc<Configured>, key: &str) -> Self {
        Detached {
            name: region.name.to_string(),
            stats: region.stats.clone(),
            warnings: region.warnings.clone(),
            clock: region.clock.clone(),
            failures: region.failures.clone(),
            cfg,
            key: key.to_owned(),
        }
    }

    /// Runs the creator, stores its value, hands it to the waiters and releases the lock.
    pub(crate) async fn regenerate<IO: Io, T: Cacheable, X: CreatorError, Fut>(
        self,
        creator: impl FnOnce() -> Fut,
        handle: Option<IO::Handle>,
    ) where
        Fut: Future<Output = std::result::Result<T, X>>,
    {
        let signals = Signals {
            region: &self.name,
            stats: &self.stats,
            warnings: &self.warnings,
        };
        driver::regenerate::<IO, T, X, Fut>(
            signals,
            &*self.clock,
            &self.failures,
            &self.cfg,
            &self.key,
            creator,
            handle,
        )
        .await;
    }
}
