//! `#[cache_on_arguments]` and `#[cache_multi_on_arguments]` against real regions: the
//! `memory` backend (typed values), `memory_serialized` (dogpile's byte format), and
//! failing backends for the fail-open paths.
//!
//! Every test has its own region: functions declared inside two test functions live in the
//! same module (`macros`), so they would share keys in one region.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, LazyLock, Mutex};
use std::time::Duration;

use dogpile::backend::CacheBackend;
use dogpile::clock::ManualClock;
use dogpile::key::FunctionKey;
use dogpile::{cache_multi_on_arguments, cache_on_arguments, CacheRegion, Error, RegionConfig};
use once_cell::sync::Lazy;
use serde::{Deserialize, Serialize};

/// A region configured with the named backend.
fn region(backend: &str) -> CacheRegion {
    let region = CacheRegion::new();
    region.configure(RegionConfig::new(backend)).unwrap();
    region
}

fn count(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::SeqCst)
}

/// A backend whose every operation fails, as a server that is down.
struct Down;

impl CacheBackend for Down {
    fn get(&self, _key: &str) -> dogpile::Result<Option<Vec<u8>>> {
        Err(Error::backend(
            "down-test-backend at 127.0.0.1:1",
            "connection refused",
        ))
    }
    fn set(&self, _key: &str, _value: Vec<u8>) -> dogpile::Result<()> {
        Err(Error::backend(
            "down-test-backend at 127.0.0.1:1",
            "connection refused",
        ))
    }
    fn delete(&self, _key: &str) -> dogpile::Result<()> {
        Err(Error::backend(
            "down-test-backend at 127.0.0.1:1",
            "connection refused",
        ))
    }
}

/// A byte store whose writes can be made to fail while reads keep working.
#[derive(Clone, Default)]
struct FlakyWrites {
    store: Arc<Mutex<std::collections::HashMap<String, Vec<u8>>>>,
    fail_writes: Arc<AtomicBool>,
}

impl CacheBackend for FlakyWrites {
    fn get(&self, key: &str) -> dogpile::Result<Option<Vec<u8>>> {
        Ok(self.store.lock().unwrap().get(key).cloned())
    }
    fn set(&self, key: &str, value: Vec<u8>) -> dogpile::Result<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(Error::backend("flaky-test-backend", "write refused"));
        }
        self.store.lock().unwrap().insert(key.to_owned(), value);
        Ok(())
    }
    fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.store.lock().unwrap().remove(key);
        Ok(())
    }
}

// ----- the cached function and its siblings ---------------------------------------------

#[test]
fn second_call_is_served_from_the_cache() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    fn add(a: i32, b: i32) -> i32 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        a + b
    }

    assert_eq!(add(3, 4), 7);
    assert_eq!(add(3, 4), 7);
    assert_eq!(
        count(&CALLS),
        1,
        "the body ran again for the same arguments"
    );
    assert_eq!(add(4, 3), 7);
    assert_eq!(count(&CALLS), 2, "other arguments are another key");
    assert_eq!(add_uncached(3, 4), 7);
    assert_eq!(count(&CALLS), 3, "_uncached always runs the body");
    assert_eq!(add(3, 4), 7);
    assert_eq!(count(&CALLS), 3);
}

#[test]
fn invalidate_refresh_set_and_get() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    /// Returns `n` plus how many times the body has run before.
    #[cache_on_arguments(region = "REGION")]
    pub fn numbered(n: usize) -> usize {
        n + CALLS.fetch_add(1, Ordering::SeqCst) * 100
    }

    assert_eq!(get_numbered(1).unwrap(), None, "get never runs the body");
    assert_eq!(count(&CALLS), 0);

    assert_eq!(numbered(1), 1);
    assert_eq!(get_numbered(1).unwrap(), Some(1));

    invalidate_numbered(1).unwrap();
    assert_eq!(get_numbered(1).unwrap(), None);
    assert_eq!(numbered(1), 101, "after invalidate the body runs again");
    assert_eq!(numbered(1), 101);
    assert_eq!(count(&CALLS), 2);

    assert_eq!(refresh_numbered(1).unwrap(), 201, "refresh runs the body");
    assert_eq!(numbered(1), 201, "and stores what it returns");
    assert_eq!(count(&CALLS), 3);

    set_numbered(&7, 1).unwrap();
    assert_eq!(numbered(1), 7, "set stores the value given");
    assert_eq!(get_numbered(1).unwrap(), Some(7));
    assert_eq!(count(&CALLS), 3);

    // Invalidating a value that is not cached is not an error.
    invalidate_numbered(99).unwrap();
}

#[test]
fn siblings_work_on_the_byte_format_too() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory_serialized"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
        name: String,
    }

    #[cache_on_arguments(region = "REGION", namespace = "users")]
    fn user(id: u64) -> User {
        CALLS.fetch_add(1, Ordering::SeqCst);
        User {
            id,
            name: format!("user {id}"),
        }
    }

    let expected = User {
        id: 5,
        name: "user 5".into(),
    };
    assert_eq!(user(5), expected);
    assert_eq!(user(5), expected);
    assert_eq!(count(&CALLS), 1);
    // The value sits in the backend under the function key, as dogpile's bytes.
    assert_eq!(
        REGION.get::<User>("macros:user|users|5").unwrap(),
        Some(expected.clone())
    );
    set_user(
        &User {
            id: 5,
            name: "ed".into(),
        },
        5,
    )
    .unwrap();
    assert_eq!(user(5).name, "ed");
    assert_eq!(get_user(6).unwrap(), None);
    invalidate_user(5).unwrap();
    assert_eq!(user(5), expected);
    assert_eq!(count(&CALLS), 2);
}

#[test]
fn recursive_calls_go_through_the_cache() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    fn fib(n: u64) -> u64 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        if n < 2 {
            n
        } else {
            fib(n - 1) + fib(n - 2)
        }
    }

    assert_eq!(fib(80), 23_416_728_348_467_685);
    assert_eq!(count(&CALLS), 81, "each n computed once");
}

#[test]
fn concurrent_callers_run_the_body_once() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    fn slow(n: u32) -> u32 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        n * 2
    }

    for round in 0..5u32 {
        let barrier = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    slow(round)
                })
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().unwrap(), round * 2);
        }
        assert_eq!(
            count(&CALLS),
            round as usize + 1,
            "16 racing callers ran the body more than once"
        );
    }
}

// ----- keys -----------------------------------------------------------------------------

mod myapp {
    pub mod tools {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::LazyLock;

        use dogpile::{cache_on_arguments, CacheRegion};

        pub static REGION: LazyLock<CacheRegion> = LazyLock::new(|| super::super::region("memory"));
        pub static CALLS: AtomicUsize = AtomicUsize::new(0);

