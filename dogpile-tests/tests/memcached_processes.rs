//! The memcached backend across OS processes (a `harness = false` test).
//!
//! Run without arguments, `main` runs the scenarios below, each spawning this same
//! executable as child processes; a child knows its role from `DOGPILE_MEMCACHED_CHILD`.
//! It prints one line per scenario and exits non-zero when any failed.

#[path = "support/memcached_server.rs"]
mod memcached_server;
#[path = "support/ports.rs"]
mod ports;

use std::env;
use std::panic;
use std::process::{Child, Command, ExitCode};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dogpile::clock::ManualClock;
use dogpile::{CacheRegion, RegionConfig};
use memcached_server::MemcachedServer;

const ROLE: &str = "DOGPILE_MEMCACHED_CHILD";
const PROCESSES: usize = 4;
const THREADS: usize = 2;
const ROUNDS: usize = 6;

fn main() -> ExitCode {
    if let Ok(role) = env::var(ROLE) {
        return match panic::catch_unwind(|| child(&role)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let scenarios: [(&str, fn()); 3] = [
        (
            "with distributed_lock, one creator in total across processes",
            race_with_distributed_lock,
        ),
        (
            "without distributed_lock, only the per-process lock applies",
            race_without_distributed_lock,
        ),
        (
            "a lock holder killed with SIGKILL blocks nobody past lock_timeout",
            killed_lock_holder,
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in scenarios {
        match panic::catch_unwind(scenario) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED (see the panic above)");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// ----- scenarios (parent) ------------------------------------------------------------

fn race_with_distributed_lock() {
    let calls = race(true);
    assert!(
        calls.iter().all(|&c| c == 1),
        "the creator must run once per round in total, ran {calls:?}"
    );
}

fn race_without_distributed_lock() {
    let calls = race(false);
    println!("  creator calls per round without the distributed lock: {calls:?}");
    assert!(
        calls.iter().all(|&c| (1..=PROCESSES as u64).contains(&c)),
        "each process has its own lock, so at most one creator per process: {calls:?}"
    );
}

/// `PROCESSES` processes of `THREADS` threads each race on one key per round, released
/// together by a barrier; even rounds on a stale value, odd rounds on a missing one.
/// Returns the creator calls of each round, counted on the server.
fn race(distributed_lock: bool) -> Vec<u64> {
    let server = MemcachedServer::start();
    // Values written now are stale to the children, whose clock is an hour ahead (and the
    // same in every child, so a value one child makes is fresh to the others).
    let setup = region(&server, distributed_lock, None);
    for round in (0..ROUNDS).step_by(2) {
        setup.set(&race_key(round), &(1000 + round)).unwrap();
    }
    let children_now = unix_now() + 3600.0;
    let mut children = Children::default();
    for _ in 0..PROCESSES {
        children.spawn(
            "race",
            &server,
            &[
                ("LOCK", distributed_lock.to_string()),
                ("NOW", children_now.to_string()),
            ],
        );
    }
    for round in 0..ROUNDS {
        let ready = format!("ready:{round}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.counter(&ready) < (PROCESSES * THREADS) as u64 {
            children.check_running();
            assert!(Instant::now() < deadline, "children never got ready");
            thread::sleep(Duration::from_millis(2));
        }
        server.raw_set(&format!("go:{round}"), b"1");
    }
    children.wait_all();
    (0..ROUNDS)
        .map(|round| server.counter(&format!("calls:{round}")))
        .collect()
}

fn killed_lock_holder() {
    let server = MemcachedServer::start();
    let mut children = Children::default();
    children.spawn("hold", &server, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.raw_get("holding").is_none() {
        children.check_running();
        assert!(Instant::now() < deadline, "the holder never took the lock");
        thread::sleep(Duration::from_millis(5));
    }
    // The holder has the lock (its TTL, lock_timeout, is 3 s), and dies holding it.
    assert!(server.raw_get("_lockdead").is_some(), "the lock is held");
    children.kill_all();

    let region = region(&server, true, None);
    let started = Instant::now();
    let mut calls = 0;
    let value = region
        .get_or_create("dead", || {
            calls += 1;
            42u32
        })
        .unwrap();
    let waited = started.elapsed();
    println!("  waited {waited:?} for the dead holder's lock to expire");
    assert_eq!((value, calls), (42, 1));
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    assert_eq!(server.raw_get("_lockdead"), None, "released after creating");
}

// ----- children ----------------------------------------------------------------------

fn child(role: &str) {
    let port: u16 = env::var("PORT").unwrap().parse().unwrap();
    let server = MemcachedServer::attach(port);
    match role {
        "race" => {
            let lock = env::var("LOCK").unwrap() == "true";
            let now: f64 = env::var("NOW").unwrap().parse().unwrap();
            let region = Arc::new(region(&server, lock, Some(now)));
            let server = Arc::new(server);
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (region, server) = (region.clone(), server.clone());
                    thread::spawn(move || race_rounds(&region, &server))
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
        }
        "hold" => {
            region(&server, true, None)
                .get_or_create("dead", || {
                    server.raw_set("holding", b"1");
                    thread::sleep(Duration::from_secs(60));
                    0u32
                })
                .unwrap();
        }
        other => panic!("unknown child role {other}"),
    }
}

fn race_rounds(region: &CacheRegion, server: &MemcachedServer) {
    for round in 0..ROUNDS {
        server.incr(&format!("ready:{round}"), 1);
        let go = format!("go:{round}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.raw_get(&go).is_none() {
            assert!(Instant::now() < deadline, "no go for round {round}");
            thread::sleep(Duration::from_millis(1));
        }
        let value = region
            .get_or_create(&race_key(round), || {
                server.incr(&format!("calls:{round}"), 1);
                thread::sleep(Duration::from_millis(100));
                round
            })
            .unwrap();
        // The fresh value, or (stale rounds) the stale one while another regenerates.
        assert!(
            value == round || (round % 2 == 0 && value == 1000 + round),
            "round {round}: got {value}"
        );
    }
}

// ----- helpers -----------------------------------------------------------------------

fn race_key(round: usize) -> String {
    format!("race:{round}")
}

fn region(server: &MemcachedServer, distributed_lock: bool, now: Option<f64>) -> CacheRegion {
    let mut builder = CacheRegion::builder();
    if let Some(now) = now {
        builder = builder.clock(Arc::new(ManualClock::new(now)));
    }
    let region = builder.build();
    region
        .configure(
            RegionConfig::new("memcached")
                .expiration_time(Duration::from_secs(60))
                .argument("url", server.addr())
                .argument("distributed_lock", distributed_lock)
                .argument("lock_timeout", 3)
                .argument("lock_sleep", 0.02),
        )
        .unwrap();
    region
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Child processes, killed when dropped (so a failing scenario leaves none behind).
#[derive(Default)]
struct Children(Vec<Child>);

impl Children {
    fn spawn(&mut self, role: &str, server: &MemcachedServer, vars: &[(&str, String)]) {
        let mut command = Command::new(env::current_exe().unwrap());
        command
            .env(ROLE, role)
            .env("PORT", server.port().to_string());
        for (name, value) in vars {
            command.env(name, value);
        }
        self.0.push(command.spawn().expect("spawn a child process"));
    }

    fn check_running(&mut self) {
        for child in &mut self.0 {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(status.success(), "a child process failed early: {status}");
            }
        }
    }

    fn wait_all(&mut self) {
        for mut child in self.0.drain(..) {
            let status = child.wait().unwrap();
            assert!(status.success(), "a child process failed: {status}");
        }
    }

    /// SIGKILL, on Unix.
    fn kill_all(&mut self) {
        for mut child in self.0.drain(..) {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
