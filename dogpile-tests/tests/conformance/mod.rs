//! The conformance suite that every backend passes (SPEC section 5), written once.
//!
//! A backend's test file invokes it with a closure that returns the backend's
//! [`RegionConfig`] (or a `(RegionConfig, guard)` pair, the guard living as long as the test,
//! such as a temporary directory):
//!
//! ```ignore
//! #[macro_use]
//! mod conformance;
//!
//! conformance_suite!(stores = true, config = || RegionConfig::new("memory"));
//!
//! mod file {
//!     conformance_suite!(
//!         stores = true,
//!         config = || {
//!             let dir = tempfile::tempdir().unwrap();
//!             let store = dir.path().join("store");
//!             (RegionConfig::new("file").argument("filename", store.display()), dir)
//!         }
//!     );
//! }
//! ```
//!
//! The macro expands to one `#[test]` function per check in the invoking module. Each test
//! calls the closure again (a fresh backend), builds a region with a [`ManualClock`] and
//! uses keys under a prefix made of the run (process id and start time), the test's name
//! and a counter, so tests of one run and runs of the suite never share a key, even on a
//! shared server. `stores = false` is for backends that store nothing (`null`): every
//! read misses, `get_or_create` always runs the creator, and nothing fails.
//!
//! Values of up to 2.5 MiB are stored (memcached servers need `-I 4m` or so).
//!
//! `conformance_suite!(async, stores = ..., config = ...)` runs the same checks through
//! the region's async methods (`get_async`, `get_or_create_async`, ...), each awaited with
//! `block_on` on a multi-threaded runtime of the test's, so that a backend's async path
//! (its native async twin, or tokio's blocking pool) meets the very same expectations.
//! Methods without an async form (`get_with`, `invalidate`, ...) and calls made from
//! inside an async call (a creator that reads another key) use the blocking ones.

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, LazyLock};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dogpile::clock::{Clock, ManualClock, SystemClock};
#[cfg(feature = "tokio")]
use dogpile::Cacheable;
use dogpile::{CacheRegion, CreateOptions, Expiration, RegionConfig};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Expands to the conformance tests, as `#[test]` functions of the invoking module.
///
/// `stores`: whether the backend keeps what it is given (false only for `null`).
/// `config`: a closure returning the backend's `RegionConfig`, or `(RegionConfig, guard)`.
macro_rules! conformance_suite {
    (stores = $stores:expr, config = $config:expr $(,)?) => {
        conformance_suite!(@suite new, $stores, $config);
    };
    // For backends whose dogpile lock is shared by every region (and process) using the
    // same store: a distributed lock, file locks.
    (stores = $stores:expr, shared_lock = true, config = $config:expr $(,)?) => {
        conformance_suite!(stores = $stores, config = $config);
        conformance_suite!(@tests dogpile_lock_across_regions);
    };
    // The same checks through the region's async methods.
    (async, stores = $stores:expr, config = $config:expr $(,)?) => {
        conformance_suite!(@suite new_async, $stores, $config);
    };
    (async, stores = $stores:expr, shared_lock = true, config = $config:expr $(,)?) => {
        conformance_suite!(async, stores = $stores, config = $config);
        conformance_suite!(@tests dogpile_lock_across_regions);
    };
    (@suite $new:ident, $stores:expr, $config:expr) => {
        fn conformance_suite() -> $crate::conformance::Suite {
            $crate::conformance::Suite::$new($stores, $config)
        }

        conformance_suite!(@tests
            get_set_delete,
            delete_of_a_missing_key_is_ok,
            multi_operations,
            get_or_create_multi_creates_only_missing_keys,
            empty_values,
            unicode_keys_and_values,
            binary_values_and_control_character_keys,
            long_keys,
            large_values,
            undecodable_value_is_a_miss_and_is_regenerated,
            expiration_through_region,
            soft_invalidation,
            hard_invalidation,
            dogpile_lock_on_missing_key,
            dogpile_lock_on_expired_key,
            failed_or_panicking_creator_releases_the_lock,
            creator_reading_other_keys_does_not_deadlock,
            many_threads_write_and_read,
        );
    };
    (@tests $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::conformance::run(stringify!($name), || {
                    $crate::conformance::$name(&conformance_suite())
                });
            }
        )*
    };
}

/// How long one test may run before it is reported as hung (a deadlock, a lock never
/// released). Generous: a healthy test takes well under a second or two.
const HANG_LIMIT: Duration = Duration::from_secs(120);

/// The region's expiration time in every test.
const EXPIRATION: Duration = Duration::from_secs(10);

/// Runs `test` on its own thread and fails if it does not finish within [`HANG_LIMIT`].
pub fn run(name: &str, test: fn()) {
    let (done, finished) = mpsc::channel();
    let worker = thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            test();
            let _ = done.send(());
        })
        .expect("spawn the test thread");
    match finished.recv_timeout(HANG_LIMIT) {
        Ok(()) => worker.join().expect("test thread"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The test panicked: re-raise its panic here.
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("conformance test `{name}` did not finish in {HANG_LIMIT:?}: a deadlock or a lock never released?")
        }
    }
}

/// Whatever must outlive a test's backend (a temporary directory).
pub type Guard = Box<dyn Any + Send + Sync>;