        #[cache_on_arguments(region = "REGION", namespace = "foo")]
        pub fn one(a: i32, b: i32) -> i32 {
            CALLS.fetch_add(1, Ordering::SeqCst);
            a + b
        }

        #[cache_on_arguments(region = "REGION")]
        pub fn two(a: i32, b: i32) -> i32 {
            a * b
        }

        #[cache_on_arguments(region = "REGION")]
        pub fn zero() -> String {
            CALLS.fetch_add(1, Ordering::SeqCst);
            "nothing".into()
        }

        #[cache_on_arguments(region = "REGION")]
        pub fn same(x: u32) -> String {
            format!("tools {x}")
        }
    }

    pub mod other {
        use dogpile::cache_on_arguments;

        use super::tools::REGION;

        #[cache_on_arguments(region = "REGION")]
        pub fn same(x: u32) -> String {
            format!("other {x}")
        }
    }
}

#[test]
fn keys_follow_dogpile_layout_with_the_module_path() {
    use myapp::tools;

    // This test crate is `macros`, so the module of `one` is `macros::myapp::tools`.
    assert_eq!(tools::one_key(3, 4), "macros::myapp::tools:one|foo|3 4");
    assert_eq!(tools::two_key(3, 4), "macros::myapp::tools:two|3 4");
    assert_eq!(tools::zero_key(), "macros::myapp::tools:zero|");

    // The value is stored under exactly that key.
    assert_eq!(tools::one(3, 4), 7);
    assert_eq!(
        tools::REGION
            .get::<i32>("macros::myapp::tools:one|foo|3 4")
            .unwrap(),
        Some(7)
    );
    assert_eq!(tools::two(3, 4), 12);
    assert_eq!(
        tools::REGION
            .get::<i32>("macros::myapp::tools:two|3 4")
            .unwrap(),
        Some(12)
    );

    let before = count(&tools::CALLS);
    assert_eq!(tools::zero(), "nothing");
    assert_eq!(tools::zero(), "nothing");
    assert_eq!(
        count(&tools::CALLS),
        before + 1,
        "a function without arguments is cached"
    );
    assert_eq!(
        tools::REGION
            .get::<String>("macros::myapp::tools:zero|")
            .unwrap()
            .as_deref(),
        Some("nothing")
    );
}

#[test]
fn functions_of_the_same_name_in_two_modules_never_share_keys() {
    use myapp::{other, tools};

    assert_ne!(tools::same_key(1), other::same_key(1));
    assert_eq!(other::same_key(1), "macros::myapp::other:same|1");
    // Same region, same name, same argument: each gets its own value.
    assert_eq!(tools::same(1), "tools 1");
    assert_eq!(other::same(1), "other 1");
    assert_eq!(tools::same(1), "tools 1");
    assert_eq!(other::same(1), "other 1");
}

#[test]
fn arguments_holding_spaces_never_share_a_value() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    fn greet(first: &str, last: &str) -> String {
        CALLS.fetch_add(1, Ordering::SeqCst);
        format!("{first}/{last}")
    }

    assert_eq!(greet("Mary Ann", "Smith"), "Mary Ann/Smith");
    assert_eq!(greet("Mary", "Ann Smith"), "Mary/Ann Smith");
    assert_eq!(greet("Mary Ann", "Smith"), "Mary Ann/Smith");
    assert_eq!(count(&CALLS), 2, "two calls, two values");
    assert_eq!(
        greet_key("Mary Ann", "Smith"),
        r"macros:greet|Mary\ Ann Smith"
    );
    assert_eq!(
        greet_key("Mary", "Ann Smith"),
        r"macros:greet|Mary Ann\ Smith"
    );
    assert_eq!(greet_key("", "x|y"), r"macros:greet|\0 x\|y");
    assert_eq!(greet_key("Mary", "Smith"), "macros:greet|Mary Smith");
}

mod key_properties {
    use std::collections::HashMap;
    use std::sync::LazyLock;

    use dogpile::{cache_multi_on_arguments, cache_on_arguments, CacheRegion};
    use proptest::prelude::*;

    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| super::region("memory"));

    #[cache_on_arguments(region = "REGION")]
    fn three(a: &str, b: &str, c: &str) -> String {
        format!("{a}{b}{c}")
    }

    #[cache_multi_on_arguments(region = "REGION", namespace = "three")]
    fn many(a: &str, ids: &[String], c: &str) -> Vec<String> {
        ids.iter().map(|id| format!("{a}{id}{c}")).collect()
    }

    #[cache_on_arguments(region = "REGION", namespace = "three")]
    fn many_one(a: &str, id: &str, c: &str) -> String {
        format!("{a}{id}{c}")
    }

    fn arg() -> impl Strategy<Value = String> {
        proptest::string::string_regex(r"[ |\\0a]{0,3}").unwrap()
    }

    /// Arguments of types the macro writes without `Display` (integers, strings)...
    #[cache_on_arguments(region = "REGION", namespace = "mixed")]
    fn plain(a: i64, b: String, c: &u128, d: &&str, e: i8) -> String {
        format!("{a}{b}{c}{d}{e}")
    }

    /// ...and the same values through `Display`.
    #[cache_on_arguments(region = "REGION", namespace = "mixed")]
    fn shown(
        a: impl std::fmt::Display,
        b: impl std::fmt::Display,
        c: impl std::fmt::Display,
        d: impl std::fmt::Display,
        e: impl std::fmt::Display,
    ) -> String {
        format!("{a}{b}{c}{d}{e}")
    }

    static SEPARATE: LazyLock<CacheRegion> = LazyLock::new(|| {
        CacheRegion::builder()
            .function_key_generator(|key| format!("{}/{}", key.function, key.args.join("/")))
            .build()
    });

    #[cache_on_arguments(region = "SEPARATE")]
    fn plain_apart(a: u64, b: &str) -> String {
        format!("{a}{b}")
    }

    #[cache_on_arguments(region = "SEPARATE")]
    fn shown_apart(a: impl std::fmt::Display, b: impl std::fmt::Display) -> String {
        format!("{a}{b}")
    }

    #[cache_multi_on_arguments(region = "REGION", namespace = "ids")]
    fn by_ids(ids: &[u64]) -> Vec<u64> {
        ids.to_vec()
    }

    #[cache_on_arguments(region = "REGION", namespace = "ids")]
    fn by_id(id: impl std::fmt::Display) -> u64 {
        id.to_string().parse().unwrap()
    }

    proptest! {
        #[test]
        fn distinct_argument_tuples_never_share_a_key(
            tuples in proptest::collection::vec((arg(), arg(), arg()), 1..48)
        ) {
            let mut seen: HashMap<String, &(String, String, String)> = HashMap::new();
            for tuple in &tuples {
                let (a, b, c) = tuple;
                if let Some(earlier) = seen.insert(three_key(a, b, c), tuple) {
                    prop_assert_eq!(earlier, tuple, "two tuples share a key");
                }
            }
        }

        #[test]
        fn integers_and_strings_are_keyed_as_display_renders_them(
            a: i64, b in arg(), c: u128, d in arg(), e: i8, long in 0usize..300,
        ) {
            let b = b + &"x".repeat(long);
            prop_assert_eq!(
                plain_key(a, b.clone(), &c, &d.as_str(), e).replace(":plain|", ":shown|"),
                shown_key(a, &b, c, &d, e)
            );
            prop_assert_eq!(
                plain_apart_key(c as u64, &d).replace("plain_apart/", "shown_apart/"),
                shown_apart_key(c as u64, &d)
            );
            prop_assert_eq!(
                by_ids_keys(&[c as u64, a as u64]),
                vec![
                    by_id_key(c as u64).replace(":by_id|", ":by_ids|"),
                    by_id_key(a as u64).replace(":by_id|", ":by_ids|"),
                ]
            );
        }

        #[test]
        fn multi_keys_are_the_single_keys_of_each_element(
            a in arg(),
            ids in proptest::collection::vec(arg(), 0..4),
            c in arg(),
        ) {
            let keys = many_keys(&a, &ids, &c);
            let singles: Vec<String> = ids
                .iter()
                .map(|id| many_one_key(&a, id, &c).replace(":many_one|", ":many|"))
                .collect();
            prop_assert_eq!(keys, singles);
        }
    }
}

