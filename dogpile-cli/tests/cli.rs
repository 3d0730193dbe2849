//! The `dogpile` command, run as a built binary against a file store in a temporary
//! directory and a real redis-server on a free loopback port. Values are written by the
//! library itself (a region's `set`).

use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use dogpile::{make_region, CacheRegion, RegionConfig};
use serde_json::Value;

#[path = "../../dogpile-tests/tests/support/memcached_server.rs"]
mod memcached_server;
#[path = "../../dogpile-tests/tests/support/ports.rs"]
mod ports;
#[path = "../../dogpile-tests/tests/support/python.rs"]
mod python;
#[path = "../../dogpile-tests/tests/support/redis_server.rs"]
mod redis_server;

use memcached_server::MemcachedServer;
use redis_server::{RedisCluster, RedisServer};

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
struct User {
    id: u64,
    name: String,
}

fn dogpile(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dogpile"))
        .args(args)
        .env_remove("DOGPILE_CONFIG")
        .output()
        .expect("run the dogpile binary")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited with a code")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

/// The JSON lines of a command's output.
fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

fn sorted_keys(output: &Output) -> Vec<String> {
    let mut keys: Vec<String> = json_lines(output)
        .into_iter()
        .map(|line| line["key"].as_str().expect("a key").to_owned())
        .collect();
    keys.sort();
    keys
}

/// The keys `args` lists, once they are `expected`: memcached's metadump walks LRUs that
/// its maintainer reorders meanwhile, so one dump may miss an item that moved (as its own
/// documentation warns); file and redis list them the first time.
fn keys_eventually(args: &[&str], expected: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let output = dogpile(args);
        assert_eq!(code(&output), 0, "{output:?}");
        let keys = sorted_keys(&output);
        if keys == expected || std::time::Instant::now() > deadline {
            assert_eq!(keys, expected, "dogpile {args:?}");
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("regions.toml");
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Fills `region` with two users, a counter and a key of foreign bytes (written raw).
fn fill(region: &CacheRegion, config: &RegionConfig) {
    region
        .set(
            "user:1",
            &User {
                id: 1,
                name: "Ada".into(),
            },
        )
        .unwrap();
    region
        .set(
            "user:2",
            &User {
                id: 2,
                name: "Bob".into(),
            },
        )
        .unwrap();
    region.set("visits", &42u64).unwrap();
    config
        .build_backend()
        .unwrap()
        .set("foreign", b"not dogpile at all".to_vec())
        .unwrap();
}

/// A value as Python's dogpile.cache writes it with a msgpack serializer (`json.dumps` of
/// the metadata, with its spaces, then `msgpack.packb({"id": 5, "name": "Py"})`), stored
/// raw; `get` shows it as JSON with its creation time and age.
fn python_value(config: &RegionConfig, config_path: &str, name: &str) {
    let mut bytes = br#"{"ct": 1795608176.021698, "v": 2}|"#.to_vec();
    bytes.extend_from_slice(&[0x82, 0xa2, b'i', b'd', 0x05, 0xa4, b'n', b'a', b'm', b'e']);
    bytes.extend_from_slice(&[0xa2, b'P', b'y']);
    let backend = config.build_backend().unwrap();
    backend.set("py:5", bytes).unwrap();
    // A payload JSON cannot show (a map with an integer key): dogpile's, but undecodable.
    let mut odd = br#"{"ct": 1795608176.5, "v": 2}|"#.to_vec();
    odd.extend_from_slice(&[0x81, 0x01, 0x02]);
    backend.set("py:odd", odd).unwrap();
    let got = dogpile(&["--config", config_path, "--json", "get", name, "py:odd"]);
    assert_eq!(code(&got), 3, "{got:?}");
    let line = &json_lines(&got)[0];
    assert_eq!(line["status"], "undecodable", "{line}");
    assert_eq!(line["created"], "2026-11-25T12:02:56.500000Z");
    backend.delete("py:odd").unwrap();

    let got = dogpile(&["--config", config_path, "--json", "get", name, "py:5"]);
    assert_eq!(code(&got), 0, "{got:?}");
    let line = &json_lines(&got)[0];
    assert_eq!(line["value"], serde_json::json!({"id": 5, "name": "Py"}));
    assert_eq!(line["created"], "2026-11-25T12:02:56.021698Z");
    assert_eq!(line["created_unix"], 1795608176.021698);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let age = line["age_seconds"].as_f64().unwrap();
    assert!((age - (now - 1795608176.021698)).abs() < 30.0, "age {age}");
    assert_eq!(line["expired"], true);
}

/// get, keys, delete and purge against one region, given by `--config` and name.
fn exercise(config_path: &str, name: &str) {
    let base = ["--config", config_path, "--json"];
    let run = |extra: &[&str]| dogpile(&[&base[..], extra].concat());

    let got = run(&["get", name, "user:1", "visits"]);
    assert_eq!(code(&got), 0, "{got:?}");
    let lines = json_lines(&got);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["key"], "user:1");
    assert_eq!(lines[0]["status"], "present");
    assert_eq!(
        lines[0]["value"],
        serde_json::json!({"id": 1, "name": "Ada"})
    );
    let age = lines[0]["age_seconds"].as_f64().unwrap();
    assert!((0.0..30.0).contains(&age), "age {age}");
    assert_eq!(lines[0]["expired"], false);
    assert_eq!(lines[0]["expiration_time"], 1.0);
    assert!(lines[0]["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[1]["value"], 42);

    // Past the region's expiration time (1 s), the value is shown as expired.
    thread::sleep(Duration::from_millis(1200));
    let got = run(&["get", name, "user:2"]);
    assert_eq!(code(&got), 0);
    let line = &json_lines(&got)[0];
    assert_eq!(line["expired"], true, "{line}");
    assert!(line["age_seconds"].as_f64().unwrap() >= 1.0);

    // Absent and foreign bytes: exit code 3, each with its word.
    let got = run(&["get", name, "nope", "foreign"]);
    assert_eq!(code(&got), 3);
    let lines = json_lines(&got);
    assert_eq!(lines[0]["status"], "absent");
    assert_eq!(lines[1]["status"], "not_dogpile");
    assert_eq!(lines[1]["size"], 18);

    // The human form names the key and its age.
    let human = dogpile(&["--config", config_path, "get", name, "user:1"]);
    assert_eq!(code(&human), 0);
    let text = stdout(&human);
    assert!(text.starts_with("user:1: created "), "{text}");
    assert!(text.contains("\"Ada\""), "{text}");

    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    keys_eventually(
        &with(&base, &["keys", name]),
        &["foreign", "user:1", "user:2", "visits"],
    );
    keys_eventually(
        &with(&base, &["keys", name, "user:*"]),
        &["user:1", "user:2"],
    );
    let keys = run(&["keys", name, "*", "--limit", "2"]);
    assert_eq!(json_lines(&keys).len(), 2);

    let deleted = run(&["delete", name, "visits", "never-there"]);
    assert_eq!(code(&deleted), 0);
    assert_eq!(
        json_lines(&run(&["get", name, "visits"]))[0]["status"],
        "absent"
    );

    // purge without --yes and without a terminal deletes nothing.
    let refused = run(&["purge", name, "user:*"]);
    assert_eq!(code(&refused), 4);
    keys_eventually(
        &with(&base, &["keys", name, "user:*"]),
        &["user:1", "user:2"],
    );
    let purged = run(&["purge", name, "user:*", "--yes"]);
    assert_eq!(code(&purged), 0);
    assert_eq!(json_lines(&purged)[0]["deleted"], 2);
    keys_eventually(&with(&base, &["keys", name]), &["foreign"]);

    let ping = run(&["ping", name]);
    assert_eq!(code(&ping), 0, "{ping:?}");
    for line in json_lines(&ping) {
        assert_eq!(line["ok"], true, "{line}");
        // A backend with servers reports each, with its version (redis, memcached).
        if line.get("server").is_some() {
            assert!(
                line["version"].as_str().is_some_and(|v| !v.is_empty()),
                "{line}"
            );
            assert_eq!(line["tls"], false, "{line}");
        }
    }
}

#[test]
fn file_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let config_path = write_config(
        dir.path(),
        &format!(
            "[users]\nbackend = \"file\"\nexpiration_time = 1\n\n[users.arguments]\nfilename = {:?}\n",
            store.to_str().unwrap()
        ),
    );
    let config = RegionConfig::new("file")
        .expiration_time(Duration::from_secs(1))
        .argument("filename", store.display());
    let region = make_region();
    region.configure(config.clone()).unwrap();
    fill(&region, &config);
    exercise(&config_path, "users");
    python_value(&config, &config_path, "users");

    // A store given as a URL, without a config file.
    let url = format!("file://{}", store.display());
    let got = dogpile(&["--json", "get", &url, "foreign"]);
    assert_eq!(json_lines(&got)[0]["status"], "not_dogpile");
}

#[test]
fn redis_server() {
    let mut server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(
        dir.path(),
        &format!(
            "[users]\nbackend = \"dogpile.cache.redis\"\nexpiration_time = 1\narguments = {{ url = \"{}\" }}\n",
            server.url()
        ),
    );
    let config = RegionConfig::new("redis")
        .expiration_time(Duration::from_secs(1))
        .argument("url", server.url());
    let region = make_region();
    region.configure(config.clone()).unwrap();
    fill(&region, &config);
    exercise(&config_path, "users");
    python_value(&config, &config_path, "users");

    let url = server.url();
    let keys = dogpile(&["--json", "keys", &url]);
    assert_eq!(sorted_keys(&keys), ["foreign", "py:5"]);

    // A stopped server: ping fails, naming the region and the server.
    server.stop();
    let ping = dogpile(&["--config", &config_path, "ping", "users"]);
    assert_eq!(code(&ping), 1, "{ping:?}");
    let message = String::from_utf8_lossy(&ping.stderr);
    assert!(message.contains("region `users` is down"), "{message}");
    assert!(message.contains(&server.addr()), "{message}");
}

#[test]
fn redis_cluster() {
    let cluster = RedisCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(
        dir.path(),
        &format!(
            "[users]\nbackend = \"redis_cluster\"\nexpiration_time = 1\narguments = {{ url = \"{}\" }}\n",
            cluster.url()
        ),
    );
    let config = RegionConfig::new("redis_cluster")
        .expiration_time(Duration::from_secs(1))
        .argument("url", cluster.url());
    let region = make_region();
    region.configure(config.clone()).unwrap();
    fill(&region, &config);
    // The keys live on more than one master: `keys` asks every one.
    let masters: std::collections::BTreeSet<u16> = ["user:1", "user:2", "visits", "foreign"]
        .iter()
        .map(|key| cluster.master_port_of(key))
        .collect();
    assert!(masters.len() > 1, "the test's keys all live on one master");
    exercise(&config_path, "users");
    python_value(&config, &config_path, "users");
    // `ping` reaches every master.
    let ping = dogpile(&["--config", &config_path, "--json", "ping", "users"]);
    assert_eq!(code(&ping), 0, "{ping:?}");
    let servers: Vec<Value> = json_lines(&ping);
    assert_eq!(servers.len(), 3, "{servers:?}");
    assert!(
        servers.iter().all(|s| s["version"].is_string()),
        "{servers:?}"
    );
}

#[test]
fn memcached_server() {
    let mut server = MemcachedServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("memcache://{}", server.addr());
    let config_path = write_config(
        dir.path(),
        &format!(
            "[users]\nbackend = \"memcached\"\nexpiration_time = 1\narguments = {{ url = \"{url}\" }}\n"
        ),
    );
    let config = RegionConfig::new("memcached")
        .expiration_time(Duration::from_secs(1))
        .argument("url", &url);
    let region = make_region();
    region.configure(config.clone()).unwrap();
    fill(&region, &config);
    exercise(&config_path, "users");
    python_value(&config, &config_path, "users");

    // The server given as a URL.
    keys_eventually(&["--json", "keys", &url], &["foreign", "py:5"]);

    server.stop();
    let ping = dogpile(&["--config", &config_path, "ping", "users"]);
    assert_eq!(code(&ping), 1, "{ping:?}");
    let message = String::from_utf8_lossy(&ping.stderr);
    assert!(message.contains("region `users` is down"), "{message}");
    assert!(message.contains(&server.addr()), "{message}");
}

#[test]
fn usage_errors() {
    assert_eq!(code(&dogpile(&["frobnicate"])), 2);
    let missing = dogpile(&["get", "users", "k"]);
    assert_eq!(code(&missing), 1);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--config"));
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), "[users]\nbackend = \"null\"\n");
    let unknown = dogpile(&["--config", &config_path, "get", "orders", "k"]);
    assert_eq!(code(&unknown), 1);
    let message = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        message.contains("no region `orders`") && message.contains("users"),
        "{message}"
    );
    // The null backend cannot list keys: a clear error, not an empty list.
    let keys = dogpile(&["--config", &config_path, "keys", "users"]);
    assert_eq!(code(&keys), 1);
    assert!(String::from_utf8_lossy(&keys.stderr).contains("cannot list"));
}

