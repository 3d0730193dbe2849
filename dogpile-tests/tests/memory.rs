//! The memory backends: the conformance suite for each configuration, and the bound of a
//! bounded store under load.

#[macro_use]
mod conformance;

use std::sync::Barrier;
use std::thread;

use dogpile::backend::{CacheBackend, Entry};
use dogpile::{CacheRegion, MemoryBackend, RegionConfig};

mod memory {
    use super::*;
    conformance_suite!(stores = true, config = || RegionConfig::new("memory"));
}

/// The suite through the region's async methods.
#[cfg(feature = "tokio")]
mod memory_async {
    use super::*;
    conformance_suite!(
        async,
        stores = true,
        config = || RegionConfig::new("memory")
    );
}

mod memory_bounded {
    use super::*;
    conformance_suite!(
        stores = true,
        config = || RegionConfig::new("dogpile.cache.memory").argument("max_entries", 100_000)
    );
}

mod memory_serialized {
    use super::*;
    conformance_suite!(
        stores = true,
        config = || RegionConfig::new("memory_serialized")
    );
}

mod memory_pickle_max_bytes {
    use super::*;
    conformance_suite!(
        stores = true,
        config = || RegionConfig::new("dogpile.cache.memory_pickle")
            .argument("max_bytes", 64 * 1024 * 1024)
    );
}

const THREADS: usize = 16;
const KEYS_PER_THREAD: usize = 2_000;

/// Writes `KEYS_PER_THREAD` distinct keys from each of `THREADS` threads through `region`,
/// checking `within_bound` on `backend` from a monitor thread all along.
fn load(
    region: &CacheRegion,
    backend: &MemoryBackend,
    within_bound: impl Fn(&MemoryBackend) + Sync,
) {
    let barrier = Barrier::new(THREADS + 1);
    let done = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..KEYS_PER_THREAD {
                        region
                            .set(&format!("t{t}:k{i}"), &vec![t as u8; 100])
                            .unwrap();
                        if i % 7 == 0 {
                            // Reads too, so that the policy sees some keys used more.
                            let _ = region.get::<Vec<u8>>(&format!("t{t}:k{}", i / 2)).unwrap();
                        }
                    }
                })
            })
            .collect();
        let monitor = s.spawn(|| {
            barrier.wait();
            let mut samples = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                within_bound(backend);
                samples += 1;
            }
            samples
        });
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(monitor.join().unwrap() > 0, "the monitor sampled the size");
    });
    within_bound(backend);
}

/// How many of the keys `load` wrote can still be read.
fn readable(region: &CacheRegion) -> usize {
    (0..THREADS)
        .flat_map(|t| (0..KEYS_PER_THREAD).map(move |i| format!("t{t}:k{i}")))
        .filter(|k| region.get::<Vec<u8>>(k).unwrap().is_some())
        .count()
}

#[test]
fn bounded_memory_region_evicts_and_stays_within_max_entries_under_load() {
    const MAX: u64 = 500;
    let backend = MemoryBackend::bounded(MAX).unwrap();
    let region = CacheRegion::new();
    region.configure_backend(backend.clone(), None).unwrap();

    load(&region, &backend, |b| {
        let count = b.entry_count();
        assert!(count <= MAX, "{count} entries in a store bounded to {MAX}");
    });

    let count = backend.entry_count();
    assert!(count > 0, "the store holds something");
    let readable = readable(&region);
    assert!(
        readable as u64 <= MAX,
        "{readable} of {} keys still readable in a store bounded to {MAX}",
        THREADS * KEYS_PER_THREAD
    );
    assert!(readable > 0);
}

