//! The `redis_sentinel` backend against a real master, replica and Sentinel on loopback.

#[macro_use]
mod conformance;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::thread;
use std::time::{Duration, Instant};

use dogpile::backend::{Arguments, CacheBackend};
use dogpile::backends::RedisBackend;
use dogpile::{make_region, Error, RegionConfig};
use redis_server::RedisSentinel;

mod conformance_redis_sentinel {
    use super::*;
    // Sentinel setups default to the distributed lock.
    conformance_suite!(
        stores = true,
        shared_lock = true,
        config = || RegionConfig::new("redis_sentinel")
            .argument("sentinels", RedisSentinel::shared().sentinel_addr())
            .argument("lock_sleep", 0.01)
    );
}

#[test]
fn sentinel_finds_the_master_and_follows_a_failover() {
    let setup = RedisSentinel::start();
    let region = make_region();
    region
        .configure(
            RegionConfig::new("dogpile.cache.redis_sentinel")
                .argument("sentinels", setup.sentinel_addr())
                .argument("service_name", "mymaster")
                .argument("socket_timeout", "1"),
        )
        .unwrap();
    region.set("before", &1u32).unwrap();
    let on_master: Option<Vec<u8>> = redis::cmd("GET")
        .arg("before")
        .query(&mut setup.master.client())
        .unwrap();
    assert!(on_master.is_some(), "writes go to the master");
    assert_eq!(region.get::<u32>("before").unwrap(), Some(1));
    // Replication is asynchronous: let the replica receive it before it is promoted.
    let mut replica = setup.replica.client();
    let started = Instant::now();
    while !redis::cmd("EXISTS")
        .arg("before")
        .query::<bool>(&mut replica)
        .unwrap()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never replicated"
        );
        thread::sleep(Duration::from_millis(5));
    }

    // Promote the replica.
    let mut sentinel = setup.sentinel.client();
    let started = Instant::now();
    loop {
        let asked: redis::RedisResult<()> = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg("mymaster")
            .query(&mut sentinel);
        if asked.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "SENTINEL FAILOVER kept failing: {asked:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    while setup.master_port() != Some(setup.replica.port()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the failover did not happen"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Wait until the promoted replica accepts writes.
    let mut promoted = setup.replica.client();
    while redis::cmd("SET")
        .arg("probe")
        .arg(1)
        .exec(&mut promoted)
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no writable master"
        );
        thread::sleep(Duration::from_millis(20));
    }

    // Demote the old master now, as Sentinel does in its next round (until then the old
    // master still takes writes, which its resync then drops: replication is asynchronous).
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(setup.replica.port())
        .exec(&mut setup.master.client())
        .unwrap();
    // The same region, with its connections to the old master (now read-only), writes to
    // the new one at once: the read-only connection is dropped and the write retried on a
    // connection to the master that Sentinel now names.
    region.set("after", &2u32).unwrap();
    let on_new_master: Option<Vec<u8>> =
        redis::cmd("GET").arg("after").query(&mut promoted).unwrap();
    assert!(
        on_new_master.is_some(),
        "the write went to the promoted replica"
    );
    assert_eq!(region.get::<u32>("after").unwrap(), Some(2));
    assert_eq!(
        region.get::<u32>("before").unwrap(),
        Some(1),
        "replicated before the failover"
    );
}

#[test]
fn sentinel_defaults_to_the_distributed_lock_and_checks_arguments() {
    let backend = RedisBackend::sentinel_from_arguments(&Arguments::new(
        "redis_sentinel",
        [("sentinels", "127.0.0.1:26390")],
    ))
    .unwrap();
    assert!(
        backend.get_mutex("k").is_some(),
        "distributed_lock defaults to true"
    );
    let off = RedisBackend::sentinel_from_arguments(&Arguments::new(
        "redis_sentinel",
        [
            ("sentinels", "127.0.0.1:26390"),
            ("distributed_lock", "false"),
        ],
    ))
    .unwrap();
    assert!(off.get_mutex("k").is_none());

    for (pairs, argument) in [
        (vec![], "sentinels"),
        (vec![("sentinels", " , ")], "sentinels"),
        (vec![("sentinels", "127.0.0.1:x")], "sentinels"),
        (
            vec![("sentinels", "127.0.0.1:26390"), ("url", "redis://x")],
            "url",
        ),
    ] {
        match RedisBackend::sentinel_from_arguments(&Arguments::new(
            "redis_sentinel",
            pairs.clone(),
        )) {
            Err(Error::InvalidArgument {
                argument: named, ..
            }) => {
                assert_eq!(named, argument, "{pairs:?}")
            }
            other => panic!("{pairs:?}: expected InvalidArgument for {argument}, got {other:?}"),
        }
    }
}

#[test]
fn sentinel_down_errors_in_time_naming_the_sentinels() {
    let port = ports::free_port();
    let region = make_region();
    region
        .configure(
            RegionConfig::new("redis_sentinel")
                .argument("sentinels", format!("127.0.0.1:{port}"))
                .argument("socket_timeout", "0.3"),
        )
        .unwrap();
    let started = Instant::now();
    match region.get::<u8>("k") {
        Err(Error::Backend { backend, .. }) => {
            assert!(backend.contains(&format!("127.0.0.1:{port}")), "{backend}")
        }
        other => panic!("expected Error::Backend, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}
