//! Region behaviour (SPEC section 3): configuration, operations, expiration and
//! invalidation, and the guarantees of the dogpile lock.

#[path = "support/shared_store.rs"]
mod shared_store;

use shared_store::Shared;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use dogpile::backend::{CacheBackend, Entry, ProxyBackend};
use dogpile::clock::ManualClock;
use dogpile::key::{length_conditional_mangler, sha1_mangle_key};
use dogpile::runner::ThreadPoolRunner;
use dogpile::{CacheRegion, CreateOptions, Error, Expiration, RegionConfig};
use serde::{Deserialize, Serialize};

const HOUR: Duration = Duration::from_secs(3600);
/// How long a test waits for something that must happen before it calls the run failed
/// (never reached when the code is right; keeps a broken lock from hanging the suite).
const PATIENCE: Duration = Duration::from_secs(20);

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_000_000.0))
}

/// A named region on `backend` with a manual clock and a one-hour expiration time.
fn region_on(backend: &str, clock: &Arc<ManualClock>) -> CacheRegion {
    let region = CacheRegion::builder()
        .name("test")
        .clock(clock.clone())
        .build();
    region
        .configure(RegionConfig::new(backend).expiration_time(HOUR))
        .unwrap();
    region
}

/// A backend whose every call fails, as a server that is down.
struct Down;

impl CacheBackend for Down {
    fn get(&self, _: &str) -> dogpile::Result<Option<Vec<u8>>> {
        Err(Error::backend("down at 127.0.0.1:1", "connection refused"))
    }
    fn set(&self, _: &str, _: Vec<u8>) -> dogpile::Result<()> {
        Err(Error::backend("down at 127.0.0.1:1", "connection refused"))
    }
    fn delete(&self, _: &str) -> dogpile::Result<()> {
        Err(Error::backend("down at 127.0.0.1:1", "connection refused"))
    }
}

/// Starts a `get_or_create` of `key` on another thread and returns once its creator is
/// running; the creator returns `value` when the returned sender is used.
fn creator_in_progress<T: dogpile::Cacheable>(
    region: &Arc<CacheRegion>,
    key: &'static str,
    value: T,
) -> (thread::JoinHandle<T>, mpsc::Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let region = region.clone();
    let creator = thread::spawn(move || {
        region
            .get_or_create(key, move || {
                started_tx.send(()).unwrap();
                release_rx.recv_timeout(PATIENCE).unwrap();
                value
            })
            .unwrap()
    });
    started_rx.recv_timeout(PATIENCE).unwrap();
    (creator, release_tx)
}

// ----- configuration ---------------------------------------------------------------------

#[test]
fn unconfigured_region_is_an_error_naming_the_region() {
    let region = CacheRegion::builder().name("users").build();
    assert!(!region.is_configured());
    let err = region.get::<u32>("k").unwrap_err();
    assert!(matches!(err, Error::RegionNotConfigured { .. }), "{err:?}");
    assert!(err.to_string().contains("`users`"), "{err}");
    assert!(region.set("k", &1u32).is_err());
    assert!(region.delete("k").is_err());
    assert!(region.get_or_create("k", || 1u32).is_err());
}

#[test]
fn configuring_twice_fails_unless_replacing() {
    let region = CacheRegion::builder().name("twice").build();
    region.configure(RegionConfig::new("memory")).unwrap();
    region.set("k", &1u32).unwrap();
    let err = region.configure(RegionConfig::new("null")).unwrap_err();
    assert!(
        matches!(err, Error::RegionAlreadyConfigured { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("`twice`") && err.to_string().contains("memory"),
        "{err}"
    );
    // The first backend is untouched by the failed attempt.
    assert_eq!(region.get::<u32>("k").unwrap(), Some(1));

    region
        .configure(RegionConfig::new("null").replace_existing_backend(true))
        .unwrap();
    assert_eq!(region.backend_name().as_deref(), Some("null"));
    assert_eq!(region.get::<u32>("k").unwrap(), None);
}

#[test]
fn unknown_backend_lists_the_known_names() {
    let region = CacheRegion::new();
    let err = region
        .configure(RegionConfig::new("dogpile.cache.nope"))
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::PluginNotFound { .. }), "{err:?}");
    assert!(text.contains("dogpile.cache.nope"), "{text}");
    for known in [
        "memory",
        "null",
        "dogpile.cache.memory",
        "dogpile.cache.memory_pickle",
    ] {
        assert!(text.contains(known), "{known} missing from: {text}");
    }
    assert!(!region.is_configured());
}

