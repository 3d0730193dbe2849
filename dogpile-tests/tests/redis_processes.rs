//! The redis distributed lock across real OS processes (`harness = false`).
//!
//! `main` is the parent unless `DOGPILE_REDIS_CHILD` names a child role; the parent starts
//! its own redis-server, spawns this same executable as children, and exits non-zero if any
//! scenario fails.

#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Child, Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dogpile::backend::{Arguments, CacheBackend};
use dogpile::backends::RedisBackend;
use dogpile::clock::ManualClock;
use dogpile::{make_region, CacheRegion, RegionConfig};
use redis_server::RedisServer;

const CHILD: &str = "DOGPILE_REDIS_CHILD";
const ROUNDS: usize = 6;
const PROCESSES: usize = 2;
const THREADS: usize = 4;

type Outcome = Result<(), String>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Scenario = (&'static str, fn() -> Outcome);

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(CHILD) {
        let outcome = catch_unwind(|| match role.as_str() {
            "race" => child_race(),
            "hold" => child_hold(),
            other => Err(format!("unknown child role {other}")),
        });
        return match outcome {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(message)) => {
                eprintln!("child {role} failed: {message}");
                ExitCode::from(2)
            }
            Err(_) => ExitCode::from(3),
        };
    }

    let scenarios: [Scenario; 3] = [
        (
            "distributed lock: one creator across processes",
            race_with_distributed_lock,
        ),
        (
            "per-process lock only: at most one creator per process",
            race_without_distributed_lock,
        ),
        (
            "a killed lock holder blocks nobody past lock_timeout",
            killed_holder_lock_expires,
        ),
    ];
    let mut failed = 0;
    for (name, scenario) in scenarios {
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(scenario)) {
            Ok(Ok(())) => println!("test {name} ... ok ({:?})", started.elapsed()),
            Ok(Err(message)) => {
                failed += 1;
                println!("test {name} ... FAILED: {message}");
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED (panicked)");
            }
        }
    }
    println!(
        "\nredis_processes: {} passed, {failed} failed",
        scenarios.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

fn bare(url: &str) -> Result<redis::Connection, String> {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .map_err(|e| format!("bare connection to {url}: {e}"))
}

fn region(url: &str, distributed: bool, extra: &[(&str, &str)]) -> Result<CacheRegion, String> {
    let region = make_region();
    let mut config = RegionConfig::new("redis")
        .expiration_time(Duration::from_secs(60))
        .argument("url", url)
        .argument("distributed_lock", distributed)
        .argument("lock_sleep", "0.01");
    for (name, value) in extra {
        config = config.argument(*name, *value);
    }
    region.configure(config).map_err(|e| e.to_string())?;
    Ok(region)
}

/// Polls `check` every millisecond until it is true, for at most `limit`.
fn wait_until(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<bool, String>,
) -> Outcome {
    let started = Instant::now();
    while !check()? {
        if started.elapsed() > limit {
            return Err(format!("timed out waiting for {what}"));
        }
        thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn query<T: redis::FromRedisValue>(
    conn: &mut redis::Connection,
    cmd: &redis::Cmd,
) -> Result<T, String> {
    cmd.query(conn).map_err(|e| format!("{cmd:?}: {e}"))
}

/// Child: for each round, signal readiness, wait for the parent's start flag, then race
/// `THREADS` threads on the round's key. The creator counts its calls in redis.
fn child_race() -> Outcome {
    let url = env("REDIS_URL")?;
    let distributed = env("DISTRIBUTED")? == "true";
    let id = env("CHILD_ID")?;
    let region = Arc::new(region(&url, distributed, &[])?);
    let mut conn = bare(&url)?;
    for round in 0..ROUNDS {
        let key = format!("race:{round}");
        query::<()>(&mut conn, redis::cmd("INCR").arg(format!("ready:{round}")))?;
        wait_until("the start flag", Duration::from_secs(20), || {
            query(&mut conn, redis::cmd("EXISTS").arg(format!("go:{round}")))
        })?;
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (region, barrier, key, url, id) = (
                    region.clone(),
                    barrier.clone(),
                    key.clone(),
                    url.clone(),
                    id.clone(),
                );
                thread::spawn(move || -> Result<String, String> {
                    barrier.wait();
                    region
                        .try_get_or_create(&key, || {
                            let mut conn = bare(&url)?;
                            query::<()>(
                                &mut conn,
                                redis::cmd("INCR").arg(format!("created:{round}")),
                            )?;
                            // Widen the window in which the others race.
                            thread::sleep(Duration::from_millis(50));
                            Ok::<_, BoxError>(format!("round {round} by child {id}"))
                        })
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        for thread in threads {
            let value = thread
                .join()
                .map_err(|_| "a racing thread panicked".to_string())??;
            if !value.starts_with(&format!("round {round}")) {
                return Err(format!("round {round}: got {value:?}"));
            }
        }
    }
    Ok(())
}

/// Child: takes the lock through get_or_create, raises a flag and never finishes.
fn child_hold() -> Outcome {
    let url = env("REDIS_URL")?;
    let key = env("KEY")?;
    let region = region(&url, true, &[("lock_timeout", "1")])?;
    region
        .try_get_or_create(&key, || -> Result<String, BoxError> {
            let mut conn = bare(&url)?;
            query::<()>(
                &mut conn,
                redis::cmd("SET").arg(format!("holding:{key}")).arg(1),
            )?;
            loop {
                thread::sleep(Duration::from_secs(1));
            }
        })
        .map(drop)
        .map_err(|e| e.to_string())
}

fn spawn_child(role: &str, vars: &[(&str, String)]) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = Command::new(exe);
    command.env(CHILD, role);
    for (name, value) in vars {
        command.env(name, value);
    }
    command
        .spawn()
        .map_err(|e| format!("spawn a {role} child: {e}"))
}

fn wait_child(mut child: Child, limit: Duration) -> Outcome {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("a child failed: {status}"))
            };
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("a child did not finish within {limit:?}"));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `ROUNDS` rounds of `PROCESSES` children racing on one key each; returns the
/// number of creator calls per round. Odd rounds race on an expired value, even rounds on
/// a missing one.
fn race(distributed: bool) -> Result<Vec<u64>, String> {
    let server = RedisServer::start();
    let url = server.url();
    // Values an hour old: expired for the children's regions (60 s).
    let an_hour_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs_f64()
        - 3600.0;
    let old = CacheRegion::builder()
        .clock(Arc::new(ManualClock::new(an_hour_ago)))
        .build();
    old.configure(RegionConfig::new("redis").argument("url", &url))
        .map_err(|e| e.to_string())?;
    for round in (1..ROUNDS).step_by(2) {
        old.set(&format!("race:{round}"), &format!("round {round} stale"))
            .map_err(|e| e.to_string())?;
    }

    let children = (0..PROCESSES)
        .map(|id| {
            spawn_child(
                "race",
                &[
                    ("REDIS_URL", url.clone()),
                    ("DISTRIBUTED", distributed.to_string()),
                    ("CHILD_ID", id.to_string()),
                ],
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut conn = bare(&url)?;
    let mut outcome = Ok(());
    for round in 0..ROUNDS {
        // The start barrier: every child is configured and waiting.
        outcome = wait_until("every child to be ready", Duration::from_secs(30), || {
            let ready: Option<usize> =
                query(&mut conn, redis::cmd("GET").arg(format!("ready:{round}")))?;
            Ok(ready == Some(PROCESSES))
        })
        .and_then(|()| {
            query(
                &mut conn,
                redis::cmd("SET").arg(format!("go:{round}")).arg(1),
            )
        });
        if outcome.is_err() {
            break;
        }
    }
    for child in children {
        let waited = wait_child(child, Duration::from_secs(60));
        outcome = outcome.and(waited);
    }
    outcome?;
    (0..ROUNDS)
        .map(|round| {
            let created: Option<u64> =
                query(&mut conn, redis::cmd("GET").arg(format!("created:{round}")))?;
            Ok(created.unwrap_or(0))
        })
        .collect()
}

fn race_with_distributed_lock() -> Outcome {
    let created = race(true)?;
    println!("    creator calls per round, distributed lock: {created:?}");
    if created.iter().all(|&n| n == 1) {
        Ok(())
    } else {
        Err(format!(
            "with the distributed lock each round must create exactly once: {created:?}"
        ))
    }
}

fn race_without_distributed_lock() -> Outcome {
    // Each process has its own per-key lock, so each may create once: the bound is the
    // number of processes. Whether a race happened depends on scheduling, so it is shown,
    // not asserted.
    let created = race(false)?;
    println!("    creator calls per round, per-process lock only: {created:?}");
    if created.iter().all(|&n| (1..=PROCESSES as u64).contains(&n)) {
        Ok(())
    } else {
        Err(format!(
            "without the distributed lock each round creates 1..={PROCESSES} times: {created:?}"
        ))
    }
}

fn killed_holder_lock_expires() -> Outcome {
    let server = RedisServer::start();
    let url = server.url();
    let key = "held-by-the-dead";
    let mut child = spawn_child(
        "hold",
        &[("REDIS_URL", url.clone()), ("KEY", key.to_string())],
    )?;
    let mut conn = bare(&url)?;
    let held = wait_until(
        "the child to hold the lock",
        Duration::from_secs(20),
        || {
            query(
                &mut conn,
                redis::cmd("EXISTS").arg(format!("holding:{key}")),
            )
        },
    );
    if let Err(e) = held {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    // The lock is really held in redis: nobody else can take it now.
    let other = RedisBackend::from_arguments(&Arguments::new(
        "redis",
        [("url", url.as_str()), ("distributed_lock", "true")],
    ))
    .map_err(|e| e.to_string())?;
    let probe = other.get_mutex(key).ok_or("no mutex")?;
    let taken = probe.try_acquire().map_err(|e| e.to_string())?;
    let lock_exists: bool = query(&mut conn, redis::cmd("EXISTS").arg(format!("_lock{key}")))?;

    child.kill().map_err(|e| e.to_string())?; // SIGKILL: no release, no unwinding
    child.wait().map_err(|e| e.to_string())?;
    if taken || !lock_exists {
        return Err(format!(
            "the child should hold `_lock{key}` (exists: {lock_exists}, taken by another: {taken})"
        ));
    }

    let survivor = region(&url, true, &[("lock_timeout", "1")])?;
    let calls = AtomicUsize::new(0);
    let started = Instant::now();
    let value = survivor
        .get_or_create(key, || {
            calls.fetch_add(1, Ordering::SeqCst);
            "made by the survivor".to_string()
        })
        .map_err(|e| format!("the survivor failed: {e}"))?;
    let waited = started.elapsed();
    println!("    the survivor got the lock after {waited:?} (lock_timeout 1 s)");
    if value != "made by the survivor" || calls.load(Ordering::SeqCst) != 1 {
        return Err(format!("unexpected value {value:?}"));
    }
    if waited > Duration::from_secs(10) {
        return Err(format!(
            "the survivor waited {waited:?}, far past lock_timeout"
        ));
    }
    Ok(())
}
