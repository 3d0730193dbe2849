//! The `redis` backend against real `redis-server` processes started on free loopback
//! ports.

#[macro_use]
mod conformance;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use dogpile::backend::{Arguments, CacheBackend};
use dogpile::backends::RedisBackend;
use dogpile::{make_region, CacheRegion, CreateOptions, Error, RegionConfig};
use redis_server::RedisServer;

mod conformance_redis {
    use super::*;
    conformance_suite!(
        stores = true,
        config = || RegionConfig::new("redis").argument("url", RedisServer::shared().url())
    );
}

mod conformance_redis_distributed_lock {
    use super::*;
    conformance_suite!(
        stores = true,
        shared_lock = true,
        config = || RegionConfig::new("dogpile.cache.redis")
            .argument("url", RedisServer::shared().url())
            .argument("distributed_lock", true)
            .argument("lock_sleep", 0.01)
            .argument("redis_expiration_time", 3600)
    );
}

fn region_on(url: &str, args: &[(&str, &str)]) -> CacheRegion {
    let region = make_region();
    let mut config = RegionConfig::new("redis")
        .expiration_time(Duration::from_secs(600))
        .argument("url", url);
    for (name, value) in args {
        config = config.argument(*name, *value);
    }
    region.configure(config).expect("configure a redis region");
    region
}

fn backend_on(url: &str, args: &[(&str, &str)]) -> RedisBackend {
    let mut pairs = vec![("url".to_owned(), url.to_owned())];
    pairs.extend(args.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    RedisBackend::from_arguments(&Arguments::new("redis", pairs)).expect("build a redis backend")
}

/// A key no other test uses.
fn unique(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn command_calls(conn: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(conn)
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("calls count"))
}

fn exists(conn: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query(conn).unwrap()
}

/// Waits for `mutex` as the region does, up to the lock's own wait limit.
fn acquire_waiting(mutex: &dyn dogpile::lock::CacheMutex) -> dogpile::Result<bool> {
    let limit = mutex.wait_limit().unwrap_or(Duration::from_secs(30));
    dogpile::lock::acquire_until(mutex, Instant::now() + limit)
}

#[test]
fn registered_under_both_names() {
    let server = RedisServer::shared();
    for name in ["redis", "dogpile.cache.redis"] {
        let region = make_region();
        region
            .configure(RegionConfig::new(name).argument("url", server.url()))
            .unwrap();
        let key = unique("names");
        region.set(&key, &7u8).unwrap();
        assert_eq!(region.get::<u8>(&key).unwrap(), Some(7));
    }
}

#[test]
fn host_port_db_arguments_reach_that_database() {
    let server = RedisServer::shared();
    let region = make_region();
    region
        .configure(
            RegionConfig::new("redis")
                .argument("host", "127.0.0.1")
                .argument("port", server.port())
                .argument("db", 3),
        )
        .unwrap();
    let key = unique("db3");
    region.set(&key, &"in db 3".to_string()).unwrap();
    let mut conn = server.client();
    let in_db0: bool = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
    redis::cmd("SELECT").arg(3).exec(&mut conn).unwrap();
    let in_db3: bool = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
    assert!(!in_db0 && in_db3, "the value must be in db 3 only");
    assert_eq!(
        region.get::<String>(&key).unwrap().as_deref(),
        Some("in db 3")
    );
}

#[test]
fn multi_operations_are_one_command_each() {
    // An own server, so that its command counters see only this test.
    let server = RedisServer::start();
    let region = region_on(&server.url(), &[]);
    let mut bare = server.client();
    let keys: Vec<String> = (0..50).map(|i| format!("multi-{i}")).collect();
    let items: Vec<(String, u32)> = keys.iter().cloned().zip(0..).collect();

    region.set_multi(&items).unwrap();
    assert_eq!(
        command_calls(&mut bare, "set"),
        50,
        "one SET per key, pipelined"
    );
    assert_eq!(command_calls(&mut bare, "mset"), 0);

    let mut asked: Vec<String> = keys.clone();
    asked.insert(10, "multi-missing".into());
    let got: Vec<Option<u32>> = region.get_multi(&asked).unwrap();
    let mut expected: Vec<Option<u32>> = (0..50).map(Some).collect();
    expected.insert(10, None);
    assert_eq!(got, expected);
    assert_eq!(command_calls(&mut bare, "mget"), 1, "get_multi is one MGET");
    assert_eq!(command_calls(&mut bare, "get"), 0);

    region.delete_multi(&keys[..25]).unwrap();
    assert_eq!(
        command_calls(&mut bare, "del"),
        1,
        "delete_multi is one DEL"
    );
    let remaining: Vec<Option<u32>> = region.get_multi(&keys).unwrap();
    assert!(remaining[..25].iter().all(Option::is_none));
    assert_eq!(remaining[25..], (25..50).map(Some).collect::<Vec<_>>());

    let empty: Vec<Option<u32>> = region.get_multi::<u32, String>(&[]).unwrap();
    assert!(empty.is_empty());
    region.set_multi::<u32, String>(&[]).unwrap();
    region.delete_multi::<String>(&[]).unwrap();
}

#[test]
fn redis_expiration_time_sets_a_server_ttl() {
    let server = RedisServer::shared();
    let mut bare = server.client();
    let with_ttl = region_on(&server.url(), &[("redis_expiration_time", "100")]);
    let key = unique("ttl");
    with_ttl.set(&key, &1u8).unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut bare).unwrap();
    assert!((90..=100).contains(&ttl), "TTL {ttl} should be about 100 s");

    let multi: Vec<String> = (0..3).map(|i| unique(&format!("ttl-multi-{i}"))).collect();
    with_ttl
        .set_multi(&multi.iter().map(|k| (k.clone(), 2u8)).collect::<Vec<_>>())
        .unwrap();
    for key in &multi {
        let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut bare).unwrap();
        assert!(
            (90..=100).contains(&ttl),
            "set_multi: TTL {ttl} should be about 100 s"
        );
    }
    let created = unique("ttl-created");
    with_ttl.get_or_create(&created, || 3u8).unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(&created).query(&mut bare).unwrap();
    assert!((90..=100).contains(&ttl), "get_or_create: TTL {ttl}");

    let without = region_on(&server.url(), &[]);
    let plain = unique("no-ttl");
    without.set(&plain, &1u8).unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(&plain).query(&mut bare).unwrap();
    assert_eq!(ttl, -1, "no redis_expiration_time: no server TTL");
}