/// What a config closure may return: a `RegionConfig`, or one with a guard that must live
/// as long as the test (a temporary directory).
pub trait IntoFixture {
    /// The config and the guard.
    fn into_fixture(self) -> (RegionConfig, Guard);
}

impl IntoFixture for RegionConfig {
    fn into_fixture(self) -> (RegionConfig, Guard) {
        (self, Box::new(()))
    }
}

impl<G: Send + Sync + 'static> IntoFixture for (RegionConfig, G) {
    fn into_fixture(self) -> (RegionConfig, Guard) {
        (self.0, Box::new(self.1))
    }
}

/// One backend's suite: how to configure it, whether it stores, and through which of
/// the region's faces it is checked.
pub struct Suite {
    stores: bool,
    make: Box<dyn Fn() -> (RegionConfig, Guard)>,
    nonblocking: bool,
}

impl Suite {
    /// A suite for the backend `config` configures, through the region's blocking methods.
    pub fn new<F, X>(stores: bool, config: F) -> Self
    where
        F: Fn() -> X + 'static,
        X: IntoFixture,
    {
        Suite {
            stores,
            make: Box::new(move || config().into_fixture()),
            nonblocking: false,
        }
    }

    /// The same suite through the region's async methods.
    #[allow(dead_code)] // used by async suites only
    pub fn new_async<F, X>(stores: bool, config: F) -> Self
    where
        F: Fn() -> X + 'static,
        X: IntoFixture,
    {
        Suite {
            nonblocking: true,
            ..Suite::new(stores, config)
        }
    }

    /// A region through this suite's face.
    fn faced(&self, region: CacheRegion) -> Faced {
        Faced::new(region, self.nonblocking)
    }

    /// A fresh backend behind a region with a manual clock and [`EXPIRATION`].
    fn case(&self, test: &str) -> Case {
        let (config, guard) = (self.make)();
        let config = config.expiration_time(EXPIRATION);
        let clock = Arc::new(ManualClock::new(SystemClock.now().floor()));
        let region = CacheRegion::builder()
            .name(format!("conformance::{test}"))
            .clock(clock.clone())
            .build();
        region
            .configure(config.clone())
            .unwrap_or_else(|e| panic!("configuring the backend under test failed: {e}"));
        static CASES: AtomicU64 = AtomicU64::new(0);
        let n = CASES.fetch_add(1, Ordering::Relaxed);
        Case {
            region: self.faced(region),
            nonblocking: self.nonblocking,
            clock,
            prefix: format!("conformance:{}:{test}:{n}:", *RUN),
            config,
            stores: self.stores,
            _guard: guard,
        }
    }
}

/// This run of the suite: process id and start time, so that two runs against one shared
/// server never read each other's keys.
static RUN: LazyLock<String> = LazyLock::new(|| {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
});

/// One test's region, clock and key prefix. Fields drop in order: the region (and its
/// backend) before the guard (the backend's directory).
struct Case {
    region: Faced,
    nonblocking: bool,
    clock: Arc<ManualClock>,
    prefix: String,
    #[allow(dead_code)] // used by `shared_lock = true` suites only
    config: RegionConfig,
    stores: bool,
    _guard: Guard,
}

impl Case {
    /// A key unique to this test and run.
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// What a read of a stored `value` returns: `Some(value)`, or `None` on a backend that
    /// stores nothing.
    fn stored<T>(&self, value: T) -> Option<T> {
        self.stores.then_some(value)
    }

