//! Every region operation through both faces: the blocking API and the async API run the
//! same operation (`region/ops.rs`), so the same calls on two identical regions, one driven
//! sync and one async, must give the same values, the same errors and the same counts.

use std::collections::HashMap;
use std::sync::Mutex;

use dogpile::backend::{CacheBackend, Capabilities};
use dogpile::{cache_on_arguments, CacheRegion, RegionConfig, RegionStats};
use once_cell::sync::Lazy;

/// A byte store that can answer `get_multi` with one value short, and that keeps its
/// distributed locks under `_lock` (so the region refuses such keys).
#[derive(Default)]
struct Dict {
    map: Mutex<HashMap<String, Vec<u8>>>,
    short_multi: bool,
}

impl CacheBackend for Dict {
    fn get(&self, key: &str) -> dogpile::Result<Option<Vec<u8>>> {
        Ok(self.map.lock().unwrap().get(key).cloned())
    }
    fn set(&self, key: &str, value: Vec<u8>) -> dogpile::Result<()> {
        self.map.lock().unwrap().insert(key.to_owned(), value);
        Ok(())
    }
    fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.map.lock().unwrap().remove(key);
        Ok(())
    }
    fn get_multi(&self, keys: &[&str]) -> dogpile::Result<Vec<Option<Vec<u8>>>> {
        let mut values: Vec<_> = keys
            .iter()
            .map(|key| self.get(key))
            .collect::<Result<_, _>>()?;
        if self.short_multi {
            values.pop();
        }
        Ok(values)
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::new().lock_key_prefix(Some("_lock".to_owned()))
    }
}

/// One call of the region's API.
#[derive(Debug, Clone, Copy)]
enum Op {
    Get(&'static str),
    GetMulti(&'static [&'static str]),
    Set(&'static str, u32),
    SetMulti(&'static [&'static str], u32),
    Delete(&'static str),
    DeleteMulti(&'static [&'static str]),
    GetOrCreate(&'static str, u32),
    TryGetOrCreateFailing(&'static str),
    GetOrCreateMulti(&'static [&'static str], u32),
    /// A multi creator that returns one value fewer than it was asked for.
    GetOrCreateMultiShort(&'static [&'static str]),
}

/// Every operation, on keys that exist, that do not, and that are the backend's locks.
const CALLS: &[Op] = &[
    Op::Get("a"),
    Op::GetOrCreate("a", 1),
    Op::Get("a"),
    Op::GetOrCreate("a", 2),
    Op::Set("b", 3),
    Op::Get("b"),
    Op::SetMulti(&["c", "d"], 4),
    Op::GetMulti(&["a", "b", "c", "missing"]),
    Op::GetOrCreateMulti(&["a", "e", "e", "f"], 5),
    Op::GetOrCreateMultiShort(&["g", "h"]),
    Op::TryGetOrCreateFailing("i"),
    Op::Delete("a"),
    Op::Get("a"),
    Op::DeleteMulti(&["b", "c"]),
    Op::GetMulti(&["b", "c", "d"]),
    Op::Get("_lock_a"),
    Op::Set("_lock_a", 1),
    Op::Delete("_lock_a"),
    Op::GetOrCreate("_lock_a", 1),
    Op::GetMulti(&["a", "_lock_a"]),
    Op::SetMulti(&["_lock_b"], 1),
    Op::DeleteMulti(&["_lock_b"]),
    Op::GetOrCreateMulti(&["_lock_c"], 1),
];

fn values(keys: &[&str], base: u32) -> Vec<u32> {
    (0..keys.len() as u32).map(|i| base + i).collect()
}

