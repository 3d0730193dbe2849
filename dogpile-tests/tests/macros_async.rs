//! `#[cache_on_arguments]` and `#[cache_multi_on_arguments]` on `async fn`, on a
//! multi-threaded tokio runtime: caching and the async siblings, the dogpile lock under
//! 200 concurrent tasks, fail-open, methods, every option, the multi form, and `Send`
//! futures (so that a cached function works in `tokio::spawn` and axum handlers).
//!
//! Every test has its own region: functions declared inside two test functions live in the
//! same module, so they would share keys in one region.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use dogpile::backend::CacheBackend;
use dogpile::clock::ManualClock;
use dogpile::key::FunctionKey;
use dogpile::{cache_multi_on_arguments, cache_on_arguments, CacheRegion, Error, RegionConfig};
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

/// Compiles only for a `Send` value: the futures of cached functions are checked with it.
fn assert_send<F: Send>(_: F) {}

/// A backend whose every operation fails, as a server that is down.
struct Down;

fn down() -> Error {
    Error::backend("down-test-backend at 127.0.0.1:1", "connection refused")
}

impl CacheBackend for Down {
    fn get(&self, _key: &str) -> dogpile::Result<Option<Vec<u8>>> {
        Err(down())
    }
    fn set(&self, _key: &str, _value: Vec<u8>) -> dogpile::Result<()> {
        Err(down())
    }
    fn delete(&self, _key: &str) -> dogpile::Result<()> {
        Err(down())
    }
}

/// Lets the other tasks run, so that a body really is suspended while it computes.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

// ----- the cached function and its siblings ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_fn_is_cached_and_its_siblings_are_async() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    /// Returns `n` plus 100 times how many times the body has run before.
    #[cache_on_arguments(region = "REGION")]
    async fn numbered(n: usize) -> usize {
        pause().await;
        n + CALLS.fetch_add(1, Ordering::SeqCst) * 100
    }

    assert_eq!(
        get_numbered(1).await.unwrap(),
        None,
        "get never runs the body"
    );
    assert_eq!(numbered(1).await, 1);
    assert_eq!(numbered(1).await, 1);
    assert_eq!(count(&CALLS), 1, "the second call is served from the cache");
    assert_eq!(get_numbered(1).await.unwrap(), Some(1));

    // `_key` stays sync; the key is the sync form's.
    let key: String = numbered_key(1);
    assert!(key.ends_with(":numbered|1"), "{key}");
    assert_eq!(REGION.get_async::<usize>(&key).await.unwrap(), Some(1));

    invalidate_numbered(1).await.unwrap();
    assert_eq!(get_numbered(1).await.unwrap(), None);
    assert_eq!(
        numbered(1).await,
        101,
        "after invalidate the body runs again"
    );
    assert_eq!(count(&CALLS), 2);

    assert_eq!(
        refresh_numbered(1).await.unwrap(),
        201,
        "refresh runs the body"
    );
    assert_eq!(numbered(1).await, 201, "and stores what it returns");

    set_numbered(&7, 1).await.unwrap();
    assert_eq!(numbered(1).await, 7, "set stores the value given");
    assert_eq!(count(&CALLS), 3);

    assert_eq!(
        numbered_uncached(1).await,
        301,
        "_uncached always runs the body"
    );
    assert_eq!(numbered(1).await, 7);
    assert_eq!(count(&CALLS), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_calls_on_one_key_run_the_body_once() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    async fn slow(n: u32) -> u32 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        n * 2
    }

    const TASKS: usize = 200;
    for round in 0..5u32 {
        let before = count(&CALLS);
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let barrier = barrier.clone();
                // `tokio::spawn` needs the cached function's future to be `Send`.
                tokio::spawn(async move {
                    barrier.wait().await;
                    slow(round).await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), round * 2);
        }
        assert_eq!(
            count(&CALLS) - before,
            1,
            "round {round}: {TASKS} tasks on one key ran the body more than once"
        );
    }
}

