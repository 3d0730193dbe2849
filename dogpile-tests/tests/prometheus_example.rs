//! The Prometheus example (`examples/prometheus.rs`): its router is served on a free loopback
//! port, a cached route is requested, and `/metrics` is scraped over HTTP for the region's
//! counters.

#[allow(dead_code)] // the example's `main` is not called here
#[path = "../examples/prometheus.rs"]
mod example;

use std::time::Duration;

use dogpile::RegionConfig;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One HTTP/1.1 GET, the connection closed after the reply: the reply's body.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{path}: {reply}");
    let (_, body) = reply.split_once("\r\n\r\n").unwrap();
    body.to_owned()
}

/// The value of the sample `name{region="squares"}` in a Prometheus text page.
fn sample(page: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{region=\"squares\"}} ");
    page.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map(|value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn metrics_are_scraped_with_the_regions_hits_and_misses() {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test process");
    example::SQUARES
        .configure(RegionConfig::new("memory").expiration_time(Duration::from_secs(60)))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, example::app(prometheus))
            .await
            .unwrap()
    });

    assert_eq!(get(addr, "/squares/12").await, "144"); // a miss, and a creation
    assert_eq!(get(addr, "/squares/12").await, "144"); // a hit
    assert_eq!(get(addr, "/squares/12").await, "144"); // a hit
    assert_eq!(get(addr, "/squares/5").await, "25"); // a miss

    let page = get(addr, "/metrics").await;
    assert_eq!(sample(&page, "dogpile_hits_total"), Some(2.0), "{page}");
    assert_eq!(sample(&page, "dogpile_misses_total"), Some(2.0), "{page}");
    assert_eq!(
        sample(&page, "dogpile_creations_total"),
        Some(2.0),
        "{page}"
    );
    assert!(page.contains("# TYPE dogpile_hits_total counter"), "{page}");
    let stats = example::SQUARES.stats();
    assert_eq!((stats.hits, stats.misses), (2, 2));
}
