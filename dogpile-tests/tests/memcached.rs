//! The memcached backend against real memcached servers (started on free loopback ports):
//! the conformance suite on one server, on two, and with the distributed lock, through
//! the region's blocking methods and through its async ones (the backend's native async
//! client); then what is particular to memcached.
//!
//! Multi-process behaviour (the distributed lock across processes, a lock holder killed
//! with SIGKILL) is in `memcached_processes.rs`.

#[macro_use]
mod conformance;
#[path = "support/memcached_server.rs"]
mod memcached_server;
#[path = "support/ports.rs"]
mod ports;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use dogpile::backend::{Arguments, CacheBackend};
use dogpile::backends::memcached::{memcached_key, MANGLED_PREFIX};
use dogpile::backends::MemcachedBackend;
use dogpile::{CacheRegion, CreateOptions, Error, RegionConfig};
use memcached_server::MemcachedServer;

/// The test servers' item size limit (`-I 8m`): the conformance suite stores values over
/// memcached's default 1 MiB, so the backend must read them back.
const MAX_VALUE_SIZE: usize = 8 << 20;

/// One server per conformance test, stopped when the test ends.
fn one_server() -> (RegionConfig, MemcachedServer) {
    let server = MemcachedServer::start();
    let config = RegionConfig::new("memcached")
        .argument("url", server.addr())
        .argument("max_value_size", MAX_VALUE_SIZE);
    (config, server)
}

/// Two servers, named as dogpile's configurations name them.
fn two_servers() -> (RegionConfig, (MemcachedServer, MemcachedServer)) {
    let (a, b) = (MemcachedServer::start(), MemcachedServer::start());
    let url = format!("memcache://{}, {}", a.addr(), b.addr());
    let config = RegionConfig::new("dogpile.cache.pylibmc")
        .argument("url", url)
        .argument("max_value_size", MAX_VALUE_SIZE);
    (config, (a, b))
}

/// One server, with the distributed lock.
fn distributed_lock() -> (RegionConfig, MemcachedServer) {
    let server = MemcachedServer::start();
    let config = RegionConfig::new("memcached")
        .argument("url", server.addr())
        .argument("distributed_lock", true)
        .argument("max_value_size", MAX_VALUE_SIZE)
        .argument("lock_sleep", 0.01)
        .argument("memcached_expire_time", 3600);
    (config, server)
}

mod conformance_one_server {
    use super::*;
    conformance_suite!(stores = true, config = one_server);
}

mod conformance_two_servers {
    use super::*;
    conformance_suite!(stores = true, config = two_servers);
}

mod conformance_distributed_lock {
    use super::*;
    conformance_suite!(stores = true, shared_lock = true, config = distributed_lock);
}

/// The same suites through the region's async methods, which reach memcached on the
/// backend's native async client.
#[cfg(feature = "tokio")]
mod conformance_async_one_server {
    use super::*;
    conformance_suite!(async, stores = true, config = one_server);
}

#[cfg(feature = "tokio")]
mod conformance_async_two_servers {
    use super::*;
    conformance_suite!(async, stores = true, config = two_servers);
}

#[cfg(feature = "tokio")]
mod conformance_async_distributed_lock {
    use super::*;
    conformance_suite!(
        async,
        stores = true,
        shared_lock = true,
        config = distributed_lock
    );
}

fn region(url: &str, arguments: &[(&str, &str)]) -> CacheRegion {
    let region = CacheRegion::new();
    let mut config = RegionConfig::new("memcached").argument("url", url);
    for (name, value) in arguments {
        config = config.argument(*name, value);
    }
    region.configure(config).unwrap();
    region
}

fn backend(url: &str, arguments: &[(&str, &str)]) -> MemcachedBackend {
    let mut all = vec![("url", url)];
    all.extend_from_slice(arguments);
    MemcachedBackend::from_arguments(&Arguments::new("memcached", all)).unwrap()
}

/// Waits for `mutex` as the region does, up to the lock's own wait limit.
fn acquire_waiting(mutex: &dyn dogpile::lock::CacheMutex) -> dogpile::Result<bool> {
    let limit = mutex.wait_limit().unwrap_or(Duration::from_secs(30));
    dogpile::lock::acquire_until(mutex, Instant::now() + limit)
}