#[test]
fn garbage_written_by_another_client_is_a_miss_then_regenerated() {
    let server = RedisServer::shared();
    let region = region_on(&server.url(), &[]);
    let mut bare = server.client();
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        b"not dogpile at all".to_vec(),
        vec![0xff, 0x00, 0xfe, 0x7c, 0x80],
        b"{\"ct\":".to_vec(),
        b"{\"ct\":1.0,\"v\":2}|".to_vec(),
        b"{\"ct\":1.0,\"v\":2}|\xc1\xc1\xc1".to_vec(),
        b"{\"ct\":\"soon\",\"v\":2}|\x01".to_vec(),
        (0..=255u8).cycle().take(10_000).collect(),
    ];
    for (i, bytes) in garbage.iter().enumerate() {
        let key = unique(&format!("garbage-{i}"));
        redis::cmd("SET")
            .arg(&key)
            .arg(bytes.as_slice())
            .exec(&mut bare)
            .unwrap();
        assert_eq!(region.get::<String>(&key).unwrap(), None, "garbage #{i}");
        assert_eq!(
            region
                .get_multi::<String, _>(std::slice::from_ref(&key))
                .unwrap(),
            vec![None],
            "garbage #{i} through get_multi"
        );
        let calls = AtomicUsize::new(0);
        let value = region
            .get_or_create(&key, || {
                calls.fetch_add(1, Ordering::SeqCst);
                format!("fresh {i}")
            })
            .unwrap();
        assert_eq!(value, format!("fresh {i}"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            region.get::<String>(&key).unwrap(),
            Some(format!("fresh {i}"))
        );
    }

    // A key of another type (a list) reads as a miss too, and is replaced.
    let list = unique("garbage-list");
    redis::cmd("RPUSH")
        .arg(&list)
        .arg("a")
        .arg("b")
        .exec(&mut bare)
        .unwrap();
    assert_eq!(region.get::<String>(&list).unwrap(), None);
    assert_eq!(
        region
            .get_multi::<String, _>(std::slice::from_ref(&list))
            .unwrap(),
        vec![None]
    );
    assert_eq!(
        region
            .get_or_create(&list, || "replaced".to_string())
            .unwrap(),
        "replaced"
    );
    assert_eq!(
        region.get::<String>(&list).unwrap().as_deref(),
        Some("replaced")
    );
}