#[test]
fn misspelt_backend_names_and_arguments_get_a_suggestion() {
    let region = CacheRegion::new();
    let err = region.configure(RegionConfig::new("reddis")).unwrap_err();
    assert!(
        matches!(&err, Error::PluginNotFound { suggestion: Some(s), .. } if s == "redis"),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(
            "no cache backend named `reddis` (did you mean `redis`?); known backends: "
        ),
        "{err}"
    );
    let err = region
        .configure(RegionConfig::new("dogpile.cache.memroy"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("(did you mean `dogpile.cache.memory`?)"),
        "{err}"
    );
    let err = region.configure(RegionConfig::new("postgres")).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::PluginNotFound {
                suggestion: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("did you mean"), "{err}");

    let err = region
        .configure(RegionConfig::new("memory").argument("max_entires", 10))
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "invalid argument `max_entires` for backend `memory`: unknown argument \
             (did you mean `max_entries`?); accepted: "
        ),
        "{err}"
    );
    let err = region
        .configure_from_config(
            [("c.backend", "memory"), ("c.arguments.max_entires", "10")],
            "c.",
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("(did you mean `max_entries`?)"),
        "{err}"
    );
    let err = region
        .configure_from_config([("c.backend", "memory"), ("c.expiraton_time", "10")], "c.")
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidRegionOption { option, .. } if option == "c.expiraton_time"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("(did you mean `c.expiration_time`?)"),
        "{err}"
    );
    assert!(!err.to_string().contains("for backend"), "{err}");
    assert!(!region.is_configured());
}

#[test]
fn unknown_or_malformed_arguments_are_errors_naming_them() {
    let region = CacheRegion::new();
    let err = region
        .configure(RegionConfig::new("memory").argument("max_entires", 10))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert!(err.to_string().contains("max_entires") && err.to_string().contains("max_entries"));

    let err = region
        .configure(RegionConfig::new("memory").argument("max_entries", "lots"))
        .unwrap_err();
    assert!(
        err.to_string().contains("max_entries") && err.to_string().contains("lots"),
        "{err}"
    );
    assert!(!region.is_configured());
}

#[test]
fn dogpile_names_are_aliases() {
    for name in [
        "dogpile.cache.memory",
        "dogpile.cache.memory_pickle",
        "dogpile.cache.null",
    ] {
        let region = CacheRegion::new();
        region.configure(RegionConfig::new(name)).unwrap();
        region.set("k", &1u8).unwrap();
    }
}

#[test]
fn configure_from_config_uses_dogpile_layout() {
    let config = HashMap::from([
        ("cache.local.backend", "dogpile.cache.memory"),
        ("cache.local.expiration_time", "30"),
        ("cache.local.arguments.max_entries", "100"),
        ("cache.other.backend", "dogpile.cache.null"),
    ]);
    let local = CacheRegion::new();
    let other = CacheRegion::new();
    local
        .configure_from_config(&config, "cache.local.")
        .unwrap();
    other
        .configure_from_config(&config, "cache.other.")
        .unwrap();
    assert_eq!(
        local.backend_name().as_deref(),
        Some("dogpile.cache.memory")
    );
    assert_eq!(local.expiration_time(), Some(Duration::from_secs(30)));
    assert_eq!(other.backend_name().as_deref(), Some("dogpile.cache.null"));

    let bad = CacheRegion::new();
    let err = bad
        .configure_from_config(
            [("c.backend", "memory"), ("c.arguments.max_entries", "x")],
            "c.",
        )
        .unwrap_err();
    assert!(err.to_string().contains("max_entries"), "{err}");
}