    /// Called by creators in the lock tests: gives the other callers time to pile up on
    /// the lock (a backend that stores nothing runs every creator in turn, so no pause).
    fn pile_up(&self) {
        if self.stores {
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn advance(&self, seconds: u64) {
        self.clock.advance(Duration::from_secs(seconds));
    }

    /// A second region on the same store (the same configuration) and clock: it shares no
    /// in-process lock with the first, only what the backend shares.
    #[allow(dead_code)] // used by `shared_lock = true` suites only
    fn second_region(&self) -> Faced {
        let region = CacheRegion::builder()
            .name("conformance::second")
            .clock(self.clock.clone())
            .build();
        region
            .configure(self.config.clone())
            .unwrap_or_else(|e| panic!("configuring a second region on the store failed: {e}"));
        Faced::new(region, self.nonblocking)
    }
}

/// The region under test through one of its faces: its blocking methods, or its async
/// ones awaited on a runtime of its own (see the [module docs](self)). Methods it does
/// not define are the region's own (blocking) ones.
pub struct Faced {
    region: CacheRegion,
    #[cfg(feature = "tokio")]
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::ops::Deref for Faced {
    type Target = CacheRegion;

    fn deref(&self) -> &CacheRegion {
        &self.region
    }
}

impl Faced {
    #[cfg_attr(not(feature = "tokio"), allow(unused_variables))]
    fn new(region: CacheRegion, nonblocking: bool) -> Self {
        #[cfg(not(feature = "tokio"))]
        assert!(!nonblocking, "the async suite needs the `tokio` feature");
        Faced {
            region,
            #[cfg(feature = "tokio")]
            runtime: nonblocking.then(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a runtime for the async suite")
            }),
        }
    }
}

#[cfg(feature = "tokio")]
impl Faced {
    /// The runtime to await a call on: none for the blocking face, nor for a call made
    /// from inside an async one (it uses the blocking method).
    fn runtime(&self) -> Option<&tokio::runtime::Runtime> {
        let nested = tokio::runtime::Handle::try_current().is_ok();
        self.runtime.as_ref().filter(|_| !nested)
    }

    /// `nonblocking` awaited on the runtime, or else `blocking`.
    fn either<R>(
        &self,
        blocking: impl FnOnce() -> R,
        nonblocking: impl std::future::Future<Output = R>,
    ) -> R {
        match self.runtime() {
            Some(runtime) => runtime.block_on(nonblocking),
            None => blocking(),
        }
    }

    pub fn get<T: Cacheable>(&self, key: &str) -> dogpile::Result<Option<T>> {
        self.either(|| self.region.get(key), self.region.get_async(key))
    }

    pub fn set<T: Cacheable>(&self, key: &str, value: &T) -> dogpile::Result<()> {
        self.either(
            || self.region.set(key, value),
            self.region.set_async(key, value),
        )
    }

    pub fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.either(|| self.region.delete(key), self.region.delete_async(key))
    }

    pub fn get_multi<T: Cacheable, K: AsRef<str>>(
        &self,
        keys: &[K],
    ) -> dogpile::Result<Vec<Option<T>>> {
        self.either(
            || self.region.get_multi(keys),
            self.region.get_multi_async(keys),
        )
    }

    pub fn set_multi<T: Cacheable, K: AsRef<str>>(&self, items: &[(K, T)]) -> dogpile::Result<()> {
        self.either(
            || self.region.set_multi(items),
            self.region.set_multi_async(items),
        )
    }

    pub fn delete_multi<K: AsRef<str>>(&self, keys: &[K]) -> dogpile::Result<()> {
        self.either(
            || self.region.delete_multi(keys),
            self.region.delete_multi_async(keys),
        )
    }

    pub fn get_or_create<T: Cacheable, F: FnOnce() -> T>(
        &self,
        key: &str,
        creator: F,
    ) -> dogpile::Result<T> {
        self.get_or_create_with(key, CreateOptions::new(), creator)
    }

    pub fn get_or_create_with<T: Cacheable, F: FnOnce() -> T>(
        &self,
        key: &str,
        options: CreateOptions<'_, T>,
        creator: F,
    ) -> dogpile::Result<T> {
        match self.runtime() {
            Some(runtime) => runtime.block_on(self.region.get_or_create_with_async(
                key,
                options,
                || async move { creator() },
            )),
            None => self.region.get_or_create_with(key, options, creator),
        }
    }

    pub fn try_get_or_create<T, E, F>(&self, key: &str, creator: F) -> Result<T, E>
    where
        T: Cacheable,
        E: From<dogpile::Error> + std::fmt::Display,
        F: FnOnce() -> Result<T, E>,
    {
        match self.runtime() {
            Some(runtime) => runtime.block_on(
                self.region
                    .try_get_or_create_async(key, || async move { creator() }),
            ),
            None => self.region.try_get_or_create(key, creator),
        }
    }

    pub fn get_or_create_multi<T, K, F>(&self, keys: &[K], creator: F) -> dogpile::Result<Vec<T>>
    where
        T: Cacheable,
        K: AsRef<str>,
        F: FnOnce(&[&str]) -> Vec<T>,
    {
        match self.runtime() {
            Some(runtime) => runtime.block_on(self.region.get_or_create_multi_async(
                keys,
                |missing: Vec<String>| {
                    let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
                    std::future::ready(creator(&missing))
                },
            )),
            None => self.region.get_or_create_multi(keys, creator),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<f64>,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user {id}"),
        tags: vec!["a".into(), "b".into()],
        score: Some(id as f64 / 2.0),
    }
}

/// A value whose parts all derive from `(thread, iteration)`: a torn or mixed-up value is
/// detected by [`Stamp::is_consistent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stamp {
    thread: u32,
    iteration: u32,
    check: u64,
    body: String,
}

impl Stamp {
    fn new(thread: u32, iteration: u32) -> Self {
        Stamp {
            thread,
            iteration,
            check: u64::from(thread) * 1_000_003 + u64::from(iteration),
            body: format!("<{thread}/{iteration}>").repeat(40),
        }
    }