#[test]
fn keys_memcached_cannot_take_round_trip_and_inject_nothing() {
    let server = MemcachedServer::start();
    server.raw_set("sentinel", b"alive");
    let region = region(&server.addr(), &[]);

    let long = "k".repeat(1000);
    let looks_mangled = memcached_key("a b").into_owned();
    let keys: Vec<&str> = vec![
        "a b",
        &long,
        "x\r\nflush_all",
        "y\r\nset sentinel 0 0 4\r\ndead",
        "",
        "tab\there",
        "ключ",
        "nul\0byte",
        &looks_mangled,
        "plain_key",
    ];
    for (i, key) in keys.iter().enumerate() {
        region.set(key, &format!("value {i}")).unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            region.get::<String>(key).unwrap(),
            Some(format!("value {i}")),
            "{key:?}"
        );
    }
    assert_eq!(
        region.get_multi::<String, _>(&keys).unwrap(),
        (0..keys.len())
            .map(|i| Some(format!("value {i}")))
            .collect::<Vec<_>>()
    );

    // Nothing else changed on the server: the sentinel survived, and the server holds
    // exactly the sentinel and one legal key per cache key.
    assert_eq!(server.raw_get("sentinel").as_deref(), Some(&b"alive"[..]));
    let mut expected: BTreeSet<String> = keys.iter().map(|k| memcached_key(k).into()).collect();
    expected.insert("sentinel".into());
    assert_eq!(server.keys(), expected);
    assert_eq!(server.curr_items(), keys.len() as u64 + 1);
    for key in server.keys() {
        assert!(
            key.len() <= 250 && key.bytes().all(|b| b.is_ascii_graphic()),
            "{key:?}"
        );
    }
    assert!(server.keys().contains("plain_key"), "legal keys are kept");
    assert!(
        server
            .keys()
            .iter()
            .filter(|k| k.starts_with(MANGLED_PREFIX))
            .count()
            == 9
    );

    region.delete_multi(&keys).unwrap();
    assert_eq!(server.keys(), BTreeSet::from(["sentinel".to_owned()]));
}

#[test]
fn keys_spread_over_two_servers_by_consistent_hashing() {
    let (a, b) = (MemcachedServer::start(), MemcachedServer::start());
    let url = format!("{}, memcache://{}", a.addr(), b.addr());
    let region = region(&url, &[]);
    let keys: Vec<String> = (0..200).map(|i| format!("spread:{i}")).collect();
    let items: Vec<(String, u32)> = keys.iter().cloned().zip(0..).collect();
    region.set_multi(&items).unwrap();

    let (on_a, on_b) = (a.keys(), b.keys());
    assert!(
        on_a.len() > 40 && on_b.len() > 40,
        "both servers hold keys: {} and {}",
        on_a.len(),
        on_b.len()
    );
    assert_eq!(on_a.len() + on_b.len(), 200);
    assert!(on_a.is_disjoint(&on_b));
    // The backend says where each key lives, and that is where it is.
    let placement = backend(&url, &[]);
    for key in &keys {
        let holder = if on_a.contains(key) { &a } else { &b };
        assert_eq!(placement.server_for(key), holder.addr());
    }

    // One get_multi over both servers returns every value in order.
    let values = region.get_multi::<u32, _>(&keys).unwrap();
    assert_eq!(values, (0..200).map(Some).collect::<Vec<_>>());
    // Placement depends on the servers, not on the order they are listed in.
    let reversed = self::region(&format!("{}, {}", b.addr(), a.addr()), &[]);
    assert_eq!(reversed.get_multi::<u32, _>(&keys).unwrap(), values);
}

#[test]
fn get_multi_reads_many_keys_and_repeated_keys() {
    let server = MemcachedServer::start();
    let region = region(&server.addr(), &[]);
    let items: Vec<(String, u32)> = (0..250).map(|i| (format!("m{i}"), i)).collect();
    region.set_multi(&items).unwrap();
    let mut keys: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    keys.push("m7".into());
    keys.push("m7".into());
    let values = region.get_multi::<u32, _>(&keys).unwrap();
    assert_eq!(values.len(), 302);
    assert!((0..250).all(|i| values[i] == Some(i as u32)));
    assert!(values[250..300].iter().all(Option::is_none));
    assert_eq!(values[300..], [Some(7), Some(7)]);
}