#[test]
fn regions_are_named_when_built_or_after_the_prefix_of_their_flat_config() {
    let config = HashMap::from([
        ("cache.local.backend", "memory"),
        ("cache.users.backend", "memory"),
    ]);
    assert_eq!(dogpile::make_region().name(), "<unnamed>");
    let users = CacheRegion::named("users");
    assert_eq!(users.name(), "users");
    // A name given when the region is built is kept.
    users
        .configure_from_config(&config, "cache.users.")
        .unwrap();
    assert_eq!(users.name(), "users");

    let local = dogpile::make_region();
    // A failed configuration names nothing.
    let failed = local.configure_from_config([("cache.local.backend", "reddis")], "cache.local.");
    assert!(failed.is_err());
    assert_eq!(local.name(), "<unnamed>");
    local
        .configure_from_config(&config, "cache.local.")
        .unwrap();
    assert_eq!(local.name(), "cache.local");
    assert!(
        format!("{local:?}").contains("\"cache.local\""),
        "{local:?}"
    );
    // The first name sticks.
    local
        .configure(
            RegionConfig::from_config(&config, "cache.users.")
                .unwrap()
                .replace_existing_backend(true),
        )
        .unwrap();
    assert_eq!(local.name(), "cache.local");
    let err = local.configure(RegionConfig::new("memory")).unwrap_err();
    assert!(err.to_string().contains("region `cache.local`"), "{err}");

    // No prefix, no name.
    let plain = dogpile::make_region();
    plain
        .configure_from_config([("backend", "null")], "")
        .unwrap();
    assert_eq!(plain.name(), "<unnamed>");
}

#[test]
fn registered_user_backend_is_found_by_name() {
    let store = Shared::default();
    let seen = store.clone();
    dogpile::backend::register_backend(
        "test.dictionary",
        move |args: &dogpile::backend::Arguments| {
            args.check_known(&[])?;
            Ok(store.clone())
        },
    );
    let region = CacheRegion::new();
    region
        .configure(RegionConfig::new("test.dictionary"))
        .unwrap();
    region.set("k", &"v".to_string()).unwrap();
    assert!(seen.0.lock().unwrap().contains_key("k"));
    assert!(dogpile::backend::registered_backends().contains(&"test.dictionary".to_string()));
}

// ----- operations --------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    tags: Vec<String>,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user {id}"),
        tags: vec!["a".into(), "b".into()],
    }
}

#[test]
fn get_set_delete_on_typed_and_serialized_memory() {
    let clock = clock();
    for backend in ["memory", "memory_serialized"] {
        let region = region_on(backend, &clock);
        assert_eq!(region.get::<User>("u").unwrap(), None);
        region.set("u", &user(1)).unwrap();
        assert_eq!(region.get::<User>("u").unwrap(), Some(user(1)));
        region.delete("u").unwrap();
        region.delete("u").unwrap();
        assert_eq!(region.get::<User>("u").unwrap(), None);
    }
}

#[test]
fn value_metadata_carries_creation_time_and_version() {
    let clock = clock();
    let region = region_on("memory_serialized", &clock);
    region.set("k", &7u32).unwrap();
    let value = region.get_value_metadata::<u32>("k").unwrap().unwrap();
    assert_eq!(value.payload, 7);
    assert_eq!(value.metadata.ct, 1_000_000.0);
    assert_eq!(value.metadata.v, 2);
    assert!(region
        .get_value_metadata::<u32>("missing")
        .unwrap()
        .is_none());
}

