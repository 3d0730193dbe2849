//! The `redis_sentinel` backend against a real master, replica and Sentinel on loopback,
//! and over TLS against a TLS master and Sentinel.

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
use redis_server::{RedisSentinel, TlsSentinel};

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

/// A region on the shared TLS Sentinel that trusts the test CA.
fn tls_sentinel() -> RegionConfig {
    let setup = TlsSentinel::shared();
    RegionConfig::new("redis_sentinel")
        .argument("sentinels", setup.sentinel_url())
        .argument("ssl_ca_certs", setup.master.tls_file("ca.crt"))
}

mod conformance_redis_sentinel_tls {
    use super::*;
    conformance_suite!(
        stores = true,
        shared_lock = true,
        config = || tls_sentinel().argument("lock_sleep", 0.01)
    );
}

#[test]
fn sentinel_over_tls_checks_the_certificates_of_sentinel_and_master() {
    let setup = TlsSentinel::shared();
    let region = make_region();
    region.configure(tls_sentinel()).unwrap();
    region.set("tls", &7u32).unwrap();
    assert_eq!(region.get::<u32>("tls").unwrap(), Some(7));

    // Another CA: the Sentinel's certificate is refused, and the error names it.
    let refused = make_region();
    refused
        .configure(
            RegionConfig::new("redis_sentinel")
                .argument("sentinels", setup.sentinel_url())
                .argument("ssl_ca_certs", setup.master.tls_file("other-ca.crt"))
                .argument("socket_timeout", "0.5"),
        )
        .unwrap();
    match refused.get::<u32>("tls") {
        Err(Error::Backend { backend, source }) => {
            let text = format!("{backend}: {source}");
            assert!(text.contains(&setup.sentinel.addr()), "{text}");
            assert!(text.contains("UnknownIssuer"), "{text}");
        }
        other => panic!("expected Error::Backend, got {other:?}"),
    }

    // Not checked (`ssl_cert_reqs = none`): encrypted all the same, and it works.
    let unchecked = make_region();
    unchecked
        .configure(
            RegionConfig::new("redis_sentinel")
                .argument("sentinels", setup.sentinel_url())
                .argument("ssl_cert_reqs", "none"),
        )
        .unwrap();
    assert_eq!(unchecked.get::<u32>("tls").unwrap(), Some(7));

    // `ssl_*` arguments need TLS Sentinels; TLS and plain ones do not mix.
    for pairs in [
        vec![
            ("sentinels", "127.0.0.1:26390".to_owned()),
            ("ssl_cert_reqs", "none".to_owned()),
        ],
        vec![(
            "sentinels",
            "rediss://127.0.0.1:26390, redis://127.0.0.1:26391".to_owned(),
        )],
    ] {
        let outcome =
            RedisBackend::sentinel_from_arguments(&Arguments::new("redis_sentinel", pairs.clone()));
        assert!(
            matches!(outcome, Err(Error::InvalidArgument { .. })),
            "{pairs:?}: {outcome:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_async_calls_are_native_and_reach_the_master() {
    let setup = RedisSentinel::shared();
    let backend = RedisBackend::sentinel_from_arguments(&Arguments::new(
        "redis_sentinel",
        [("sentinels", setup.sentinel_addr())],
    ))
    .unwrap();
    let twin = backend
        .async_backend()
        .expect("redis_sentinel has a native async twin");
    twin.set("async-sentinel", b"v".to_vec()).await.unwrap();
    assert_eq!(
        twin.get("async-sentinel").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    let on_master: Option<Vec<u8>> = redis::cmd("GET")
        .arg("async-sentinel")
        .query(&mut setup.master.client())
        .unwrap();
    assert_eq!(
        on_master.as_deref(),
        Some(&b"v"[..]),
        "written to the master"
    );
    // The lock is the distributed one, taken with async calls.
    let lock = twin.get_mutex("async-sentinel").expect("distributed lock");
    assert!(lock.try_acquire().await.unwrap());
    lock.release().await.unwrap();

    // Through a region's async methods over TLS.
    let region = make_region();
    region.configure(tls_sentinel()).unwrap();
    region.set_async("async-tls", &3u32).await.unwrap();
    assert_eq!(region.get_async::<u32>("async-tls").await.unwrap(), Some(3));
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
