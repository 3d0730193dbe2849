//! The async API against real memcached servers (issue 19, item 3): a region's async
//! methods reach memcached on the backend's native async client, never on tokio's
//! blocking pool; a stopped server holds no task past its deadline while a healthy
//! region in the same runtime keeps answering; and `dead_retry` is one record for sync
//! and async callers. The conformance suite's async runs are in `memcached.rs`, the
//! hostile servers in `memcached_hostile.rs` (both faces), and the cancellation storm
//! in `incidents_servers.rs`.

#[path = "support/blocking_pool.rs"]
mod blocking_pool;
#[path = "support/memcached_server.rs"]
mod memcached_server;
#[path = "support/ports.rs"]
mod ports;

use std::sync::Arc;
use std::time::{Duration, Instant};

use blocking_pool::with_the_blocking_pool_busy;
use dogpile::backend::{Arguments, CacheBackend};
use dogpile::backends::MemcachedBackend;
use dogpile::{CacheRegion, Error, RegionConfig};
use memcached_server::MemcachedServer;

const HOUR: Duration = Duration::from_secs(3600);

fn region_on(server: &MemcachedServer, extra: &[(&str, &str)]) -> Arc<CacheRegion> {
    let region = CacheRegion::new();
    let mut config = RegionConfig::new("memcached")
        .expiration_time(HOUR)
        .argument("url", server.addr());
    for (name, value) in extra {
        config = config.argument(*name, *value);
    }
    region
        .configure(config)
        .expect("configure a memcached region");
    Arc::new(region)
}

#[test]
fn async_calls_never_use_the_blocking_pool() {
    let server = MemcachedServer::start();
    // Configured before any runtime exists: configuring needs none.
    let region = region_on(
        &server,
        &[("distributed_lock", "true"), ("lock_sleep", "0.01")],
    );
    let work = async {
        region.set_async("k", &1u32).await.unwrap();
        assert_eq!(region.get_async::<u32>("k").await.unwrap(), Some(1));
        region.delete_async("k").await.unwrap();
        let created = region
            .get_or_create_async("k", || async { 2u32 })
            .await
            .unwrap();
        assert_eq!(created, 2, "created under the distributed lock");
        let items = [("m1", 1u32), ("m2", 2)];
        region.set_multi_async(&items).await.unwrap();
        let values = region
            .get_multi_async::<u32, _>(&["m1", "k", "missing", "m2"])
            .await
            .unwrap();
        assert_eq!(values, [Some(1), Some(2), None, Some(2)]);
        region.delete_multi_async(&["m1", "m2"]).await.unwrap();
        assert_eq!(region.get_async::<u32>("m1").await.unwrap(), None);
    };
    with_the_blocking_pool_busy(work, "the async calls");
    // What async callers wrote, sync callers and other clients read.
    assert_eq!(region.get::<u32>("k").unwrap(), Some(2));
    assert!(server.raw_get("k").is_some());
}

/// Thaws a frozen server when dropped, so that a failed assertion never leaves it
/// stopped.
struct Thaw<'a>(&'a MemcachedServer);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        self.0.freeze(false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_holds_no_task_past_twice_socket_timeout() {
    const TASKS: usize = 2000;
    const SOCKET_TIMEOUT: Duration = Duration::from_millis(500);
    let stopped = MemcachedServer::start();
    let healthy = MemcachedServer::start();
    let stalled = region_on(&stopped, &[("socket_timeout", "0.5"), ("dead_retry", "0")]);
    let answering = region_on(&healthy, &[("socket_timeout", "0.5")]);
    stalled.set_async("k", &1u32).await.unwrap();
    answering.set_async("k", &1u32).await.unwrap();

    stopped.freeze(true);
    let _thaw = Thaw(&stopped);
    let calls: Vec<_> = (0..TASKS)
        .map(|i| {
            let region = stalled.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = match i % 3 {
                    0 => region.get_async::<u32>("k").await.map(drop),
                    1 => region.set_async("k", &2u32).await,
                    _ => region
                        .get_or_create_async("other", || async { 3u32 })
                        .await
                        .map(drop),
                };
                (outcome, started.elapsed())
            })
        })
        .collect();

    // Meanwhile a region on a healthy server in the same runtime answers at once.
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while !calls.iter().all(|call| call.is_finished()) {
        let started = Instant::now();
        assert_eq!(answering.get_async::<u32>("k").await.unwrap(), Some(1));
        slowest = slowest.max(started.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("{probes} reads of the healthy region meanwhile, the slowest took {slowest:?}");
    assert!(probes > 5, "{probes} probes");
    assert!(
        slowest < Duration::from_millis(100),
        "a healthy region's read took {slowest:?} while the other server was stopped"
    );

    let mut longest = Duration::ZERO;
    for call in calls {
        let (outcome, took) = call.await.unwrap();
        let message = match outcome {
            Err(error @ Error::Backend { .. }) => error.to_string(),
            other => panic!("expected Error::Backend, got {other:?}"),
        };
        assert!(message.contains(&stopped.addr()), "{message}");
        assert!(
            took < 2 * SOCKET_TIMEOUT,
            "a call took {took:?} (socket_timeout is {SOCKET_TIMEOUT:?}): {message}"
        );
        longest = longest.max(took);
    }
    println!("the longest of {TASKS} calls on the stopped server took {longest:?}");

    // Thawed, the server answers again, without a restart of anything.
    stopped.freeze(false);
    let again = tokio::time::timeout(Duration::from_secs(5), stalled.get_async::<u32>("k"))
        .await
        .expect("an answer once thawed");
    assert!(again.unwrap().is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn dead_retry_is_one_record_for_sync_and_async_callers() {
    // A port nothing listens on (free a moment ago): connections are refused.
    let addr = format!("127.0.0.1:{}", ports::free_port());
    let down = || {
        MemcachedBackend::from_arguments(&Arguments::new(
            "memcached",
            [("url", addr.as_str()), ("dead_retry", "60")],
        ))
        .unwrap()
    };
    let marked_down = |error: Error| {
        let message = error.to_string();
        assert!(
            message.contains("marked down") && message.contains(&addr),
            "{message}"
        );
    };
    // Found down by a sync call: async calls fail fast.
    let backend = down();
    let first = backend.get("k").unwrap_err().to_string();
    assert!(first.contains("refused"), "{first}");
    let twin = backend.async_twin().expect("a native async client");
    marked_down(twin.get("k").await.unwrap_err());
    // Found down by an async call: sync calls fail fast.
    let backend = down();
    let twin = backend.async_twin().unwrap();
    let first = twin.get("k").await.unwrap_err().to_string();
    assert!(first.contains("refused"), "{first}");
    marked_down(backend.get("k").unwrap_err());
}

#[test]
fn a_region_outlives_the_runtime_its_connections_were_opened_on() {
    // A region in a static, used from one runtime and then another (tests, a CLI that
    // builds a runtime per command): the first runtime's pooled connections (and their
    // timers) are dead once it is dropped; the next call notices on its first write,
    // drops them and opens a connection on the runtime it runs on.
    let server = MemcachedServer::start();
    let region = region_on(&server, &[("pool_size", "2")]);
    for round in 0..3u32 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            region.set_async("k", &round).await.unwrap();
            assert_eq!(region.get_async::<u32>("k").await.unwrap(), Some(round));
            // Two calls at once, so that both pooled connections are this runtime's.
            let (a, b) = tokio::join!(region.get_async::<u32>("k"), region.get_async::<u32>("k"));
            assert_eq!((a.unwrap(), b.unwrap()), (Some(round), Some(round)));
        });
    }
}
