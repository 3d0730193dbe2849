//! Issue 20, item 2: a Python dogpile.cache region with the repository's
//! `SharedInvalidationStrategy` (`python/dogpile_shared_invalidation.py`) and a Rust region
//! with `shared_invalidation` invalidate each other, on a real redis, with the real
//! dogpile.cache package (Debian's `python3-dogpile.cache` and `python3-redis`, which
//! `scripts/test.sh` installs).

#[path = "support/ports.rs"]
mod ports;
#[path = "support/python.rs"]
mod python;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use dogpile::{CacheRegion, RegionConfig};
use redis_server::RedisServer;

/// The Python side: a region named `name` on the test redis with the strategy, then one
/// action: `set KEY VALUE`, `get KEY` (prints the value or NO_VALUE), `invalidate hard` or
/// `invalidate soft`.
const SCRIPT: &str = r#"
import sys
from dogpile.cache import make_region
from dogpile.cache.api import NO_VALUE
from dogpile_shared_invalidation import SharedInvalidationStrategy

port, name, action = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
region = make_region(name=name)
region.configure(
    "dogpile.cache.redis",
    expiration_time=600,
    arguments={"host": "127.0.0.1", "port": port},
    region_invalidator=SharedInvalidationStrategy(region),
)
if action[0] == "set":
    region.set(action[1], action[2])
elif action[0] == "get":
    value = region.get(action[1])
    print("NO_VALUE" if value is NO_VALUE else value)
elif action[0] == "invalidate":
    region.invalidate(hard=action[1] == "hard")
"#;

/// Runs the Python side; its output, trimmed.
fn py(server: &RedisServer, name: &str, action: &[&str]) -> String {
    let port = server.port().to_string();
    let mut args = vec![port.as_str(), name];
    args.extend_from_slice(action);
    python::run(SCRIPT, &args)
}

fn rust_region(server: &RedisServer, name: &str) -> CacheRegion {
    let region = CacheRegion::named(name);
    region
        .configure(
            RegionConfig::new("redis")
                .argument("url", server.url())
                .expiration_time(Duration::from_secs(600))
                .shared_invalidation(true)
                .invalidation_poll(Duration::from_secs(60)),
        )
        .unwrap();
    region
}

fn until(seen: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !seen() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never seen within 5 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    started.elapsed()
}

#[test]
fn python_invalidates_rust_hard_and_soft() {
    let server = RedisServer::shared();
    for (name, how) in [("py-to-rust-hard", "hard"), ("py-to-rust-soft", "soft")] {
        let region = rust_region(server, name);
        region.set("k", &1u32).unwrap();
        py(server, name, &["invalidate", how]);
        // Pushed (the Rust region polls once a minute).
        let took = until(|| region.get::<u32>("k").unwrap().is_none());
        assert!(
            took < Duration::from_millis(100),
            "{how}: seen after {took:?}"
        );
        assert_eq!(region.get_or_create("k", || 2u32).unwrap(), 2, "{how}");
    }
}

#[test]
fn rust_invalidates_python() {
    let server = RedisServer::shared();
    let name = "rust-to-py";
    let region = rust_region(server, name);
    py(server, name, &["set", "pk", "before"]);
    assert_eq!(py(server, name, &["get", "pk"]), "before");
    region.invalidate(true).unwrap();
    assert_eq!(py(server, name, &["get", "pk"]), "NO_VALUE");
    // A value Python stores after the invalidation is fresh.
    py(server, name, &["set", "pk", "after"]);
    assert_eq!(py(server, name, &["get", "pk"]), "after");
    // Soft: `get` treats older values as absent too.
    py(server, name, &["set", "pk", "soft"]);
    std::thread::sleep(Duration::from_millis(10));
    region.invalidate(false).unwrap();
    assert_eq!(py(server, name, &["get", "pk"]), "NO_VALUE");
}