#[test]
fn bounded_by_bytes_memory_region_stays_within_max_bytes_under_load() {
    const MAX_BYTES: u64 = 64 * 1024;
    let region = CacheRegion::new();
    region
        .configure(RegionConfig::new("memory_serialized").argument("max_bytes", MAX_BYTES))
        .unwrap();
    // The region owns its backend; a second backend value built the same way through the
    // trait shows the same bound (the region test above covers the region path).
    let args = dogpile::backend::Arguments::new(
        "memory_serialized",
        [("max_bytes", MAX_BYTES.to_string())],
    );
    let backend = MemoryBackend::serialized_from_arguments(&args).unwrap();
    let direct = CacheRegion::new();
    direct.configure_backend(backend.clone(), None).unwrap();

    load(&direct, &backend, |b| {
        let bytes = b.weighted_size();
        assert!(
            bytes <= MAX_BYTES,
            "{bytes} bytes in a store bounded to {MAX_BYTES}"
        );
    });
    assert!(
        backend.weighted_size() > MAX_BYTES / 2,
        "the store is in use"
    );
    let entries = backend.entry_count();
    // Each entry weighs at least its ~100-byte payload.
    assert!(
        entries * 100 <= MAX_BYTES,
        "{entries} entries cannot fit in {MAX_BYTES} bytes"
    );

    // The configured-by-name region honours the same bound.
    for i in 0..5_000 {
        region.set(&format!("k{i}"), &vec![1u8; 100]).unwrap();
    }
    let readable = (0..5_000)
        .filter(|i| region.get::<Vec<u8>>(&format!("k{i}")).unwrap().is_some())
        .count();
    assert!(
        readable * 100 <= MAX_BYTES as usize,
        "{readable} values of 100 bytes readable in a store of {MAX_BYTES} bytes"
    );
}

#[test]
fn bounded_memory_backend_stays_within_bound_through_the_backend_trait() {
    const MAX: u64 = 256;
    let backend = MemoryBackend::bounded(MAX).unwrap();
    let barrier = Barrier::new(THREADS);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (backend, barrier) = (&backend, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..KEYS_PER_THREAD {
                    CacheBackend::set_entry(backend, &format!("{t}/{i}"), Entry::Bytes(vec![1]))
                        .unwrap();
                    if i % 100 == 0 {
                        let count = backend.entry_count();
                        assert!(count <= MAX, "{count} entries in a store bounded to {MAX}");
                    }
                }
            });
        }
    });
    let count = backend.entry_count();
    assert!(count <= MAX && count > 0, "{count}");
}

#[test]
fn unbounded_memory_keeps_everything_and_clones_share_the_store() {
    let backend = MemoryBackend::new();
    let region = CacheRegion::new();
    region.configure_backend(backend.clone(), None).unwrap();
    for i in 0..3_000 {
        region.set(&format!("k{i}"), &i).unwrap();
    }
    assert_eq!(backend.entry_count(), 3_000);
    region.delete_multi(&["k0", "k1", "k2"]).unwrap();
    assert_eq!(backend.entry_count(), 2_997);
    assert_eq!(region.get::<i32>("k3").unwrap(), Some(3));
}

#[test]
fn memory_arguments_are_checked() {
    let cases = [
        (
            RegionConfig::new("memory").argument("max_entries", 0),
            "max_entries",
            "at least 1",
        ),
        (
            RegionConfig::new("memory").argument("max_entries", "many"),
            "max_entries",
            "many",
        ),
        (
            RegionConfig::new("memory").argument("max_bytes", 10),
            "max_bytes",
            "memory_serialized",
        ),
        (
            RegionConfig::new("memory").argument("cache_dict", "x"),
            "cache_dict",
            "unknown",
        ),
        (
            RegionConfig::new("memory_serialized").argument("max_bytes", 0),
            "max_bytes",
            "at least 1",
        ),
        (
            RegionConfig::new("memory_serialized")
                .argument("max_bytes", 10)
                .argument("max_entries", 10),
            "max_bytes",
            "not both",
        ),
    ];
    for (config, argument, reason) in cases {
        let err = CacheRegion::new().configure(config).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, dogpile::Error::InvalidArgument { argument: a, .. } if a == argument)
                && message.contains(reason),
            "{message}"
        );
    }
}