#[test]
fn byte_backends_store_dogpile_format() {
    let clock = clock();
    let store = Shared::default();
    let region = CacheRegion::builder().clock(clock.clone()).build();
    region.configure_backend(store.clone(), Some(HOUR)).unwrap();
    region.set("k", &user(3)).unwrap();
    let bytes = store.0.lock().unwrap()["k"].clone();
    assert!(
        bytes.starts_with(br#"{"ct":1000000.0,"v":2}|"#),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
    // Python's dogpile.cache writes `json.dumps` separators; the region reads them.
    let mut python = br#"{"ct": 1000000.0, "v": 2}|"#.to_vec();
    python.extend(&bytes[bytes.iter().position(|&b| b == b'|').unwrap() + 1..]);
    store.0.lock().unwrap().insert("py".into(), python);
    assert_eq!(region.get::<User>("py").unwrap(), Some(user(3)));
}

#[test]
fn undecodable_value_is_a_miss_and_get_or_create_overwrites_it() {
    let clock = clock();
    let store = Shared::default();
    let region = CacheRegion::builder().clock(clock.clone()).build();
    region.configure_backend(store.clone(), Some(HOUR)).unwrap();
    for garbage in [
        b"not dogpile at all".to_vec(),
        br#"{"ct": 1000000.0, "v": 1}|"#.to_vec(),
        br#"{"ct": 1000000.0, "v": 2}|"#.iter().chain(&[0xc1, 0xff]).copied().collect(),
    ] {
        store.0.lock().unwrap().insert("k".into(), garbage);
        assert_eq!(region.get::<u32>("k").unwrap(), None);
        assert_eq!(region.get_or_create("k", || 9u32).unwrap(), 9);
        assert_eq!(region.get::<u32>("k").unwrap(), Some(9));
    }
    // A value of another type (a struct changed between deploys) heals the same way.
    region.set("k", &"text".to_string()).unwrap();
    assert_eq!(region.get::<u32>("k").unwrap(), None);
    assert_eq!(region.get_or_create("k", || 10u32).unwrap(), 10);

    // And on the typed memory backend, where values are never serialized.
    let typed = region_on("memory", &clock);
    typed.set("k", &"text".to_string()).unwrap();
    assert_eq!(typed.get::<u32>("k").unwrap(), None);
    assert_eq!(typed.get_or_create("k", || 11u32).unwrap(), 11);
    assert_eq!(typed.get::<u32>("k").unwrap(), Some(11));
}

#[test]
fn multi_operations_keep_order() {
    let clock = clock();
    for backend in ["memory", "memory_serialized"] {
        let region = region_on(backend, &clock);
        region
            .set_multi(&[("a", 1u32), ("b", 2), ("c", 3)])
            .unwrap();
        assert_eq!(
            region.get_multi::<u32, _>(&["c", "x", "a"]).unwrap(),
            [Some(3), None, Some(1)]
        );
        region.delete_multi(&["a", "c"]).unwrap();
        assert_eq!(
            region.get_multi::<u32, _>(&["a", "b", "c"]).unwrap(),
            [None, Some(2), None]
        );
        assert!(region.get_multi::<u32, &str>(&[]).unwrap().is_empty());
    }
}

#[test]
fn get_or_create_multi_creates_only_what_is_missing() {
    let clock = clock();
    let region = region_on("memory", &clock);
    region.set("b", &20u32).unwrap();
    let asked = Mutex::new(Vec::new());
    let values = region
        .get_or_create_multi(&["a", "b", "c", "a"], |keys: &[&str]| {
            asked
                .lock()
                .unwrap()
                .push(keys.iter().map(|k| k.to_string()).collect::<Vec<_>>());
            keys.iter()
                .map(|k| (k.as_bytes()[0] - b'a') as u32 * 10)
                .collect()
        })
        .unwrap();
    assert_eq!(values, [0, 20, 20, 0]);
    assert_eq!(
        *asked.lock().unwrap(),
        [vec!["a".to_string(), "c".to_string()]]
    );
    assert_eq!(region.get::<u32>("c").unwrap(), Some(20));

    // Everything cached: the creator is not called.
    let again = region
        .get_or_create_multi(&["a", "b", "c"], |_: &[&str]| -> Vec<u32> {
            panic!("no call")
        })
        .unwrap();
    assert_eq!(again, [0, 20, 20]);

    // A creator that returns the wrong number of values is an error, not a panic.
    let err = region
        .get_or_create_multi(&["x", "y"], |_: &[&str]| vec![1u32])
        .unwrap_err();
    assert!(err.to_string().contains("1 values for 2 keys"), "{err}");
}

// ----- expiration and invalidation -------------------------------------------------------

#[test]
fn values_expire_by_creation_time() {
    let clock = clock();
    let region = region_on("memory", &clock);
    region.set("k", &1u32).unwrap();
    clock.advance(HOUR);
    assert_eq!(
        region.get::<u32>("k").unwrap(),
        Some(1),
        "exactly at expiry it is fresh"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(region.get::<u32>("k").unwrap(), None);
    assert_eq!(
        region.get_with::<u32>("k", None, true).unwrap(),
        Some(1),
        "ignore_expiration"
    );
    assert_eq!(
        region
            .get_with::<u32>("k", Some(Expiration::After(2 * HOUR)), false)
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        region
            .get_with::<u32>("k", Some(Expiration::Never), false)
            .unwrap(),
        Some(1)
    );
    assert_eq!(region.get_or_create("k", || 2u32).unwrap(), 2);
    assert_eq!(region.get::<u32>("k").unwrap(), Some(2));
}

#[test]
fn per_call_expiration_and_never() {
    let clock = clock();
    let region = region_on("memory", &clock);
    let never = || CreateOptions::new().expiration_time(Expiration::Never);
    assert_eq!(region.get_or_create_with("k", never(), || 1u32).unwrap(), 1);
    clock.advance(100 * HOUR);
    assert_eq!(region.get_or_create_with("k", never(), || 2u32).unwrap(), 1);
    let short = CreateOptions::new().expiration_time(Duration::from_secs(5));
    assert_eq!(region.get_or_create_with("k", short, || 3u32).unwrap(), 3);

    // A region without an expiration time never expires anything.
    let forever = CacheRegion::builder().clock(clock.clone()).build();
    forever.configure(RegionConfig::new("memory")).unwrap();
    forever.set("k", &1u32).unwrap();
    clock.advance(10_000 * HOUR);
    assert_eq!(forever.get::<u32>("k").unwrap(), Some(1));
}

#[test]
fn should_cache_fn_decides_what_is_stored() {
    let clock = clock();
    let region = region_on("memory", &clock);
    let non_empty = |v: &Vec<u32>| !v.is_empty();
    let opts = || CreateOptions::new().should_cache_fn(&non_empty);
    assert_eq!(
        region
            .get_or_create_with("k", opts(), Vec::<u32>::new)
            .unwrap(),
        Vec::<u32>::new()
    );
    assert_eq!(region.get::<Vec<u32>>("k").unwrap(), None);
    assert_eq!(
        region
            .get_or_create_with("k", opts(), || vec![1u32])
            .unwrap(),
        [1]
    );
    assert_eq!(region.get::<Vec<u32>>("k").unwrap(), Some(vec![1]));
}

#[test]
fn try_get_or_create_does_not_cache_errors() {
    #[derive(Debug)]
    enum AppError {
        Cache(Error),
        NotFound,
    }
    impl From<Error> for AppError {
        fn from(e: Error) -> Self {
            AppError::Cache(e)
        }
    }
    // The waiters of a failed creation are handed its error's text (issue 18).
    impl std::fmt::Display for AppError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }
    let clock = clock();
    let region = region_on("memory", &clock);
    let r: Result<u32, AppError> = region.try_get_or_create("k", || Err(AppError::NotFound));
    assert!(matches!(r, Err(AppError::NotFound)));
    assert_eq!(region.get::<u32>("k").unwrap(), None);
    let r: Result<u32, AppError> = region.try_get_or_create("k", || Ok(4));
    assert_eq!(r.unwrap(), 4);
    assert_eq!(region.get::<u32>("k").unwrap(), Some(4));

    let unconfigured = CacheRegion::new();
    let r: Result<u32, AppError> = unconfigured.try_get_or_create("k", || Ok(4));
    assert!(matches!(
        r,
        Err(AppError::Cache(Error::RegionNotConfigured { .. }))
    ));
}

#[test]
fn hard_invalidation_makes_older_values_absent() {
    let clock = clock();
    let region = region_on("memory", &clock);
    region.set("k", &1u32).unwrap();
    clock.advance(Duration::from_secs(1));
    region.invalidate(true).unwrap();
    assert_eq!(region.get::<u32>("k").unwrap(), None);
    assert_eq!(
        region.get_or_create("k", || 2u32).unwrap(),
        2,
        "regenerated"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        region.get::<u32>("k").unwrap(),
        Some(2),
        "newer values are unaffected"
    );
}

#[test]
fn soft_invalidation_serves_old_values_while_one_caller_regenerates() {
    let clock = clock();
    let region = Arc::new(region_on("memory", &clock));
    region.set("k", &1u32).unwrap();
    clock.advance(Duration::from_secs(1));
    region.invalidate(false).unwrap();
    assert_eq!(
        region.get::<u32>("k").unwrap(),
        None,
        "get treats soft as expired"
    );

    // While the regenerating caller is inside its creator, others get the old value.
    let (regenerating, release_tx) = creator_in_progress(&region, "k", 2u32);
    assert_eq!(
        region
            .get_or_create("k", || -> u32 { panic!("second creator") })
            .unwrap(),
        1
    );
    release_tx.send(()).unwrap();
    assert_eq!(regenerating.join().unwrap(), 2);
    assert_eq!(region.get::<u32>("k").unwrap(), Some(2));
}

#[test]
fn soft_invalidation_without_expiration_is_an_error() {
    let region = CacheRegion::builder().name("forever").build();
    region.configure(RegionConfig::new("memory")).unwrap();
    let err = region.invalidate(false).unwrap_err();
    assert!(
        matches!(err, Error::SoftInvalidationWithoutExpiration { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("`forever`"));
    region.invalidate(true).unwrap();
}

// ----- keys, proxies, failing open ---------------------------------------------------------

#[test]
fn key_mangler_applies_to_every_key() {
    let store = Shared::default();
    let region = CacheRegion::builder()
        .key_mangler(length_conditional_mangler(10, sha1_mangle_key))
        .build();
    region.configure_backend(store.clone(), None).unwrap();
    region.set("short", &1u8).unwrap();
    region.set("a much longer key", &2u8).unwrap();
    region.get_or_create("another long key", || 3u8).unwrap();
    let mut keys: Vec<String> = store.0.lock().unwrap().keys().cloned().collect();
    keys.sort();
    let mut expected = vec![
        "short".to_string(),
        sha1_mangle_key("a much longer key"),
        sha1_mangle_key("another long key"),
    ];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(region.get::<u8>("a much longer key").unwrap(), Some(2));
    region.delete("a much longer key").unwrap();
    assert_eq!(region.get::<u8>("a much longer key").unwrap(), None);
}

#[derive(Default)]
struct Record {
    calls: Mutex<Vec<String>>,
}

struct Tag(&'static str, Arc<Record>);

impl ProxyBackend for Tag {
    fn get(&self, key: &str, next: &dyn CacheBackend) -> dogpile::Result<Option<Entry>> {
        self.1
            .calls
            .lock()
            .unwrap()
            .push(format!("{}:get:{key}", self.0));
        next.get_entry(key)
    }
    fn set(&self, key: &str, entry: Entry, next: &dyn CacheBackend) -> dogpile::Result<()> {
        self.1
            .calls
            .lock()
            .unwrap()
            .push(format!("{}:set:{key}", self.0));
        next.set_entry(key, entry)
    }
}

#[test]
fn proxies_see_every_call_in_order_whatever_the_storage_kind() {
    for backend in ["memory", "memory_serialized"] {
        let record = Arc::new(Record::default());
        let region = CacheRegion::new();
        region
            .configure(
                RegionConfig::new(backend)
                    .wrap(Tag("outer", record.clone()))
                    .wrap(Tag("inner", record.clone())),
            )
            .unwrap();
        region.set("k", &1u32).unwrap();
        assert_eq!(region.get::<u32>("k").unwrap(), Some(1));
        assert_eq!(
            *record.calls.lock().unwrap(),
            ["outer:set:k", "inner:set:k", "outer:get:k", "inner:get:k"],
            "on {backend}"
        );
    }
}

#[test]
fn fail_open_region_computes_when_the_backend_is_down() {
    let strict = CacheRegion::new();
    strict.configure_backend(Down, None).unwrap();
    let err = strict.get_or_create("k", || 1u32).unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");

    let open = CacheRegion::builder().fail_open(true).build();
    open.configure_backend(Down, None).unwrap();
    assert_eq!(open.get_or_create("k", || 1u32).unwrap(), 1);
    // The explicit fail-open call works on an unconfigured region too (one built with
    // fail_open(true): otherwise a debug build panics, see tests/macros.rs).
    let unconfigured = CacheRegion::builder().fail_open(true).build();
    let calls = AtomicUsize::new(0);
    let v: Result<u32, std::convert::Infallible> = dogpile::__private::get_or_create_fail_open(
        &unconfigured,
        "k",
        CreateOptions::new(),
        || {
            calls.fetch_add(1, SeqCst);
            Ok(5)
        },
    );
    assert_eq!(v.unwrap(), 5);
    assert_eq!(calls.load(SeqCst), 1, "the creator runs exactly once");
}

// ----- the dogpile lock --------------------------------------------------------------------

const THREADS: usize = 32;
const ROUNDS: usize = 25;

/// Runs `THREADS` threads released together by a barrier, each calling `f`.
fn race<T: Send + 'static>(f: impl Fn() -> T + Send + Sync + 'static) -> Vec<T> {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (f, barrier) = (f.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                f()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn one_creator_call_per_missing_key_however_many_threads_race() {
    for backend in ["memory", "memory_serialized"] {
        for round in 0..ROUNDS {
            let region = Arc::new(region_on(backend, &clock()));
            let calls = Arc::new(AtomicUsize::new(0));
            let results = {
                let (region, calls) = (region.clone(), calls.clone());
                race(move || {
                    region
                        .get_or_create("k", || {
                            calls.fetch_add(1, SeqCst);
                            thread::yield_now();
                            round as u64
                        })
                        .unwrap()
                })
            };
            assert_eq!(calls.load(SeqCst), 1, "{backend}, round {round}");
            assert!(
                results.iter().all(|&v| v == round as u64),
                "everybody got the new value"
            );
        }
    }
}

#[test]
fn one_creator_call_per_expired_key_however_many_threads_race() {
    for round in 0..ROUNDS {
        let clock = clock();
        let region = Arc::new(region_on("memory", &clock));
        region.set("k", &0u64).unwrap();
        clock.advance(2 * HOUR);
        let calls = Arc::new(AtomicUsize::new(0));
        let results = {
            let (region, calls) = (region.clone(), calls.clone());
            race(move || {
                region
                    .get_or_create("k", || {
                        calls.fetch_add(1, SeqCst);
                        thread::yield_now();
                        1u64
                    })
                    .unwrap()
            })
        };
        assert_eq!(calls.load(SeqCst), 1, "round {round}");
        assert!(results.iter().all(|&v| v == 0 || v == 1));
        assert_eq!(region.get::<u64>("k").unwrap(), Some(1));
    }
}

#[test]
fn stale_readers_do_not_wait_for_the_creator() {
    let clock = clock();
    let region = Arc::new(region_on("memory", &clock));
    region.set("k", &"old".to_string()).unwrap();
    clock.advance(2 * HOUR);

    let (creator, release_tx) = creator_in_progress(&region, "k", "new".to_string());

    // The creator is blocked: every reader must come back, with the stale value.
    let (done_tx, done_rx) = mpsc::channel();
    for _ in 0..THREADS {
        let (region, done_tx) = (region.clone(), done_tx.clone());
        thread::spawn(move || {
            let v = region
                .get_or_create("k", || -> String { panic!("a second creator ran") })
                .unwrap();
            done_tx.send(v).unwrap();
        });
    }
    for _ in 0..THREADS {
        let v = done_rx
            .recv_timeout(PATIENCE)
            .expect("a reader of a stale value waited for the creator");
        assert_eq!(v, "old");
    }
    release_tx.send(()).unwrap();
    assert_eq!(creator.join().unwrap(), "new");
    assert_eq!(region.get::<String>("k").unwrap().as_deref(), Some("new"));
}

#[test]
fn without_serve_stale_readers_wait_for_the_fresh_value() {
    let clock = clock();
    let region = Arc::new(
        CacheRegion::builder()
            .clock(clock.clone())
            .serve_stale(false)
            .build(),
    );
    region
        .configure(RegionConfig::new("memory").expiration_time(HOUR))
        .unwrap();
    region.set("k", &1u32).unwrap();
    clock.advance(2 * HOUR);
    let calls = Arc::new(AtomicUsize::new(0));
    let results = {
        let (region, calls) = (region.clone(), calls.clone());
        race(move || {
            region
                .get_or_create("k", || {
                    calls.fetch_add(1, SeqCst);
                    2u32
                })
                .unwrap()
        })
    };
    assert_eq!(calls.load(SeqCst), 1);
    assert!(
        results.iter().all(|&v| v == 2),
        "nobody got the stale value: {results:?}"
    );
}

#[test]
fn waiters_on_a_missing_key_get_the_new_value() {
    let region = Arc::new(region_on("memory", &clock()));
    let (creator, release_tx) = creator_in_progress(&region, "k", 42u32);
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let region = region.clone();
            thread::spawn(move || {
                region
                    .get_or_create("k", || -> u32 { panic!("a second creator ran") })
                    .unwrap()
            })
        })
        .collect();
    while !region.key_is_locked("k") {
        thread::yield_now();
    }
    release_tx.send(()).unwrap();
    assert_eq!(creator.join().unwrap(), 42);
    for waiter in waiters {
        assert_eq!(waiter.join().unwrap(), 42);
    }
    assert!(!region.key_is_locked("k"));
}

#[test]
fn a_panicking_creator_releases_the_lock_and_a_waiter_takes_over() {
    for round in 0..ROUNDS {
        let region = Arc::new(region_on("memory", &clock()));
        let calls = Arc::new(AtomicUsize::new(0));
        let results = {
            let (region, calls) = (region.clone(), calls.clone());
            race(move || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    region
                        .get_or_create("k", || {
                            if calls.fetch_add(1, SeqCst) == 0 {
                                panic!("first creator fails");
                            }
                            7u32
                        })
                        .unwrap()
                }))
                .ok()
            })
        };
        assert_eq!(
            calls.load(SeqCst),
            2,
            "round {round}: one panic, then one success"
        );
        assert_eq!(results.iter().filter(|r| r.is_none()).count(), 1);
        assert!(results.iter().flatten().all(|&v| v == 7));
        assert!(!region.key_is_locked("k"));
    }
}

