//! Cache hits on the redis and memcached backends against the bare client's GET on one
//! persistent connection to the same server (SPEC section 7), and `get_multi` of 100 keys
//! against 100 single gets. Starts its own servers on free loopback ports.
//! Run with `cargo bench --bench network_hits`; figures in BENCHMARKS.md.

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

/// memcached's text protocol `get` on one persistent connection: the bare client.
fn memcached_get(conn: &mut BufReader<TcpStream>, key: &str) -> Option<Vec<u8>> {
    write!(conn.get_mut(), "get {key}\r\n").unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    if line == "END\r\n" {
        return None;
    }
    let len: usize = line.trim_end().rsplit(' ').next().unwrap().parse().unwrap();
    let mut data = vec![0; len + 2];
    std::io::Read::read_exact(conn, &mut data).unwrap();
    data.truncate(len);
    line.clear();
    conn.read_line(&mut line).unwrap();
    Some(data)
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

fn memcached(c: &mut Criterion) {
    let server = MemcachedServer::start();
    let mut bare = BufReader::new(TcpStream::connect(server.addr()).unwrap());
    bare.get_ref().set_nodelay(true).unwrap();
    let config = RegionConfig::new("memcached").argument("url", server.addr());
    compare(c, "memcached hit", config, || {
        assert!(
            memcached_get(&mut bare, black_box(KEY)).is_some(),
            "the bare client reads the same key"
        );
    });
}

criterion_group!(benches, redis, memcached);
criterion_main!(benches);