fn sync_call(region: &CacheRegion, op: Op) -> String {
    match op {
        Op::Get(key) => format!("{:?}", region.get::<u32>(key)),
        Op::GetMulti(keys) => format!("{:?}", region.get_multi::<u32, _>(keys)),
        Op::Set(key, value) => format!("{:?}", region.set(key, &value)),
        Op::SetMulti(keys, base) => {
            let items: Vec<(&str, u32)> = keys.iter().copied().zip(values(keys, base)).collect();
            format!("{:?}", region.set_multi(&items))
        }
        Op::Delete(key) => format!("{:?}", region.delete(key)),
        Op::DeleteMulti(keys) => format!("{:?}", region.delete_multi(keys)),
        Op::GetOrCreate(key, value) => format!("{:?}", region.get_or_create(key, || value)),
        Op::TryGetOrCreateFailing(key) => format!(
            "{:?}",
            region.try_get_or_create::<u32, dogpile::Error, _>(key, || {
                Err(dogpile::Error::backend("origin", "the origin failed"))
            })
        ),
        Op::GetOrCreateMulti(keys, base) => format!(
            "{:?}",
            region.get_or_create_multi(keys, |asked| values(asked, base))
        ),
        Op::GetOrCreateMultiShort(keys) => format!(
            "{:?}",
            region.get_or_create_multi(keys, |asked| values(&asked[1..], 0))
        ),
    }
}

async fn async_call(region: &CacheRegion, op: Op) -> String {
    match op {
        Op::Get(key) => format!("{:?}", region.get_async::<u32>(key).await),
        Op::GetMulti(keys) => format!("{:?}", region.get_multi_async::<u32, _>(keys).await),
        Op::Set(key, value) => format!("{:?}", region.set_async(key, &value).await),
        Op::SetMulti(keys, base) => {
            let items: Vec<(&str, u32)> = keys.iter().copied().zip(values(keys, base)).collect();
            format!("{:?}", region.set_multi_async(&items).await)
        }
        Op::Delete(key) => format!("{:?}", region.delete_async(key).await),
        Op::DeleteMulti(keys) => format!("{:?}", region.delete_multi_async(keys).await),
        Op::GetOrCreate(key, value) => format!(
            "{:?}",
            region
                .get_or_create_async(key, || async move { value })
                .await
        ),
        Op::TryGetOrCreateFailing(key) => format!(
            "{:?}",
            region
                .try_get_or_create_async::<u32, dogpile::Error, _, _>(key, || async {
                    Err(dogpile::Error::backend("origin", "the origin failed"))
                })
                .await
        ),
        Op::GetOrCreateMulti(keys, base) => format!(
            "{:?}",
            region
                .get_or_create_multi_async(keys, |asked: Vec<String>| async move {
                    let asked: Vec<&str> = asked.iter().map(String::as_str).collect();
                    values(&asked, base)
                })
                .await
        ),
        Op::GetOrCreateMultiShort(keys) => format!(
            "{:?}",
            region
                .get_or_create_multi_async(keys, |asked: Vec<String>| async move {
                    let asked: Vec<&str> = asked.iter().map(String::as_str).collect();
                    values(&asked[1..], 0)
                })
                .await
        ),
    }
}

/// The counters of a region's stats (its timings differ from run to run).
fn counts(stats: RegionStats) -> [u64; 7] {
    [
        stats.hits,
        stats.misses,
        stats.stale_served,
        stats.creations,
        stats.creation_errors,
        stats.backend_errors,
        stats.lock_waits,
    ]
}

/// Runs every call on a region made by `make` through the blocking face, and on another
/// through the async face, and compares each answer and the final counts.
fn both_faces_agree(scenario: &str, make: impl Fn() -> CacheRegion) -> Vec<String> {
    let (blocking, nonblocking) = (make(), make());
    let sync_answers: Vec<String> = CALLS.iter().map(|&op| sync_call(&blocking, op)).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let async_answers: Vec<String> = runtime.block_on(async {
        let mut answers = Vec::new();
        for &op in CALLS {
            answers.push(async_call(&nonblocking, op).await);
        }
        answers
    });
    for ((op, sync), nonblocking) in CALLS.iter().zip(&sync_answers).zip(&async_answers) {
        assert_eq!(sync, nonblocking, "{scenario}: {op:?}");
    }
    assert_eq!(
        counts(blocking.stats()),
        counts(nonblocking.stats()),
        "{scenario}: stats"
    );
    sync_answers
}

