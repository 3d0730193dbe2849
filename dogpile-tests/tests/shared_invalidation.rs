//! Issue 20, item 1: `shared_invalidation`. Two regions of one name on one real backend
//! stand for two processes: an invalidation by one reaches the other (redis: pushed, within
//! 100 ms; memcached and file: polled, within 2.5 s with the default 1 s poll), soft and
//! hard keep their meaning, a region of another name keeps its values, and a region
//! configured later honours the record. A region without a name refuses the option.

#[path = "support/memcached_server.rs"]
mod memcached_server;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use dogpile::{CacheRegion, Error, RegionConfig};
use memcached_server::MemcachedServer;
use redis_server::{RedisCluster, RedisServer};

/// A region named `name`, sharing its invalidation, on `backend` at `url`.
fn region(name: &str, config: impl Fn() -> RegionConfig) -> CacheRegion {
    let region = CacheRegion::named(name);
    region
        .configure(
            config()
                .expiration_time(Duration::from_secs(600))
                .shared_invalidation(true),
        )
        .unwrap();
    region
}

/// Redis regions poll only once a minute: what reaches them within the test's bound is
/// pushed.
fn redis(url: String) -> impl Fn() -> RegionConfig {
    move || {
        RegionConfig::new("redis")
            .argument("url", url.clone())
            .invalidation_poll(Duration::from_secs(60))
    }
}

/// How long until `seen` is true, polling every millisecond; panics after 5 s.
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

/// One region invalidates (hard or soft); the other, of the same name, sees it within
/// `bound`; a region of another name keeps its value.
fn one_invalidates_the_other(
    name: &str,
    config: impl Fn() -> RegionConfig,
    hard: bool,
    bound: Duration,
) {
    let (a, b) = (region(name, &config), region(name, &config));
    let other = region(&format!("{name}-other"), &config);
    // Keys are not prefixed by region name (as in dogpile.cache): the other region has its
    // own key on the same backend.
    for (region, key) in [(&a, "k"), (&b, "k"), (&other, "k-other")] {
        region.delete(key).unwrap();
        assert_eq!(region.get_or_create(key, || 1u32).unwrap(), 1);
    }
    a.invalidate(hard).unwrap();
    assert_eq!(a.get::<u32>("k").unwrap(), None, "invalidated here at once");
    let took = until(|| b.get::<u32>("k").unwrap().is_none());
    assert!(took < bound, "{name}: seen after {took:?}, over {bound:?}");
    if hard {
        // Absent: the caller creates it.
        assert_eq!(b.get_or_create("k", || 2u32).unwrap(), 2);
    } else {
        // Expired but present: dogpile's soft meaning (the winner regenerates; a value
        // that was not invalidated would have been a hit).
        assert_eq!(b.get_or_create("k", || 2u32).unwrap(), 2);
        assert_eq!(b.get_with::<u32>("k", None, true).unwrap(), Some(2));
    }
    assert_eq!(
        other.get::<u32>("k-other").unwrap(),
        Some(1),
        "another name is untouched"
    );
    // A process that starts later honours the record.
    let later = region(name, &config);
    assert_eq!(
        later.get::<u32>("k").unwrap(),
        Some(2),
        "the new value is fresh"
    );
    later.set("old", &5u32).unwrap();
    assert_eq!(later.get::<u32>("old").unwrap(), Some(5));
    eprintln!("{name}: seen after {took:?}");
}

#[test]
fn redis_pushes_a_hard_invalidation_within_100_ms() {
    let url = RedisServer::shared().url();
    one_invalidates_the_other(
        "inv-redis-hard",
        redis(url),
        true,
        Duration::from_millis(100),
    );
}

#[test]
fn redis_pushes_a_soft_invalidation_within_100_ms() {
    let url = RedisServer::shared().url();
    one_invalidates_the_other(
        "inv-redis-soft",
        redis(url),
        false,
        Duration::from_millis(100),
    );
}

#[test]
fn memcached_polls_an_invalidation_within_2_5_s() {
    let server = MemcachedServer::start();
    let url = server.addr();
    let memcached = move || RegionConfig::new("memcached").argument("url", url.clone());
    one_invalidates_the_other("inv-mc-hard", &memcached, true, Duration::from_millis(2500));
    one_invalidates_the_other(
        "inv-mc-soft",
        &memcached,
        false,
        Duration::from_millis(2500),
    );
}

#[test]
fn a_redis_cluster_polls_an_invalidation_within_2_5_s() {
    let url = RedisCluster::shared().url();
    let cluster = move || RegionConfig::new("redis_cluster").argument("url", url.clone());
    one_invalidates_the_other("inv-cluster", &cluster, true, Duration::from_millis(2500));
}

#[test]
fn the_file_backend_polls_an_invalidation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let file = move || RegionConfig::new("file").argument("filename", path.clone());
    one_invalidates_the_other("inv-file", &file, true, Duration::from_millis(2500));
}

#[test]
fn a_record_written_while_a_process_was_away_is_honoured_when_it_configures() {
    let url = RedisServer::shared().url();
    let config = redis(url);
    let early = region("inv-away", &config);
    early.set("k", &1u32).unwrap();
    early.invalidate(true).unwrap();
    // A region configured after the invalidation: its value, written before, is absent.
    let late = region("inv-away", &config);
    assert_eq!(late.get::<u32>("k").unwrap(), None);
}

#[test]
fn a_lost_subscription_is_taken_again() {
    let server = RedisServer::start();
    let config = redis(server.url());
    let (a, b) = (region("inv-killed", &config), region("inv-killed", &config));
    b.set("k", &1u32).unwrap();
    // Give both regions' threads their subscriptions, then cut them.
    until(|| pubsub_clients(&server) == 2);
    let mut admin = server.client();
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query(&mut admin)
        .unwrap();
    assert_eq!(killed, 2);
    until(|| pubsub_clients(&server) == 2);
    a.invalidate(true).unwrap();
    let took = until(|| b.get::<u32>("k").unwrap().is_none());
    assert!(took < Duration::from_millis(100), "seen after {took:?}");
}

/// How many connections to `server` are subscribed.
fn pubsub_clients(server: &RedisServer) -> usize {
    let mut admin = server.client();
    let clients: String = redis::cmd("CLIENT")
        .arg(&["LIST", "TYPE", "pubsub"])
        .query(&mut admin)
        .unwrap();
    clients.lines().count()
}

#[test]
fn an_unnamed_region_refuses_shared_invalidation() {
    let region = CacheRegion::new();
    let refused = region
        .configure(RegionConfig::new("memory").shared_invalidation(true))
        .unwrap_err();
    assert!(
        matches!(refused, Error::InvalidRegionOption { .. }),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("no name"), "{refused}");
}

#[test]
fn shared_invalidation_is_read_from_config_files() {
    let config: RegionConfig = toml::from_str(
        r#"
        backend = "memory"
        shared_invalidation = true
        invalidation_poll = "250ms"
        "#,
    )
    .unwrap();
    let shown = format!("{config:?}");
    assert!(shown.contains("shared_invalidation: true"), "{shown}");
    assert!(shown.contains("250ms"), "{shown}");
    let flat = RegionConfig::from_config(
        [("c.backend", "memory"), ("c.shared_invalidation", "yes")],
        "c.",
    )
    .unwrap();
    assert!(format!("{flat:?}").contains("shared_invalidation: true"));
    let bad = RegionConfig::from_config(
        [("c.backend", "memory"), ("c.shared_invalidation", "maybe")],
        "c.",
    )
    .unwrap_err();
    assert!(bad.to_string().contains("c.shared_invalidation"), "{bad}");
}