#[test]
fn reference_and_impl_trait_arguments_are_keyed_by_display() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    fn greet(name: &str, punctuation: impl std::fmt::Display) -> String {
        CALLS.fetch_add(1, Ordering::SeqCst);
        format!("hello {name}{punctuation}")
    }

    assert_eq!(greet("ed", '!'), "hello ed!");
    assert_eq!(greet("ed", "!"), "hello ed!", "'!' and \"!\" render alike");
    assert_eq!(count(&CALLS), 1);
    assert_eq!(greet_key("ed", 1.5), "macros:greet|ed 1.5");
}

#[test]
fn an_argument_whose_display_calls_a_cached_function() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));

    #[cache_on_arguments(region = "REGION")]
    fn label(id: u32) -> String {
        format!("#{id}")
    }

    /// Renders itself through another memoized function, while the outer key is built.
    struct Labelled(u32);

    impl std::fmt::Display for Labelled {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", label(self.0))
        }
    }

    #[cache_on_arguments(region = "REGION")]
    fn describe(first: Labelled, second: u32) -> String {
        format!("{first}/{second}")
    }

    assert_eq!(describe_key(Labelled(7), 8), "macros:describe|#7 8");
    assert_eq!(describe(Labelled(7), 8), "#7/8");
    assert_eq!(
        REGION.get::<String>("macros:label|7").unwrap().as_deref(),
        Some("#7")
    );
    assert_eq!(
        REGION
            .get::<String>("macros:describe|#7 8")
            .unwrap()
            .as_deref(),
        Some("#7/8")
    );
}

#[test]
fn to_str_renders_arguments_that_have_no_display() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn debug<T: Debug + ?Sized>(value: &T) -> String {
        format!("{value:?}")
    }

    #[cache_on_arguments(region = "REGION", to_str = debug)]
    fn total(numbers: &[u32], label: Option<&str>) -> String {
        CALLS.fetch_add(1, Ordering::SeqCst);
        format!("{label:?}: {}", numbers.iter().sum::<u32>())
    }

    assert_eq!(
        total_key(&[1, 2], Some("a")),
        r#"macros:total|[1,\ 2] Some("a")"#,
        "what to_str renders is escaped as any argument"
    );
    assert_eq!(total(&[1, 2], None), "None: 3");
    assert_eq!(total(&[1, 2], None), "None: 3");
    assert_eq!(count(&CALLS), 1);
    assert_eq!(total(&[2, 1], None), "None: 3");
    assert_eq!(count(&CALLS), 2);
}

#[test]
fn function_key_generator_per_function_and_per_region() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CUSTOM: LazyLock<CacheRegion> = LazyLock::new(|| {
        let region = CacheRegion::builder()
            .function_key_generator(|key: &FunctionKey<'_>| {
                format!("region-wide/{}/{}", key.function, key.args.join("+"))
            })
            .build();
        region.configure(RegionConfig::new("memory")).unwrap();
        region
    });

    fn by_hand(key: &FunctionKey<'_>) -> String {
        format!(
            "{}#{}#{:?}",
            key.function,
            key.args.join(","),
            key.namespace
        )
    }

    #[cache_on_arguments(region = "REGION", namespace = "ns", function_key_generator = by_hand)]
    fn per_function(a: u8, b: u8) -> u8 {
        a + b
    }

    #[cache_on_arguments(region = "CUSTOM")]
    fn per_region(a: u8, b: u8) -> u8 {
        a * b
    }

    assert_eq!(per_function_key(1, 2), r#"per_function#1,2#Some("ns")"#);
    assert_eq!(per_function(1, 2), 3);
    assert_eq!(
        REGION.get::<u8>(r#"per_function#1,2#Some("ns")"#).unwrap(),
        Some(3)
    );

    assert_eq!(per_region_key(2, 3), "region-wide/per_region/2+3");
    assert_eq!(per_region(2, 3), 6);
    assert_eq!(
        CUSTOM.get::<u8>("region-wide/per_region/2+3").unwrap(),
        Some(6)
    );
}

#[test]
fn generic_functions_get_one_key_per_instantiation() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory_serialized"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    fn parse<T>(text: &str) -> Option<T>
    where
        T: std::str::FromStr
            + Serialize
            + serde::de::DeserializeOwned
            + Clone
            + Send
            + Sync
            + 'static,
    {
        CALLS.fetch_add(1, Ordering::SeqCst);
        text.parse().ok()
    }

    assert_eq!(parse::<u8>("300"), None);
    assert_eq!(
        parse::<u16>("300"),
        Some(300),
        "u8's cached None is not u16's value"
    );
    assert_eq!(parse::<u16>("300"), Some(300));
    assert_eq!(count(&CALLS), 2);
    assert_eq!(parse_key::<u16>("300"), "macros:parse::<u16>|300");
}

// ----- options ----------------------------------------------------------------------------

