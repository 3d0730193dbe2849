//! Cache hits on the redis and memcached backends against the bare client's GET on one
//! persistent connection to the same server (SPEC section 7), and `get_multi` of 100 keys
//! against 100 single gets; a redis and a memcached hit from async code against the sync
//! hit and the bare GET. Starts its own servers on free loopback ports.
//! Run with `cargo bench -p dogpile-tests --bench network_hits`; figures in BENCHMARKS.md.

#[path = "../tests/support/memcached_server.rs"]
mod memcached_server;
#[path = "../tests/support/ports.rs"]
mod ports;
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use criterion::{criterion_group, criterion_main, Criterion};
use dogpile::{CacheRegion, RegionConfig};
use memcached_server::MemcachedServer;
use redis_server::RedisServer;

const KEY: &str = "network_hits:user|42";

fn value() -> String {
    "user forty-two, a value of a few dozen bytes".to_string()
}

fn region(config: RegionConfig) -> CacheRegion {
    let region = CacheRegion::new();
    region.configure(config).unwrap();
    region
}

/// memcached's text protocol `get k1 k2 ...` on one persistent connection: the bare
/// client, for one key or many in one round trip; the values found. The request goes out
/// in one write (`write!` on the socket itself would send three packets on a
/// `TCP_NODELAY` socket, a handicap no real client has).
fn memcached_get(conn: &mut BufReader<TcpStream>, keys: &[&str]) -> Vec<Vec<u8>> {
    let mut request = String::from("get");
    for key in keys {
        request.push(' ');
        request.push_str(key);
    }
    request.push_str("\r\n");
    conn.get_mut().write_all(request.as_bytes()).unwrap();
    let mut values = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        conn.read_line(&mut line).unwrap();
        if line == "END\r\n" {
            return values;
        }
        let len: usize = line.trim_end().rsplit(' ').next().unwrap().parse().unwrap();
        let mut data = vec![0; len + 2];
        std::io::Read::read_exact(conn, &mut data).unwrap();
        data.truncate(len);
        values.push(data);
    }
}

/// The region's hit and multi-key benchmarks for one backend, after `bare`'s single GET.
fn compare(c: &mut Criterion, group: &str, config: RegionConfig, mut bare: impl FnMut()) {
    let dogpile = region(config);
    dogpile.set(KEY, &value()).unwrap();
    let keys: Vec<String> = (0..100)
        .map(|i| format!("network_hits:multi|{i}"))
        .collect();
    let items: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), value())).collect();
    dogpile.set_multi(&items).unwrap();

    let mut group = c.benchmark_group(group);
    group.bench_function("bare get, one connection", |b| b.iter(&mut bare));
    group.bench_function("region get_or_create", |b| {
        b.iter(|| dogpile.get_or_create(black_box(KEY), value).unwrap())
    });
    group.bench_function("region get_multi, 100 keys", |b| {
        b.iter(|| dogpile.get_multi::<String, _>(black_box(&keys)).unwrap())
    });
    group.bench_function("region get, 100 single keys", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| dogpile.get::<String>(k).unwrap())
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

fn redis(c: &mut Criterion) {
    let server = RedisServer::start();
    let mut bare = server.client();
    let config = RegionConfig::new("redis").argument("url", server.url());
    compare(c, "redis hit", config, || {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(black_box(KEY))
            .query(&mut bare)
            .unwrap();
        assert!(bytes.is_some(), "the bare client reads the same key");
    });
}

/// A hit from async code against the same hit from sync code and `bare`'s GET, in one
/// group: the async region reaches the server on the backend's own async connections
/// (one `block_on` of a current-thread runtime per iteration, as a task awaiting it
/// would).
fn async_against_sync(
    c: &mut Criterion,
    group: &str,
    config: RegionConfig,
    mut bare: impl FnMut(),
) {
    let dogpile = region(config);
    dogpile.set(KEY, &value()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group(group);
    group.bench_function("bare get, one connection", |b| b.iter(&mut bare));
    group.bench_function("sync region get_or_create", |b| {
        b.iter(|| dogpile.get_or_create(black_box(KEY), value).unwrap())
    });
    group.bench_function("async region get_or_create_async", |b| {
        b.iter(|| {
            runtime
                .block_on(dogpile.get_or_create_async(black_box(KEY), || async { value() }))
                .unwrap()
        })
    });
    group.finish();
}

fn redis_async(c: &mut Criterion) {
    let server = RedisServer::start();
    let mut bare = server.client();
    let config = RegionConfig::new("redis").argument("url", server.url());
    async_against_sync(c, "redis async hit", config, || {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(black_box(KEY))
            .query(&mut bare)
            .unwrap();
        assert!(bytes.is_some());
    });
}

/// The same for memcached, whose async region runs on the backend's native async client.
fn memcached_async(c: &mut Criterion) {
    let server = MemcachedServer::start();
    let mut bare = BufReader::new(TcpStream::connect(server.addr()).unwrap());
    bare.get_ref().set_nodelay(true).unwrap();
    let config = RegionConfig::new("memcached").argument("url", server.addr());
    async_against_sync(c, "memcached async hit", config, || {
        assert_eq!(memcached_get(&mut bare, black_box(&[KEY])).len(), 1);
    });
}

fn memcached(c: &mut Criterion) {
    let server = MemcachedServer::start();
    let mut bare = BufReader::new(TcpStream::connect(server.addr()).unwrap());
    bare.get_ref().set_nodelay(true).unwrap();
    let config = RegionConfig::new("memcached").argument("url", server.addr());
    compare(c, "memcached hit", config.clone(), || {
        assert!(
            memcached_get(&mut bare, black_box(&[KEY])).len() == 1,
            "the bare client reads the same key"
        );
    });

    // Where a region's get_multi spends its time: the bare client's one multi-key get,
    // and the backend's pipelined one without the region's decoding.
    let keys: Vec<String> = (0..100)
        .map(|i| format!("network_hits:multi|{i}"))
        .collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let backend = dogpile::backends::MemcachedBackend::from_arguments(
        &dogpile::backend::Arguments::new("memcached", [("url", server.addr())]),
    )
    .unwrap();
    let mut group = c.benchmark_group("memcached multi");
    group.bench_function("bare get of 100 keys, one connection", |b| {
        b.iter(|| assert_eq!(memcached_get(&mut bare, black_box(&key_refs)).len(), 100))
    });
    group.bench_function("backend get_multi, 100 keys", |b| {
        b.iter(|| {
            let values =
                dogpile::backend::CacheBackend::get_multi(&backend, black_box(&key_refs)).unwrap();
            assert!(values.iter().all(Option::is_some));
        })
    });
    group.finish();
}

criterion_group!(benches, redis, redis_async, memcached, memcached_async);
criterion_main!(benches);