#[test]
fn a_failing_creator_hands_its_failure_to_its_waiters_and_a_later_caller_takes_over() {
    for round in 0..ROUNDS {
        let region = Arc::new(region_on("memory", &clock()));
        let calls = Arc::new(AtomicUsize::new(0));
        let results = {
            let (region, calls) = (region.clone(), calls.clone());
            race(move || {
                region.try_get_or_create("k", || {
                    if calls.fetch_add(1, SeqCst) == 0 {
                        return Err(Error::backend("test", "first creator fails"));
                    }
                    Ok(8u32)
                })
            })
        };
        // The first creator's waiters got its failure (issue 18); a caller that came
        // after it took the lock and created.
        let own = results
            .iter()
            .filter(|r| matches!(r, Err(Error::Backend { .. })))
            .count();
        let shared = results
            .iter()
            .filter(|r| matches!(r, Err(Error::CreatorFailed { message, .. }) if message.contains("first creator fails")))
            .count();
        let created = results.iter().filter(|r| matches!(r, Ok(8))).count();
        assert_eq!((own, own + shared + created), (1, THREADS), "round {round}");
        assert_eq!(
            calls.load(SeqCst),
            1 + usize::from(created > 0),
            "round {round}"
        );
        assert!(!region.key_is_locked("k"));
        let expected = if created > 0 { 8 } else { 9 };
        let next = region.try_get_or_create("k", || Ok::<_, Error>(9u32));
        assert_eq!(next.unwrap(), expected, "round {round}");
    }
}

