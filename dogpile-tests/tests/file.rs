//! The file backend: the conformance suite in each lock configuration, its arguments, and
//! two backends (as two processes would have) sharing one store. The tests that start real
//! processes (crash, multi-process, path escape) are in `file_processes.rs`.

#[macro_use]
mod conformance;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use dogpile::clock::ManualClock;
use dogpile::{CacheRegion, Error, RegionConfig};
use tempfile::TempDir;

/// A config for a store in a new temporary directory, kept alive by the returned guard.
fn store(backend: &str, extra: &[(&str, &str)]) -> (RegionConfig, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        RegionConfig::new(backend).argument("filename", dir.path().join("store").display());
    for (name, value) in extra {
        config = config.argument(*name, value);
    }
    (config, dir)
}

mod file {
    use super::*;
    conformance_suite!(
        stores = true,
        shared_lock = true,
        config = || store("file", &[])
    );
}

mod dbm_alias_with_rw_lock {
    use super::*;
    conformance_suite!(
        stores = true,
        shared_lock = true,
        config = || store("dogpile.cache.dbm", &[("rw_lockfile", "true")])
    );
}

mod without_file_locks {
    use super::*;
    conformance_suite!(
        stores = true,
        config = || store(
            "file",
            &[("dogpile_lockfile", "false"), ("rw_lockfile", "false")]
        )
    );
}

fn configure(config: RegionConfig) -> Result<CacheRegion, Error> {
    let region = CacheRegion::new();
    region.configure(config)?;
    Ok(region)
}

fn invalid_argument(result: Result<CacheRegion, Error>) -> (String, String) {
    match result {
        Err(Error::InvalidArgument {
            argument, reason, ..
        }) => (argument, reason),
        Err(other) => panic!("expected InvalidArgument, got {other}"),
        Ok(_) => panic!("expected InvalidArgument, the backend was configured"),
    }
}

#[test]
fn bad_arguments_are_clear_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();

    let (argument, reason) = invalid_argument(configure(RegionConfig::new("file")));
    assert_eq!(argument, "filename");
    assert!(reason.contains("required"), "{reason}");

    let (argument, reason) = invalid_argument(configure(
        RegionConfig::new("file")
            .argument("filename", base.join("store").display())
            .argument("lock_factory", "x"),
    ));
    assert_eq!(argument, "lock_factory");
    assert!(
        reason.contains("unknown") && reason.contains("filename"),
        "{reason}"
    );

    let missing = base.join("no/such/dir/store");
    let (argument, reason) = invalid_argument(configure(
        RegionConfig::new("file").argument("filename", missing.display()),
    ));
    assert_eq!(argument, "filename");
    assert!(
        reason.contains(&*missing.display().to_string()) && reason.contains("does not exist"),
        "{reason}"
    );

    let a_file = base.join("plain-file");
    std::fs::write(&a_file, b"x").unwrap();
    let (argument, reason) = invalid_argument(configure(
        RegionConfig::new("file").argument("filename", a_file.display()),
    ));
    assert_eq!(argument, "filename");
    assert!(
        reason.contains("plain-file") && reason.contains("not a directory"),
        "{reason}"
    );

    // Under a file: the parent "directory" is a file.
    let under_file = a_file.join("store");
    let (argument, reason) = invalid_argument(configure(
        RegionConfig::new("file").argument("filename", under_file.display()),
    ));
    assert_eq!(argument, "filename");
    assert!(reason.contains("plain-file"), "{reason}");

    // A directory with other things in it is not taken over.
    let foreign = base.join("home");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"mine").unwrap();
    let (argument, reason) = invalid_argument(configure(
        RegionConfig::new("file").argument("filename", foreign.display()),
    ));
    assert_eq!(argument, "filename");
    assert!(
        reason.contains("not empty") && reason.contains("home"),
        "{reason}"
    );
    assert_eq!(
        std::fs::read_dir(&foreign).unwrap().count(),
        1,
        "nothing was written there"
    );

    let store = base.join("store");
    let (argument, reason) = invalid_argument(configure(
        RegionConfig::new("file")
            .argument("filename", store.display())
            .argument("dogpile_lockfile", base.join("nope/locks").display()),
    ));
    assert_eq!(argument, "dogpile_lockfile");
    assert!(
        reason.contains("nope") && reason.contains("does not exist"),
        "{reason}"
    );

    let (argument, reason) = invalid_argument(configure(
        RegionConfig::new("file")
            .argument("filename", store.display())
            .argument("rw_lockfile", base.join("nope/rw.lock").display()),
    ));
    assert_eq!(argument, "rw_lockfile");
    assert!(reason.contains("nope"), "{reason}");
}

#[cfg(unix)]
#[test]
fn an_unwritable_store_is_a_backend_error_naming_the_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    configure(RegionConfig::new("file").argument("filename", store.display())).unwrap();
    // Make the temporary-file directory unusable in a way that stops root as well: replace
    // it with a plain file.
    std::fs::remove_dir(store.join("tmp")).unwrap();
    std::fs::write(store.join("tmp"), b"").unwrap();
    std::fs::set_permissions(store.join("tmp"), std::fs::Permissions::from_mode(0o444)).unwrap();
    let err =
        configure(RegionConfig::new("file").argument("filename", store.display())).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Backend { .. }), "{message}");
    assert!(message.contains(&*store.display().to_string()), "{message}");
}

