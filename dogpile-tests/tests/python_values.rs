//! Python's dogpile.cache (the real package, Debian's) and a Rust region share values on
//! one real redis: what Python stores (with msgpack, `make_region(serializer=msgpack.packb,
//! deserializer=msgpack.unpackb)`) Rust reads, and what Rust stores Python reads, a value
//! carrying `early_refresh`'s extra metadata key `d` included (issue 18, item 5).

#[path = "support/ports.rs"]
mod ports;
#[path = "support/python.rs"]
mod python;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::time::Duration;

use dogpile::{CacheRegion, RegionConfig};
use redis_server::RedisServer;
use serde::{Deserialize, Serialize};

/// The Python side: a msgpack region on the test redis, then `set KEY JSON`, `get KEY`
/// (prints the value as JSON, or NO_VALUE) or `meta KEY` (prints the stored metadata, as
/// JSON, read from the raw bytes).
const SCRIPT: &str = r#"
import json, sys
import msgpack
from dogpile.cache import make_region
from dogpile.cache.api import NO_VALUE

port, action, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
region = make_region(serializer=msgpack.packb, deserializer=msgpack.unpackb).configure(
    "dogpile.cache.redis",
    expiration_time=600,
    arguments={"host": "127.0.0.1", "port": port},
)
if action == "set":
    region.set(key, json.loads(sys.argv[4]))
elif action == "get":
    value = region.get(key)
    print("NO_VALUE" if value is NO_VALUE else json.dumps(value, sort_keys=True))
elif action == "meta":
    stored = region.backend.get_serialized(key)
    print(stored.split(b"|", 1)[0].decode())
"#;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct User {
    id: u64,
    name: String,
    tags: Vec<String>,
}

fn py(server: &RedisServer, args: &[&str]) -> String {
    let port = server.port().to_string();
    let mut all = vec![port.as_str()];
    all.extend_from_slice(args);
    python::run(SCRIPT, &all)
}

fn region(server: &RedisServer, config: impl FnOnce(RegionConfig) -> RegionConfig) -> CacheRegion {
    let region = CacheRegion::new();
    region
        .configure(config(
            RegionConfig::new("redis")
                .argument("url", server.url())
                .expiration_time(Duration::from_secs(600)),
        ))
        .unwrap();
    region
}

#[test]
fn rust_reads_what_python_stores() {
    let server = RedisServer::shared();
    let rust = region(server, |c| c);
    py(
        server,
        &[
            "set",
            "py:user",
            r#"{"id": 5, "name": "ed", "tags": ["a", "b"]}"#,
        ],
    );
    let user: Option<User> = rust.get("py:user").unwrap();
    let expected = User {
        id: 5,
        name: "ed".into(),
        tags: vec!["a".into(), "b".into()],
    };
    assert_eq!(user, Some(expected.clone()));
    // Fresh by Python's creation time: get_or_create does not run the creator.
    let got = rust
        .get_or_create("py:user", || User {
            id: 0,
            name: "created in rust".into(),
            tags: vec![],
        })
        .unwrap();
    assert_eq!(got, expected);
}

#[test]
fn python_reads_what_rust_stores_early_refresh_metadata_included() {
    let server = RedisServer::shared();
    let rust = region(server, |c| c.early_refresh(1.0));
    let user = User {
        id: 7,
        name: "ann".into(),
        tags: vec!["x".into()],
    };
    rust.delete("rs:user").unwrap();
    let stored = rust.get_or_create("rs:user", || user.clone()).unwrap();
    assert_eq!(stored, user);
    assert_eq!(
        py(server, &["get", "rs:user"]),
        r#"{"id": 7, "name": "ann", "tags": ["x"]}"#
    );
    // The creation time rides along as an extra metadata key, which Python keeps and ignores.
    let metadata: serde_json::Value =
        serde_json::from_str(&py(server, &["meta", "rs:user"])).unwrap();
    assert_eq!(metadata["v"], 2, "{metadata}");
    assert!(metadata["ct"].as_f64().is_some(), "{metadata}");
    assert!(
        metadata["d"].as_f64().is_some_and(|d| d >= 0.0),
        "{metadata}"
    );
}