#[test]
fn skip_leaves_arguments_out_of_the_key() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));

    /// No `Display`: this compiles only because `db` is skipped.
    struct Db {
        queries: AtomicUsize,
    }

    #[cache_on_arguments(region = "REGION", skip(db))]
    fn lookup(db: &Db, id: u64) -> String {
        db.queries.fetch_add(1, Ordering::SeqCst);
        format!("row {id}")
    }

    let first = Db {
        queries: AtomicUsize::new(0),
    };
    let second = Db {
        queries: AtomicUsize::new(0),
    };
    assert_eq!(lookup_key(&first, 5), "macros:lookup|5");
    assert_eq!(lookup(&first, 5), "row 5");
    assert_eq!(lookup(&second, 5), "row 5");
    assert_eq!(count(&first.queries), 1);
    assert_eq!(
        count(&second.queries),
        0,
        "another handle hits the same key"
    );
    invalidate_lookup(&second, 5).unwrap();
    assert_eq!(lookup(&second, 5), "row 5");
    assert_eq!(count(&second.queries), 1);
}

#[test]
fn should_cache_fn_decides_what_is_stored() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION", should_cache_fn = |found| found.is_some())]
    fn find(id: u32) -> Option<String> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        (id < 10).then(|| format!("item {id}"))
    }

    assert_eq!(find(50), None);
    assert_eq!(find(50), None);
    assert_eq!(count(&CALLS), 2, "None was not cached");
    assert_eq!(find(5).as_deref(), Some("item 5"));
    assert_eq!(find(5).as_deref(), Some("item 5"));
    assert_eq!(count(&CALLS), 3, "Some was cached");
}

#[test]
fn expiration_time_in_seconds_as_a_duration_or_never() {
    static CLOCK: LazyLock<Arc<ManualClock>> =
        LazyLock::new(|| Arc::new(ManualClock::new(1_000.0)));
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| {
        let region = CacheRegion::builder().clock(CLOCK.clone()).build();
        region
            .configure(RegionConfig::new("memory").expiration_time(Duration::from_secs(5)))
            .unwrap();
        region
    });
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION", expiration_time = 60)]
    fn minute(_n: u32) -> usize {
        CALLS.fetch_add(1, Ordering::SeqCst)
    }

    #[cache_on_arguments(region = "REGION", expiration_time = Duration::from_millis(1500))]
    fn moment(_n: u32) -> usize {
        CALLS.fetch_add(1, Ordering::SeqCst)
    }

    #[cache_on_arguments(region = "REGION", expiration_time = -1)]
    fn forever(_n: u32) -> usize {
        CALLS.fetch_add(1, Ordering::SeqCst)
    }

    #[cache_on_arguments(region = "REGION")]
    fn region_default(_n: u32) -> usize {
        CALLS.fetch_add(1, Ordering::SeqCst)
    }

    let m = minute(1);
    let s = moment(1);
    let f = forever(1);
    let d = region_default(1);
    CLOCK.advance(Duration::from_secs(2));
    assert_ne!(moment(1), s, "1.5 s passed");
    assert_eq!(region_default(1), d);
    CLOCK.advance(Duration::from_secs(4));
    assert_ne!(region_default(1), d, "the region's 5 s passed");
    assert_eq!(minute(1), m);
    assert_eq!(
        get_minute(1).unwrap(),
        Some(m),
        "get judges by the function's expiration"
    );
    CLOCK.advance(Duration::from_secs(60));
    assert_ne!(minute(1), m, "60 s passed");
    assert_eq!(get_forever(1).unwrap(), Some(f));
    assert_eq!(forever(1), f, "-1 never expires");
}

#[test]
fn region_may_be_a_once_cell_lazy_or_a_path() {
    static ONCE_CELL: Lazy<CacheRegion> = Lazy::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    mod regions {
        pub static SHARED: std::sync::LazyLock<std::sync::Arc<dogpile::CacheRegion>> =
            std::sync::LazyLock::new(|| std::sync::Arc::new(super::region("memory")));
    }

    #[cache_on_arguments(region = "ONCE_CELL")]
    fn a(n: u8) -> u8 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        n
    }

    // A bare path, and a `LazyLock<Arc<CacheRegion>>` (anything that derefs to a region).
    #[cache_on_arguments(region = regions::SHARED)]
    fn b(n: u8) -> u8 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        n
    }

    assert_eq!(a(1) + a(1) + b(1) + b(1), 4);
    assert_eq!(count(&CALLS), 2);
    assert_eq!(ONCE_CELL.get::<u8>("macros:a|1").unwrap(), Some(1));
    assert_eq!(regions::SHARED.get::<u8>("macros:b|1").unwrap(), Some(1));
}

// ----- methods ----------------------------------------------------------------------------

static METHODS: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));

struct Repo {
    loads: AtomicUsize,
}

impl Repo {
    fn new() -> Self {
        Repo {
            loads: AtomicUsize::new(0),
        }
    }

    #[cache_on_arguments(region = "METHODS", namespace = "repo")]
    pub fn load(&self, id: u64) -> String {
        self.loads.fetch_add(1, Ordering::SeqCst);
        format!("record {id}")
    }

    #[cache_on_arguments(region = "METHODS")]
    fn bump(&mut self, by: u64) -> u64 {
        *self.loads.get_mut() += 1;
        by + 1
    }

    #[cache_on_arguments(region = "METHODS")]
    fn named(name: &str) -> Self {
        let _ = name;
        Repo::new()
    }
}

// `Repo` as the cached value of `named`.
impl Clone for Repo {
    fn clone(&self) -> Self {
        Repo {
            loads: AtomicUsize::new(count(&self.loads)),
        }
    }
}
impl Serialize for Repo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(count(&self.loads) as u64)
    }
}
impl<'de> Deserialize<'de> for Repo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let loads = u64::deserialize(d)?;
        Ok(Repo {
            loads: AtomicUsize::new(loads as usize),
        })
    }
}

#[test]
fn methods_leave_the_receiver_out_of_the_key() {
    let first = Repo::new();
    let second = Repo::new();
    assert_eq!(first.load(7), "record 7");
    assert_eq!(second.load(7), "record 7");
    assert_eq!(count(&first.loads), 1);
    assert_eq!(
        count(&second.loads),
        0,
        "another receiver hits the same key"
    );

    // Keys of methods use the type's path, so that methods of two types never share one.
    assert_eq!(first.load_key(7), "macros::Repo:load|repo|7");
    assert_eq!(
        METHODS
            .get::<String>("macros::Repo:load|repo|7")
            .unwrap()
            .as_deref(),
        Some("record 7")
    );

    // The siblings are methods too.
    first.invalidate_load(7).unwrap();
    assert_eq!(second.get_load(7).unwrap(), None);
    assert_eq!(second.load(7), "record 7");
    assert_eq!(count(&second.loads), 1);
    first.set_load(&"edited".to_string(), 7).unwrap();
    assert_eq!(second.load(7), "edited");
    assert_eq!(first.refresh_load(7).unwrap(), "record 7");
    assert_eq!(count(&first.loads), 2);
    assert_eq!(first.load_uncached(8), "record 8");
    assert_eq!(count(&first.loads), 3);

    let mut third = Repo::new();
    assert_eq!(third.bump(1), 2);
    assert_eq!(third.bump(1), 2);
    assert_eq!(count(&third.loads), 1, "&mut self methods are cached too");
    assert_eq!(third.bump_key(1), "macros::Repo:bump|1");

    // An associated function (it mentions `Self`) is cached under the type's path too.
    assert_eq!(Repo::named_key("x"), "macros::Repo:named|x");
    let _ = Repo::named("x");
    assert!(Repo::get_named("x").unwrap().is_some());
}