// ----- fail-open -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfigured_region_computes_every_call_and_siblings_return_the_error() {
    // Left unconfigured on purpose, which a region built with fail_open(true) may be (a
    // debug build panics otherwise).
    static REGION: LazyLock<CacheRegion> =
        LazyLock::new(|| CacheRegion::builder().fail_open(true).build());
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    async fn double(n: u32) -> u32 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        n * 2
    }

    #[cache_multi_on_arguments(region = "REGION")]
    async fn doubles(ids: &[u32]) -> Vec<u32> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        ids.iter().map(|id| id * 2).collect()
    }

    assert_eq!(double(2).await, 4);
    assert_eq!(double(2).await, 4);
    assert_eq!(count(&CALLS), 2, "nothing is cached, every call computes");
    assert!(get_double(2).await.is_err());
    assert!(set_double(&1, 2).await.is_err());
    assert!(invalidate_double(2).await.is_err());
    assert!(refresh_double(2).await.is_err());

    assert_eq!(doubles(&[1, 2, 1]).await, vec![2, 4, 2]);
    assert_eq!(count(&CALLS), 4, "the multi body runs once per call");
    assert!(get_doubles(&[1]).await.is_err());
    assert!(invalidate_doubles(&[1]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_is_a_miss_and_siblings_return_the_error() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| {
        let region = CacheRegion::new();
        region.configure(RegionConfig::with_backend(Down)).unwrap();
        region
    });
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    async fn double(n: u32) -> u32 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        n * 2
    }

    #[cache_multi_on_arguments(region = "REGION")]
    async fn doubles(ids: Vec<u32>) -> Vec<u32> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        ids.iter().map(|id| id * 2).collect()
    }

    assert_eq!(double(3).await, 6);
    assert_eq!(double(3).await, 6);
    assert_eq!(count(&CALLS), 2);
    let error = get_double(3).await.unwrap_err();
    assert!(error.to_string().contains("down-test-backend"), "{error}");
    assert!(set_double(&1, 3).await.is_err());
    assert!(invalidate_double(3).await.is_err());
    assert!(
        refresh_double(3).await.is_err(),
        "the body ran, the store failed"
    );
    assert_eq!(count(&CALLS), 3);

    assert_eq!(doubles(vec![1, 2]).await, vec![2, 4]);
    assert_eq!(count(&CALLS), 4, "the multi body runs once");
    assert!(get_doubles(vec![1]).await.is_err());
    assert!(set_doubles(&[2], vec![1]).await.is_err());
}