#[test]
fn a_creator_reading_other_keys_of_the_region_does_not_deadlock() {
    let region = Arc::new(region_on("memory", &clock()));
    let results = {
        let region = region.clone();
        race(move || {
            let inner = region.clone();
            region
                .get_or_create("outer", move || {
                    let a: u32 = inner.get_or_create("inner-a", || 1).unwrap();
                    let b: u32 = inner.get_or_create("inner-b", || 2).unwrap();
                    let c: Option<u32> = inner.get("outer").unwrap();
                    a + b + c.unwrap_or(0)
                })
                .unwrap()
        })
    };
    assert!(results.iter().all(|&v| v == 3));
}

#[test]
fn get_or_create_multi_runs_one_creator_per_key_under_races() {
    for round in 0..ROUNDS {
        let region = Arc::new(region_on("memory", &clock()));
        let created = Arc::new(Mutex::new(Vec::<String>::new()));
        let results = {
            let (region, created) = (region.clone(), created.clone());
            race(move || {
                region
                    .get_or_create_multi(&["c", "a", "b"], |keys: &[&str]| {
                        created
                            .lock()
                            .unwrap()
                            .extend(keys.iter().map(|k| k.to_string()));
                        keys.iter().map(|k| k.to_uppercase()).collect()
                    })
                    .unwrap()
            })
        };
        let mut created = created.lock().unwrap().clone();
        created.sort();
        assert_eq!(
            created,
            ["a", "b", "c"],
            "round {round}: each key created once"
        );
        assert!(results.iter().all(|v| v == &["C", "A", "B"]));
    }
}