#[test]
fn set_multi_and_delete_multi_pipeline_values_of_every_size_over_two_servers() {
    let (a, b) = (MemcachedServer::start(), MemcachedServer::start());
    let url = format!("{}, {}", a.addr(), b.addr());
    let backend = backend(&url, &[("max_value_size", "8388608")]);
    // Small values copied into the request, values past 16 KiB written in from where
    // they are, and batches cut at 100 keys and at 1 MiB of values.
    let sizes = |i: usize| match i % 50 {
        0 => 3 << 20,
        1..=5 => 20_000 + i,
        _ => i % 7,
    };
    let keys: Vec<String> = (0..260).map(|i| format!("pipelined:{i}")).collect();
    let values: Vec<Vec<u8>> = (0..260)
        .map(|i| (0..sizes(i)).map(|j| (i + j) as u8).collect())
        .collect();
    let items: Vec<(&str, Vec<u8>)> = keys
        .iter()
        .map(String::as_str)
        .zip(values.iter().cloned())
        .collect();
    backend.set_multi(items).unwrap();
    assert_eq!(a.keys().len() + b.keys().len(), 260);
    assert!(a.keys().len() > 60 && b.keys().len() > 60);
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let read = backend.get_multi(&refs).unwrap();
    for (i, value) in read.iter().enumerate() {
        assert_eq!(value.as_ref(), Some(&values[i]), "key {i}");
    }
    // Deleting keys that are there and keys that are not.
    let mut gone = refs.clone();
    gone.push("never-stored");
    backend.delete_multi(&gone).unwrap();
    assert!(a.keys().is_empty() && b.keys().is_empty());

    // A value over max_value_size fails the whole call before anything is sent, naming
    // its key.
    let limited = self::backend(&url, &[]);
    let error = limited
        .set_multi(vec![("fine", b"1".to_vec()), ("too big", vec![0; 2 << 20])])
        .unwrap_err();
    assert!(error.to_string().contains("\"too big\""), "{error}");
    assert!(error.to_string().contains("max_value_size"), "{error}");
    assert!(a.keys().is_empty() && b.keys().is_empty());
}

#[test]
fn get_multi_of_the_longest_keys_fits_one_request() {
    // 100 keys of 250 bytes: a 25 KB `get` line, over memcached's 2 KiB command line
    // (which it allows for `get`).
    let server = MemcachedServer::start();
    let region = region(&server.addr(), &[]);
    let keys: Vec<String> = (0..150).map(|i| format!("{i:0>250}")).collect();
    let items: Vec<(String, usize)> = keys.iter().cloned().zip(0..).step_by(2).collect();
    region.set_multi(&items).unwrap();
    assert!(
        server.keys().contains(&keys[0]),
        "stored under its own name"
    );
    let values = region.get_multi::<usize, _>(&keys).unwrap();
    let expected: Vec<Option<usize>> = (0..150).map(|i| (i % 2 == 0).then_some(i)).collect();
    assert_eq!(values, expected);
}

#[test]
fn large_values_round_trip_and_too_large_ones_name_key_and_server() {
    let server = MemcachedServer::start();
    // A limit above the server's 8 MiB, so that the server's own refusal shows.
    let region = region(&server.addr(), &[("max_value_size", "16777216")]);
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    region.set("big", &big).unwrap();
    assert_eq!(region.get::<Vec<u8>>("big").unwrap().as_ref(), Some(&big));

    let huge = vec![7u8; 9 * 1024 * 1024];
    let error = region.set("huge value key", &huge).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Backend { .. }), "{message}");
    assert!(message.contains("\"huge value key\""), "{message}");
    assert!(message.contains(&server.addr()), "{message}");
    assert!(message.contains("item size limit"), "{message}");
    // The next commands work.
    region.set("after", &1u8).unwrap();
    assert_eq!(region.get::<u8>("after").unwrap(), Some(1));
    assert_eq!(region.get::<Vec<u8>>("huge value key").unwrap(), None);

    // With the default max_value_size (1 MiB + 64 KiB, for memcached's default limit),
    // the backend refuses a larger value itself, naming the argument; and it refuses to
    // read one back: an error, not an allocation of whatever the server announces.
    let default = self::region(&server.addr(), &[]);
    let error = default.set("too big here", &big).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("\"too big here\""), "{message}");
    assert!(message.contains("max_value_size"), "{message}");
    assert!(message.contains(&server.addr()), "{message}");
    let error = default.get::<Vec<u8>>("big").unwrap_err();
    assert!(error.to_string().contains("max_value_size"), "{error}");
    let mebibyte = "m".repeat(1 << 20);
    default.set("one mebibyte", &mebibyte).unwrap();
    assert_eq!(
        default.get::<String>("one mebibyte").unwrap(),
        Some(mebibyte)
    );
}