fn expect_invalid(args: &[(&str, &str)], argument: &str) {
    let pairs: Vec<(String, String)> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let region = make_region();
    let mut config = RegionConfig::new("redis");
    for (k, v) in &pairs {
        config = config.argument(k.clone(), v);
    }
    match region.configure(config) {
        Err(Error::InvalidArgument {
            backend,
            argument: named,
            reason,
        }) => {
            assert_eq!(named, argument, "{args:?}: wrong argument named ({reason})");
            assert_eq!(backend, "redis");
            assert!(!reason.is_empty());
        }
        Err(other) => panic!("{args:?}: expected InvalidArgument for `{argument}`, got {other}"),
        Ok(_) => panic!("{args:?}: expected InvalidArgument for `{argument}`, got Ok"),
    }
}

#[test]
fn bad_arguments_are_rejected_naming_the_argument() {
    expect_invalid(
        &[("url", "redis://127.0.0.1:1"), ("colour", "blue")],
        "colour",
    );
    expect_invalid(&[("port", "seventy")], "port");
    expect_invalid(&[("port", "70000")], "port");
    expect_invalid(&[("url", "http://127.0.0.1:6379")], "url");
    expect_invalid(&[("url", "not a url")], "url");
    // Without TLS compiled in, a rediss:// URL is refused at configure time.
    #[cfg(not(feature = "tls"))]
    expect_invalid(&[("url", "rediss://127.0.0.1:6380")], "url");
    expect_invalid(
        &[("url", "redis://127.0.0.1:1"), ("host", "127.0.0.1")],
        "host",
    );
    expect_invalid(&[("db", "first")], "db");
    expect_invalid(&[("socket_timeout", "soon")], "socket_timeout");
    expect_invalid(&[("socket_timeout", "0")], "socket_timeout");
    expect_invalid(&[("connection_pool", "0")], "connection_pool");
    expect_invalid(&[("connection_pool", "-3")], "connection_pool");
    expect_invalid(&[("pool_size", "0")], "pool_size");
    expect_invalid(&[("dead_retry", "-1")], "dead_retry");
    expect_invalid(&[("pool_size", "2"), ("connection_pool", "2")], "pool_size");
    expect_invalid(&[("redis_expiration_time", "-1")], "redis_expiration_time");
    expect_invalid(&[("distributed_lock", "maybe")], "distributed_lock");
    expect_invalid(&[("thread_local_lock", "sometimes")], "thread_local_lock");
    expect_invalid(&[("lock_timeout", "0")], "lock_timeout");
    expect_invalid(&[("lock_sleep", "0")], "lock_sleep");
    expect_invalid(&[("lock_prefix", "x")], "lock_prefix");
    expect_invalid(&[("lock_prefix", "has space")], "lock_prefix");

    // What is accepted is listed in the message.
    let err = RedisBackend::from_arguments(&Arguments::new("redis", [("colour", "blue")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("colour") && err.contains("socket_timeout"),
        "{err}"
    );

    // Valid dogpile.cache configurations are accepted, thread_local_lock included.
    RedisBackend::from_arguments(&Arguments::new(
        "redis",
        [
            ("host", "localhost"),
            ("port", "6390"),
            ("db", "1"),
            ("password", "secret"),
            ("username", "me"),
            ("distributed_lock", "true"),
            ("thread_local_lock", "false"),
            ("lock_timeout", "2.5"),
            ("lock_sleep", "0.05"),
            ("lock_prefix", "lk:"),
            ("redis_expiration_time", "60"),
        ],
    ))
    .unwrap();
}

#[test]
fn configure_does_not_need_the_server_and_errors_name_it() {
    // Nothing listens on this port: configuring works, operations fail naming the server.
    let port = ports::free_port();
    let region = region_on(
        &format!("redis://127.0.0.1:{port}"),
        &[("socket_timeout", "0.3")],
    );
    let err = region.get::<u8>("k").unwrap_err();
    match &err {
        Error::Backend { backend, .. } => {
            assert!(backend.contains(&format!("127.0.0.1:{port}")), "{err}")
        }
        other => panic!("expected Error::Backend, got {other}"),
    }
}

fn assert_backend_error<T: std::fmt::Debug>(
    what: &str,
    server: &RedisServer,
    limit: Duration,
    op: impl FnOnce() -> dogpile::Result<T>,
) {
    let started = Instant::now();
    let outcome = op();
    let took = started.elapsed();
    match outcome {
        Err(Error::Backend { backend, source }) => {
            assert!(
                backend.contains(&server.addr()),
                "{what}: the error must name the server: {backend}: {source}"
            );
        }
        other => panic!("{what}: expected Error::Backend, got {other:?}"),
    }
    assert!(took < limit, "{what} took {took:?}: it must not hang");
}

#[test]
fn server_down_gives_backend_errors_in_time_and_a_restart_recovers() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(200);
    // Every command tries the server (no dead_retry: that has its own test).
    let region = region_on(
        &server.url(),
        &[("socket_timeout", "0.2"), ("dead_retry", "0")],
    );
    let fail_open_region = CacheRegion::builder().fail_open(true).build();
    fail_open_region
        .configure(
            RegionConfig::new("redis")
                .argument("url", server.url())
                .argument("socket_timeout", "0.2")
                .argument("dead_retry", "0"),
        )
        .unwrap();
    region.set("before", &1u32).unwrap();
    assert_eq!(region.get::<u32>("before").unwrap(), Some(1));

    server.stop();
    let limit = timeout * 10;
    assert_backend_error("get", &server, limit, || region.get::<u32>("before"));
    assert_backend_error("set", &server, limit, || region.set("k", &2u32));
    assert_backend_error("delete", &server, limit, || region.delete("k"));
    assert_backend_error("get_multi", &server, limit, || {
        region.get_multi::<u32, _>(&["a", "b"])
    });
    assert_backend_error("set_multi", &server, limit, || {
        region.set_multi(&[("a", 1u32)])
    });
    assert_backend_error("delete_multi", &server, limit, || {
        region.delete_multi(&["a", "b"])
    });
    assert_backend_error("get_or_create", &server, limit, || {
        region.get_or_create("k", || 5u32)
    });

    // Failing open, the computed value is returned.
    let started = Instant::now();
    let value: Result<u32, Error> =
        dogpile::__private::get_or_create_fail_open(&region, "k", CreateOptions::new(), || Ok(11));
    assert_eq!(value.unwrap(), 11);
    assert!(started.elapsed() < limit * 3);
    assert_eq!(fail_open_region.get_or_create("k", || 12u32).unwrap(), 12);

    // The same regions work again once the server is back (it comes back empty).
    server.restart();
    assert_eq!(region.get::<u32>("before").unwrap(), None);
    region.set("after", &3u32).unwrap();
    assert_eq!(region.get::<u32>("after").unwrap(), Some(3));
    assert_eq!(fail_open_region.get::<u32>("after").unwrap(), Some(3));
}

#[test]
fn a_hung_server_gives_backend_errors_in_time_and_works_again_when_it_resumes() {
    let server = RedisServer::start();
    // Every command tries the server (no dead_retry: that has its own test).
    let region = region_on(
        &server.url(),
        &[("socket_timeout", "0.2"), ("dead_retry", "0")],
    );
    region.set("k", &1u32).unwrap();
    server.freeze(true);
    let limit = Duration::from_secs(2);
    // The pooled connection is open but the server does not answer: the read times out.
    assert_backend_error("get on a hung server", &server, limit, || {
        region.get::<u32>("k")
    });
    assert_backend_error("set on a hung server", &server, limit, || {
        region.set("k", &2u32)
    });
    server.freeze(false);
    // The timed-out connections were dropped; fresh ones work (no late reply is read as
    // the answer to a later command). The set that timed out may still have reached the
    // server, which runs it when it resumes (as with any client): 1 or 2, never garbage.
    let resumed = region.get::<u32>("k").unwrap();
    assert!(matches!(resumed, Some(1 | 2)), "{resumed:?}");
    region.set("k", &3u32).unwrap();
    assert_eq!(region.get::<u32>("k").unwrap(), Some(3));
    assert_eq!(region.get::<u32>("missing").unwrap(), None);
}

#[test]
fn pooled_connections_to_a_restarted_server_are_replaced_without_errors() {
    let mut server = RedisServer::start();
    let region = Arc::new(region_on(
        &server.url(),
        &[("socket_timeout", "1"), ("connection_pool", "4")],
    ));
    // Fill the pool with several connections.
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (region, barrier) = (region.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                for i in 0..50 {
                    region.set(&format!("fill-{t}-{i}"), &i).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Restart while every pooled connection is idle: none of them works any more, yet no
    // caller sees an error.
    server.restart();
    for i in 0..10u32 {
        region.set(&format!("after-{i}"), &i).unwrap();
        assert_eq!(region.get::<u32>(&format!("after-{i}")).unwrap(), Some(i));
    }
}

fn lock_backend(server: &RedisServer, extra: &[(&str, &str)]) -> RedisBackend {
    let mut args = vec![("distributed_lock", "true")];
    args.extend_from_slice(extra);
    backend_on(&server.url(), &args)
}

#[test]
fn lock_uses_the_lock_prefixed_key_and_excludes_other_holders() {
    let server = RedisServer::shared();
    let mut bare = server.client();
    let one = lock_backend(server, &[("lock_timeout", "10")]);
    let other = lock_backend(server, &[("lock_blocking_timeout", "0.2")]);
    let key = unique("locked");

    let a = one.get_mutex(&key).expect("distributed_lock gives a mutex");
    assert!(!exists(&mut bare, &format!("_lock{key}")));
    assert!(a.try_acquire().unwrap());
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("_lock{key}"))
        .query(&mut bare)
        .unwrap();
    assert!(
        (9_000..=10_000).contains(&pttl),
        "lock key `_lock{key}` with lock_timeout, got {pttl}"
    );

    let b = other.get_mutex(&key).unwrap();
    assert!(exists(&mut bare, &format!("_lock{key}")));
    assert!(!b.try_acquire().unwrap());
    let started = Instant::now();
    assert!(
        !acquire_waiting(&*b).unwrap(),
        "a waiting acquire gives up after lock_blocking_timeout"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    a.release().unwrap();
    assert!(!exists(&mut bare, &format!("_lock{key}")));
    assert!(b.try_acquire().unwrap());
    b.release().unwrap();

    // Releasing what one does not hold is harmless.
    a.release().unwrap();

    let prefixed = lock_backend(server, &[("lock_prefix", "dl:")]);
    let c = prefixed.get_mutex(&key).unwrap();
    assert!(c.try_acquire().unwrap());
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("dl:{key}"))
        .query(&mut bare)
        .unwrap();
    assert!(exists);
    c.release().unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("dl:{key}"))
        .query(&mut bare)
        .unwrap();
    assert!(!exists);

    let plain = backend_on(&server.url(), &[]);
    assert!(
        plain.get_mutex(&key).is_none(),
        "no distributed_lock: no mutex"
    );
}

#[test]
fn waiting_acquire_wakes_soon_after_release_on_another_thread() {
    let server = RedisServer::shared();
    let backend = lock_backend(server, &[("lock_sleep", "0.05")]);
    let key = unique("handoff");
    let holder = backend.get_mutex(&key).unwrap();
    assert!(acquire_waiting(&*holder).unwrap());
    let waiter = {
        let backend = backend.clone();
        let key = key.clone();
        thread::spawn(move || {
            let mutex = backend.get_mutex(&key).unwrap();
            let got = acquire_waiting(&*mutex).unwrap();
            mutex.release().unwrap();
            got
        })
    };
    thread::sleep(Duration::from_millis(100));
    // Released from another thread than the one that acquired it.
    thread::spawn(move || holder.release().unwrap())
        .join()
        .unwrap();
    assert!(waiter.join().unwrap());
}

#[test]
fn an_expired_holder_never_releases_the_next_holders_lock() {
    let server = RedisServer::shared();
    let mut bare = server.client();
    let backend = lock_backend(server, &[("lock_timeout", "0.1")]);
    let key = unique("token");
    let lock_key = format!("_lock{key}");

    let a = backend.get_mutex(&key).unwrap();
    assert!(a.try_acquire().unwrap());
    // Wait for A's lock to expire on the server.
    let started = Instant::now();
    while redis::cmd("EXISTS")
        .arg(&lock_key)
        .query::<bool>(&mut bare)
        .unwrap()
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the lock never expired"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let b = backend.get_mutex(&key).unwrap();
    assert!(b.try_acquire().unwrap(), "B takes the expired lock");
    let b_token: Option<String> = redis::cmd("GET").arg(&lock_key).query(&mut bare).unwrap();

    a.release().unwrap();
    let still: Option<String> = redis::cmd("GET").arg(&lock_key).query(&mut bare).unwrap();
    assert!(still.is_some(), "A's release deleted B's lock");
    assert_eq!(still, b_token);
    assert!(exists(&mut bare, &format!("_lock{key}")));
    b.release().unwrap();
    let gone: Option<String> = redis::cmd("GET").arg(&lock_key).query(&mut bare).unwrap();
    assert_eq!(gone, None, "B's own release deletes its lock");
}

#[test]
fn region_reports_lock_timeout_when_the_lock_stays_held() {
    let server = RedisServer::shared();
    let mut bare = server.client();
    let region = region_on(
        &server.url(),
        &[
            ("distributed_lock", "true"),
            ("lock_blocking_timeout", "0.2"),
        ],
    );
    let key = unique("held-elsewhere");
    redis::cmd("SET")
        .arg(format!("_lock{key}"))
        .arg("somebody else")
        .arg("PX")
        .arg(20_000)
        .exec(&mut bare)
        .unwrap();
    let started = Instant::now();
    match region.get_or_create(&key, || 1u8) {
        Err(Error::LockTimeout { key: locked, .. }) => assert_eq!(locked, key),
        other => panic!("expected Error::LockTimeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// What `tracing` wrote, for tests that look at logs.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn passwords_never_appear_in_debug_output_errors_or_logs() {
    // Every thread's logs (r2d2 connects on its own threads), at every level.
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .expect("this test is the only one of this binary to install a global subscriber");
    let secret = "hunter2";
    let shown = |what: &str, text: String| {
        assert!(!text.contains(secret), "{what} shows the password: {text}");
        text
    };
    let server = RedisServer::shared();
    let dead = format!("127.0.0.1:{}", ports::free_port());
    for url in [
        format!("redis://:{secret}@{dead}/0"),
        format!("redis://user:{secret}@{dead}"),
    ] {
        let config = RegionConfig::new("redis")
            .argument("url", &url)
            .argument("socket_timeout", "0.2");
        let debug = shown("RegionConfig Debug", format!("{config:?}"));
        assert!(debug.contains("<redacted>"), "{debug}");
        let args = Arguments::new("redis", [("url", url.as_str())]);
        shown("Arguments Debug", format!("{args:?} {args:#?}"));
        let backend = RedisBackend::from_arguments(&args).unwrap();
        shown("RedisBackend Debug", format!("{backend:?}"));
        let region = make_region();
        region.configure(config).unwrap();
        let err = region.get::<u8>("k").unwrap_err();
        shown("a connection error", format!("{err} {err:?}"));
    }
    // The password argument, against a real server that has none (AUTH fails).
    let config = RegionConfig::new("redis")
        .argument("url", server.url())
        .argument("username", "someone")
        .argument("password", secret);
    shown("RegionConfig Debug", format!("{config:?}"));
    let region = make_region();
    region.configure(config).unwrap();
    let err = region.get::<u8>("k").unwrap_err();
    shown("an AUTH error", format!("{err} {err:?}"));

    // Malformed URLs with a password: the configure error hides it.
    for (backend, argument, url) in [
        ("redis", "url", format!("redis://:{secret}@host:notaport")),
        ("redis", "url", format!("http://user:{secret}@host:6379")),
        (
            "redis_cluster",
            "url",
            format!("redis://{dead},redis://u:{secret}@host:notaport"),
        ),
        (
            "redis_sentinel",
            "sentinels",
            format!("redis://u:{secret}@host:notaport"),
        ),
    ] {
        let err = make_region()
            .configure(RegionConfig::new(backend).argument(argument, &url))
            .unwrap_err();
        let text = shown("a configure error", format!("{err} {err:?}"));
        assert!(
            matches!(&err, Error::InvalidArgument { argument: named, .. } if named == argument),
            "{text}"
        );
        assert!(text.contains("<redacted>"), "{text}");
    }
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("redis"),
        "the failures above were logged: {logs}"
    );
    shown("the logs", logs);
}

/// A recursive type, as trees in applications are.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Nested(Vec<Nested>);

#[test]
fn a_value_nested_too_deep_is_a_miss_and_a_warning_not_a_stack_overflow() {
    use tracing_subscriber::util::SubscriberInitExt;
    let server = RedisServer::shared();
    let key = unique("deep");
    // 10_000 arrays inside each other: written by another program, or by a newer one.
    let mut bytes = br#"{"ct":1.0,"v":2}|"#.to_vec();
    bytes.extend(std::iter::repeat_n(0x91u8, 9_999));
    bytes.push(0x90);
    redis::cmd("SET")
        .arg(&key)
        .arg(bytes)
        .exec(&mut server.client())
        .unwrap();
    let url = server.url();
    // On a 2 MiB thread, Rust's default for spawned threads.
    let (value, logs) = thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let logs = CapturedLogs::default();
            let writer = logs.clone();
            let _guard = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .set_default();
            let region = region_on(&url, &[]);
            let value = region.get::<Nested>(&key).unwrap();
            let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
            (value, logs)
        })
        .unwrap()
        .join()
        .expect("decoding a deep value must not crash the thread");
    assert_eq!(value, None, "too deep is a miss");
    assert!(
        logs.contains("WARN") && logs.contains("depth limit exceeded"),
        "a warning says why: {logs}"
    );
}

