//! `stale_if_error` (issue 18): when the creator fails and the value it regenerates went
//! stale no longer ago than the window, every caller of the wave gets that value, the one
//! that ran the creator included; past the window the failure is the answer.

#[path = "support/app_error.rs"]
mod app_error;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use app_error::AppError;
use dogpile::clock::ManualClock;
use dogpile::{CacheRegion, CreateOptions, RegionConfig};

const CALLERS: usize = 8;
const CREATOR: Duration = Duration::from_millis(200);

/// A memory region whose waiters wait for the creator (no stale value served while it
/// runs), holding `k` = 1 that expired `expired_ago` seconds ago.
fn region(window: Option<Duration>, expired_ago: f64) -> CacheRegion {
    let clock = Arc::new(ManualClock::new(1_000.0));
    let region = CacheRegion::builder()
        .name("incident")
        .clock(clock.clone())
        .serve_stale(false)
        .build();
    let mut config = RegionConfig::new("memory").expiration_time(Duration::from_secs(1));
    if let Some(window) = window {
        config = config.stale_if_error(window);
    }
    region.configure(config).unwrap();
    region.set("k", &1u32).unwrap();
    clock.advance(Duration::from_secs_f64(1.0 + expired_ago));
    region
}

/// `CALLERS` threads call `try_get_or_create` on `k` at once with a creator that fails
/// after 200 ms: their answers, and how many times the creator ran.
fn sync_wave(
    region: &CacheRegion,
    options: impl Fn() -> CreateOptions<'static, u32> + Sync,
) -> (Vec<Result<u32, AppError>>, usize) {
    let runs = AtomicUsize::new(0);
    let barrier = Barrier::new(CALLERS);
    let answers = thread::scope(|s| {
        let calls: Vec<_> = (0..CALLERS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    region.try_get_or_create_with("k", options(), || {
                        runs.fetch_add(1, SeqCst);
                        thread::sleep(CREATOR);
                        Err(AppError("the origin is down".into()))
                    })
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    (answers, runs.load(SeqCst))
}

#[test]
fn every_caller_of_a_failing_wave_gets_the_value_within_the_window() {
    for _ in 0..3 {
        let region = region(Some(Duration::from_secs(2)), 0.5);
        let (answers, runs) = sync_wave(&region, CreateOptions::new);
        assert_eq!(runs, 1, "one creator run");
        for answer in &answers {
            assert_eq!(answer.as_ref().ok(), Some(&1), "{answers:?}");
        }
        let stats = region.stats();
        assert_eq!(stats.creation_errors, 1);
        assert_eq!(stats.stale_served_on_error, 1, "{stats:?}");
        assert_eq!(stats.stale_served, 0, "{stats:?}");
        assert_eq!(stats.creations, 0);
    }
}

#[test]
fn a_value_stale_for_longer_than_the_window_is_refused() {
    let region = region(Some(Duration::from_secs(2)), 3.0);
    let (answers, runs) = sync_wave(&region, CreateOptions::new);
    assert_eq!(runs, 1);
    let texts: Vec<String> = answers
        .iter()
        .map(|answer| answer.as_ref().unwrap_err().0.clone())
        .collect();
    assert_eq!(
        texts.iter().filter(|t| *t == "the origin is down").count(),
        1,
        "the caller that ran the creator gets its own error: {texts:?}"
    );
    assert!(
        texts
            .iter()
            .filter(|t| *t != "the origin is down")
            .all(|t| t.contains("the origin is down") && t.starts_with("cache:")),
        "the waiters get the failure through From: {texts:?}"
    );
}

#[test]
fn without_a_window_the_failure_is_the_answer_and_a_call_can_give_one() {
    let region = region(None, 0.5);
    let (answers, _) = sync_wave(&region, CreateOptions::new);
    assert!(answers.iter().all(Result::is_err), "{answers:?}");
    let (answers, runs) = sync_wave(&region, || {
        CreateOptions::new().stale_if_error(Duration::from_secs(1))
    });
    assert_eq!(runs, 1);
    assert!(
        answers.iter().all(|a| a.as_ref().ok() == Some(&1)),
        "{answers:?}"
    );
}

#[test]
fn the_async_face_serves_the_stale_value_to_the_whole_wave() {
    let region = Arc::new(region(Some(Duration::from_secs(2)), 0.5));
    let runs = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let answers = runtime.block_on(async {
        let barrier = Arc::new(tokio::sync::Barrier::new(CALLERS));
        let calls: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (region, runs, barrier) = (region.clone(), runs.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    region
                        .try_get_or_create_async("k", || async {
                            runs.fetch_add(1, SeqCst);
                            tokio::time::sleep(CREATOR).await;
                            Err::<u32, _>(AppError("the origin is down".into()))
                        })
                        .await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap());
        }
        answers
    });
    assert_eq!(runs.load(SeqCst), 1);
    assert!(
        answers.iter().all(|a| a.as_ref().ok() == Some(&1)),
        "{answers:?}"
    );
}

#[test]
fn the_window_is_a_region_option_in_config_files() {
    let flat: HashMap<&str, &str> = [
        ("cache.backend", "memory"),
        ("cache.expiration_time", "60"),
        ("cache.stale_if_error", "10m"),
    ]
    .into();
    let config = RegionConfig::from_config(flat, "cache.").unwrap();
    assert!(
        format!("{config:?}").contains("stale_if_error: Some(600s)"),
        "{config:?}"
    );
    let table: RegionConfig =
        serde_json::from_str(r#"{"backend": "memory", "stale_if_error": 30}"#).unwrap();
    assert!(
        format!("{table:?}").contains("stale_if_error: Some(30s)"),
        "{table:?}"
    );
    let bad = RegionConfig::from_config(
        [("c.backend", "memory"), ("c.stale_if_error", "soon")],
        "c.",
    )
    .unwrap_err();
    assert!(bad.to_string().contains("c.stale_if_error"), "{bad}");
}
