//! The axum example (`examples/axum_service.rs`) serves real HTTP requests: its router is
//! served on a free loopback port and spoken to over TCP with a minimal HTTP/1.1 client.
//! On the memory backend (the example's default when `REDIS_URL` is unset). And the built
//! example itself, as a process: on memory and on a real redis (`REDIS_URL`), answering
//! requests and stopping on Ctrl-C (SIGINT).

#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;
#[allow(dead_code)] // the example's `main` is not called here
#[path = "../examples/axum_service.rs"]
mod service;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::Router;
use redis_server::RedisServer;
use service::{SlowDb, User, UserStore, REGION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Barrier};

/// How long any one step may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(20);

/// Serves `router` on a free loopback port, with the example's region on memory.
async fn serve(router: Router) -> SocketAddr {
    static CONFIGURE: Once = Once::new();
    CONFIGURE.call_once(|| {
        REGION
            .configure(service::region_config(None))
            .expect("the example's memory region configures");
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// A parsed HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn user(&self) -> User {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`), read to the end.
async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(PATIENCE, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no complete reply within {PATIENCE:?}"));
    let raw = String::from_utf8(raw).expect("a UTF-8 reply");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a reply head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("a header line");
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    let reply = Reply {
        status,
        headers,
        body: body.to_owned(),
    };
    if let Some(length) = reply.header("content-length") {
        assert_eq!(
            length.parse::<usize>().unwrap(),
            reply.body.len(),
            "{reply:?}"
        );
    }
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_request_loads_the_second_is_a_hit_and_delete_invalidates() {
    const LATENCY: Duration = Duration::from_millis(200);
    let db = Arc::new(SlowDb::new(LATENCY));
    let addr = serve(service::app(db.clone())).await;
    let expected = User {
        id: 1,
        name: "user 1".into(),
    };

    let started = Instant::now();
    let first = request(addr, "GET", "/users/1").await;
    assert_eq!(first.user(), expected);
    assert_eq!(first.header("x-cache"), Some("miss"));
    assert!(
        started.elapsed() >= LATENCY,
        "the first request ran the query"
    );
    assert_eq!(db.queries(), 1);

    let second = request(addr, "GET", "/users/1").await;
    assert_eq!(second.user(), expected);
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(db.queries(), 1, "a hit runs no query");

    let deleted = request(addr, "DELETE", "/users/1").await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert_eq!(REGION.get_async::<User>("user:1").await.unwrap(), None);

    let third = request(addr, "GET", "/users/1").await;
    assert_eq!(third.user(), expected);
    assert_eq!(third.header("x-cache"), Some("miss"));
    assert_eq!(db.queries(), 2, "after DELETE the user is loaded again");

    let fourth = request(addr, "GET", "/users/1").await;
    assert_eq!(fourth.header("x-cache"), Some("hit"));
    assert_eq!(db.queries(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_id_is_a_client_error_and_runs_no_query() {
    let db = Arc::new(SlowDb::new(Duration::ZERO));
    let addr = serve(service::app(db.clone())).await;
    let reply = request(addr, "GET", "/users/abc").await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(db.queries(), 0);
}

/// A store whose queries wait until the test opens the gate, and are counted.
struct GatedDb {
    queries: AtomicUsize,
    open: watch::Sender<bool>,
}

impl UserStore for GatedDb {
    async fn load_user(&self, id: u64) -> User {
        self.queries.fetch_add(1, SeqCst);
        let mut open = self.open.subscribe();
        open.wait_for(|open| *open).await.unwrap();
        User {
            id,
            name: format!("gated {id}"),
        }
    }
}

/// Polls `done` until it holds, failing after `PATIENCE`.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_for_a_cold_id_run_the_query_once() {
    const REQUESTS: usize = 50;
    for round in 0..3u64 {
        let id = 1000 + round;
        let db = Arc::new(GatedDb {
            queries: AtomicUsize::new(0),
            open: watch::Sender::new(false),
        });
        // Counts requests that reached the router, so that the gate opens only once all
        // 50 are in the handler (waiting on the dogpile lock, or the one running the query).
        let arrived = Arc::new(AtomicUsize::new(0));
        let counter = arrived.clone();
        let router =
            service::app(db.clone()).layer(middleware::from_fn(move |req: Request, next: Next| {
                counter.fetch_add(1, SeqCst);
                next.run(req)
            }));
        let addr = serve(router).await;

        let barrier = Arc::new(Barrier::new(REQUESTS));
        let clients: Vec<_> = (0..REQUESTS)
            .map(|_| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    request(addr, "GET", &format!("/users/{id}")).await
                })
            })
            .collect();
        until("all requests in the handler and one query", || {
            let queries = db.queries.load(SeqCst);
            assert!(
                queries <= 1,
                "round {round}: {queries} queries for one cold id"
            );
            arrived.load(SeqCst) == REQUESTS && queries == 1
        })
        .await;
        db.open.send_replace(true);

        let mut misses = 0;
        for client in clients {
            let reply = client.await.unwrap();
            assert_eq!(
                reply.user(),
                User {
                    id,
                    name: format!("gated {id}")
                },
                "round {round}: every request gets the one loaded user"
            );
            if reply.header("x-cache") == Some("miss") {
                misses += 1;
            }
        }
        assert_eq!(db.queries.load(SeqCst), 1, "round {round}: one query");
        assert_eq!(misses, 1, "round {round}: one request ran it");
    }
}

/// The example's binary in `<target>/<profile>/examples`. `cargo test` (the README's test
/// command) builds every example before it runs any test, so there it is up to date; when
/// this file runs alone (`cargo test --test axum_example`) and the binary is missing or
/// older than the example's source, it is built here.
fn example_binary() -> PathBuf {
    static BUILD: Once = Once::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = profile_dir
        .join("examples")
        .join(format!("axum_service{}", std::env::consts::EXE_SUFFIX));
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/axum_service.rs");
    let modified = |path: &PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    BUILD.call_once(|| {
        if modified(&binary) >= modified(&source) {
            return;
        }
        // The features this test was built with, so that cargo reuses its dependencies.
        let features: Vec<&str> = [
            ("file", cfg!(feature = "file")),
            ("memcached", cfg!(feature = "memcached")),
            ("redis", cfg!(feature = "redis")),
            ("tokio", cfg!(feature = "tokio")),
            ("tls", cfg!(feature = "tls")),
            ("serde", cfg!(feature = "serde")),
            ("metrics", cfg!(feature = "metrics")),
            ("log", cfg!(feature = "log")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--example", "axum_service"])
            .args(["--no-default-features", "--features", &features.join(",")])
            .arg("--target-dir")
            .arg(profile_dir.parent().unwrap())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "cargo build --example axum_service: {status}"
        );
    });
    assert!(binary.exists(), "no example binary at {}", binary.display());
    binary
}

/// A running example process and the address it printed.
struct Example {
    child: Child,
    addr: SocketAddr,
}

impl Example {
    /// Starts the example with `PORT=0` and `REDIS_URL` set to `redis_url` (or unset), and
    /// checks that it says which backend it caches on.
    fn start(binary: &PathBuf, redis_url: Option<&str>) -> Example {
        let mut command = Command::new(binary);
        command
            .env("PORT", "0")
            .env_remove("REDIS_URL")
            .stdout(Stdio::piped());
        if let Some(url) = redis_url {
            command.env("REDIS_URL", url);
        }
        let mut child = command.spawn().expect("the example starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first_line = String::new();
        stdout.read_line(&mut first_line).unwrap();
        let addr = first_line
            .strip_prefix("listening on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in the example's first line {first_line:?}"));
        let cache = if redis_url.is_some() {
            "redis"
        } else {
            "memory"
        };
        assert!(
            first_line.contains(&format!("(cache: {cache})")),
            "{first_line:?}"
        );
        child.stdout = Some(stdout.into_inner());
        Example { child, addr }
    }

    /// Sends SIGINT (Ctrl-C) and checks that the example stops cleanly.
    fn interrupt(mut self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the example ignored Ctrl-C");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut rest = String::new();
        std::io::Read::read_to_string(self.child.stdout.as_mut().unwrap(), &mut rest).unwrap();
        assert!(status.success(), "the example exited with {status}");
        assert_eq!(rest.trim(), "stopped");
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_binary_serves_from_memory_and_stops_on_ctrl_c() {
    let binary = example_binary();
    let example = Example::start(&binary, None);
    let first = request(example.addr, "GET", "/users/7").await;
    assert_eq!(first.header("x-cache"), Some("miss"), "{first:?}");
    assert_eq!(first.user().id, 7);
    let second = request(example.addr, "GET", "/users/7").await;
    assert_eq!(second.header("x-cache"), Some("hit"), "{second:?}");
    example.interrupt();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_binary_caches_on_redis_across_processes() {
    let binary = example_binary();
    let server = RedisServer::start();
    let url = server.url();

    let one = Example::start(&binary, Some(&url));
    let first = request(one.addr, "GET", "/users/8").await;
    assert_eq!(first.header("x-cache"), Some("miss"), "{first:?}");
    one.interrupt();

    // A second process on the same redis finds the user there.
    let two = Example::start(&binary, Some(&url));
    let second = request(two.addr, "GET", "/users/8").await;
    assert_eq!(second.header("x-cache"), Some("hit"), "{second:?}");
    assert_eq!(second.user(), first.user());
    let deleted = request(two.addr, "DELETE", "/users/8").await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    two.interrupt();

    let three = Example::start(&binary, Some(&url));
    let third = request(three.addr, "GET", "/users/8").await;
    assert_eq!(
        third.header("x-cache"),
        Some("miss"),
        "DELETE removed it from redis"
    );
    three.interrupt();
}