fn configured(short_multi: bool) -> CacheRegion {
    let region = CacheRegion::builder().name("faces").build();
    region
        .configure(RegionConfig::with_backend(Dict {
            short_multi,
            ..Dict::default()
        }))
        .unwrap();
    region
}

#[test]
fn every_operation_gives_the_same_values_errors_and_stats_on_both_faces() {
    let answers = both_faces_agree("configured", || configured(false));
    // The table is not vacuous: it holds values, misses, refusals and creator errors.
    let answer = |op: &str| {
        let i = CALLS.iter().position(|c| format!("{c:?}") == op).unwrap();
        answers[i].clone()
    };
    assert_eq!(answer("Get(\"b\")"), "Ok(Some(3))");
    assert_eq!(answer("GetOrCreate(\"a\", 2)"), "Ok(1)");
    assert!(answer("Get(\"_lock_a\")").contains("_lock"), "{answers:?}");
    assert!(answer("TryGetOrCreateFailing(\"i\")").contains("the origin failed"));
    assert!(
        answer("GetOrCreateMultiShort([\"g\", \"h\"])").contains("returned 1 values for 2 keys"),
        "{answers:?}"
    );
    let multi = answer("GetOrCreateMulti([\"a\", \"e\", \"e\", \"f\"], 5)");
    assert_eq!(multi, "Ok([1, 5, 5, 6])");
}

#[test]
fn a_short_multi_reply_is_the_same_error_on_both_faces() {
    let answers = both_faces_agree("short get_multi", || configured(true));
    let short = CALLS
        .iter()
        .position(|op| matches!(op, Op::GetMulti(keys) if keys.len() == 4))
        .unwrap();
    assert!(
        answers[short].contains("get_multi answered 3 values for 4 keys"),
        "{}",
        answers[short]
    );
}

#[test]
fn an_unconfigured_region_is_the_same_error_on_both_faces() {
    let answers = both_faces_agree("unconfigured", || {
        CacheRegion::builder().name("faces").build()
    });
    let empty_multi = |op: &Op| matches!(op, Op::GetMulti(k) | Op::DeleteMulti(k) | Op::SetMulti(k, _) | Op::GetOrCreateMulti(k, _) if k.is_empty());
    for (op, answer) in CALLS.iter().zip(&answers) {
        if !empty_multi(op) {
            assert!(answer.contains("RegionNotConfigured"), "{op:?}: {answer}");
        }
    }
}

static SYNC_REGION: Lazy<CacheRegion> = Lazy::new(|| configured(false));
static ASYNC_REGION: Lazy<CacheRegion> = Lazy::new(|| configured(false));

#[cache_on_arguments(region = "SYNC_REGION", expiration_time = 60)]
fn doubled(n: u32) -> u32 {
    n * 2
}

#[cache_on_arguments(region = "ASYNC_REGION", expiration_time = 60)]
async fn doubled_async(n: u32) -> u32 {
    n * 2
}

#[test]
fn memoized_functions_siblings_agree_on_both_faces() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sync = [
        format!("{:?}", get_doubled(3)),
        format!("{:?}", doubled(3)),
        format!("{:?}", get_doubled(3)),
        format!("{:?}", set_doubled(&9, 4)),
        format!("{:?}", get_doubled(4)),
        format!("{:?}", invalidate_doubled(3)),
        format!("{:?}", get_doubled(3)),
    ];
    let nonblocking = runtime.block_on(async {
        [
            format!("{:?}", get_doubled_async(3).await),
            format!("{:?}", doubled_async(3).await),
            format!("{:?}", get_doubled_async(3).await),
            format!("{:?}", set_doubled_async(&9, 4).await),
            format!("{:?}", get_doubled_async(4).await),
            format!("{:?}", invalidate_doubled_async(3).await),
            format!("{:?}", get_doubled_async(3).await),
        ]
    });
    assert_eq!(sync, nonblocking);
    assert_eq!(sync[2], "Ok(Some(6))");
    assert_eq!(counts(SYNC_REGION.stats()), counts(ASYNC_REGION.stats()));
}