#[test]
fn memcached_expire_time_is_the_servers_ttl() {
    let server = MemcachedServer::start();
    let none = region(&server.addr(), &[]);
    none.set("forever", &1u8).unwrap();
    assert_eq!(server.ttl("forever"), Some(-1));

    let hour = region(&server.addr(), &[("memcached_expire_time", "3600")]);
    hour.set("hour", &1u8).unwrap();
    let ttl = server.ttl("hour").unwrap();
    assert!((3590..=3600).contains(&ttl), "{ttl}");
    // Fractions round up: half a second is one second, never 0 (which means no TTL).
    let half = region(&server.addr(), &[("memcached_expire_time", "0.5")]);
    half.set_multi(&[("half", 1u8)]).unwrap();
    // (memcached's clock ticks once a second, so a 1 s TTL may have run out already.)
    let ttl = server.ttl("half");
    assert!(matches!(ttl, None | Some(0..=1)), "{ttl:?}");

    // And the server does drop the value.
    // A 2 s TTL runs out between 1 and 2 s later, on the tick of memcached's clock.
    let short = region(&server.addr(), &[("memcached_expire_time", "2")]);
    short.set("short", &1u8).unwrap();
    assert!(server.raw_get("short").is_some());
    let deadline = Instant::now() + Duration::from_secs(6);
    while server.raw_get("short").is_some() {
        assert!(Instant::now() < deadline, "the item outlived its 2 s TTL");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(short.get::<u8>("short").unwrap(), None);
    assert_eq!(none.get::<u8>("forever").unwrap(), Some(1));
}

#[test]
fn garbage_stored_by_another_client_is_a_miss_then_regenerated() {
    let server = MemcachedServer::start();
    let region = region(&server.addr(), &[]);
    let garbage: &[&[u8]] = &[
        b"",
        b"\x00\xff\xfe garbage",
        b"|",
        b"{\"ct\":1.0,\"v\":2}|\xc1",
        b"{\"ct\":1.0,\"v\":2}|\xa3abc",
        b"{\"ct\":1.0,\"v\":1}|\x07",
        b"{\"ct\":",
        &[0xff; 4096],
    ];
    for (i, bytes) in garbage.iter().enumerate() {
        let key = format!("garbage{i}");
        server.raw_set(&key, bytes);
        assert_eq!(region.get::<u32>(&key).unwrap(), None, "{bytes:?}");
        let calls = AtomicUsize::new(0);
        let value = region
            .get_or_create(&key, || {
                calls.fetch_add(1, Ordering::SeqCst);
                i as u32
            })
            .unwrap();
        assert_eq!((value, calls.load(Ordering::SeqCst)), (i as u32, 1));
        assert_eq!(region.get::<u32>(&key).unwrap(), Some(i as u32));
        let stored = server.raw_get(&key).unwrap();
        assert!(
            stored.starts_with(b"{\"ct\":"),
            "regenerated in dogpile's format"
        );
        // Raw bytes with client flags 0, as pymemcache and pylibmc store bytes: Python
        // processes read what this one wrote, and the other way round.
        assert_eq!(server.flags(&key), Some(0));
    }
}

#[test]
fn server_down_is_an_error_naming_it_fail_open_computes_and_restart_recovers() {
    let mut server = MemcachedServer::start();
    let region = region(
        &server.addr(),
        &[
            ("socket_timeout", "1"),
            ("dead_retry", "0.3"),
            ("distributed_lock", "true"),
        ],
    );
    region.set("k", &1u32).unwrap();
    server.stop();

    let bound = Duration::from_secs(6); // socket_timeout is 1 s: generous "did not hang"
    let started = Instant::now();
    let error = region.get::<u32>("k").unwrap_err();
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    assert!(matches!(error, Error::Backend { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("memcached at {}", server.addr())),
        "{message}"
    );
    assert!(message.contains("\"k\""), "{message}");

    // Marked down: the next commands fail at once, still naming the server.
    let started = Instant::now();
    let error = region.set("k", &2u32).unwrap_err();
    assert!(error.to_string().contains(&server.addr()), "{error}");
    assert!(region.get_or_create("k", || 3u32).is_err());
    let computed =
        dogpile::__private::get_or_create_fail_open(&region, "k", CreateOptions::new(), || {
            Ok::<_, Infallible>(4u32)
        })
        .unwrap();
    assert_eq!(computed, 4);
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());

    // The server comes back (empty) on the same port: the same region works again.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match region.set("k", &5u32) {
            Ok(()) => break,
            Err(error) if Instant::now() < deadline => {
                assert!(error.to_string().contains(&server.addr()));
                thread::sleep(Duration::from_millis(50));
            }
            Err(error) => panic!("the region did not recover: {error}"),
        }
    }
    assert_eq!(region.get::<u32>("k").unwrap(), Some(5));
    assert_eq!(region.get_or_create("new", || 6u32).unwrap(), 6);
}

