//! A small HTTP service on axum with a cached async handler.
//!
//! - `GET /users/{id}` loads a user through the region's dogpile lock: the first request
//!   runs the (simulated, 200 ms) database query, later ones are cache hits, and many
//!   concurrent requests for a missing user run the query once. The `x-cache` header says
//!   `miss` when this request ran the query, `hit` otherwise.
//! - `DELETE /users/{id}` invalidates the cached user.
//!
//! The region is on redis when `REDIS_URL` is set (`REDIS_URL=redis://127.0.0.1:6379`), on
//! the memory backend otherwise. The service listens on 127.0.0.1, port `PORT` (3000 by
//! default; `PORT=0` picks a free one), prints its address, and stops on Ctrl-C.
//!
//! ```sh
//! cargo run -p dogpile-tests --example axum_service
//! curl -i localhost:3000/users/5            # 200 ms, x-cache: miss
//! curl -i localhost:3000/users/5            # at once, x-cache: hit
//! curl -i -X DELETE localhost:3000/users/5  # 204: the next GET loads again
//! ```
//!
//! `tests/axum_example.rs` serves [`app`] and checks all of this over HTTP.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dogpile::{CacheRegion, RegionConfig};
use once_cell::sync::Lazy;
use serde::{Deserialize, Serialize};

/// The cache of users, configured in `main` (from `REDIS_URL`).
pub static REGION: Lazy<CacheRegion> = Lazy::new(|| CacheRegion::builder().name("users").build());

/// How long a cached user stays fresh.
const EXPIRATION: Duration = Duration::from_secs(60);

/// The region's configuration: redis at `redis_url` (with a distributed dogpile lock, so
/// that several instances of the service run one query per user between them), or memory.
pub fn region_config(redis_url: Option<String>) -> RegionConfig {
    match redis_url {
        Some(url) => RegionConfig::new("redis")
            .argument("url", url)
            .argument("distributed_lock", true),
        None => RegionConfig::new("memory"),
    }
    .expiration_time(EXPIRATION)
}

/// A user, as the service returns it (JSON) and the cache stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: u64,
    /// The user's name.
    pub name: String,
}

/// Where users come from (a database in a real service).
pub trait UserStore: Send + Sync + 'static {
    /// Loads one user.
    fn load_user(&self, id: u64) -> impl Future<Output = User> + Send;
}

/// A database that answers every query after `latency`, and counts its queries.
pub struct SlowDb {
    latency: Duration,
    queries: AtomicUsize,
}

impl SlowDb {
    /// A database whose queries take `latency`.
    pub fn new(latency: Duration) -> Self {
        SlowDb {
            latency,
            queries: AtomicUsize::new(0),
        }
    }

    /// How many queries it has answered.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl UserStore for SlowDb {
    async fn load_user(&self, id: u64) -> User {
        self.queries.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        User {
            id,
            name: format!("user {id}"),
        }
    }
}

/// Says whether this request ran the query (`miss`) or not (`hit`).
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

fn user_key(id: u64) -> String {
    format!("user:{id}")
}

/// The service's routes, on `REGION` (which must be configured) and `db`.
pub fn app<D: UserStore>(db: Arc<D>) -> Router {
    Router::new()
        .route("/users/{id}", get(get_user::<D>).delete(delete_user))
        .with_state(db)
}

async fn get_user<D: UserStore>(State(db): State<Arc<D>>, Path(id): Path<u64>) -> Response {
    let loaded = AtomicBool::new(false);
    // The dogpile lock: of many concurrent requests for a missing (or expired) user, one
    // runs the query; the others wait for its result without blocking a thread (or, for an
    // expired user, get the old value at once).
    let user = REGION
        .get_or_create_async(&user_key(id), || async {
            loaded.store(true, Ordering::SeqCst);
            db.load_user(id).await
        })
        .await;
    match user {
        Ok(user) => {
            let cache = if loaded.load(Ordering::SeqCst) {
                "miss"
            } else {
                "hit"
            };
            let body = serde_json::to_string(&user).expect("a User serializes");
            (
                [(header::CONTENT_TYPE, "application/json"), (X_CACHE, cache)],
                body,
            )
                .into_response()
        }
        Err(error) => cache_error(error),
    }
}

async fn delete_user(Path(id): Path<u64>) -> Response {
    match REGION.delete_async(&user_key(id)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => cache_error(error),
    }
}

fn cache_error(error: dogpile::Error) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cache: {error}\n"),
    )
        .into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    REGION.configure(region_config(std::env::var("REDIS_URL").ok()))?;
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT={port}: not a port"))?,
        Err(_) => 3000,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "listening on http://{} (cache: {})",
        listener.local_addr()?,
        REGION.backend_name().unwrap_or_default()
    );
    let db = Arc::new(SlowDb::new(Duration::from_millis(200)));
    axum::serve(listener, app(db))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("stopped");
    Ok(())
}
