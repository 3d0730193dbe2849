//! A memcached hit from async code against the same hit from sync code and the bare
//! client's `get`, **interleaved**: on a shared VM whose other tenants move single figures
//! by 2x from one minute to the next, criterion's groups (each subject measured in its own
//! seconds-long window) compare moments as much as subjects. Here each round times a
//! batch of hits of every subject back to back, in a rotating order, and the ratio is
//! taken within each round; the report is the median (and quartiles) over the rounds.
//!
//! Run with `cargo bench -p dogpile-tests --bench memcached_async_interleaved` (starts its own memcached);
//! figures in BENCHMARKS.md.

#[path = "../tests/support/memcached_server.rs"]
mod memcached_server;
#[path = "../tests/support/ports.rs"]
mod ports;

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dogpile::backend::CacheBackend;
use dogpile::{CacheRegion, RegionConfig};
use memcached_server::MemcachedServer;

const KEY: &str = "interleaved:user|42";
const ROUNDS: usize = 400;
const BATCH: u32 = 200;

fn value() -> String {
    "user forty-two, a value of a few dozen bytes".to_string()
}

/// The bare client: `get <key>` on one persistent connection, sent in one write.
fn bare_get(conn: &mut BufReader<TcpStream>, request: &[u8]) -> usize {
    conn.get_mut().write_all(request).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    let len: usize = line.trim_end().rsplit(' ').next().unwrap().parse().unwrap();
    let mut data = vec![0; len + 2];
    conn.read_exact(&mut data).unwrap();
    line.clear();
    conn.read_line(&mut line).unwrap();
    assert_eq!(line, "END\r\n");
    len
}

/// A subject of the measurement: times a batch of its hits, and returns the per-hit time.
type Subject<'a> = Box<dyn FnMut() -> Duration + 'a>;

/// Per-hit time of `BATCH` hits.
fn batch(mut hit: impl FnMut()) -> Duration {
    let started = Instant::now();
    for _ in 0..BATCH {
        hit();
    }
    started.elapsed() / BATCH
}

fn quartiles(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

fn main() {
    let server = MemcachedServer::start();
    let region = CacheRegion::new();
    region
        .configure(RegionConfig::new("memcached").argument("url", server.addr()))
        .unwrap();
    region.set(KEY, &value()).unwrap();
    let mut bare = BufReader::new(TcpStream::connect(server.addr()).unwrap());
    bare.get_ref().set_nodelay(true).unwrap();
    let request = format!("get {KEY}\r\n").into_bytes();
    // One `block_on` of a current-thread runtime per hit, as a task awaiting it would.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The backend alone, without the region: its blocking client and its async twin.
    let backend = dogpile::backends::MemcachedBackend::from_arguments(
        &dogpile::backend::Arguments::new("memcached", [("url", server.addr())]),
    )
    .unwrap();
    let twin = backend.async_twin().unwrap();
    // Each subject times a batch of its hits: the per-hit time.
    let mut subjects: [(&str, Subject<'_>); 6] = [
        (
            "bare get, one connection",
            Box::new(|| batch(|| assert!(bare_get(&mut bare, black_box(&request)) > 0))),
        ),
        (
            "sync region get_or_create",
            Box::new(|| {
                batch(|| {
                    black_box(region.get_or_create(black_box(KEY), value).unwrap());
                })
            }),
        ),
        (
            "async region get_or_create_async",
            Box::new(|| {
                batch(|| {
                    let hit = region.get_or_create_async(black_box(KEY), || async { value() });
                    black_box(runtime.block_on(hit).unwrap());
                })
            }),
        ),
        (
            "the same, awaited in a loop (one block_on)",
            Box::new(|| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..BATCH {
                        let hit = region.get_or_create_async(black_box(KEY), || async { value() });
                        black_box(hit.await.unwrap());
                    }
                    started.elapsed() / BATCH
                })
            }),
        ),
        (
            "backend get (blocking client)",
            Box::new(|| batch(|| assert!(backend.get(black_box(KEY)).unwrap().is_some()))),
        ),
        (
            "async twin get, awaited in a loop",
            Box::new(|| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..BATCH {
                        assert!(twin.get(black_box(KEY)).await.unwrap().is_some());
                    }
                    started.elapsed() / BATCH
                })
            }),
        ),
    ];
    // Warm up every subject (connections opened, code paths hot).
    for (_, hit) in &mut subjects {
        hit();
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); subjects.len()];
    for round in 0..ROUNDS {
        for i in 0..subjects.len() {
            let at = (round + i) % subjects.len();
            times[at].push(subjects[at].1().as_secs_f64() * 1e6);
        }
    }
    println!(
        "{ROUNDS} rounds of {BATCH} hits per subject, interleaved; per-hit µs (p25 / median / p75)"
    );
    for ((name, _), times) in subjects.iter().zip(&times) {
        let (p25, p50, p75) = quartiles(times.clone());
        println!("  {name:<34} {p25:7.2} {p50:7.2} {p75:7.2}");
    }
    for (name, of, to) in [
        ("async / sync", 2, 1),
        ("async in a loop / sync", 3, 1),
        ("async twin / blocking client", 5, 4),
        ("sync / bare", 1, 0),
        ("async / bare", 2, 0),
    ] {
        let ratios: Vec<f64> = times[of]
            .iter()
            .zip(&times[to])
            .map(|(a, b)| a / b)
            .collect();
        let (p25, p50, p75) = quartiles(ratios);
        println!("  ratio {name:<28} {p25:7.3} {p50:7.3} {p75:7.3}   (per round)");
    }
}
