//! Issue 18, item 4: `soft_timeout`. The caller that starts regenerating a stale value
//! waits this long for the new one, then answers with the stale value; the creator goes
//! on, stores its value and hands it to whoever waits. The background forms honour it (their
//! creators are `'static` and outlive the caller), sync and async; without it they answer
//! with the stale value at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dogpile::clock::ManualClock;
use dogpile::runner::ThreadPoolRunner;
use dogpile::{CacheRegion, RegionConfig};

const EXPIRATION: Duration = Duration::from_secs(60);

/// A memory region on a manual clock (values go stale when the test says so), with a
/// runner for the background form.
fn region(soft_timeout: Option<Duration>) -> CacheRegion {
    let clock = Arc::new(ManualClock::new(1_000.0));
    let region = CacheRegion::builder()
        .name("soft")
        .clock(clock.clone())
        .async_creation_runner(ThreadPoolRunner::new(2).unwrap())
        .build();
    CLOCK.with(|c| *c.borrow_mut() = Some(clock));
    let mut config = RegionConfig::new("memory").expiration_time(EXPIRATION);
    if let Some(timeout) = soft_timeout {
        config = config.soft_timeout(timeout);
    }
    region.configure(config).unwrap();
    region
}

thread_local! {
    /// The clock of the region this thread made last.
    static CLOCK: std::cell::RefCell<Option<Arc<ManualClock>>> = const { std::cell::RefCell::new(None) };
}

/// Makes `key`'s value 1 and lets it go stale.
fn stale(region: &CacheRegion, key: &str) {
    assert_eq!(region.get_or_create(key, || 1u32).unwrap(), 1);
    let clock = CLOCK.with(|c| c.borrow().clone()).unwrap();
    clock.advance(EXPIRATION + Duration::from_secs(1));
}

#[test]
fn a_slow_regeneration_answers_with_the_stale_value_after_the_soft_timeout() {
    let region = region(Some(Duration::from_millis(150)));
    stale(&region, "slow");
    let (done, finished) = mpsc::channel();
    let started = Instant::now();
    let answer = region
        .get_or_create_in_background("slow", move || {
            std::thread::sleep(Duration::from_millis(600));
            done.send(()).unwrap();
            2u32
        })
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(answer, 1, "the stale value, once the soft timeout passed");
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_millis(550), "{waited:?}");
    // The creator went on and stored its value.
    finished.recv_timeout(Duration::from_secs(5)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while region.get::<u32>("slow").unwrap() != Some(2) {
        assert!(
            Instant::now() < deadline,
            "the regeneration's value was never stored"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = region.stats();
    assert_eq!(stats.stale_served, 1, "{stats:?}");
}

#[test]
fn a_quick_regeneration_is_the_answer() {
    let region = region(Some(Duration::from_secs(2)));
    stale(&region, "quick");
    let started = Instant::now();
    let answer = region
        .get_or_create_in_background("quick", || {
            std::thread::sleep(Duration::from_millis(50));
            2u32
        })
        .unwrap();
    assert_eq!(answer, 2, "the new value, made within the soft timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
    let stats = region.stats();
    assert_eq!(stats.stale_served, 0, "{stats:?}");
}

#[test]
fn without_a_soft_timeout_the_background_form_answers_stale_at_once() {
    let region = region(None);
    stale(&region, "none");
    let (go, wait) = mpsc::channel::<()>();
    let answer = region
        .get_or_create_in_background("none", move || {
            let _ = wait.recv_timeout(Duration::from_secs(5));
            2u32
        })
        .unwrap();
    assert_eq!(answer, 1);
    go.send(()).unwrap();
}

#[test]
fn callers_during_a_soft_timeout_get_the_stale_value_and_one_creator_runs() {
    let region = Arc::new(region(Some(Duration::from_millis(300))));
    stale(&region, "wave");
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (region, runs, barrier) = (region.clone(), runs.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                let answer = region
                    .get_or_create_in_background("wave", move || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(800));
                        2u32
                    })
                    .unwrap();
                (answer, started.elapsed())
            })
        })
        .collect();
    let answers: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    for (answer, took) in &answers {
        assert_eq!(*answer, 1, "{answers:?}");
        assert!(*took < Duration::from_millis(750), "{answers:?}");
    }
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(region.get_or_create("wave", || 3u32).unwrap(), 2);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_background_form_honours_the_soft_timeout() {
    let region = region(Some(Duration::from_millis(150)));
    stale(&region, "async");
    let started = Instant::now();
    let answer = region
        .get_or_create_in_background_async("async", || async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            2u32
        })
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(answer, 1);
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_millis(550), "{waited:?}");
    let quick = region
        .get_or_create_in_background_async("async", || async { 3u32 })
        .await
        .unwrap();
    // The first regeneration still holds the lock: its caller answers with the stale value
    // at once (it did not win the lock), and the new value arrives later.
    assert_eq!(quick, 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(region.get_async::<u32>("async").await.unwrap(), Some(2));
}

