//! `CacheRegion::stats()`: each kind of count after the operations that make it, on the
//! memory backend and against a real redis server that goes away; and the same counts
//! through the `metrics` facade.

#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::Duration;

use dogpile::clock::ManualClock;
use dogpile::{CacheRegion, Error, RegionConfig, RegionStats};
use redis_server::RedisServer;

const PATIENCE: Duration = Duration::from_secs(10);

fn memory_region(clock: &Arc<ManualClock>) -> Arc<CacheRegion> {
    let region = CacheRegion::builder()
        .name("stats")
        .clock(clock.clone())
        .build();
    region
        .configure(RegionConfig::new("memory").expiration_time(Duration::from_secs(60)))
        .unwrap();
    Arc::new(region)
}

#[test]
fn hits_misses_creations_and_creator_errors_are_counted() {
    let clock = Arc::new(ManualClock::new(1_000.0));
    let region = memory_region(&clock);
    assert_eq!(region.stats(), RegionStats::default());

    assert_eq!(region.get::<u32>("a").unwrap(), None); // miss
    assert_eq!(region.get_or_create("a", || 1u32).unwrap(), 1); // miss, creation
    assert_eq!(region.get_or_create("a", || 2u32).unwrap(), 1); // hit
    assert_eq!(region.get::<u32>("a").unwrap(), Some(1)); // hit
    let failed: Result<u32, Error> = region.try_get_or_create("b", || {
        thread::sleep(Duration::from_millis(5));
        Err(Error::backend("test", "creator failed"))
    }); // miss, creation error
    assert!(failed.is_err());
    clock.advance(Duration::from_secs(61));
    assert_eq!(region.get::<u32>("a").unwrap(), None); // expired: miss
    assert_eq!(region.get_or_create("a", || 3u32).unwrap(), 3); // miss, creation

    let stats = region.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.stale_served),
        (2, 5, 0),
        "{stats:?}"
    );
    assert_eq!(
        (stats.creations, stats.creation_errors),
        (2, 1),
        "{stats:?}"
    );
    assert_eq!(
        (stats.backend_errors, stats.lock_waits),
        (0, 0),
        "{stats:?}"
    );
    assert!(stats.creation_time >= Duration::from_millis(5), "{stats:?}");
    assert_eq!(stats.hit_ratio(), Some(2.0 / 7.0));
}

/// Starts a `get_or_create` of `key` on another thread and returns once its creator runs;
/// the creator returns `value` when the returned sender is used.
fn creator_in_progress(
    region: &Arc<CacheRegion>,
    key: &'static str,
    value: u32,
) -> (thread::JoinHandle<u32>, mpsc::Sender<()>) {
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

#[test]
fn a_stale_value_served_counts_as_stale_not_as_a_hit() {
    let clock = Arc::new(ManualClock::new(1_000.0));
    let region = memory_region(&clock);
    region.set("k", &1u32).unwrap();
    clock.advance(Duration::from_secs(61));
    let (creator, release) = creator_in_progress(&region, "k", 2);
    // Another caller regenerates: these get the stale value at once.
    for _ in 0..3 {
        assert_eq!(region.get_or_create("k", || 9u32).unwrap(), 1);
    }
    release.send(()).unwrap();
    assert_eq!(creator.join().unwrap(), 2);
    assert_eq!(region.get_or_create("k", || 9u32).unwrap(), 2);
    let stats = region.stats();
    assert_eq!(
        (
            stats.hits,
            stats.misses,
            stats.stale_served,
            stats.creations
        ),
        (1, 1, 3, 1),
        "{stats:?}"
    );
}

#[test]
fn callers_waiting_for_a_missing_value_count_lock_waits_and_their_time() {
    const WAITERS: usize = 8;
    for _ in 0..3 {
        let clock = Arc::new(ManualClock::new(1_000.0));
        let region = memory_region(&clock);
        let (creator, release) = creator_in_progress(&region, "k", 7);
        let barrier = Arc::new(Barrier::new(WAITERS + 1));
        let waiters: Vec<_> = (0..WAITERS)
            .map(|_| {
                let (region, barrier) = (region.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    region.get_or_create("k", || 9u32).unwrap()
                })
            })
            .collect();
        barrier.wait();
        // Every waiter has begun to wait for the lock (a wait counts when it begins): give
        // them time to block, then let the creator finish.
        while region.stats().lock_waits < WAITERS as u64 {
            thread::yield_now();
        }
        thread::sleep(Duration::from_millis(50));
        release.send(()).unwrap();
        assert_eq!(creator.join().unwrap(), 7);
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), 7);
        }
        let stats = region.stats();
        assert_eq!(stats.creations, 1, "{stats:?}");
        assert_eq!(stats.lock_waits, WAITERS as u64, "{stats:?}");
        // Handed the creator's value, the waiters are not misses (issue 18).
        assert_eq!(stats.misses, 1, "{stats:?}");
        assert!(
            stats.lock_wait_time >= Duration::from_millis(50 * WAITERS as u64),
            "{stats:?}"
        );
    }
}