    fn is_consistent(&self) -> bool {
        *self == Stamp::new(self.thread, self.iteration)
    }
}

/// Deterministic pseudo-random bytes (every byte value appears).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

// ----- basic operations ------------------------------------------------------------------

pub fn get_set_delete(suite: &Suite) {
    let c = suite.case("get_set_delete");
    let (k1, k2) = (c.key("number"), c.key("user"));

    assert_eq!(c.region.get::<u64>(&k1).unwrap(), None, "fresh key");
    c.region.set(&k1, &42u64).unwrap();
    c.region.set(&k2, &user(5)).unwrap();
    assert_eq!(c.region.get::<u64>(&k1).unwrap(), c.stored(42));
    assert_eq!(c.region.get::<User>(&k2).unwrap(), c.stored(user(5)));

    // Overwrite.
    c.region.set(&k1, &43u64).unwrap();
    assert_eq!(c.region.get::<u64>(&k1).unwrap(), c.stored(43));

    // Metadata: the creation time is the region's clock at `set`.
    let now = c.clock.now();
    let meta = c.region.get_value_metadata::<u64>(&k1).unwrap();
    assert_eq!(
        meta.map(|m| (m.payload, m.metadata.ct)),
        c.stored((43, now))
    );

    // Delete removes one key only.
    c.region.delete(&k1).unwrap();
    assert_eq!(c.region.get::<u64>(&k1).unwrap(), None);
    assert_eq!(c.region.get::<User>(&k2).unwrap(), c.stored(user(5)));
    c.region.delete(&k2).unwrap();
    assert_eq!(c.region.get::<User>(&k2).unwrap(), None);

    // get_or_create after delete creates again.
    let mut calls = 0;
    let v: u64 = c
        .region
        .get_or_create(&k1, || {
            calls += 1;
            7
        })
        .unwrap();
    assert_eq!((v, calls), (7, 1));
    let v: u64 = c
        .region
        .get_or_create(&k1, || {
            calls += 1;
            8
        })
        .unwrap();
    if c.stores {
        assert_eq!((v, calls), (7, 1), "a fresh value is not created again");
    } else {
        assert_eq!(
            (v, calls),
            (8, 2),
            "a backend that stores nothing always creates"
        );
    }
}

pub fn delete_of_a_missing_key_is_ok(suite: &Suite) {
    let c = suite.case("delete_missing");
    let k = c.key("never-set");
    c.region.delete(&k).unwrap();
    c.region.delete(&k).unwrap();
    c.region
        .delete_multi(&[c.key("a"), c.key("b"), k.clone()])
        .unwrap();
    assert_eq!(c.region.get::<u64>(&k).unwrap(), None);

    c.region.set(&k, &1u8).unwrap();
    c.region.delete(&k).unwrap();
    c.region.delete(&k).unwrap();
    assert_eq!(c.region.get::<u8>(&k).unwrap(), None);
}

pub fn multi_operations(suite: &Suite) {
    let c = suite.case("multi");
    let keys: Vec<String> = (0..10).map(|i| c.key(&format!("k{i}"))).collect();
    let items: Vec<(String, User)> = keys.iter().cloned().zip((0..10).map(user)).collect();
    c.region.set_multi(&items).unwrap();

    // Order follows the request; missing keys and duplicates included.
    let ask = vec![
        keys[3].clone(),
        c.key("missing"),
        keys[0].clone(),
        keys[3].clone(),
        keys[9].clone(),
    ];
    let got = c.region.get_multi::<User, _>(&ask).unwrap();
    assert_eq!(
        got,
        vec![
            c.stored(user(3)),
            None,
            c.stored(user(0)),
            c.stored(user(3)),
            c.stored(user(9))
        ]
    );

    c.region.delete_multi(&keys[..5]).unwrap();
    let got = c.region.get_multi::<User, _>(&keys).unwrap();
    for (i, value) in got.into_iter().enumerate() {
        let expected = if i < 5 {
            None
        } else {
            c.stored(user(i as u64))
        };
        assert_eq!(value, expected, "key {i} after delete_multi");
    }

    // Empty multi operations are no-ops.
    let none: [&str; 0] = [];
    assert!(c.region.get_multi::<u8, _>(&none).unwrap().is_empty());
    c.region.set_multi::<u8, &str>(&[]).unwrap();
    c.region.delete_multi(&none).unwrap();
}

pub fn get_or_create_multi_creates_only_missing_keys(suite: &Suite) {
    let c = suite.case("get_or_create_multi");
    let keys: Vec<String> = (0..6).map(|i| c.key(&format!("k{i}"))).collect();
    c.region.set(&keys[1], &100u64).unwrap();
    c.region.set(&keys[4], &400u64).unwrap();

    let value_of = |k: &str| -> u64 { k.rsplit('k').next().unwrap().parse::<u64>().unwrap() };
    let mut asked: Vec<Vec<String>> = Vec::new();
    let got = c
        .region
        .get_or_create_multi(&keys, |missing: &[&str]| {
            asked.push(missing.iter().map(|k| k.to_string()).collect());
            missing.iter().map(|k| value_of(k)).collect()
        })
        .unwrap();
    assert_eq!(asked.len(), 1, "one creator call for all missing keys");
    let asked_set: HashSet<&String> = asked[0].iter().collect();
    if c.stores {
        assert_eq!(got, vec![0, 100, 2, 3, 400, 5]);
        let expected: HashSet<&String> = [0, 2, 3, 5].iter().map(|&i| &keys[i]).collect();
        assert_eq!(
            asked_set, expected,
            "creator receives only the missing keys"
        );
        // Now everything is cached: no creator call.
        let again = c
            .region
            .get_or_create_multi(&keys, |missing: &[&str]| -> Vec<u64> {
                panic!("nothing should be missing, creator got {missing:?}")
            })
            .unwrap();
        assert_eq!(again, vec![0, 100, 2, 3, 400, 5]);
    } else {
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(asked_set, keys.iter().collect::<HashSet<_>>());
    }
}

pub fn empty_values(suite: &Suite) {
    let c = suite.case("empty");
    let k = |n| c.key(n);
    c.region.set(&k("string"), &String::new()).unwrap();
    c.region.set(&k("vec"), &Vec::<u32>::new()).unwrap();
    c.region.set(&k("bytes"), &ByteBuf::new()).unwrap();
    c.region
        .set(&k("map"), &BTreeMap::<String, u32>::new())
        .unwrap();
    c.region.set(&k("none"), &Option::<u32>::None).unwrap();
    c.region.set(&k("unit"), &()).unwrap();

    assert_eq!(
        c.region.get::<String>(&k("string")).unwrap(),
        c.stored(String::new())
    );
    assert_eq!(
        c.region.get::<Vec<u32>>(&k("vec")).unwrap(),
        c.stored(vec![])
    );
    assert_eq!(
        c.region.get::<ByteBuf>(&k("bytes")).unwrap(),
        c.stored(ByteBuf::new())
    );
    assert_eq!(
        c.region.get::<BTreeMap<String, u32>>(&k("map")).unwrap(),
        c.stored(BTreeMap::new())
    );
    // A cached `None` is a hit holding `None`, not a miss.
    assert_eq!(
        c.region.get::<Option<u32>>(&k("none")).unwrap(),
        c.stored(None)
    );
    assert_eq!(c.region.get::<()>(&k("unit")).unwrap(), c.stored(()));
}

pub fn unicode_keys_and_values(suite: &Suite) {
    let c = suite.case("unicode");
    let names = [
        "ключ",
        "キー",
        "🔑🗝️",
        "e\u{301}te\u{301}",
        "مفتاح",
        "with spaces and\ttabs",
        "Ω≈ç√∫",
    ];
    for (i, name) in names.iter().enumerate() {
        let value = format!("{name} → значение {i} 値 🎉");
        c.region.set(&c.key(name), &value).unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        let value = format!("{name} → значение {i} 値 🎉");
        assert_eq!(
            c.region.get::<String>(&c.key(name)).unwrap(),
            c.stored(value),
            "key {name:?}"
        );
    }
    // Keys differing only by Unicode normalization are different keys.
    let composed = c.key("\u{e9}");
    let decomposed = c.key("e\u{301}");
    c.region.set(&composed, &1u8).unwrap();
    c.region.set(&decomposed, &2u8).unwrap();
    assert_eq!(c.region.get::<u8>(&composed).unwrap(), c.stored(1));
    assert_eq!(c.region.get::<u8>(&decomposed).unwrap(), c.stored(2));
    let mut u = user(1);
    u.name = "Zoë Ωmega 山田".into();
    u.tags = names.iter().map(|n| n.to_string()).collect();
    c.region.set(&c.key("user"), &u).unwrap();
    assert_eq!(c.region.get::<User>(&c.key("user")).unwrap(), c.stored(u));
}

pub fn binary_values_and_control_character_keys(suite: &Suite) {
    let c = suite.case("binary");
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let with_separators = b"|{\"ct\": 1, \"v\": 2}|\0\xff|".to_vec();

    c.region.set(&c.key("vec"), &all_bytes).unwrap();
    c.region
        .set(&c.key("bytebuf"), &ByteBuf::from(all_bytes.clone()))
        .unwrap();
    c.region
        .set(
            &c.key("separators"),
            &ByteBuf::from(with_separators.clone()),
        )
        .unwrap();
    assert_eq!(
        c.region.get::<Vec<u8>>(&c.key("vec")).unwrap(),
        c.stored(all_bytes.clone())
    );
    assert_eq!(
        c.region.get::<ByteBuf>(&c.key("bytebuf")).unwrap(),
        c.stored(ByteBuf::from(all_bytes.clone()))
    );
    assert_eq!(
        c.region.get::<ByteBuf>(&c.key("separators")).unwrap(),
        c.stored(ByteBuf::from(with_separators))
    );

    // Keys with control characters, NUL, and path or protocol syntax.
    let names = [
        "nul\0byte",
        "new\nline",
        "crlf\r\nset injected 0 0 1\r\nx",
        "del\x7f",
        "bell\x07",
        "../../escape",
        "/etc/passwd",
        "..",
        ".",
        "a/b\\c",
        "  ",
        "%2e%2e%2f",
    ];
    for (i, name) in names.iter().enumerate() {
        c.region.set(&c.key(name), &(i as u32)).unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            c.region.get::<u32>(&c.key(name)).unwrap(),
            c.stored(i as u32),
            "key {name:?}"
        );
    }
    for name in names {
        c.region.delete(&c.key(name)).unwrap();
        assert_eq!(c.region.get::<u32>(&c.key(name)).unwrap(), None);
    }
}