#[test]
fn a_server_that_answers_nothing_times_out_within_socket_timeout() {
    let mut server = MemcachedServer::start();
    let region = region(
        &server.addr(),
        &[("socket_timeout", "0.5"), ("dead_retry", "0.2")],
    );
    for round in 0..2 {
        region.set("k", &1u32).unwrap();
        server.freeze(true);
        // Run the read beside, so that a hang thaws the server and fails the test.
        let outcome = thread::scope(|s| {
            let (sender, receiver) = mpsc::channel();
            let region = &region;
            s.spawn(move || sender.send(region.get::<u32>("k")));
            let outcome = receiver.recv_timeout(Duration::from_secs(5));
            server.freeze(false);
            outcome
        });
        let error = outcome
            .unwrap_or_else(|_| panic!("round {round}: the read hung past socket_timeout"))
            .unwrap_err();
        assert!(error.to_string().contains(&server.addr()), "{error}");
        // Back to normal after dead_retry, on fresh connections that have the same
        // timeouts (the second round shows it).
        let deadline = Instant::now() + Duration::from_secs(10);
        while region.get::<u32>("k").is_err() {
            assert!(Instant::now() < deadline, "round {round}: no recovery");
            thread::sleep(Duration::from_millis(50));
        }
        if round == 0 {
            server.restart();
        }
    }
}

#[test]
fn pooled_connections_survive_a_quick_server_restart() {
    let mut server = MemcachedServer::start();
    // (`connection_pool` is redis's name for `pool_size`; both work.)
    let region = region(&server.addr(), &[("connection_pool", "4")]);
    // Fill the pool with connections from several threads.
    thread::scope(|s| {
        for t in 0..4 {
            let region = &region;
            s.spawn(move || region.set(&format!("t{t}"), &t).unwrap());
        }
    });
    // Restart with no command in between: every pooled connection is now dead, and the
    // very next commands still succeed (on fresh connections).
    server.restart();
    region.set("k", &1u32).unwrap();
    assert_eq!(region.get::<u32>("k").unwrap(), Some(1));
    assert_eq!(
        region.get::<u32>("t0").unwrap(),
        None,
        "a new, empty server"
    );
}

#[test]
fn distributed_lock_is_exclusive_and_released_only_by_its_holder() {
    let server = MemcachedServer::start();
    let backend = backend(
        &server.addr(),
        &[
            ("distributed_lock", "true"),
            ("lock_timeout", "30"),
            ("lock_blocking_timeout", "0.3"),
        ],
    );
    let a = backend.get_mutex("key").unwrap();
    let b = backend.get_mutex("key").unwrap();
    assert!(server.raw_get("_lockkey").is_none());
    assert!(a.try_acquire().unwrap());
    assert!(server.raw_get("_lockkey").is_some());
    assert!(!b.try_acquire().unwrap());
    // dogpile's lock key, with lock_timeout as its TTL.
    assert!(server.raw_get("_lockkey").is_some());
    assert!(matches!(server.ttl("_lockkey"), Some(29..=30)));

    // A waiting acquire gives up after lock_blocking_timeout.
    let started = Instant::now();
    assert!(!acquire_waiting(&*b).unwrap());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // A release by a handle that does not hold the lock changes nothing.
    b.release().unwrap();
    assert!(server.raw_get("_lockkey").is_some());
    // The holder's release frees it at once for the next one.
    a.release().unwrap();
    assert!(server.raw_get("_lockkey").is_none());
    assert!(b.try_acquire().unwrap());
    b.release().unwrap();

    // A holder whose lock expired (removed here, as the TTL would) and was taken by
    // another process must not remove the other process's lock.
    assert!(a.try_acquire().unwrap());
    let token_a = server.raw_get("_lockkey").unwrap();
    server.raw_delete("_lockkey");
    assert!(b.try_acquire().unwrap());
    let token_b = server.raw_get("_lockkey").unwrap();
    assert_ne!(token_a, token_b);
    a.release().unwrap();
    assert_eq!(server.raw_get("_lockkey"), Some(token_b));
    assert!(server.raw_get("_lockkey").is_some());
    b.release().unwrap();
    assert_eq!(server.raw_get("_lockkey"), None);

    // Long keys get a legal lock key too.
    let long = "l".repeat(300);
    let lock = backend.get_mutex(&long).unwrap();
    assert!(lock.try_acquire().unwrap());
    assert!(server
        .keys()
        .contains(&*memcached_key(&format!("_lock{long}"))));
    lock.release().unwrap();
}