// ----- methods ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_with_shared_self_and_trait_impls() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));

    struct Users {
        calls: AtomicUsize,
    }

    impl Users {
        #[cache_on_arguments(region = "REGION")]
        async fn load(&self, id: u64) -> String {
            self.calls.fetch_add(1, Ordering::SeqCst);
            pause().await;
            format!("user {id}")
        }
    }

    let users = Users {
        calls: AtomicUsize::new(0),
    };
    assert_eq!(users.load(5).await, "user 5");
    assert_eq!(users.load(5).await, "user 5");
    assert_eq!(count(&users.calls), 1);
    assert!(users.load_key(5).ends_with("Users:load|5"));
    assert_eq!(users.get_load(5).await.unwrap().as_deref(), Some("user 5"));
    users.invalidate_load(5).await.unwrap();
    assert_eq!(users.get_load(5).await.unwrap(), None);
    users.set_load(&"set".to_string(), 5).await.unwrap();
    assert_eq!(users.load(5).await, "set");
    assert_eq!(users.refresh_load(5).await.unwrap(), "user 5");
    assert_eq!(users.load_uncached(5).await, "user 5");
    assert_eq!(count(&users.calls), 3);

    trait Loader {
        async fn fetch(&self, id: u64) -> String;
    }

    struct Repo {
        calls: AtomicUsize,
    }

    #[cache_on_arguments]
    impl Loader for Repo {
        #[cache_on_arguments(region = "REGION")]
        async fn fetch(&self, id: u64) -> String {
            self.calls.fetch_add(1, Ordering::SeqCst);
            format!("repo {id}")
        }
    }

    let repo = Repo {
        calls: AtomicUsize::new(0),
    };
    assert_eq!(repo.fetch(1).await, "repo 1");
    assert_eq!(repo.fetch(1).await, "repo 1");
    assert_eq!(count(&repo.calls), 1);
    assert_eq!(repo.get_fetch(1).await.unwrap().as_deref(), Some("repo 1"));
    repo.invalidate_fetch(1).await.unwrap();
    assert_eq!(repo.fetch(1).await, "repo 1");
    assert_eq!(count(&repo.calls), 2);
    assert_eq!(repo.fetch_uncached(1).await, "repo 1");
    assert_eq!(count(&repo.calls), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_functions_and_mut_self_methods() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION")]
    async fn parse<T>(text: &str) -> Option<T>
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

    assert_eq!(parse::<u8>("7").await, Some(7));
    assert_eq!(parse::<u8>("7").await, Some(7));
    assert_eq!(
        parse::<f64>("7").await,
        Some(7.0),
        "another instantiation, another key"
    );
    assert_eq!(count(&CALLS), 2);
    assert_ne!(parse_key::<u8>("7"), parse_key::<f64>("7"));

    struct Counter {
        runs: usize,
    }

    impl Counter {
        #[cache_on_arguments(region = "REGION")]
        async fn bump(&mut self, by: usize) -> usize {
            self.runs += 1;
            pause().await;
            self.runs * by
        }
    }

    let mut counter = Counter { runs: 0 };
    assert_eq!(counter.bump(10).await, 10);
    assert_eq!(counter.bump(10).await, 10, "cached: the body did not run");
    assert_eq!(counter.runs, 1);
    assert_eq!(counter.refresh_bump(10).await.unwrap(), 20);
    assert_eq!(counter.bump(10).await, 20);
    assert_eq!(counter.runs, 2);
}

