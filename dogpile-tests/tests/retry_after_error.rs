//! `retry_after_error` (issue 18): after a creator fails on a key, the callers of this
//! process within the interval get the failure (or, with `stale_if_error`, the stale value)
//! at once, without calling the origin; after it, one caller tries again.

#[path = "support/app_error.rs"]
mod app_error;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use app_error::AppError;
use dogpile::clock::ManualClock;
use dogpile::{CacheRegion, RegionConfig};

const INTERVAL: Duration = Duration::from_millis(500);

fn region(config: RegionConfig) -> (CacheRegion, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000.0));
    let region = CacheRegion::builder()
        .name("origin")
        .clock(clock.clone())
        .build();
    region
        .configure(config.retry_after_error(INTERVAL))
        .unwrap();
    (region, clock)
}

/// A call whose origin fails, counting its runs.
fn call(region: &CacheRegion, runs: &AtomicUsize) -> Result<u32, AppError> {
    region.try_get_or_create("k", || {
        runs.fetch_add(1, SeqCst);
        Err(AppError("the origin is down".into()))
    })
}

#[test]
fn calls_within_the_interval_get_the_failure_without_calling_the_origin() {
    let (region, clock) = region(RegionConfig::new("memory"));
    let runs = AtomicUsize::new(0);
    // 20 calls over 200 ms.
    let answers: Vec<_> = (0..20)
        .map(|_| {
            let answer = call(&region, &runs);
            clock.advance(Duration::from_millis(10));
            answer
        })
        .collect();
    assert_eq!(runs.load(SeqCst), 1, "the origin is called once");
    assert_eq!(answers[0].as_ref().unwrap_err().0, "the origin is down");
    for answer in &answers[1..] {
        let text = &answer.as_ref().unwrap_err().0;
        assert!(
            text.starts_with("cache: ") && text.contains("the origin is down"),
            "{text}"
        );
    }
    // After the interval, one caller tries the origin again.
    clock.advance(INTERVAL);
    assert!(call(&region, &runs).is_err());
    assert_eq!(runs.load(SeqCst), 2, "once more after the interval");
    assert!(call(&region, &runs).is_err());
    assert_eq!(runs.load(SeqCst), 2);
    // A success forgets the failure at once.
    clock.advance(INTERVAL);
    assert_eq!(region.get_or_create("k", || 7u32).unwrap(), 7);
    region.delete("k").unwrap();
    assert!(call(&region, &runs).is_err());
    assert_eq!(runs.load(SeqCst), 3);
}

#[test]
fn with_stale_if_error_the_interval_serves_the_stale_value() {
    let config = RegionConfig::new("memory")
        .expiration_time(Duration::from_secs(1))
        .stale_if_error(Duration::from_secs(60));
    let (region, clock) = region(config);
    region.set("k", &1u32).unwrap();
    clock.advance(Duration::from_secs(2));
    let runs = AtomicUsize::new(0);
    for _ in 0..20 {
        assert_eq!(call(&region, &runs).unwrap(), 1);
        clock.advance(Duration::from_millis(10));
    }
    assert_eq!(runs.load(SeqCst), 1);
}

#[test]
fn the_async_face_remembers_the_failure_too() {
    let (region, clock) = region(RegionConfig::new("memory"));
    let runs = AtomicUsize::new(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for _ in 0..20 {
            let answer = region
                .try_get_or_create_async("k", || async {
                    runs.fetch_add(1, SeqCst);
                    Err::<u32, _>(AppError("the origin is down".into()))
                })
                .await;
            assert!(answer.is_err());
            clock.advance(Duration::from_millis(10));
        }
    });
    assert_eq!(runs.load(SeqCst), 1);
}

#[test]
fn the_interval_is_a_region_option_in_config_files() {
    let config = RegionConfig::from_config(
        [("c.backend", "memory"), ("c.retry_after_error", "2")],
        "c.",
    )
    .unwrap();
    assert!(
        format!("{config:?}").contains("retry_after_error: Some(2s)"),
        "{config:?}"
    );
    let table: RegionConfig =
        serde_json::from_str(r#"{"backend": "memory", "retry_after_error": "1m"}"#).unwrap();
    assert!(
        format!("{table:?}").contains("retry_after_error: Some(60s)"),
        "{table:?}"
    );
}