/// `dogpile invalidate` reaches a running process's region that shares its invalidation:
/// `--hard` makes its values absent, the default (soft) stale; `get` says which values the
/// record invalidates; a region that does not share it, or a URL, is refused.
#[test]
fn invalidate_reaches_a_running_region() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(
        dir.path(),
        &format!(
            "[users]\nbackend = \"redis\"\nexpiration_time = 600\nshared_invalidation = true\n\
             arguments = {{ url = \"{url}\" }}\n\
             [local]\nbackend = \"redis\"\narguments = {{ url = \"{url}\" }}\n",
            url = server.url()
        ),
    );
    // The application's region, as it would be configured from the same file.
    let app = CacheRegion::named("users");
    app.configure(
        RegionConfig::new("redis")
            .argument("url", server.url())
            .expiration_time(Duration::from_secs(600))
            .shared_invalidation(true),
    )
    .unwrap();
    for how in [
        &["invalidate", "users", "--hard"][..],
        &["invalidate", "users"],
    ] {
        app.set("k", &1u32).unwrap();
        thread::sleep(Duration::from_millis(5));
        let mut args = vec!["--config", &config_path];
        args.extend_from_slice(how);
        let out = dogpile(&args);
        assert_eq!(code(&out), 0, "{out:?}");
        assert!(stdout(&out).contains("invalidated"), "{out:?}");
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while app.get::<u32>("k").unwrap().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "{how:?} never reached the app"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
    // `get` says a value is invalidated, and how.
    let got = dogpile(&["--config", &config_path, "--json", "get", "users", "k"]);
    assert_eq!(json_lines(&got)[0]["invalidated"], "soft", "{got:?}");
    app.set("k", &2u32).unwrap();
    let got = dogpile(&["--config", &config_path, "--json", "get", "users", "k"]);
    assert_eq!(json_lines(&got)[0]["invalidated"], false, "{got:?}");
    let refused = dogpile(&["--config", &config_path, "invalidate", "local", "--hard"]);
    assert_eq!(code(&refused), 1, "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not share"));
    let by_url = dogpile(&["invalidate", &server.url(), "--hard"]);
    assert_eq!(code(&by_url), 1, "{by_url:?}");
}

/// `dogpile get` shows a value Python's real dogpile.cache wrote (msgpack serializer, as
/// dogpile for Rust shares values with it), with its creation time.
#[test]
fn a_value_written_by_python_s_dogpile_cache_is_shown() {
    let server = RedisServer::shared();
    python::run(
        r#"
import sys, msgpack
from dogpile.cache import make_region
region = make_region(serializer=msgpack.packb, deserializer=msgpack.unpackb).configure(
    "dogpile.cache.redis", expiration_time=600,
    arguments={"host": "127.0.0.1", "port": int(sys.argv[1])})
region.set("py:written", {"id": 9, "name": "from python", "tags": ["a"]})
"#,
        &[&server.port().to_string()],
    );
    let url = server.url();
    let got = dogpile(&[
        "--json",
        "--expiration-time",
        "600",
        "get",
        &url,
        "py:written",
    ]);
    assert_eq!(code(&got), 0, "{got:?}");
    let line = &json_lines(&got)[0];
    assert_eq!(
        line["value"],
        serde_json::json!({"id": 9, "name": "from python", "tags": ["a"]}),
        "{line}"
    );
    assert_eq!(line["expired"], false, "{line}");
    let age = line["age_seconds"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&age), "age {age}");
}
