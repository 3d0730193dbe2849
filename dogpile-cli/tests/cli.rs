//! The `dogpile` command, run as a built binary against a file store in a temporary
//! directory and a real redis-server on a free loopback port. Values are written by the
//! library itself (a region's `set`).

use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use dogpile::{make_region, CacheRegion, RegionConfig};
use serde_json::Value;

#[path = "../../tests/support/ports.rs"]
mod ports;
#[path = "../../tests/support/redis_server.rs"]
mod redis_server;

use redis_server::RedisServer;

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

    let keys = run(&["keys", name]);
    assert_eq!(code(&keys), 0, "{keys:?}");
    assert_eq!(
        sorted_keys(&keys),
        ["foreign", "user:1", "user:2", "visits"]
    );
    let keys = run(&["keys", name, "user:*"]);
    assert_eq!(sorted_keys(&keys), ["user:1", "user:2"]);
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
    assert_eq!(sorted_keys(&run(&["keys", name, "user:*"])).len(), 2);
    let purged = run(&["purge", name, "user:*", "--yes"]);
    assert_eq!(code(&purged), 0);
    assert_eq!(json_lines(&purged)[0]["deleted"], 2);
    assert_eq!(sorted_keys(&run(&["keys", name])), ["foreign"]);

    let ping = run(&["ping", name]);
    assert_eq!(code(&ping), 0, "{ping:?}");
    assert_eq!(json_lines(&ping)[0]["ok"], true);
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

    let url = server.url();
    let keys = dogpile(&["--json", "keys", &url]);
    assert_eq!(sorted_keys(&keys), ["foreign"]);

    // A stopped server: ping fails, naming the region and the server.
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