pub fn long_keys(suite: &Suite) {
    let c = suite.case("long_keys");
    let long = c.key(&"k".repeat(1500));
    let longer = c.key(&"é".repeat(5 * 1024)); // 10 KiB of UTF-8
    let longer_twin = format!("{}!", &longer[..longer.len() - 2]); // differs in the last char
    c.region.set(&long, &1u32).unwrap();
    c.region.set(&longer, &2u32).unwrap();
    c.region.set(&longer_twin, &3u32).unwrap();
    assert_eq!(c.region.get::<u32>(&long).unwrap(), c.stored(1));
    assert_eq!(c.region.get::<u32>(&longer).unwrap(), c.stored(2));
    assert_eq!(c.region.get::<u32>(&longer_twin).unwrap(), c.stored(3));
    let got = c
        .region
        .get_multi::<u32, _>(&[&long, &longer, &longer_twin])
        .unwrap();
    assert_eq!(got, vec![c.stored(1), c.stored(2), c.stored(3)]);
    c.region.delete(&longer).unwrap();
    assert_eq!(c.region.get::<u32>(&longer).unwrap(), None);
    assert_eq!(c.region.get::<u32>(&longer_twin).unwrap(), c.stored(3));
}

pub fn large_values(suite: &Suite) {
    let c = suite.case("large_values");
    let bytes = ByteBuf::from(noise(2 * 1024 * 1024 + 17, 7));
    let text: String = "dogpile ünïcödé ".repeat(100_000); // ~1.8 MiB
    c.region.set(&c.key("bytes"), &bytes).unwrap();
    c.region.set(&c.key("text"), &text).unwrap();
    assert_eq!(
        c.region.get::<ByteBuf>(&c.key("bytes")).unwrap(),
        c.stored(bytes.clone())
    );
    assert_eq!(
        c.region.get::<String>(&c.key("text")).unwrap(),
        c.stored(text)
    );
    let mut calls = 0;
    let made: ByteBuf = c
        .region
        .get_or_create(&c.key("made"), || {
            calls += 1;
            bytes.clone()
        })
        .unwrap();
    assert_eq!((made == bytes, calls), (true, 1));
    // Replacing a large value with a small one leaves no trace of the large one.
    c.region
        .set(&c.key("bytes"), &ByteBuf::from(vec![1]))
        .unwrap();
    assert_eq!(
        c.region.get::<ByteBuf>(&c.key("bytes")).unwrap(),
        c.stored(ByteBuf::from(vec![1]))
    );
}