trait Loader {
    fn load(&self, id: u64) -> String;
    fn load_many(&self, ids: &[u64]) -> Vec<String>;
    fn name(&self) -> &'static str;
}

struct TraitRepo {
    loads: AtomicUsize,
}

static TRAIT_REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));

#[cache_on_arguments]
impl Loader for TraitRepo {
    #[cache_on_arguments(region = "TRAIT_REGION", namespace = "trait")]
    fn load(&self, id: u64) -> String {
        self.loads.fetch_add(1, Ordering::SeqCst);
        format!("user {id}")
    }

    #[cache_multi_on_arguments(region = "TRAIT_REGION")]
    fn load_many(&self, ids: &[u64]) -> Vec<String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        ids.iter().map(|id| format!("many {id}")).collect()
    }

    fn name(&self) -> &'static str {
        "not cached"
    }
}

struct Wrapper<T>(T);

#[cache_on_arguments]
impl<T: Send + Sync> Loader for Wrapper<T> {
    #[cache_on_arguments(region = "TRAIT_REGION")]
    fn load(&self, id: u64) -> String {
        format!("wrapped {id}")
    }

    fn load_many(&self, ids: &[u64]) -> Vec<String> {
        ids.iter().map(|id| self.load(*id)).collect()
    }

    fn name(&self) -> &'static str {
        "wrapper"
    }
}

#[test]
fn methods_of_trait_impls_are_cached_with_their_siblings_on_the_type() {
    let repo = TraitRepo {
        loads: AtomicUsize::new(0),
    };
    // Through the trait, as callers use it.
    let loader: &dyn Loader = &repo;
    assert_eq!(loader.load(5), "user 5");
    assert_eq!(loader.load(5), "user 5");
    assert_eq!(count(&repo.loads), 1, "the trait method is cached");
    assert_eq!(loader.name(), "not cached");

    // The siblings are inherent methods of the type.
    assert_eq!(repo.load_key(5), "macros::TraitRepo:load|trait|5");
    assert_eq!(repo.get_load(5).unwrap().as_deref(), Some("user 5"));
    repo.invalidate_load(5).unwrap();
    assert_eq!(repo.get_load(5).unwrap(), None);
    assert_eq!(repo.load_uncached(6), "user 6");

    assert_eq!(loader.load_many(&[1, 2]), ["many 1", "many 2"]);
    assert_eq!(loader.load_many(&[2, 3]), ["many 2", "many 3"]);
    assert_eq!(
        repo.get_load_many(&[3]).unwrap(),
        [Some("many 3".to_string())]
    );

    let wrapped = Wrapper(1u8);
    assert_eq!(wrapped.load(2), "wrapped 2");
    assert_eq!(wrapped.get_load(2).unwrap().as_deref(), Some("wrapped 2"));
    assert!(wrapped.load_key(2).contains("Wrapper<u8>:load|2"));
}

// ----- Result ----------------------------------------------------------------------------

/// An error type with no traits at all.
struct Opaque(u32);

#[test]
fn result_functions_cache_only_ok_values() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory_serialized"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    fn checked(n: u32) -> Result<u32, Opaque> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        if n.is_multiple_of(2) {
            Ok(n / 2)
        } else {
            Err(Opaque(n))
        }
    }

    assert!(matches!(checked(3), Err(Opaque(3))));
    assert!(matches!(checked(3), Err(Opaque(3))));
    assert_eq!(count(&CALLS), 2, "errors are not cached");
    assert_eq!(get_checked(3).unwrap(), None);

    assert!(matches!(checked(4), Ok(2)));
    assert!(matches!(checked(4), Ok(2)));
    assert_eq!(count(&CALLS), 3, "Ok values are cached");
    assert_eq!(get_checked(4).unwrap(), Some(2));

    // refresh: the outer Result is the cache's, the inner one the body's.
    assert!(matches!(refresh_checked(4), Ok(Ok(2))));
    assert!(matches!(refresh_checked(5), Ok(Err(Opaque(5)))));
    assert_eq!(
        get_checked(5).unwrap(),
        None,
        "refresh does not store errors"
    );
    set_checked(&9, 5).unwrap();
    assert!(matches!(checked(5), Ok(9)));
}

#[test]
fn question_mark_and_aliases_work_in_result_functions() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));

    #[cache_on_arguments(region = "REGION")]
    fn parsed(text: &str) -> std::io::Result<u16> {
        let n: u16 = text
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(n)
    }

    assert_eq!(parsed("12").unwrap(), 12);
    assert!(parsed("x").is_err());
    assert_eq!(get_parsed("12").unwrap(), Some(12));
    assert_eq!(get_parsed("x").unwrap(), None);
}

/// An application's error type, with no traits at all (not `Serialize`, not `Clone`).
#[derive(Debug, PartialEq)]
struct AppError(&'static str);

type AppResult<T> = Result<T, AppError>;
type Fallible<T> = Result<T, AppError>;
type Lookup = Result<u32, AppError>;

#[test]
fn result_aliases_cache_only_ok_values() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory_serialized"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static FAIL: AtomicBool = AtomicBool::new(true);

    fn lookup(id: u32) -> Result<u32, AppError> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        if FAIL.load(Ordering::SeqCst) {
            Err(AppError("db timeout"))
        } else {
            Ok(id * 10)
        }
    }

    // Named like a Result: read as one by default.
    #[cache_on_arguments(region = "REGION")]
    fn by_alias(id: u32) -> AppResult<u32> {
        lookup(id)
    }

    // Another name: `result = true` says what it is.
    #[cache_on_arguments(region = "REGION", result = true)]
    fn by_other_name(id: u32) -> Fallible<u32> {
        lookup(id)
    }

    // No type argument at all: the Ok type is found through the type.
    #[cache_on_arguments(region = "REGION", result = true)]
    fn by_bare_alias(id: u32) -> Lookup {
        lookup(id)
    }

    for (name, call, get) in [
        (
            "AppResult<u32>",
            by_alias as fn(u32) -> AppResult<u32>,
            get_by_alias as fn(u32) -> dogpile::Result<Option<u32>>,
        ),
        ("Fallible<u32>", by_other_name, get_by_other_name),
        ("Lookup", by_bare_alias, |id| get_by_bare_alias(id)),
    ] {
        FAIL.store(true, Ordering::SeqCst);
        let before = count(&CALLS);
        assert_eq!(call(0), Err(AppError("db timeout")), "{name}");
        assert_eq!(get(0).unwrap(), None, "{name}: the error was not cached");
        assert_eq!(call(0), Err(AppError("db timeout")), "{name}");
        assert_eq!(count(&CALLS), before + 2, "{name}: the body ran again");
        FAIL.store(false, Ordering::SeqCst);
        assert_eq!(call(0), Ok(0), "{name}");
        assert_eq!(call(0), Ok(0), "{name}");
        assert_eq!(count(&CALLS), before + 3, "{name}: the Ok value was cached");
        assert_eq!(get(0).unwrap(), Some(0), "{name}");
    }
    assert!(matches!(refresh_by_bare_alias(1), Ok(Ok(10))));
    set_by_bare_alias(&7, 2).unwrap();
    assert_eq!(by_bare_alias(2), Ok(7));
}