#[test]
fn lock_arguments_choose_where_lock_files_go() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let locks = dir.path().join("my-locks");
    let region = configure(
        RegionConfig::new("dogpile.cache.dbm")
            .argument("filename", store.display())
            .argument("dogpile_lockfile", locks.display())
            .argument("rw_lockfile", dir.path().join("my.rw.lock").display()),
    )
    .unwrap();
    assert!(locks.is_dir() && dir.path().join("my.rw.lock").is_file());
    // While a creator runs, its key's lock file exists in the lock directory.
    let seen = region
        .get_or_create("k", || std::fs::read_dir(&locks).unwrap().count())
        .unwrap();
    assert_eq!(seen, 1);
    assert_eq!(
        std::fs::read_dir(&locks).unwrap().count(),
        0,
        "released and removed"
    );
    assert!(
        !store.join("locks").exists(),
        "the default lock directory is not used"
    );
}

#[test]
fn the_store_persists_across_backends() {
    let (config, _dir) = store("file", &[]);
    configure(config.clone())
        .unwrap()
        .set("k", &"kept".to_string())
        .unwrap();
    let reopened = configure(config).unwrap();
    assert_eq!(
        reopened.get::<String>("k").unwrap().as_deref(),
        Some("kept")
    );
}

/// Regions with separate in-process locks on one store stand for separate processes: the
/// file lock alone keeps them from creating twice. (`file_processes.rs` does this with
/// real processes.)
fn race_between_regions(config: &RegionConfig, regions: usize) -> usize {
    let clock = Arc::new(ManualClock::new(1_000_000.0));
    let regions: Vec<CacheRegion> = (0..regions)
        .map(|_| {
            let region = CacheRegion::builder().clock(clock.clone()).build();
            region
                .configure(config.clone().expiration_time(Duration::from_secs(10)))
                .unwrap();
            region
        })
        .collect();
    regions[0].set("k", &0u32).unwrap();
    clock.advance(Duration::from_secs(11));
    let calls = AtomicUsize::new(0);
    let barrier = Barrier::new(regions.len() * 4);
    thread::scope(|s| {
        for region in &regions {
            for _ in 0..4 {
                let (calls, barrier) = (&calls, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let v = region
                        .get_or_create("k", || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            thread::sleep(Duration::from_millis(100));
                            1u32
                        })
                        .unwrap();
                    assert!(v == 0 || v == 1);
                });
            }
        }
    });
    assert_eq!(regions[1].get::<u32>("k").unwrap(), Some(1));
    calls.load(Ordering::SeqCst)
}

#[test]
fn the_dogpile_lock_holds_across_backends_on_one_store() {
    for round in 0..3 {
        let (config, _dir) = store("file", &[]);
        assert_eq!(race_between_regions(&config, 4), 1, "round {round}");
    }
}

#[test]
fn without_file_locks_backends_on_one_store_create_separately() {
    // The control for the test above: it would notice if the file lock did nothing.
    let (config, _dir) = store("file", &[("dogpile_lockfile", "false")]);
    assert!(race_between_regions(&config, 4) > 1);
}

#[test]
fn nothing_is_written_outside_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = RegionConfig::new("file").argument("filename", dir.path().join("store").display());
    let region = configure(config).unwrap();
    let absolute = dir.path().join("escape").display().to_string();
    for key in [
        "../escape",
        "../../escape",
        "../../../escape",
        &absolute,
        "..",
        "a\0b",
    ] {
        region.set(key, &1u8).unwrap();
        region.get_or_create(key, || 2u8).unwrap();
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("store")]);
}

#[test]
fn many_backends_opening_a_new_store_at_once_all_succeed() {
    // As processes starting together do: one creates the directory and marks it as a
    // store while the others look at it.
    for round in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let barrier = Barrier::new(8);
        thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    barrier.wait();
                    if let Err(e) = dogpile::FileBackend::open(&store) {
                        panic!("round {round}: {e}");
                    }
                });
            }
        });
    }
}

