//! Runs async work on a runtime whose blocking pool is taken: what shows that async calls
//! never need tokio's blocking pool.
//!
//! ```ignore
//! #[path = "support/blocking_pool.rs"]
//! mod blocking_pool;
//! ```

use std::time::Duration;

/// How long `work` may take before it is reported as stuck behind the blocking pool.
const PATIENCE: Duration = Duration::from_secs(20);

/// Runs `work` on a runtime whose one blocking-pool thread is kept busy the whole time:
/// an async call that needed the blocking pool would wait behind it and time out.
pub fn with_the_blocking_pool_busy(work: impl std::future::Future<Output = ()>, what: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .build()
        .unwrap();
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    runtime.block_on(async {
        let busy = tokio::task::spawn_blocking(move || blocked.recv());
        let probe = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::task::spawn_blocking(|| ()),
        );
        assert!(probe.await.is_err(), "the blocking pool is busy");
        tokio::time::timeout(PATIENCE, work)
            .await
            .unwrap_or_else(|_| panic!("{what} finished while the blocking pool was busy"));
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
    });
}