#[test]
fn result_false_caches_errors_too() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION", result = false)]
    fn remembered(n: u32) -> Result<u32, String> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        Err(format!("no {n}"))
    }

    assert_eq!(remembered(1), Err("no 1".to_string()));
    assert_eq!(remembered(1), Err("no 1".to_string()));
    assert_eq!(count(&CALLS), 1, "the Err was cached");
    assert_eq!(get_remembered(1).unwrap(), Some(Err("no 1".to_string())));
}

#[test]
fn option_true_caches_only_some_values() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION", option = true)]
    fn find(id: u32) -> Option<String> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        (id == 5).then(|| "ed".to_string())
    }

    assert_eq!(find(6), None);
    assert_eq!(find(6), None);
    assert_eq!(count(&CALLS), 2, "None is not cached");
    assert_eq!(get_find(6).unwrap(), None);
    assert_eq!(find(5).as_deref(), Some("ed"));
    assert_eq!(find(5).as_deref(), Some("ed"));
    assert_eq!(count(&CALLS), 3, "Some is cached");
    // The cached value is the `T` of `Option<T>`.
    let cached: Option<String> = get_find(5).unwrap();
    assert_eq!(cached.as_deref(), Some("ed"));
    assert_eq!(refresh_find(6).unwrap(), None);
    set_find(&"al".to_string(), 6).unwrap();
    assert_eq!(find(6).as_deref(), Some("al"));

    // Without the option, `None` is a value like any other, as in dogpile.
    #[cache_on_arguments(region = "REGION")]
    fn find_all(id: u32) -> Option<String> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        (id == 5).then(|| "ed".to_string())
    }
    let before = count(&CALLS);
    assert_eq!(find_all(6), None);
    assert_eq!(find_all(6), None);
    assert_eq!(count(&CALLS), before + 1);
    assert_eq!(get_find_all(6).unwrap(), Some(None));
}

#[test]
fn multi_functions_returning_a_result_alias_cache_only_ok() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static FAIL: AtomicBool = AtomicBool::new(true);

    #[cache_multi_on_arguments(region = "REGION")]
    fn tens(ids: &[u32]) -> AppResult<Vec<u32>> {
        if FAIL.load(Ordering::SeqCst) {
            return Err(AppError("down"));
        }
        Ok(ids.iter().map(|id| id * 10).collect())
    }

    assert_eq!(tens(&[1, 2]), Err(AppError("down")));
    assert_eq!(get_tens(&[1, 2]).unwrap(), [None, None]);
    FAIL.store(false, Ordering::SeqCst);
    assert_eq!(tens(&[1, 2]), Ok(vec![10, 20]));
    assert_eq!(get_tens(&[1, 2]).unwrap(), [Some(10), Some(20)]);
    assert!(matches!(refresh_tens(&[3]), Ok(Ok(values)) if values == [30]));
}

// ----- names and expiration --------------------------------------------------------------

#[test]
fn siblings_option_names_the_generated_functions() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));

    // Without the option the siblings would be `get_user`, which the caller already has,
    // and `get_get_user`.
    fn user(id: u64) -> String {
        format!("user {id}")
    }

    #[cache_on_arguments(region = "REGION", siblings = "cached_user")]
    fn get_user(id: u64) -> String {
        user(id)
    }

    assert_eq!(get_user(5), "user 5");
    assert_eq!(get_cached_user(5).unwrap().as_deref(), Some("user 5"));
    assert_eq!(
        cached_user_key(5),
        "macros:get_user|5",
        "the key keeps the function's name"
    );
    invalidate_cached_user(5).unwrap();
    assert_eq!(get_cached_user(5).unwrap(), None);
    set_cached_user(&"ed".to_string(), 5).unwrap();
    assert_eq!(get_user(5), "ed");
    assert_eq!(refresh_cached_user(5).unwrap(), "user 5");
    assert_eq!(cached_user_uncached(6), "user 6");
}

#[test]
fn a_zero_duration_computed_at_run_time_regenerates_on_every_call() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn configured_ttl() -> Duration {
        Duration::from_secs(0)
    }

    #[cache_on_arguments(region = "REGION", expiration_time = configured_ttl())]
    fn volatile(n: u32) -> u32 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        n
    }

    for _ in 0..3 {
        assert_eq!(volatile(1), 1);
    }
    assert_eq!(
        count(&CALLS),
        3,
        "a value that expires at once is never fresh"
    );
    assert_eq!(get_volatile(1).unwrap(), None);
}

// ----- failing open ------------------------------------------------------------------------

/// Issue 21, point 3: a forgotten `configure()` is loud in debug builds (and so in tests):
/// the memoized call panics saying what to do, instead of computing uncached in silence.
#[cfg(debug_assertions)]
#[test]
fn a_forgotten_configure_panics_in_debug_builds() {
    static FORGOTTEN: LazyLock<CacheRegion> = LazyLock::new(|| CacheRegion::named("forgotten"));

    #[cache_on_arguments(region = "FORGOTTEN")]
    fn plus_one(n: u32) -> u32 {
        n + 1
    }

    #[cache_multi_on_arguments(region = "FORGOTTEN")]
    fn plus_ones(ns: &[u32]) -> Vec<u32> {
        ns.iter().map(|n| n + 1).collect()
    }

    for panicked in [
        std::panic::catch_unwind(|| plus_one(1)).unwrap_err(),
        std::panic::catch_unwind(|| plus_ones(&[1])).unwrap_err(),
    ] {
        let message = panicked
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(message.contains("region `forgotten`"), "{message}");
        assert!(message.contains("call configure()"), "{message}");
    }
}