#[test]
fn memory_serialized_rejects_values_that_cannot_be_serialized() {
    // A value whose Serialize fails, standing in for one msgpack cannot encode.
    #[derive(Clone, serde::Deserialize)]
    struct Refuses;
    impl serde::Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refuses"))
        }
    }
    let typed = CacheRegion::new();
    typed.configure(RegionConfig::new("memory")).unwrap();
    typed.set("k", &Refuses).unwrap(); // typed memory never serializes

    let serialized = CacheRegion::new();
    serialized
        .configure(RegionConfig::new("memory_pickle"))
        .unwrap();
    let err = serialized.set("k", &Refuses).unwrap_err();
    assert!(matches!(err, dogpile::Error::Serialization { .. }), "{err}");
}

#[test]
fn a_full_bounded_store_still_runs_one_creator_per_missing_key() {
    // TinyLFU admits a new key only if it is asked for more often than the key it would
    // evict. A key many callers wait for is, so the value they wait for stays readable
    // and they do not create it again.
    let backend = MemoryBackend::bounded(50).unwrap();
    let region = CacheRegion::new();
    region.configure_backend(backend.clone(), None).unwrap();
    for round in 0..50 {
        // Keep the store full, with some keys hotter than others.
        for i in 0..200 {
            region.set(&format!("filler{i}"), &i).unwrap();
            let _ = region.get::<i32>(&format!("filler{}", i % 20)).unwrap();
        }
        let key = format!("k{round}");
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let barrier = Barrier::new(16);
        thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    barrier.wait();
                    let v = region
                        .get_or_create(&key, || {
                            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            thread::sleep(std::time::Duration::from_millis(2));
                            round
                        })
                        .unwrap();
                    assert_eq!(v, round);
                });
            }
        });
        let calls = calls.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(calls, 1, "round {round}: the creator ran {calls} times");
        assert!(backend.entry_count() <= 50);
    }
}

#[test]
fn an_unbounded_hit_lends_the_stored_entry_without_touching_its_reference_count() {
    use std::sync::Arc;
    let backend = MemoryBackend::new();
    let object: Arc<dyn std::any::Any + Send + Sync> = Arc::new(7u32);
    backend
        .set_entry("k", Entry::Object(object.clone()))
        .unwrap();
    let mut seen = None;
    backend
        .get_with("k", &mut |entry| {
            seen = match entry {
                // Ours and the store's: the lend made no third handle.
                Some(Entry::Object(lent)) => {
                    Some((Arc::ptr_eq(lent, &object), Arc::strong_count(&object)))
                }
                _ => None,
            }
        })
        .unwrap();
    assert_eq!(seen, Some((true, 2)));
    let mut missing = true;
    backend
        .get_with("absent", &mut |entry| missing = entry.is_none())
        .unwrap();
    assert!(missing);
}

/// A new memory store holding `value` under `k`.
fn holding(value: u64) -> MemoryBackend {
    let store = MemoryBackend::new();
    let stage = CacheRegion::new();
    stage.configure_backend(store.clone(), None).unwrap();
    stage.set("k", &value).unwrap();
    store
}