/// Makes `key`'s value file in the store at `store` a FIFO with no writer: opening it for
/// reading as a plain file would wait for a writer for ever (a hung disk, in effect).
#[cfg(unix)]
fn fifo_bait(store: &std::path::Path, key: &str) {
    let hash = dogpile::key::sha1_mangle_key(key);
    let dir = store.join("data").join(&hash[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    let path =
        std::ffi::CString::new(dir.join(hash).into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Runs `f` beside, failing if it takes longer than `bound` (a hang).
fn within<T: Send + 'static>(
    bound: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (sender, receiver) = std::sync::mpsc::channel();
    thread::spawn(move || sender.send(f()));
    receiver
        .recv_timeout(bound)
        .unwrap_or_else(|_| panic!("{what}: still blocked after {bound:?}"))
}

#[cfg(unix)]
#[test]
fn a_value_file_that_is_a_fifo_is_a_miss_not_a_hang_and_is_replaced() {
    // The bait is in its own temporary directory (the store's), so that nothing else
    // can open it.
    let (config, dir) = store("file", &[]);
    let region = Arc::new(configure(config).unwrap());
    // The store exists once a value was written.
    region.set("other", &1u32).unwrap();
    fifo_bait(&dir.path().join("store"), "bait");
    let bound = Duration::from_secs(5);
    let r = region.clone();
    assert_eq!(
        within(bound, "get", move || r.get::<u32>("bait").unwrap()),
        None
    );
    let r = region.clone();
    assert_eq!(
        within(bound, "get_or_create", move || r
            .get_or_create("bait", || 7u32)
            .unwrap()),
        7
    );
    assert_eq!(
        region.get::<u32>("bait").unwrap(),
        Some(7),
        "a value file now"
    );
    fifo_bait(&dir.path().join("store"), "bait2");
    let r = region.clone();
    within(bound, "delete", move || r.delete("bait2").unwrap());
}

/// A sync backend whose every call blocks until the gate opens (a hung disk or server),
/// and which says its calls should take at most `call_timeout`.
#[cfg(feature = "tokio")]
struct Stalled {
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    /// Calls running now, and the most at once.
    running: Arc<(AtomicUsize, AtomicUsize)>,
    call_timeout: Duration,
}

#[cfg(feature = "tokio")]
impl Stalled {
    fn wait(&self) {
        let now = self.running.0.fetch_add(1, Ordering::SeqCst) + 1;
        self.running.1.fetch_max(now, Ordering::SeqCst);
        let (open, opened) = &*self.gate;
        let mut open = open.lock().unwrap();
        while !*open {
            open = opened.wait(open).unwrap();
        }
        self.running.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(feature = "tokio")]
impl dogpile::backend::CacheBackend for Stalled {
    fn get(&self, _: &str) -> dogpile::Result<Option<Vec<u8>>> {
        self.wait();
        Ok(None)
    }
    fn set(&self, _: &str, _: Vec<u8>) -> dogpile::Result<()> {
        self.wait();
        Ok(())
    }
    fn delete(&self, _: &str) -> dogpile::Result<()> {
        self.wait();
        Ok(())
    }
    fn capabilities(&self) -> dogpile::backend::Capabilities {
        dogpile::backend::Capabilities::new().call_timeout(Some(self.call_timeout))
    }
}

#[cfg(feature = "tokio")]
#[test]
fn a_stalled_region_on_the_blocking_pool_is_bounded_and_others_stay_fast() {
    const CALL_TIMEOUT: Duration = Duration::from_millis(500);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let running = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let stalled = Arc::new(CacheRegion::new());
    stalled
        .configure(RegionConfig::with_backend(Stalled {
            gate: gate.clone(),
            running: running.clone(),
            call_timeout: CALL_TIMEOUT,
        }))
        .unwrap();
    let (config, _dir) = store("file", &[]);
    let healthy = Arc::new(configure(config).unwrap());
    healthy.set("k", &1u32).unwrap();

    let outcome = runtime.block_on(async {
        // 2000 calls to the stalled region at once.
        let tasks: Vec<_> = (0..2000)
            .map(|i| {
                let stalled = stalled.clone();
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    // (Bounded here too, so that a regression fails rather than hangs.)
                    let outcome = tokio::time::timeout(
                        CALL_TIMEOUT * 4,
                        stalled.get_async::<u32>(&format!("key{i}")),
                    )
                    .await;
                    (i, outcome, started.elapsed())
                })
            })
            .collect();
        // Meanwhile the healthy file region answers its async calls at once.
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let started = std::time::Instant::now();
            let got =
                tokio::time::timeout(Duration::from_secs(5), healthy.get_async::<u32>("k")).await;
            slowest = slowest.max(started.elapsed());
            match got {
                Ok(value) => assert_eq!(value.unwrap(), Some(1)),
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        (slowest, outcomes)
    });
    let at_most_running = running.1.load(Ordering::SeqCst);
    // Let the stalled calls go, so that the runtime can shut down.
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    let (slowest, outcomes) = outcome;
    assert!(
        slowest < Duration::from_millis(100),
        "the healthy region waited {slowest:?}"
    );
    assert!(
        at_most_running <= 8,
        "{at_most_running} stalled calls hold blocking threads"
    );
    for (i, outcome, took) in outcomes {
        let message = match outcome {
            Ok(Err(error @ Error::Backend { .. })) => error.to_string(),
            Ok(other) => panic!("call {i}: expected Error::Backend, got {other:?}"),
            Err(_) => panic!("call {i}: no answer within {:?}", CALL_TIMEOUT * 4),
        };
        assert!(took < CALL_TIMEOUT * 2, "call {i} took {took:?}: {message}");
        assert!(message.contains(&format!("\"key{i}\"")), "{message}");
        assert!(message.contains("blocking pool"), "{message}");
    }
}