#[test]
fn unconfigured_region_computes_and_siblings_report_it() {
    // Left unconfigured on purpose: without fail_open(true) a debug build panics here
    // (`a_forgotten_configure_panics_in_debug_builds`).
    static REGION: LazyLock<CacheRegion> =
        LazyLock::new(|| CacheRegion::builder().fail_open(true).build());
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    fn value(n: u32) -> u32 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        n + 1
    }

    #[cache_on_arguments(region = "REGION")]
    fn fallible(n: u32) -> Result<u32, Opaque> {
        if n == 0 {
            Err(Opaque(0))
        } else {
            Ok(n)
        }
    }

    assert_eq!(value(1), 2);
    assert_eq!(value(1), 2);
    assert_eq!(count(&CALLS), 2, "no cache: the body runs every time");
    assert!(matches!(fallible(3), Ok(3)));
    assert!(matches!(fallible(0), Err(Opaque(0))));

    assert!(matches!(
        get_value(1),
        Err(Error::RegionNotConfigured { .. })
    ));
    assert!(matches!(
        invalidate_value(1),
        Err(Error::RegionNotConfigured { .. })
    ));
    assert!(matches!(
        set_value(&5, 1),
        Err(Error::RegionNotConfigured { .. })
    ));
    assert!(matches!(
        refresh_value(1),
        Err(Error::RegionNotConfigured { .. })
    ));
    assert_eq!(value_key(1), "macros:value|1", "keys need no backend");
}

#[test]
fn failing_backend_computes_and_siblings_return_the_error() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| {
        let region = CacheRegion::new();
        region.configure(RegionConfig::with_backend(Down)).unwrap();
        region
    });
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    fn value(n: u32) -> u32 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        n * 3
    }

    #[cache_on_arguments(region = "REGION")]
    fn fallible(n: u32) -> Result<u32, Opaque> {
        if n == 0 {
            Err(Opaque(0))
        } else {
            Ok(n)
        }
    }

    assert_eq!(value(2), 6);
    assert_eq!(value(2), 6);
    assert_eq!(count(&CALLS), 2);
    assert!(matches!(fallible(3), Ok(3)));
    assert!(matches!(fallible(0), Err(Opaque(0))));

    let is_down = |error: &Error| {
        error
            .to_string()
            .contains("down-test-backend at 127.0.0.1:1")
    };
    assert!(is_down(&get_value(2).unwrap_err()));
    assert!(is_down(&invalidate_value(2).unwrap_err()));
    assert!(is_down(&set_value(&1, 2).unwrap_err()));
    assert!(is_down(&refresh_value(2).unwrap_err()));
    assert_eq!(
        count(&CALLS),
        3,
        "refresh ran the body before the write failed"
    );
}

#[test]
fn failing_writes_still_return_the_computed_value() {
    static BACKEND: LazyLock<FlakyWrites> = LazyLock::new(FlakyWrites::default);
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| {
        let region = CacheRegion::new();
        region
            .configure(RegionConfig::with_backend(BACKEND.clone()))
            .unwrap();
        region
    });
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    fn value(n: u32) -> u32 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        n * 3
    }

    BACKEND.fail_writes.store(true, Ordering::SeqCst);
    assert_eq!(value(2), 6);
    assert_eq!(
        count(&CALLS),
        1,
        "the body ran once, though the write failed"
    );
    assert_eq!(get_value(2).unwrap(), None);
    BACKEND.fail_writes.store(false, Ordering::SeqCst);
    assert_eq!(value(2), 6);
    assert_eq!(value(2), 6);
    assert_eq!(count(&CALLS), 2, "the cache works again once writes do");
}

// ----- the multi form ---------------------------------------------------------------------

#[derive(Default)]
struct Log(Mutex<Vec<Vec<u64>>>);

impl Log {
    fn record(&self, ids: &[u64]) {
        self.0.lock().unwrap().push(ids.to_vec());
    }
    fn take(&self) -> Vec<Vec<u64>> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[test]
fn multi_calls_the_body_with_only_the_missing_keys() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static LOG: LazyLock<Log> = LazyLock::new(Log::default);

    #[cache_multi_on_arguments(region = "REGION", namespace = "sq")]
    fn squares(ids: &[u64]) -> Vec<u64> {
        LOG.record(ids);
        ids.iter().map(|id| id * id).collect()
    }

    assert_eq!(squares(&[3, 1, 2]), vec![9, 1, 4]);
    assert_eq!(LOG.take(), vec![vec![3, 1, 2]], "the caller's order");
    assert_eq!(squares(&[2, 4, 3, 10, 4]), vec![4, 16, 9, 100, 16]);
    assert_eq!(
        LOG.take(),
        vec![vec![4, 10]],
        "only the missing keys, once each"
    );
    assert_eq!(squares(&[1, 2, 3, 4, 10]), vec![1, 4, 9, 16, 100]);
    assert!(LOG.take().is_empty(), "everything cached");
    assert_eq!(squares(&[]), Vec::<u64>::new());
    assert!(LOG.take().is_empty());

    assert_eq!(
        squares_keys(&[1, 22]),
        vec!["macros:squares|sq|1", "macros:squares|sq|22"]
    );
    assert_eq!(
        REGION.get::<u64>("macros:squares|sq|10").unwrap(),
        Some(100)
    );

    invalidate_squares(&[1, 2]).unwrap();
    assert_eq!(get_squares(&[1, 2, 3]).unwrap(), vec![None, None, Some(9)]);
    assert_eq!(squares(&[1, 2, 3]), vec![1, 4, 9]);
    assert_eq!(LOG.take(), vec![vec![1, 2]]);

    set_squares(&[0, 0], &[1, 3]).unwrap();
    assert_eq!(squares(&[1, 2, 3]), vec![0, 4, 0]);
    assert!(set_squares(&[0], &[1, 3]).is_err(), "one value per key");

    assert_eq!(refresh_squares(&[1, 3]).unwrap(), vec![1, 9]);
    assert_eq!(LOG.take(), vec![vec![1, 3]]);
    assert_eq!(squares(&[3, 1]), vec![9, 1]);
    assert!(LOG.take().is_empty());
    assert_eq!(squares_uncached(&[3]), vec![9]);
    assert_eq!(LOG.take(), vec![vec![3]]);
}

#[test]
fn multi_with_owned_keys_strings_and_bytes() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory_serialized"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_multi_on_arguments(region = "REGION")]
    fn shout(words: Vec<String>) -> Vec<String> {
        CALLS.fetch_add(words.len(), Ordering::SeqCst);
        words.iter().map(|w| w.to_uppercase()).collect()
    }

    let words = |list: &[&str]| list.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    assert_eq!(shout(words(&["a", "b"])), words(&["A", "B"]));
    assert_eq!(shout(words(&["b", "c", "a"])), words(&["B", "C", "A"]));
    assert_eq!(count(&CALLS), 3, "each word computed once");
    assert_eq!(
        REGION.get::<String>("macros:shout|c").unwrap().as_deref(),
        Some("C")
    );
}