#[test]
fn background_runner_serves_stale_to_the_winner_too() {
    let clock = clock();
    let region = Arc::new(
        CacheRegion::builder()
            .clock(clock.clone())
            .async_creation_runner(ThreadPoolRunner::new(2).unwrap())
            .build(),
    );
    region
        .configure(RegionConfig::new("memory").expiration_time(HOUR))
        .unwrap();

    // A missing value is created by the caller.
    assert_eq!(region.get_or_create_in_background("k", || 1u32).unwrap(), 1);
    clock.advance(2 * HOUR);

    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    let stale = region
        .get_or_create_in_background("k", move || {
            release_rx.recv_timeout(PATIENCE).unwrap();
            done_tx.send(()).unwrap();
            2u32
        })
        .unwrap();
    assert_eq!(stale, 1, "the winner got the stale value at once");
    assert!(region.key_is_locked("k"), "the runner holds the lock");
    assert_eq!(
        region
            .get_or_create_in_background("k", || -> u32 { panic!("a second creator ran") })
            .unwrap(),
        1
    );
    release_tx.send(()).unwrap();
    done_rx.recv_timeout(PATIENCE).unwrap();
    while region.key_is_locked("k") {
        thread::yield_now();
    }
    assert_eq!(region.get::<u32>("k").unwrap(), Some(2));
}
