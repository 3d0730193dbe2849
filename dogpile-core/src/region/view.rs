//! Each thread's view of the configurations in force, for the fresh-hit path.
//!
//! A fresh hit on a memory region costs little more than the map's own read, and loading
//! the region's configuration through `arc_swap` (two atomic read-modify-writes, about
//! 13 ns) was a fifth of it. So a thread keeps the configurations it reads in a few slots
//! of its own, each under the configuration's id, and a hit compares the region's current
//! id with its slots: two loads of memory no one writes while the configuration stands,
//! and no reference count moved.
//!
//! - **Ids** are given once per process ([`next_id`]), never reused, so a slot holding id
//!   `n` holds the configuration the region published as `n`, whichever region it was.
//! - **Only configurations that hold nothing but memory** are kept here (a backend that
//!   never blocks, such as `memory`, and no shared-invalidation thread): the region
//!   publishes id 0 for the others, and their hits take the ordinary path.
//! - **Letting go.** A configuration replaced, or its region dropped, calls [`retire`];
//!   every thread empties its slots at its next read of any region. A thread that never
//!   reads a region again keeps what it held (at most [`SLOTS`] configurations, with
//!   their stores) until it ends.
//! - **A thread that ends** hands what it kept to a shared list, which the next thread
//!   to find a configuration empties: dropping the last handle of a configuration drops
//!   its store, and a store's drop may need thread-locals of its own (papaya's
//!   reclamation does), which an ending thread may already have destroyed.
//! - **Re-entrance.** A read lends the configuration to code that may run user code (a
//!   value's `Clone`); a read begun inside it takes the ordinary path, so no slot is
//!   replaced while lent.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::region::state::{Configured, RegionState};

/// Configurations a thread keeps at most.
const SLOTS: usize = 4;

/// The next configuration id; 0 means "none to keep".
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Bumped each time a kept configuration may have been replaced or dropped.
static RETIRED: AtomicU64 = AtomicU64::new(0);

/// What ended threads kept, to drop on a thread that is not ending.
static LEFT: Mutex<Vec<Arc<Configured>>> = Mutex::new(Vec::new());

/// A new configuration id, unique in this process.
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Tells every thread to let go of the configurations it keeps (at its next read).
pub(crate) fn retire() {
    RETIRED.fetch_add(1, Ordering::Relaxed);
}

/// A kept configuration, under its id.
type Slot = Option<(u64, Arc<Configured>)>;

/// One thread's kept configurations.
struct View {
    /// [`RETIRED`] when the slots were last emptied.
    retired: Cell<u64>,
    /// A configuration is lent (see the module docs, re-entrance).
    lent: Cell<bool>,
    /// Where the next configuration goes.
    next: Cell<usize>,
    /// Only touched by this thread, never while `lent`.
    slots: UnsafeCell<[Slot; SLOTS]>,
}

thread_local! {
    static VIEW: View = const {
        View {
            retired: Cell::new(0),
            lent: Cell::new(false),
            next: Cell::new(0),
            slots: UnsafeCell::new([const { None }; SLOTS]),
        }
    };
}

impl Drop for View {
    fn drop(&mut self) {
        let kept: Vec<_> = self
            .slots
            .get_mut()
            .iter_mut()
            .flat_map(Option::take)
            .collect();
        if !kept.is_empty() {
            let mut left = LEFT.lock().unwrap_or_else(PoisonError::into_inner);
            left.extend(kept.into_iter().map(|(_, cfg)| cfg));
        }
    }
}

/// Drops what ended threads kept (see the module docs).
fn drop_left() {
    let left = std::mem::take(&mut *LEFT.lock().unwrap_or_else(PoisonError::into_inner));
    drop(left);
}

/// Clears `lent` when the lending ends, a panic included.
struct Lending<'v>(&'v Cell<bool>);

impl Drop for Lending<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Runs `f` with the configuration in force in `region`, found in this thread's slots or,
/// the first time, loaded from the region and kept: no shared memory written on a hit.
/// `None` (and `f` not run) when the region publishes nothing to keep, inside another
/// lending, or while the thread ends: the caller takes the ordinary path.
#[inline]
pub(crate) fn with_kept<R>(region: &RegionState, f: impl FnOnce(&Configured) -> R) -> Option<R> {
    let id = region.view_id.load(Ordering::Acquire);
    if id == 0 {
        return None;
    }
    VIEW.try_with(|view| {
        if view.lent.get() {
            return None;
        }
        let _lending = Lending(&view.lent);
        view.lent.set(true);
        // Safety: only this thread touches its slots, and not while a configuration is
        // lent (checked above), so this is the only reference to them.
        let slots = unsafe { &mut *view.slots.get() };
        let retired = RETIRED.load(Ordering::Relaxed);
        if retired != view.retired.get() {
            *slots = [const { None }; SLOTS];
            view.retired.set(retired);
        }
        let cfg = match slots.iter().flatten().find(|(kept, _)| *kept == id) {
            Some((_, cfg)) => cfg,
            None => {
                drop_left();
                // The one in force now, which may be newer than `id`: kept under its own.
                let cfg = region
                    .configured
                    .load_full()
                    .filter(|cfg| cfg.view_id != 0)?;
                let at = view.next.get();
                view.next.set((at + 1) % SLOTS);
                &slots[at].insert((cfg.view_id, cfg)).1
            }
        };
        Some(f(cfg))
    })
    .ok()
    .flatten()
}