#[test]
fn soft_timeout_is_read_from_config_files() {
    let config: RegionConfig = toml::from_str(
        r#"
        backend = "memory"
        soft_timeout = "250ms"
        "#,
    )
    .unwrap();
    assert!(format!("{config:?}").contains("250ms"), "{config:?}");
    let flat =
        RegionConfig::from_config([("c.backend", "memory"), ("c.soft_timeout", "0.25")], "c.")
            .unwrap();
    assert!(format!("{flat:?}").contains("250ms"), "{flat:?}");
    let bad =
        RegionConfig::from_config([("c.backend", "memory"), ("c.soft_timeout", "soon")], "c.")
            .unwrap_err();
    assert!(bad.to_string().contains("c.soft_timeout"), "{bad}");
}

/// The origin's failure, as a caller's own error type.
#[derive(Debug)]
struct Down(String);

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<dogpile::Error> for Down {
    fn from(error: dogpile::Error) -> Self {
        Down(error.to_string())
    }
}

#[test]
fn a_fallible_background_creator_honours_the_soft_timeout() {
    let region = region(Some(Duration::from_millis(150)));
    // A missing value is created by the caller: its error is the caller's.
    let missing: Result<u32, Down> =
        region.try_get_or_create_in_background("fallible", || Err(Down("origin down".into())));
    assert_eq!(missing.unwrap_err().0, "origin down");
    stale(&region, "fallible");
    // A slow failing regeneration: the stale value after the soft timeout.
    let started = Instant::now();
    let slow: Result<u32, Down> = region.try_get_or_create_in_background("fallible", || {
        std::thread::sleep(Duration::from_millis(600));
        Err(Down("origin down".into()))
    });
    let waited = started.elapsed();
    assert_eq!(slow.unwrap(), 1);
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_millis(550), "{waited:?}");
    // Wait for that regeneration to fail and let go of the lock.
    let deadline = Instant::now() + Duration::from_secs(5);
    while region.key_is_locked("fallible") {
        assert!(Instant::now() < deadline, "the lock was never released");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A quick failing regeneration: its failure is handed over, the stale value answers.
    let quick: Result<u32, Down> = region.try_get_or_create_in_background("fallible", || {
        std::thread::sleep(Duration::from_millis(20));
        Err(Down("origin down".into()))
    });
    assert_eq!(quick.unwrap(), 1);
    // A quick good one is the answer.
    let good: Result<u32, Down> = region.try_get_or_create_in_background("fallible", || Ok(2));
    assert_eq!(good.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallible_async_background_creator_honours_the_soft_timeout() {
    let region = region(Some(Duration::from_millis(150)));
    stale(&region, "fallible-async");
    let started = Instant::now();
    let slow: Result<u32, Down> = region
        .try_get_or_create_in_background_async("fallible-async", || async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Err(Down("origin down".into()))
        })
        .await;
    assert_eq!(slow.unwrap(), 1);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_millis(550), "{waited:?}");
}

/// `retry_after_error` holds for the background forms too: a regeneration that failed on
/// the runner is remembered, and the callers within the interval get the stale value
/// without the origin being called again; after it, one regeneration tries again.
#[test]
fn a_failed_background_regeneration_is_not_retried_within_retry_after_error() {
    let clock = Arc::new(ManualClock::new(1_000.0));
    let region = CacheRegion::builder()
        .name("soft")
        .clock(clock.clone())
        .async_creation_runner(ThreadPoolRunner::new(2).unwrap())
        .build();
    region
        .configure(
            RegionConfig::new("memory")
                .expiration_time(EXPIRATION)
                .retry_after_error(Duration::from_secs(5)),
        )
        .unwrap();
    assert_eq!(region.get_or_create("r", || 1u32).unwrap(), 1);
    clock.advance(EXPIRATION + Duration::from_secs(1));
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = || {
        let calls = calls.clone();
        move || -> Result<u32, Down> {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Down("origin down".into()))
        }
    };
    let settled = |region: &CacheRegion| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while region.key_is_locked("r") {
            assert!(Instant::now() < deadline, "the lock was never released");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    assert_eq!(
        region
            .try_get_or_create_in_background("r", failing())
            .unwrap(),
        1
    );
    settled(&region);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for _ in 0..10 {
        assert_eq!(
            region
                .try_get_or_create_in_background("r", failing())
                .unwrap(),
            1
        );
        settled(&region);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "not retried within the interval"
    );
    clock.advance(Duration::from_secs(6));
    assert_eq!(
        region
            .try_get_or_create_in_background("r", failing())
            .unwrap(),
        1
    );
    settled(&region);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "tried again after it");
}