// ----- options ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_apply_to_async_functions() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn debug<T: std::fmt::Debug + ?Sized>(value: &T) -> String {
        format!("{value:?}")
    }

    fn short_key(key: &FunctionKey<'_>) -> String {
        format!("short/{}/{}", key.function, key.args.join("/"))
    }

    struct Db;

    #[cache_on_arguments(region = "REGION", namespace = "v2", skip(db), to_str = debug)]
    async fn render(db: &Db, page: &str) -> String {
        let _ = db;
        CALLS.fetch_add(1, Ordering::SeqCst);
        format!("<h1>{page}</h1>")
    }

    assert_eq!(render(&Db, "home").await, "<h1>home</h1>");
    assert_eq!(render(&Db, "home").await, "<h1>home</h1>");
    assert_eq!(count(&CALLS), 1);
    assert!(
        render_key(&Db, "home").ends_with(r#":render|v2|"home""#),
        "{}",
        render_key(&Db, "home")
    );

    #[cache_on_arguments(region = "REGION", function_key_generator = short_key)]
    async fn area(width: u32, height: u32) -> u32 {
        width * height
    }

    assert_eq!(area(3, 4).await, 12);
    assert_eq!(
        REGION.get_async::<u32>("short/area/3/4").await.unwrap(),
        Some(12)
    );

    #[cache_on_arguments(region = "REGION", should_cache_fn = |found| found.is_some())]
    async fn find_user(id: u64) -> Option<String> {
        (id == 5).then(|| "ed".to_string())
    }

    assert_eq!(find_user(6).await, None);
    assert_eq!(get_find_user(6).await.unwrap(), None, "None was not stored");
    assert_eq!(find_user(5).await.as_deref(), Some("ed"));
    assert_eq!(
        get_find_user(5).await.unwrap(),
        Some(Some("ed".to_string()))
    );

    #[cache_on_arguments(region = "REGION", option = true)]
    async fn find(id: u64) -> Option<String> {
        (id == 5).then(|| "ed".to_string())
    }

    assert_eq!(find(6).await, None);
    assert_eq!(get_find(6).await.unwrap(), None, "None was not stored");
    assert_eq!(find(5).await.as_deref(), Some("ed"));
    assert_eq!(get_find(5).await.unwrap().as_deref(), Some("ed"));

    #[cache_on_arguments(region = "REGION", siblings = "cached_user")]
    async fn get_user(id: u64) -> String {
        format!("user {id}")
    }

    assert_eq!(get_user(5).await, "user 5");
    assert_eq!(get_cached_user(5).await.unwrap().as_deref(), Some("user 5"));
    assert!(cached_user_key(5).ends_with(":get_user|5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_cache_only_ok_values() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    /// Neither `Serialize` nor `Clone`: never stored.
    #[derive(Debug)]
    struct AppError;

    #[cache_on_arguments(region = "REGION")]
    async fn parse(text: &str) -> Result<u16, AppError> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        text.parse().map_err(|_| AppError)
    }

    assert_eq!(parse("80").await.unwrap(), 80);
    assert_eq!(parse("80").await.unwrap(), 80);
    assert_eq!(count(&CALLS), 1);
    assert!(parse("x").await.is_err());
    assert!(parse("x").await.is_err());
    assert_eq!(count(&CALLS), 3, "an Err is never cached");
    assert_eq!(get_parse("x").await.unwrap(), None);
    assert_eq!(refresh_parse("81").await.unwrap().unwrap(), 81);
    assert!(refresh_parse("y").await.unwrap().is_err());
    assert_eq!(get_parse("81").await.unwrap(), Some(81));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiration_time_is_the_functions_for_calls_and_get() {
    static CLOCK: LazyLock<Arc<ManualClock>> = LazyLock::new(|| Arc::new(ManualClock::new(1000.0)));
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| {
        let region = CacheRegion::builder().clock(CLOCK.clone()).build();
        region.configure(RegionConfig::new("memory")).unwrap();
        region
    });
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = "REGION", expiration_time = 10)]
    async fn rate(currency: &str) -> usize {
        let _ = currency;
        CALLS.fetch_add(1, Ordering::SeqCst)
    }

    assert_eq!(rate("EUR").await, 0);
    CLOCK.advance(Duration::from_secs(5));
    assert_eq!(rate("EUR").await, 0, "fresh for 10 s");
    assert_eq!(get_rate("EUR").await.unwrap(), Some(0));
    CLOCK.advance(Duration::from_secs(6));
    assert_eq!(get_rate("EUR").await.unwrap(), None, "expired after 10 s");
    assert_eq!(
        REGION.get_async::<usize>(&rate_key("EUR")).await.unwrap(),
        Some(0),
        "the region itself has no expiration: get_ judged by the function's"
    );
    assert_eq!(rate("EUR").await, 1, "an expired value is created again");
}