#[test]
fn pool_size_is_another_name_for_connection_pool() {
    for name in ["connection_pool", "pool_size"] {
        // An own server, so that its client count is this region's.
        let server = RedisServer::start();
        let region = Arc::new(region_on(&server.url(), &[(name, "2")]));
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (region, barrier) = (region.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    for i in 0..100u32 {
                        region.set(&format!("pool-{t}-{i}"), &i).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut bare = server.client();
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut bare).unwrap();
        // Ours, plus the bare connection asking.
        let pooled = clients.lines().count() - 1;
        assert!(
            (1..=2).contains(&pooled),
            "{name} = 2: {pooled} connections\n{clients}"
        );
    }
}

/// 8 threads behind a barrier each call `op` `calls` times; returns each call's time and
/// outcome (`true`: Ok), per thread.
fn timed_calls(
    region: &Arc<CacheRegion>,
    calls: usize,
    op: fn(&CacheRegion, usize) -> bool,
) -> Vec<Vec<(Duration, bool)>> {
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (region, barrier) = (region.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                (0..calls)
                    .map(|i| {
                        let started = Instant::now();
                        let ok = op(&region, i);
                        (started.elapsed(), ok)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn a_server_found_down_fails_fast_for_dead_retry_then_is_used_again() {
    let socket_timeout = Duration::from_millis(500);
    let dead_retry = Duration::from_secs(2);
    let mut server = RedisServer::start();
    let region = Arc::new(region_on(
        &server.url(),
        &[("socket_timeout", "0.5"), ("dead_retry", "2")],
    ));
    region.set("k", &1u32).unwrap();
    let get = |region: &CacheRegion, _: usize| region.get::<u32>("k").is_ok();

    for (how, hang) in [("hung (SIGSTOP)", true), ("killed", false)] {
        if hang {
            server.freeze(true);
        } else {
            server.stop();
        }
        let started = Instant::now();
        let calls = timed_calls(&region, 10, get);
        let all = started.elapsed();
        for thread_calls in &calls {
            assert!(
                thread_calls.iter().all(|(_, ok)| !ok),
                "{how}: every call fails"
            );
            // The first call of a thread may pay the timeout (they all start at once); the
            // ones after it find the server marked down.
            let (first, rest) = thread_calls.split_first().unwrap();
            assert!(
                first.0 < socket_timeout * 3,
                "{how}: first call {:?}",
                first.0
            );
            for (took, _) in rest {
                assert!(
                    *took < socket_timeout / 5,
                    "{how}: a call after the failure took {took:?}: {thread_calls:?}"
                );
            }
        }
        assert!(
            all < socket_timeout * 3,
            "{how}: 80 calls took {all:?}, more than one failed round trip"
        );
        // The error says why.
        let err = region.get::<u32>("k").unwrap_err().to_string();
        assert!(
            err.contains("dead_retry") && err.contains(&server.addr()),
            "{err}"
        );

        // The server comes back; once dead_retry has passed, calls succeed again, with no
        // restart of the program.
        if hang {
            server.freeze(false);
        } else {
            server.restart();
            region.set("k", &1u32).ok();
        }
        let back = Instant::now();
        while let Err(error) = region.get::<u32>("k") {
            assert!(
                back.elapsed() < dead_retry + socket_timeout * 4,
                "{how}: not used again after dead_retry: {error}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        region.set("k", &1u32).unwrap();
        let calls = timed_calls(&region, 10, get);
        assert!(
            calls.iter().flatten().all(|(_, ok)| *ok),
            "{how}: after recovery every call succeeds"
        );
    }
}