#[test]
fn a_waiting_lock_is_taken_as_soon_as_it_is_released() {
    let server = MemcachedServer::start();
    let backend = Arc::new(backend(
        &server.addr(),
        &[("distributed_lock", "true"), ("lock_sleep", "0.05")],
    ));
    let holder = backend.get_mutex("k").unwrap();
    assert!(holder.try_acquire().unwrap());
    let waiter = {
        let backend = backend.clone();
        thread::spawn(move || {
            let lock = backend.get_mutex("k").unwrap();
            let started = Instant::now();
            let acquired = acquire_waiting(&*lock).unwrap();
            lock.release().unwrap();
            (acquired, started.elapsed())
        })
    };
    thread::sleep(Duration::from_millis(200));
    holder.release().unwrap();
    let (acquired, waited) = waiter.join().unwrap();
    assert!(acquired);
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn region_with_distributed_lock_times_out_on_a_lock_held_elsewhere() {
    let server = MemcachedServer::start();
    let region = region(
        &server.addr(),
        &[
            ("distributed_lock", "true"),
            ("lock_blocking_timeout", "0.2"),
        ],
    );
    server.raw_set("_lockbusy", b"another process");
    let error = region.get_or_create("busy", || 1u8).unwrap_err();
    assert!(matches!(error, Error::LockTimeout { .. }), "{error}");
    server.raw_delete("_lockbusy");
    assert_eq!(region.get_or_create("busy", || 2u8).unwrap(), 2);
}

#[test]
fn every_dogpile_name_builds_the_backend() {
    let server = MemcachedServer::start();
    for name in [
        "memcached",
        "dogpile.cache.memcached",
        "dogpile.cache.pylibmc",
        "dogpile.cache.bmemcached",
        "dogpile.cache.pymemcache",
    ] {
        let region = CacheRegion::new();
        region
            .configure(RegionConfig::new(name).argument("url", server.addr()))
            .unwrap();
        region.set(name, &name.to_owned()).unwrap();
        assert_eq!(region.get::<String>(name).unwrap().as_deref(), Some(name));
    }
}

#[test]
fn bad_arguments_fail_at_configure_naming_the_argument() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "url"),
        (&[("url", "127.0.0.1:1"), ("behaviors", "{}")], "behaviors"),
        (
            &[("url", "127.0.0.1:1"), ("socket_timeout", "soon")],
            "socket_timeout",
        ),
        (&[("url", "127.0.0.1:1"), ("pool_size", "-2")], "pool_size"),
        (
            &[("url", "127.0.0.1:1"), ("distributed_lock", "2")],
            "distributed_lock",
        ),
        (
            &[("url", "127.0.0.1:1"), ("lock_timeout", "-1")],
            "lock_timeout",
        ),
        (
            &[("url", "127.0.0.1:1"), ("memcached_expire_time", "x")],
            "memcached_expire_time",
        ),
        (&[("url", "redis://127.0.0.1:1")], "url"),
        (&[("url", "127.0.0.1:notaport")], "url"),
    ];
    for (arguments, named) in cases {
        let mut config = RegionConfig::new("dogpile.cache.pylibmc");
        for (name, value) in *arguments {
            config = config.argument(*name, value);
        }
        match CacheRegion::new().configure(config) {
            Err(Error::InvalidArgument {
                argument, backend, ..
            }) => {
                assert_eq!(&argument, named, "{arguments:?}");
                assert_eq!(backend, "dogpile.cache.pylibmc");
            }
            Err(other) => panic!("{arguments:?}: expected InvalidArgument, got {other}"),
            Ok(_) => panic!("{arguments:?}: expected InvalidArgument, got a region"),
        }
    }
}