pub fn undecodable_value_is_a_miss_and_is_regenerated(suite: &Suite) {
    let c = suite.case("undecodable");
    let k = c.key("k");
    c.region.set(&k, &"not a number".to_string()).unwrap();
    assert_eq!(
        c.region.get::<u64>(&k).unwrap(),
        None,
        "wrong type is a miss"
    );
    let v: u64 = c.region.get_or_create(&k, || 5).unwrap();
    assert_eq!(v, 5);
    assert_eq!(c.region.get::<u64>(&k).unwrap(), c.stored(5));
}

// ----- expiration and invalidation -------------------------------------------------------

pub fn expiration_through_region(suite: &Suite) {
    let c = suite.case("expiration");
    let k = c.key("k");
    c.region.set(&k, &1u32).unwrap();
    c.advance(EXPIRATION.as_secs() / 2);
    assert_eq!(c.region.get::<u32>(&k).unwrap(), c.stored(1), "still fresh");
    c.advance(EXPIRATION.as_secs());
    assert_eq!(c.region.get::<u32>(&k).unwrap(), None, "expired");
    // Expired values stay in the backend (served stale, or on request).
    assert_eq!(
        c.region.get_with::<u32>(&k, None, true).unwrap(),
        c.stored(1),
        "ignore_expiration"
    );
    assert_eq!(
        c.region
            .get_with::<u32>(&k, Some(Duration::from_secs(3600).into()), false)
            .unwrap(),
        c.stored(1),
        "a longer per-call expiration"
    );
    assert_eq!(
        c.region
            .get_with::<u32>(&k, Some(Expiration::Never), false)
            .unwrap(),
        c.stored(1),
        "Expiration::Never in get"
    );

    // A never-expiring get_or_create does not regenerate the old value.
    let mut calls = 0;
    let v = c
        .region
        .get_or_create_with(
            &k,
            CreateOptions::new().expiration_time(Expiration::Never),
            || {
                calls += 1;
                2u32
            },
        )
        .unwrap();
    if c.stores {
        assert_eq!((v, calls), (1, 0));
    } else {
        assert_eq!((v, calls), (2, 1));
    }

    // With the region's expiration, the stale value is regenerated, once.
    let v = c
        .region
        .get_or_create(&k, || {
            calls += 1;
            3u32
        })
        .unwrap();
    assert_eq!(v, 3);
    let v = c
        .region
        .get_or_create(&k, || {
            calls += 1;
            4u32
        })
        .unwrap();
    if c.stores {
        assert_eq!((v, calls), (3, 1), "fresh again after regeneration");
        let meta = c.region.get_value_metadata::<u32>(&k).unwrap().unwrap();
        assert_eq!(meta.metadata.ct, c.clock.now());
    } else {
        assert_eq!((v, calls), (4, 3));
    }
}