#[test]
fn multi_methods_skip_and_results() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));

    struct Store {
        log: Log,
    }

    impl Store {
        #[cache_multi_on_arguments(region = "REGION", skip(prefix))]
        fn names(&self, prefix: &str, ids: &[u64]) -> Result<Vec<String>, Opaque> {
            self.log.record(ids);
            if ids.contains(&0) {
                return Err(Opaque(0));
            }
            Ok(ids.iter().map(|id| format!("{prefix}{id}")).collect())
        }
    }

    let store = Store {
        log: Log::default(),
    };
    assert!(matches!(store.names("n", &[1, 2]).as_deref(), Ok([a, b]) if a == "n1" && b == "n2"));
    assert!(matches!(store.names("other", &[2, 0]), Err(Opaque(0))));
    assert_eq!(store.log.take(), vec![vec![1, 2], vec![0]]);
    assert_eq!(
        store.get_names("", &[0]).unwrap(),
        vec![None],
        "errors are not cached"
    );
    assert_eq!(
        store.names_keys("", &[5]),
        vec!["macros::multi_methods_skip_and_results::Store:names|5"]
    );
    assert!(matches!(store.refresh_names("r", &[2]), Ok(Ok(v)) if v == ["r2"]));
    assert_eq!(store.names("n", &[2]).ok(), Some(vec!["r2".to_string()]));
}

#[test]
fn multi_keys_include_the_other_keyed_arguments() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static LOG: LazyLock<Log> = LazyLock::new(Log::default);

    #[cache_multi_on_arguments(region = "REGION", skip(audit))]
    fn scaled(factor: u64, ids: &[u64], audit: &mut Vec<u64>) -> Vec<u64> {
        LOG.record(ids);
        audit.extend_from_slice(ids);
        ids.iter().map(|id| id * factor).collect()
    }

    let mut audit = Vec::new();
    assert_eq!(
        scaled_keys(10, &[1], &mut audit),
        vec!["macros:scaled|10 1"]
    );
    assert_eq!(scaled(10, &[1, 2], &mut audit), vec![10, 20]);
    assert_eq!(
        scaled(100, &[1, 2], &mut audit),
        vec![100, 200],
        "another factor, other keys"
    );
    assert_eq!(scaled(10, &[2, 3], &mut audit), vec![20, 30]);
    assert_eq!(LOG.take(), vec![vec![1, 2], vec![1, 2], vec![3]]);
    assert_eq!(
        audit,
        vec![1, 2, 1, 2, 3],
        "the &mut argument reaches the body"
    );
}

#[test]
fn multi_fails_open_without_running_the_body_twice_for_any_key() {
    // Left unconfigured on purpose, which a region built with fail_open(true) may be.
    static UNCONFIGURED: LazyLock<CacheRegion> =
        LazyLock::new(|| CacheRegion::builder().fail_open(true).build());
    static DOWN: LazyLock<CacheRegion> = LazyLock::new(|| {
        let region = CacheRegion::new();
        region.configure(RegionConfig::with_backend(Down)).unwrap();
        region
    });
    static BACKEND: LazyLock<FlakyWrites> = LazyLock::new(FlakyWrites::default);
    static FLAKY: LazyLock<CacheRegion> = LazyLock::new(|| {
        let region = CacheRegion::new();
        region
            .configure(RegionConfig::with_backend(BACKEND.clone()))
            .unwrap();
        region
    });
    static LOG: LazyLock<Log> = LazyLock::new(Log::default);

    #[cache_multi_on_arguments(region = "UNCONFIGURED")]
    fn a(ids: &[u64]) -> Vec<u64> {
        LOG.record(ids);
        ids.iter().map(|id| id + 1).collect()
    }

    #[cache_multi_on_arguments(region = "DOWN")]
    fn b(ids: &[u64]) -> Vec<u64> {
        LOG.record(ids);
        ids.iter().map(|id| id + 2).collect()
    }

    #[cache_multi_on_arguments(region = "FLAKY")]
    fn c(ids: &[u64]) -> Vec<u64> {
        LOG.record(ids);
        ids.iter().map(|id| id + 3).collect()
    }

    assert_eq!(a(&[1, 2, 1]), vec![2, 3, 2]);
    assert_eq!(LOG.take(), vec![vec![1, 2]]);
    assert!(matches!(
        get_a(&[1]),
        Err(Error::RegionNotConfigured { .. })
    ));

    assert_eq!(b(&[5, 4]), vec![7, 6]);
    assert_eq!(LOG.take(), vec![vec![5, 4]]);
    assert!(invalidate_b(&[5]).is_err());
    assert!(refresh_b(&[5]).is_err());
    assert_eq!(
        LOG.take(),
        vec![vec![5]],
        "refresh ran the body before the write failed"
    );

    // 1 is cached; writing 2 and 3 fails after the body made them: the region fails open,
    // so the caller gets 1 from the cache and 2 and 3 from the one body call.
    assert_eq!(c(&[1]), vec![4]);
    assert_eq!(LOG.take(), vec![vec![1]]);
    BACKEND.fail_writes.store(true, Ordering::SeqCst);
    assert_eq!(c(&[3, 1, 2]), vec![6, 4, 5]);
    assert_eq!(
        LOG.take(),
        vec![vec![3, 2]],
        "no key computed twice, and no key the cache had computed at all"
    );
    assert!(set_c(&[0], &[9]).is_err());
    BACKEND.fail_writes.store(false, Ordering::SeqCst);
}

#[test]
fn multi_body_returning_the_wrong_count_is_returned_uncached() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static LOG: LazyLock<Log> = LazyLock::new(Log::default);

    // Drops odd ids, as a database query that finds only some rows.
    #[cache_multi_on_arguments(region = "REGION")]
    fn evens(ids: &[u64]) -> Vec<u64> {
        LOG.record(ids);
        ids.iter()
            .copied()
            .filter(|id| id.is_multiple_of(2))
            .collect()
    }

    assert_eq!(evens(&[2, 4]), vec![2, 4]);
    assert_eq!(LOG.take(), vec![vec![2, 4]]);
    assert_eq!(
        evens(&[1, 2]),
        vec![2],
        "what the body returns for all keys"
    );
    assert_eq!(LOG.take(), vec![vec![1], vec![1, 2]]);
    assert_eq!(
        get_evens(&[1]).unwrap(),
        vec![None],
        "nothing stored for the miscount"
    );
}
