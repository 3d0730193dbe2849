//! No key can be another key's distributed lock (issue "Network backends, second round"):
//! with `distributed_lock`, a region refuses keys that begin with the backend's lock prefix
//! (dogpile's `_lock`, or redis's `lock_prefix`), on every operation, so storing `_lockfoo`
//! can never overwrite, read or delete the lock of `foo`.

#[path = "support/memcached_server.rs"]
mod memcached_server;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use dogpile::{CacheRegion, Error, RegionConfig};
use memcached_server::MemcachedServer;
use redis_server::RedisServer;

fn region(backend: &str, url: String, args: &[(&str, &str)]) -> CacheRegion {
    let region = CacheRegion::builder().name("locks").build();
    let mut config = RegionConfig::new(backend).argument("url", url);
    for (name, value) in args {
        config = config.argument(*name, *value);
    }
    region.configure(config).unwrap();
    region
}

fn assert_refused<T: std::fmt::Debug>(outcome: dogpile::Result<T>, prefix: &str) {
    match outcome {
        Err(Error::InvalidArgument {
            argument, reason, ..
        }) => {
            assert_eq!(argument, "key");
            assert!(reason.contains(prefix), "{reason}");
        }
        other => panic!("expected the lock key to be refused, got {other:?}"),
    }
}

/// Every operation refuses a key in the lock layout; a lock held for `foo` survives.
fn lock_keys_are_refused(region: &CacheRegion, prefix: &str) {
    let lock_of_foo = format!("{prefix}foo");
    assert_refused(region.set(&lock_of_foo, &1u32), prefix);
    assert_refused(region.get::<u32>(&lock_of_foo), prefix);
    assert_refused(region.delete(&lock_of_foo), prefix);
    assert_refused(region.get_or_create(&lock_of_foo, || 1u32), prefix);
    assert_refused(
        region.get_multi::<u32, _>(&["a", lock_of_foo.as_str()]),
        prefix,
    );
    assert_refused(region.set_multi(&[(lock_of_foo.as_str(), 1u32)]), prefix);
    assert_refused(region.delete_multi(&[lock_of_foo.as_str()]), prefix);
    assert_refused(
        region.get_or_create_multi(&[lock_of_foo.as_str()], |k| vec![0u32; k.len()]),
        prefix,
    );
    // Keys that merely contain the prefix are fine.
    region.set("foo_lock", &2u32).unwrap();
    assert_eq!(region.get::<u32>("foo_lock").unwrap(), Some(2));
}

#[test]
fn redis_refuses_keys_in_its_lock_layout() {
    let server = RedisServer::shared();
    let locked = region("redis", server.url(), &[("distributed_lock", "true")]);
    lock_keys_are_refused(&locked, "_lock");
    let prefixed = region(
        "redis",
        server.url(),
        &[("distributed_lock", "true"), ("lock_prefix", "dl:")],
    );
    lock_keys_are_refused(&prefixed, "dl:");
    prefixed.set("_lockfoo", &3u32).unwrap();
    // Without a distributed lock there is no lock layout to protect.
    let plain = region("redis", server.url(), &[]);
    plain.set("_lockbar", &4u32).unwrap();
    assert_eq!(plain.get::<u32>("_lockbar").unwrap(), Some(4));
}

#[test]
fn memcached_refuses_keys_in_its_lock_layout() {
    let server = MemcachedServer::start();
    let locked = region("memcached", server.addr(), &[("distributed_lock", "true")]);
    // A lock held by another process on `foo` is never touched by a value.
    server.raw_set("_lockfoo", b"another process");
    lock_keys_are_refused(&locked, "_lock");
    assert_eq!(
        server.raw_get("_lockfoo").as_deref(),
        Some(&b"another process"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_api_refuses_them_too() {
    let server = RedisServer::shared();
    let locked = region("redis", server.url(), &[("distributed_lock", "true")]);
    assert_refused(locked.set_async("_lockfoo", &1u32).await, "_lock");
    assert_refused(
        locked
            .get_or_create_async("_lockfoo", || async { 1u32 })
            .await,
        "_lock",
    );
}