// ----- the multi form --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_calls_the_body_once_with_only_the_missing_ids_in_order() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));
    static ASKED: Mutex<Vec<Vec<u64>>> = Mutex::new(Vec::new());

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
    }

    #[cache_multi_on_arguments(region = "REGION")]
    async fn load_users(tenant: String, ids: &[u64]) -> Vec<User> {
        ASKED.lock().unwrap().push(ids.to_vec());
        pause().await;
        ids.iter()
            .map(|&id| User {
                id: id * 10 + tenant.len() as u64,
            })
            .collect()
    }
    let asked = || std::mem::take(&mut *ASKED.lock().unwrap());
    let users = |ids: &[u64]| {
        ids.iter()
            .map(|&id| User { id: id * 10 + 1 })
            .collect::<Vec<_>>()
    };

    assert_eq!(load_users("a".into(), &[3, 1, 2]).await, users(&[3, 1, 2]));
    assert_eq!(asked(), vec![vec![3, 1, 2]]);
    assert_eq!(
        load_users("a".into(), &[5, 1, 4, 3, 5]).await,
        users(&[5, 1, 4, 3, 5])
    );
    assert_eq!(
        asked(),
        vec![vec![5, 4]],
        "once, with only the missing ids, in order"
    );
    assert_eq!(load_users("a".into(), &[1, 2, 3]).await, users(&[1, 2, 3]));
    assert!(asked().is_empty(), "all cached: the body does not run");

    assert_eq!(load_users_keys("a".into(), &[1, 2]).len(), 2);
    assert_eq!(
        get_load_users("a".into(), &[1, 9]).await.unwrap(),
        vec![Some(User { id: 11 }), None]
    );
    invalidate_load_users("a".into(), &[1]).await.unwrap();
    set_load_users(&[User { id: 0 }], "a".into(), &[2])
        .await
        .unwrap();
    assert_eq!(
        load_users("a".into(), &[1, 2]).await,
        vec![User { id: 11 }, User { id: 0 }]
    );
    assert_eq!(asked(), vec![vec![1]]);
    assert!(
        set_load_users(&[], "a".into(), &[2]).await.is_err(),
        "counts must match"
    );
    assert_eq!(
        refresh_load_users("a".into(), &[2]).await.unwrap(),
        users(&[2])
    );
    assert_eq!(
        get_load_users("a".into(), &[2]).await.unwrap(),
        vec![Some(User { id: 21 })]
    );
    assert_eq!(load_users_uncached("a".into(), &[7]).await, users(&[7]));
    assert_eq!(asked(), vec![vec![2], vec![7]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_methods_and_results() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));

    struct Repo {
        asked: Mutex<Vec<Vec<u32>>>,
    }

    impl Repo {
        #[cache_multi_on_arguments(region = "REGION")]
        async fn names(&self, ids: Vec<u32>) -> Result<Vec<String>, String> {
            self.asked.lock().unwrap().push(ids.clone());
            if ids.contains(&0) {
                return Err("no id 0".into());
            }
            Ok(ids.iter().map(|id| format!("n{id}")).collect())
        }
    }

    let repo = Repo {
        asked: Mutex::new(Vec::new()),
    };
    assert_eq!(repo.names(vec![2, 1]).await.unwrap(), ["n2", "n1"]);
    assert_eq!(repo.names(vec![1, 3]).await.unwrap(), ["n1", "n3"]);
    assert_eq!(repo.names(vec![0, 1]).await.unwrap_err(), "no id 0");
    assert_eq!(
        *repo.asked.lock().unwrap(),
        vec![vec![2, 1], vec![3], vec![0]]
    );
    assert_eq!(
        repo.get_names(vec![0, 3]).await.unwrap(),
        vec![None, Some("n3".into())]
    );
    repo.invalidate_names(vec![3]).await.unwrap();
    assert_eq!(repo.get_names(vec![3]).await.unwrap(), vec![None]);
}

// ----- Send ------------------------------------------------------------------------------

#[test]
fn the_futures_of_cached_functions_are_send() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| region("memory"));

    #[cache_on_arguments(region = "REGION", should_cache_fn = |v| *v > 0, expiration_time = 60)]
    async fn one(name: &str, n: u64) -> u64 {
        pause().await;
        name.len() as u64 + n
    }

    #[cache_multi_on_arguments(region = "REGION")]
    async fn many(ids: &[u64]) -> Vec<u64> {
        pause().await;
        ids.to_vec()
    }

    struct Service;

    impl Service {
        #[cache_on_arguments(region = "REGION")]
        async fn get(&self, id: u64) -> Result<String, String> {
            pause().await;
            Ok(id.to_string())
        }
    }

    assert_send(one("a", 1));
    assert_send(refresh_one("a", 1));
    assert_send(get_one("a", 1));
    assert_send(set_one(&1, "a", 1));
    assert_send(invalidate_one("a", 1));
    assert_send(many(&[1]));
    assert_send(refresh_many(&[1]));
    assert_send(get_many(&[1]));
    assert_send(set_many(&[1], &[1]));
    assert_send(invalidate_many(&[1]));
    assert_send(Service.get(1));
    assert_send(Service.refresh_get(1));

    // And they run: on a runtime, from a spawned task.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let got = runtime.block_on(async {
        tokio::spawn(async {
            (
                one("ab", 1).await,
                many(&[4, 5]).await,
                Service.get(3).await,
            )
        })
        .await
        .unwrap()
    });
    assert_eq!(got, (3, vec![4, 5], Ok("3".to_string())));
}
