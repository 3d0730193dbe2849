//! Issue 21, point 2: the async API under an executor that is not tokio's (here a minimal
//! `block_on` that parks its thread, as `futures::executor::block_on` does). A backend that
//! async code reaches through tokio (file, redis) answers with an error naming the tokio
//! runtime it needs, never a panic; a memory region works, waits for the lock included.

#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Duration;

use dogpile::{CacheRegion, Error, RegionConfig};
use redis_server::RedisServer;

/// Wakes the thread that runs the future.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` on this thread, parking it while the future is pending: no tokio anywhere.
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

fn region(config: RegionConfig) -> CacheRegion {
    let region = CacheRegion::named("elsewhere");
    region.configure(config).unwrap();
    region
}

fn says_tokio(error: Error) {
    assert!(matches!(error, Error::NoTokioRuntime { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("tokio runtime"), "{message}");
    assert!(message.contains("elsewhere"), "{message}");
}

#[test]
fn file_and_redis_regions_answer_with_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = region(RegionConfig::new("file").argument("filename", dir.path().to_str().unwrap()));
    let redis = region(RegionConfig::new("redis").argument("url", RedisServer::shared().url()));
    for region in [&file, &redis] {
        region.set("k", &1u32).unwrap(); // the blocking face needs no runtime
        says_tokio(block_on(region.get_async::<u32>("k")).unwrap_err());
        says_tokio(block_on(region.set_async("k", &2u32)).unwrap_err());
        let created = block_on(region.get_or_create_async("k", || async { 3u32 }));
        says_tokio(created.unwrap_err());
        let multi = block_on(region.get_multi_async::<u32, _>(&["k"]));
        says_tokio(multi.unwrap_err());
        assert_eq!(region.get::<u32>("k").unwrap(), Some(1));
    }
}

#[test]
fn a_memory_region_works_waits_included() {
    let region = Arc::new(region(
        RegionConfig::new("memory").expiration_time(Duration::from_secs(60)),
    ));
    assert_eq!(
        block_on(region.get_or_create_async("k", || async { 1u32 })).unwrap(),
        1
    );
    assert_eq!(block_on(region.get_async::<u32>("k")).unwrap(), Some(1));
    // Four callers on a missing key: one creates (slowly), the others wait for it.
    let (runs, start) = (Arc::new(AtomicUsize::new(0)), Arc::new(Barrier::new(4)));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (region, runs, start) = (region.clone(), runs.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                block_on(region.get_or_create_async("wait", || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(100));
                    2u32
                }))
                .unwrap()
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.join().unwrap(), 2);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Issue 21, point 4: a blocking call that waits inside a tokio runtime blocks an executor
/// thread; when its time budget runs out its error says so (and a warning, once, in the
/// log). The same wait outside a runtime says nothing of it.
#[test]
fn a_blocking_lock_timeout_inside_a_runtime_says_so() {
    let region = Arc::new(
        CacheRegion::builder()
            .name("elsewhere")
            .time_budget(Duration::from_millis(100))
            .build(),
    );
    region.configure(RegionConfig::new("memory")).unwrap();
    let held = Arc::new(Barrier::new(2));
    let holder = {
        let (region, held) = (region.clone(), held.clone());
        thread::spawn(move || {
            region
                .get_or_create("k", || {
                    held.wait();
                    thread::sleep(Duration::from_millis(600));
                    1u32
                })
                .unwrap()
        })
    };
    held.wait();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let inside = runtime.block_on(async { region.get_or_create("k", || 2u32).unwrap_err() });
    assert!(
        matches!(
            inside,
            Error::LockTimeout {
                in_runtime: true,
                ..
            }
        ),
        "{inside:?}"
    );
    assert!(
        inside.to_string().contains("inside a tokio runtime"),
        "{inside}"
    );
    let outside = region.get_or_create("k", || 2u32).unwrap_err();
    assert!(
        matches!(
            outside,
            Error::LockTimeout {
                in_runtime: false,
                ..
            }
        ),
        "{outside:?}"
    );
    assert!(!outside.to_string().contains("tokio"), "{outside}");
    holder.join().unwrap();
}