#[test]
fn backend_errors_against_a_real_server_that_goes_away() {
    let mut server = RedisServer::start();
    let region = CacheRegion::builder().name("redis-stats").build();
    region
        .configure(
            RegionConfig::new("redis")
                .argument("url", server.url())
                .argument("socket_timeout", 1),
        )
        .unwrap();
    assert_eq!(region.get_or_create("k", || 1u32).unwrap(), 1);
    assert_eq!(region.get::<u32>("k").unwrap(), Some(1));
    assert_eq!(region.stats().backend_errors, 0);

    server.stop();
    assert!(matches!(region.get::<u32>("k"), Err(Error::Backend { .. })));
    assert!(matches!(region.set("k", &2u32), Err(Error::Backend { .. })));
    assert!(region.get_or_create("k", || 3u32).is_err());
    let stats = region.stats();
    assert_eq!(stats.backend_errors, 3, "{stats:?}");
    assert_eq!((stats.hits, stats.creations), (1, 1), "{stats:?}");
}

#[test]
fn the_counts_reach_the_metrics_facade() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let region = CacheRegion::builder().name("metered").build();
        region.configure(RegionConfig::new("memory")).unwrap();
        region.get_or_create("k", || 1u32).unwrap();
        region.get_or_create("k", || 1u32).unwrap();
        region.get::<u32>("absent").unwrap();
    });
    let counts: Vec<(String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let key = key.key();
            let region = key
                .labels()
                .find(|l| l.key() == "region")?
                .value()
                .to_owned();
            match value {
                DebugValue::Counter(n) if region == "metered" => Some((key.name().to_owned(), n)),
                _ => None,
            }
        })
        .collect();
    let count = |name: &str| counts.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(count("dogpile_hits_total"), Some(1), "{counts:?}");
    assert_eq!(count("dogpile_misses_total"), Some(2), "{counts:?}");
    assert_eq!(count("dogpile_creations_total"), Some(1), "{counts:?}");
}

#[test]
fn unnamed_regions_configured_from_a_flat_config_are_separate_series() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let config = [
        ("cache.local.backend", "memory"),
        ("cache.other.backend", "memory"),
    ];
    metrics::with_local_recorder(&recorder, || {
        let local = dogpile::make_region();
        let other = dogpile::make_region();
        local.configure_from_config(config, "cache.local.").unwrap();
        other.configure_from_config(config, "cache.other.").unwrap();
        local.get::<u32>("absent").unwrap();
        other.get::<u32>("absent").unwrap();
        other.get::<u32>("absent").unwrap();
    });
    let mut misses: Vec<(String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let key = key.key();
            let region = key
                .labels()
                .find(|l| l.key() == "region")?
                .value()
                .to_owned();
            match value {
                DebugValue::Counter(n) if key.name() == "dogpile_misses_total" => Some((region, n)),
                _ => None,
            }
        })
        .collect();
    misses.sort();
    assert_eq!(
        misses,
        [("cache.local".to_owned(), 1), ("cache.other".to_owned(), 2)]
    );
}

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn warnings_about_a_down_server_are_rate_limited_per_region_and_kind() {
    let clock = Arc::new(ManualClock::new(1_000.0));
    let region = CacheRegion::builder()
        .name("limited")
        .clock(clock.clone())
        .fail_open(true)
        .build();
    let mut server = RedisServer::start();
    region
        .configure(
            RegionConfig::new("redis")
                .argument("url", server.url())
                .argument("socket_timeout", 0.2),
        )
        .unwrap();
    server.stop();
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..50u32 {
            assert_eq!(region.get_or_create("k", || i).unwrap(), i);
        }
        // After the period, one more warning per kind, counting what was left out.
        clock.advance(Duration::from_secs(11));
        assert_eq!(region.get_or_create("k", || 7u32).unwrap(), 7);
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let reads = log.matches("cache read failed").count();
    let writes = log.matches("cache write failed").count();
    assert_eq!(
        (reads, writes),
        (2, 2),
        "one warning per kind, then one summary:\n{log}"
    );
    assert!(log.contains("suppressed=49"), "{log}");
    assert!(
        region.stats().backend_errors >= 100,
        "every failure is still counted"
    );
}