pub fn soft_invalidation(suite: &Suite) {
    let c = suite.case("soft_invalidation");
    let k = c.key("k");
    c.region.set(&k, &1u32).unwrap();
    c.advance(1);
    c.region.invalidate(false).unwrap();
    assert_eq!(
        c.region.get::<u32>(&k).unwrap(),
        None,
        "get treats soft-invalidated values as absent"
    );
    assert_eq!(
        c.region.get_with::<u32>(&k, None, true).unwrap(),
        c.stored(1),
        "but they are still stored"
    );

    if !c.stores {
        // Nothing stored, nothing stale to serve: every call creates.
        assert_eq!(c.region.get_or_create(&k, || 2u32).unwrap(), 2);
        assert_eq!(c.region.get_or_create(&k, || 3u32).unwrap(), 3);
        return;
    }

    // While one caller regenerates, another gets the old value at once.
    let (started_tx, started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    thread::scope(|s| {
        let regenerating = s.spawn(|| {
            c.region
                .get_or_create(&k, move || {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    2u32
                })
                .unwrap()
        });
        started.recv().unwrap();
        let meanwhile = c.region.get_or_create(&k, || 99u32).unwrap();
        assert_eq!(meanwhile, 1, "the stale value is served while regenerating");
        go.send(()).unwrap();
        assert_eq!(regenerating.join().unwrap(), 2);
    });
    assert_eq!(c.region.get::<u32>(&k).unwrap(), Some(2));
}

pub fn hard_invalidation(suite: &Suite) {
    let c = suite.case("hard_invalidation");
    let k = c.key("k");
    c.region.set(&k, &1u32).unwrap();
    c.advance(1);
    c.region.invalidate(true).unwrap();
    assert_eq!(c.region.get::<u32>(&k).unwrap(), None);

    // Hard: no stale value is served; every caller waits for the one that creates.
    let calls = AtomicUsize::new(0);
    let barrier = Barrier::new(8);
    let results: Vec<u32> = thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    c.region
                        .get_or_create(&k, || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            c.pile_up();
                            2u32
                        })
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results, vec![2; 8], "nobody got the invalidated value");
    let expected_calls = if c.stores { 1 } else { 8 };
    assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
    // A value set after the invalidation is valid.
    c.region.set(&k, &5u32).unwrap();
    assert_eq!(c.region.get::<u32>(&k).unwrap(), c.stored(5));
}

// ----- the dogpile lock ------------------------------------------------------------------

const THREADS: usize = 32;
const ROUNDS: u32 = 5;

pub fn dogpile_lock_on_missing_key(suite: &Suite) {
    let c = suite.case("lock_missing");
    for round in 0..ROUNDS {
        let k = c.key(&format!("round{round}"));
        let calls = AtomicUsize::new(0);
        let barrier = Barrier::new(THREADS);
        let results: Vec<Stamp> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (c, k, calls, barrier) = (&c, &k, &calls, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        c.region
                            .get_or_create(k, || {
                                calls.fetch_add(1, Ordering::SeqCst);
                                c.pile_up();
                                Stamp::new(t as u32, round)
                            })
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let calls = calls.load(Ordering::SeqCst);
        if c.stores {
            assert_eq!(calls, 1, "round {round}: the creator ran {calls} times");
            assert!(
                results
                    .iter()
                    .all(|r| *r == results[0] && r.is_consistent()),
                "round {round}: every caller gets the one created value"
            );
            assert_eq!(
                c.region.get::<Stamp>(&k).unwrap().as_ref(),
                Some(&results[0])
            );
        } else {
            assert_eq!(
                calls, THREADS,
                "round {round}: null creates for every caller"
            );
        }
    }
}

/// Two regions on one store, as two processes would have: only the backend's lock
/// (distributed or file lock) keeps their callers from creating twice.
#[allow(dead_code)] // used by `shared_lock = true` suites only
pub fn dogpile_lock_across_regions(suite: &Suite) {
    let c = suite.case("lock_across_regions");
    let regions = [&c.region, &c.second_region()];
    let k = c.key("k");
    for round in 0..ROUNDS * 2 {
        // Even rounds race on a missing key, odd rounds on an expired one.
        if round % 2 == 0 {
            c.region.delete(&k).unwrap();
        } else {
            c.advance(EXPIRATION.as_secs() + 1);
        }
        let calls = AtomicUsize::new(0);
        let barrier = Barrier::new(THREADS);
        let c = &c;
        thread::scope(|s| {
            for t in 0..THREADS {
                let (region, k, calls, barrier) = (regions[t % 2], &k, &calls, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    region
                        .get_or_create(k, || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            c.pile_up();
                            Stamp::new(t as u32, round)
                        })
                        .unwrap()
                });
            }
        });
        let calls = calls.load(Ordering::SeqCst);
        assert_eq!(
            calls, 1,
            "round {round}: the creator ran {calls} times across two regions"
        );
        let stored = c
            .region
            .get::<Stamp>(&k)
            .unwrap()
            .expect("the created value is stored");
        assert_eq!(
            stored.iteration, round,
            "round {round}: the new value is stored"
        );
    }
}

