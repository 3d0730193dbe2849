//! A region's metrics at `/metrics`, in Prometheus's text format.
//!
//! dogpile counts every region's hits, misses, stale values served, creations, errors and
//! lock waits on the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`, on by
//! default), labelled with the region's name. An application installs an exporter before
//! the cache is first used, here `metrics-exporter-prometheus`, and serves what it renders:
//!
//! ```rust,ignore
//! let prometheus = PrometheusBuilder::new().install_recorder()?;      // 1. the recorder
//! let app = Router::new()
//!     .route("/metrics", get(move || async move { prometheus.render() })); // 2. the route
//! ```
//!
//! - `GET /squares/{n}` answers `n * n` through a memoized async function on the region
//!   `squares` (the first request for `n` is a miss, later ones hits).
//! - `GET /metrics` is what a Prometheus server scrapes: `dogpile_hits_total{region="squares"}`,
//!   `dogpile_misses_total{region="squares"}`, ...
//!
//! ```sh
//! cargo run -p dogpile-tests --example prometheus
//! curl localhost:3001/squares/12
//! curl localhost:3001/metrics
//! ```
//!
//! `tests/prometheus_example.rs` serves [`app`] and scrapes it.

use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use once_cell::sync::Lazy;

/// The cache of squares, named: the name is the `region` label of its metrics.
pub static SQUARES: Lazy<CacheRegion> =
    Lazy::new(|| CacheRegion::builder().name("squares").build());

/// A slow computation, cached on its argument.
#[cache_on_arguments(region = "SQUARES")]
pub async fn square(n: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(20)).await;
    n * n
}

/// The service: the cached route and the Prometheus scrape endpoint.
pub fn app(prometheus: PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/squares/{n}",
            get(|Path(n): Path<u64>| async move { square(n).await.to_string() }),
        )
        .route("/metrics", get(move || async move { prometheus.render() }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Before the cache is first used: a region registers its metrics with the recorder in
    // force at its first counted operation.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    SQUARES.configure(RegionConfig::new("memory").expiration_time(Duration::from_secs(60)))?;
    let port = std::env::var("PORT").unwrap_or_else(|_| "3001".to_owned());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(prometheus)).await?;
    Ok(())
}