/// A fresh hit reads the configuration from the calling thread's view of it (see
/// `dogpile-core/src/region/view.rs`): a configuration replaced between two reads is
/// never read again, on any thread, once `configure` has returned.
#[test]
fn every_thread_reads_a_replaced_configuration_at_its_next_read() {
    const THREADS: usize = 8;
    let region = CacheRegion::new();
    let step = Barrier::new(THREADS + 1);
    // Wrong reads, asserted on after the threads end (a thread that panicked would leave
    // the others waiting at the barrier).
    let wrong = std::sync::Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for round in 0..50u64 {
                    // Kept in this thread's view by this read...
                    step.wait();
                    let seen: u64 = region.get_or_create("k", || u64::MAX).unwrap();
                    if seen != round {
                        wrong.lock().unwrap().push((round, "before", seen));
                    }
                    step.wait();
                    // ... and replaced by the main thread in between.
                    step.wait();
                    let seen: u64 = region.get_or_create("k", || u64::MAX).unwrap();
                    if seen != round + 1000 {
                        wrong.lock().unwrap().push((round, "after", seen));
                    }
                    step.wait();
                }
            });
        }
        for round in 0..50u64 {
            let (before, after) = (holding(round), holding(round + 1000));
            region
                .configure(RegionConfig::with_backend(before).replace_existing_backend(true))
                .unwrap();
            step.wait();
            step.wait();
            region
                .configure(RegionConfig::with_backend(after).replace_existing_backend(true))
                .unwrap();
            step.wait();
            step.wait();
        }
    });
    let wrong = wrong.into_inner().unwrap();
    assert!(wrong.is_empty(), "(round, read, value): {wrong:?}");
}

/// A store that counts its live handles, to see when the last one goes.
struct Counted {
    store: MemoryBackend,
    /// Held, never read: its count is what the test looks at.
    _alive: std::sync::Arc<()>,
}

impl CacheBackend for Counted {
    fn get(&self, key: &str) -> dogpile::Result<Option<Vec<u8>>> {
        self.store.get(key)
    }
    fn set(&self, key: &str, value: Vec<u8>) -> dogpile::Result<()> {
        self.store.set(key, value)
    }
    fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.store.delete(key)
    }
    fn capabilities(&self) -> dogpile::backend::Capabilities {
        self.store.capabilities()
    }
    fn get_with(&self, key: &str, f: &mut dyn FnMut(Option<&Entry>)) -> dogpile::Result<()> {
        self.store.get_with(key, f)
    }
    fn set_entry(&self, key: &str, entry: Entry) -> dogpile::Result<()> {
        self.store.set_entry(key, entry)
    }
}

#[test]
fn a_thread_lets_go_of_a_dropped_region_store_at_its_next_read() {
    let alive = std::sync::Arc::new(());
    let region = CacheRegion::new();
    let store = Counted {
        store: MemoryBackend::new(),
        _alive: alive.clone(),
    };
    region.configure_backend(store, None).unwrap();
    region.set("k", &1u8).unwrap();
    // This thread now keeps the configuration (and so the store) in its view.
    assert_eq!(region.get_or_create("k", || 0u8).unwrap(), 1);
    drop(region);
    // Its next read of any region lets go of it.
    let other = CacheRegion::new();
    other.configure(RegionConfig::new("memory")).unwrap();
    other.set("j", &2u8).unwrap();
    assert_eq!(other.get_or_create("j", || 0u8).unwrap(), 2);
    assert_eq!(
        std::sync::Arc::strong_count(&alive),
        1,
        "the dropped region's store is still held"
    );
}

#[test]
fn a_value_whose_clone_reads_a_region_is_served() {
    // A read begun inside another (here, in the value's Clone) takes the ordinary path.
    static INNER: std::sync::LazyLock<CacheRegion> = std::sync::LazyLock::new(|| {
        let region = CacheRegion::new();
        region.configure(RegionConfig::new("memory")).unwrap();
        region.set("inner", &7u32).unwrap();
        region
    });
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Reads(u32);
    impl Clone for Reads {
        fn clone(&self) -> Self {
            Reads(self.0 + INNER.get_or_create("inner", || 0u32).unwrap())
        }
    }
    let region = CacheRegion::new();
    region.configure(RegionConfig::new("memory")).unwrap();
    // Storing clones the value once (1 + 7), and each hit clones what is stored.
    region.set("outer", &Reads(1)).unwrap();
    for _ in 0..3 {
        assert_eq!(
            region.get_or_create("outer", || Reads(0)).unwrap(),
            Reads(15)
        );
    }
}