pub fn dogpile_lock_on_expired_key(suite: &Suite) {
    let c = suite.case("lock_expired");
    let k = c.key("k");
    c.region.set(&k, &Stamp::new(999, 0)).unwrap();
    for round in 1..=ROUNDS {
        c.advance(EXPIRATION.as_secs() + 1);
        let old = c.region.get_with::<Stamp>(&k, None, true).unwrap();
        assert_eq!(
            old.is_some(),
            c.stores,
            "round {round}: the stale value is there"
        );
        let calls = AtomicUsize::new(0);
        let barrier = Barrier::new(THREADS);
        let results: Vec<Stamp> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (c, k, calls, barrier) = (&c, &k, &calls, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        c.region
                            .get_or_create(k, || {
                                calls.fetch_add(1, Ordering::SeqCst);
                                c.pile_up();
                                Stamp::new(0, round)
                            })
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let calls = calls.load(Ordering::SeqCst);
        let new = Stamp::new(0, round);
        if c.stores {
            assert_eq!(calls, 1, "round {round}: the creator ran {calls} times");
            let old = old.unwrap();
            for r in &results {
                assert!(
                    *r == old || *r == new,
                    "round {round}: got {r:?}, neither stale nor new"
                );
            }
            assert_eq!(c.region.get::<Stamp>(&k).unwrap(), Some(new));
        } else {
            assert_eq!(calls, THREADS);
            assert!(results.iter().all(|r| *r == new));
        }
    }
}

pub fn failed_or_panicking_creator_releases_the_lock(suite: &Suite) {
    let c = suite.case("creator_failure");
    let k = c.key("k");
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let failed: Result<u32, BoxError> = c.region.try_get_or_create(&k, || Err("no".into()));
    assert_eq!(failed.map_err(|e| e.to_string()), Err("no".to_string()));
    assert_eq!(
        c.region.get::<u32>(&k).unwrap(),
        None,
        "an error is not cached"
    );

    let panicked = catch_unwind(AssertUnwindSafe(|| {
        c.region
            .get_or_create::<u32, _>(&k, || panic!("creator panics (expected in this test)"))
    }));
    assert!(panicked.is_err());

    // The lock is free again: another thread (and this one) can create.
    let from_other_thread = thread::scope(|s| {
        s.spawn(|| c.region.get_or_create(&k, || 7u32).unwrap())
            .join()
            .unwrap()
    });
    assert_eq!(from_other_thread, 7);
    assert_eq!(
        c.region.get_or_create(&k, || 8u32).unwrap(),
        c.stored(7).unwrap_or(8)
    );
}

pub fn creator_reading_other_keys_does_not_deadlock(suite: &Suite) {
    let c = suite.case("nested");
    let (outer, inner) = (c.key("outer"), c.key("inner"));
    let v: u32 = c
        .region
        .get_or_create(&outer, || {
            let inner: u32 = c.region.get_or_create(&inner, || 20).unwrap();
            inner + 1
        })
        .unwrap();
    assert_eq!(v, 21);
    assert_eq!(c.region.get::<u32>(&inner).unwrap(), c.stored(20));
    assert_eq!(c.region.get::<u32>(&outer).unwrap(), c.stored(21));
}

// ----- load ------------------------------------------------------------------------------

pub fn many_threads_write_and_read(suite: &Suite) {
    const WRITERS: u32 = 8;
    const ITERATIONS: u32 = 30;
    let c = suite.case("many_threads");
    let shared: Vec<String> = (0..3).map(|i| c.key(&format!("shared{i}"))).collect();
    let barrier = Barrier::new(WRITERS as usize);
    thread::scope(|s| {
        for t in 0..WRITERS {
            let (c, shared, barrier) = (&c, &shared, &barrier);
            s.spawn(move || {
                barrier.wait();
                let mut seen = vec![false; shared.len()];
                for i in 0..ITERATIONS {
                    // A key of this thread's own: reads what it wrote.
                    let own = c.key(&format!("t{t}i{i}"));
                    let stamp = Stamp::new(t, i);
                    c.region.set(&own, &stamp).unwrap();
                    assert_eq!(c.region.get::<Stamp>(&own).unwrap(), c.stored(stamp));

                    // Keys every thread writes: any read is some thread's complete value.
                    let written = (t + i) as usize % shared.len();
                    c.region.set(&shared[written], &Stamp::new(t, i)).unwrap();
                    seen[written] = c.stores;
                    let values = c.region.get_multi::<Stamp, _>(shared).unwrap();
                    for ((value, seen), key) in values.into_iter().zip(&mut seen).zip(shared) {
                        match value {
                            Some(value) => {
                                assert!(c.stores, "null returned a value");
                                assert!(value.is_consistent(), "mixed-up value {value:?}");
                                *seen = true;
                            }
                            // Nobody deletes these keys: once there, a value can only be
                            // replaced. A miss means a half-written value was read.
                            None => assert!(!*seen, "{key} vanished"),
                        }
                    }
                    let made: Stamp = c
                        .region
                        .get_or_create(&shared[0], || Stamp::new(t, 1000 + i))
                        .unwrap();
                    assert!(made.is_consistent());
                }
            });
        }
    });
    // Everything every thread wrote to its own keys is there.
    for t in 0..WRITERS {
        let keys: Vec<String> = (0..ITERATIONS)
            .map(|i| c.key(&format!("t{t}i{i}")))
            .collect();
        let got = c.region.get_multi::<Stamp, _>(&keys).unwrap();
        for (i, value) in got.into_iter().enumerate() {
            assert_eq!(value, c.stored(Stamp::new(t, i as u32)));
        }
    }
    for key in &shared {
        let value = c.region.get::<Stamp>(key).unwrap();
        assert_eq!(value.is_some(), c.stores);
        assert!(value.is_none_or(|v| v.is_consistent()));
    }
}
