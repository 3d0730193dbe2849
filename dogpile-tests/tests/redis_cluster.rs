//! The `redis_cluster` backend against a real three-master Redis Cluster on loopback, and
//! against one that speaks TLS only (`--tls-cluster yes`).

#[macro_use]
mod conformance;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::thread;
use std::time::Duration;

use dogpile::backend::{Arguments, CacheBackend};
use dogpile::backends::RedisBackend;
use dogpile::{make_region, CacheRegion, Error, RegionConfig};
use redis_server::RedisCluster;

mod conformance_redis_cluster {
    use super::*;
    conformance_suite!(
        stores = true,
        config =
            || RegionConfig::new("redis_cluster").argument("url", RedisCluster::shared().url())
    );
}

mod conformance_redis_cluster_distributed_lock {
    use super::*;
    conformance_suite!(
        stores = true,
        shared_lock = true,
        config = || RegionConfig::new("dogpile.cache.redis_cluster")
            .argument("url", RedisCluster::shared().url())
            .argument("distributed_lock", true)
            .argument("lock_sleep", 0.01)
            .argument("redis_expiration_time", 3600)
    );
}

/// A region on the shared TLS cluster that trusts the test CA.
fn tls_cluster() -> RegionConfig {
    let cluster = RedisCluster::shared_tls();
    RegionConfig::new("redis_cluster")
        .argument("url", cluster.url())
        .argument("ssl_ca_certs", cluster.tls_file("ca.crt"))
}

mod conformance_redis_cluster_tls {
    use super::*;
    conformance_suite!(stores = true, config = tls_cluster);
}

mod conformance_redis_cluster_tls_distributed_lock {
    use super::*;
    conformance_suite!(
        stores = true,
        shared_lock = true,
        config = || tls_cluster()
            .argument("distributed_lock", true)
            .argument("lock_sleep", 0.01)
    );
}

#[test]
fn cluster_over_tls_spans_every_master_and_checks_certificates() {
    let cluster = RedisCluster::shared_tls();
    let region = make_region();
    region.configure(tls_cluster()).unwrap();
    let keys: Vec<String> = (0..30).map(|i| unique(&format!("tls-{i}"))).collect();
    let items: Vec<(String, usize)> = keys.iter().cloned().zip(0..).collect();
    region.set_multi(&items).unwrap();
    let got: Vec<Option<usize>> = region.get_multi(&keys).unwrap();
    assert_eq!(got, (0..keys.len()).map(Some).collect::<Vec<_>>());
    region.delete_multi(&keys).unwrap();
    let gone: Vec<Option<usize>> = region.get_multi(&keys).unwrap();
    assert!(gone.iter().all(Option::is_none));

    // SCAN on every master.
    let backend = RedisBackend::cluster_from_arguments(&Arguments::new(
        "redis_cluster",
        [
            ("url", cluster.url()),
            ("ssl_ca_certs", cluster.tls_file("ca.crt")),
        ],
    ))
    .unwrap();
    let prefix = unique("tls-scan");
    let scanned: Vec<String> = (0..30).map(|i| format!("{prefix}-{i}")).collect();
    for key in &scanned {
        backend.set(key, b"v".to_vec()).unwrap();
    }
    let mut listed = Vec::new();
    backend
        .keys(&format!("{prefix}-*"), &mut |key| {
            listed.push(key);
            true
        })
        .unwrap();
    listed.sort();
    let mut expected = scanned.clone();
    expected.sort();
    assert_eq!(
        listed, expected,
        "SCAN on every master lists every key once"
    );

    // Another CA: the node's certificate is refused, and the error names the node.
    let refused = make_region();
    refused
        .configure(
            RegionConfig::new("redis_cluster")
                .argument("url", cluster.url())
                .argument("ssl_ca_certs", cluster.tls_file("other-ca.crt"))
                .argument("socket_timeout", "0.5"),
        )
        .unwrap();
    match refused.get::<u32>("k") {
        Err(Error::Backend { backend, source }) => {
            let text = format!("{backend}: {source}");
            assert!(text.contains(&cluster.nodes()[0].addr()), "{text}");
            assert!(text.contains("UnknownIssuer"), "{text}");
        }
        other => panic!("expected Error::Backend, got {other:?}"),
    }
    // Not checked: encrypted all the same.
    let unchecked = make_region();
    unchecked
        .configure(
            RegionConfig::new("redis_cluster")
                .argument("url", cluster.url())
                .argument("ssl_cert_reqs", "none"),
        )
        .unwrap();
    unchecked.set("unchecked", &1u8).unwrap();
    assert_eq!(unchecked.get::<u8>("unchecked").unwrap(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_async_calls_are_native_and_span_every_master() {
    let cluster = RedisCluster::shared();
    let backend = RedisBackend::cluster_from_arguments(&Arguments::new(
        "redis_cluster",
        [
            ("url", cluster.url()),
            ("distributed_lock", "true".to_owned()),
        ],
    ))
    .unwrap();
    let twin = backend
        .async_backend()
        .expect("redis_cluster has a native async twin");
    let by_master = keys_on_every_master(3);
    let keys: Vec<&str> = by_master.values().flatten().map(String::as_str).collect();
    twin.set_multi(keys.iter().map(|k| (*k, k.as_bytes().to_vec())).collect())
        .await
        .unwrap();
    for (port, keys) in &by_master {
        let mut node = cluster.node_client(*port);
        for key in keys {
            let stored: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(&mut node).unwrap();
            assert_eq!(stored.as_deref(), Some(key.as_bytes()), "{key} on {port}");
        }
    }
    let got = twin.get_multi(&keys).await.unwrap();
    assert_eq!(
        got,
        keys.iter()
            .map(|k| Some(k.as_bytes().to_vec()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        twin.get(keys[0]).await.unwrap().as_deref(),
        Some(keys[0].as_bytes())
    );
    twin.delete_multi(&keys).await.unwrap();
    assert!(twin
        .get_multi(&keys)
        .await
        .unwrap()
        .iter()
        .all(Option::is_none));
    // The distributed lock, taken and released with async calls on the key's master.
    let lock = twin.get_mutex(keys[0]).expect("distributed lock");
    assert!(lock.try_acquire().await.unwrap());
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("_lock{}", keys[0]))
        .query(&mut cluster.node_client(cluster.master_port_of(&format!("_lock{}", keys[0]))))
        .unwrap();
    assert!(exists, "the lock key lives on the master of its slot");
    lock.release().await.unwrap();
}

fn region(args: &[(&str, &str)]) -> CacheRegion {
    let cluster = RedisCluster::shared();
    let region = make_region();
    let mut config = RegionConfig::new("redis_cluster")
        .expiration_time(Duration::from_secs(600))
        .argument("url", cluster.url());
    for (name, value) in args {
        config = config.argument(*name, *value);
    }
    region
        .configure(config)
        .expect("configure a redis_cluster region");
    region
}

fn unique(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Keys spread over every master: at least `per_master` keys on each.
fn keys_on_every_master(per_master: usize) -> BTreeMap<u16, Vec<String>> {
    let cluster = RedisCluster::shared();
    let mut by_master: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let mut i = 0;
    while by_master.len() < 3 || by_master.values().any(|keys| keys.len() < per_master) {
        let key = unique(&format!("spread-{i}"));
        by_master
            .entry(cluster.master_port_of(&key))
            .or_default()
            .push(key);
        i += 1;
    }
    by_master
}

#[test]
fn registered_under_both_names_and_startup_nodes_works() {
    let cluster = RedisCluster::shared();
    let startup_nodes = cluster
        .nodes()
        .iter()
        .map(|n| n.addr())
        .collect::<Vec<_>>()
        .join(", ");
    for (name, argument, value) in [
        ("redis_cluster", "url", cluster.url()),
        (
            "dogpile.cache.redis_cluster",
            "startup_nodes",
            startup_nodes,
        ),
        // One node is enough to discover the others.
        ("redis_cluster", "url", cluster.nodes()[1].url()),
    ] {
        let region = make_region();
        region
            .configure(RegionConfig::new(name).argument(argument, &value))
            .unwrap();
        let key = unique("names");
        region.set(&key, &9u8).unwrap();
        assert_eq!(
            region.get::<u8>(&key).unwrap(),
            Some(9),
            "{name} {argument}={value}"
        );
    }
}

#[test]
fn multi_operations_span_every_master() {
    let cluster = RedisCluster::shared();
    let region = region(&[]);
    let by_master = keys_on_every_master(5);
    assert_eq!(by_master.len(), 3, "keys must cover all three masters");
    let keys: Vec<String> = by_master.values().flatten().cloned().collect();
    let items: Vec<(String, usize)> = keys.iter().cloned().zip(0..).collect();

    region.set_multi(&items).unwrap();
    // Each value is on the master that serves its slot.
    for (port, keys) in &by_master {
        let mut node = cluster.node_client(*port);
        for key in keys {
            let stored: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(&mut node).unwrap();
            assert!(stored.is_some(), "{key} missing on its master {port}");
        }
    }

    let mut asked = keys.clone();
    asked.push(unique("absent"));
    let got: Vec<Option<usize>> = region.get_multi(&asked).unwrap();
    let mut expected: Vec<Option<usize>> = (0..keys.len()).map(Some).collect();
    expected.push(None);
    assert_eq!(got, expected, "values come back in the order asked");

    region.delete_multi(&keys).unwrap();
    for (port, keys) in &by_master {
        let mut node = cluster.node_client(*port);
        for key in keys {
            let exists: bool = redis::cmd("EXISTS").arg(key).query(&mut node).unwrap();
            assert!(!exists, "{key} still on {port} after delete_multi");
        }
    }
    let gone: Vec<Option<usize>> = region.get_multi(&keys).unwrap();
    assert!(gone.iter().all(Option::is_none));
}

#[test]
fn get_or_create_multi_across_slots() {
    let region = region(&[]);
    let keys: Vec<String> = keys_on_every_master(2).into_values().flatten().collect();
    let calls = AtomicUsize::new(0);
    let values: Vec<String> = region
        .get_or_create_multi(&keys, |missing| {
            calls.fetch_add(1, Ordering::SeqCst);
            missing.iter().map(|k| format!("v:{k}")).collect()
        })
        .unwrap();
    assert_eq!(
        values,
        keys.iter().map(|k| format!("v:{k}")).collect::<Vec<_>>()
    );
    let again: Vec<String> = region
        .get_or_create_multi(&keys, |_| panic!("every key is cached"))
        .unwrap();
    assert_eq!(again, values);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn redis_expiration_time_sets_a_ttl_on_the_owning_master() {
    let cluster = RedisCluster::shared();
    let region = region(&[("redis_expiration_time", "100")]);
    let keys: Vec<(u16, String)> = keys_on_every_master(1)
        .into_iter()
        .map(|(port, keys)| (port, keys[0].clone()))
        .collect();
    region.set(&keys[0].1, &1u8).unwrap();
    region
        .set_multi(
            &keys[1..]
                .iter()
                .map(|(_, k)| (k.clone(), 2u8))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    for (port, key) in &keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query(&mut cluster.node_client(*port))
            .unwrap();
        assert!((90..=100).contains(&ttl), "{key} on {port}: TTL {ttl}");
    }
}

#[test]
fn distributed_lock_on_a_cluster() {
    let cluster = RedisCluster::shared();
    let args = |extra: &[(&str, &str)]| {
        let mut pairs = vec![
            ("url".to_string(), cluster.url()),
            ("distributed_lock".to_string(), "true".to_string()),
        ];
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        RedisBackend::cluster_from_arguments(&Arguments::new("redis_cluster", pairs)).unwrap()
    };
    let one = args(&[("lock_timeout", "0.1")]);
    let two = args(&[]);
    let key = unique("cluster-lock");
    let lock_key = format!("_lock{key}");
    let mut node = cluster.node_client(cluster.master_port_of(&lock_key));

    let a = one.get_mutex(&key).unwrap();
    assert!(a.try_acquire().unwrap());
    let exists: bool = redis::cmd("EXISTS")
        .arg(&lock_key)
        .query(&mut node)
        .unwrap();
    assert!(exists, "the lock key lives on the master of its slot");
    // A's lock expires; B takes it; A's release leaves B's lock alone.
    while redis::cmd("EXISTS")
        .arg(&lock_key)
        .query::<bool>(&mut node)
        .unwrap()
    {
        thread::sleep(Duration::from_millis(10));
    }
    let b = two.get_mutex(&key).unwrap();
    assert!(b.try_acquire().unwrap());
    a.release().unwrap();
    let held = |node: &mut redis::Connection| -> bool {
        redis::cmd("EXISTS").arg(&lock_key).query(node).unwrap()
    };
    assert!(held(&mut node), "A's release must not delete B's lock");
    b.release().unwrap();
    assert!(!held(&mut node));
}

#[test]
fn bad_cluster_arguments_are_rejected() {
    let check = |pairs: &[(&str, &str)], argument: &str| {
        let args = Arguments::new(
            "redis_cluster",
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        );
        match RedisBackend::cluster_from_arguments(&args) {
            Err(Error::InvalidArgument {
                argument: named, ..
            }) => {
                assert_eq!(named, argument, "{pairs:?}")
            }
            other => panic!("{pairs:?}: expected InvalidArgument for {argument}, got {other:?}"),
        }
    };
    check(&[], "url");
    check(&[("url", ",")], "url");
    check(&[("url", "http://127.0.0.1:7000")], "url");
    check(&[("url", "redis://127.0.0.1:7000"), ("db", "2")], "db");
    check(
        &[
            ("url", "redis://127.0.0.1:7000"),
            ("startup_nodes", "127.0.0.1:7001"),
        ],
        "startup_nodes",
    );
    check(&[("startup_nodes", "127.0.0.1:notaport")], "startup_nodes");
}

#[test]
fn a_cluster_that_is_down_errors_in_time_naming_its_nodes() {
    let ports = [ports::free_port(), ports::free_port()];
    let url = ports.map(|p| format!("redis://127.0.0.1:{p}")).join(",");
    let region = make_region();
    region
        .configure(
            RegionConfig::new("redis_cluster")
                .argument("url", &url)
                .argument("socket_timeout", "0.3"),
        )
        .unwrap();
    let started = std::time::Instant::now();
    match region.get::<u8>("k") {
        Err(Error::Backend { backend, .. }) => {
            for port in ports {
                assert!(backend.contains(&format!("127.0.0.1:{port}")), "{backend}");
            }
        }
        other => panic!("expected Error::Backend, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// How many `CLUSTER SLOTS` the nodes of `cluster` have answered.
fn slot_maps_served(cluster: &RedisCluster) -> u64 {
    cluster
        .nodes()
        .iter()
        .map(|node| {
            let stats: String = redis::cmd("INFO")
                .arg("commandstats")
                .query(&mut node.client())
                .unwrap();
            stats
                .lines()
                .find_map(|line| line.strip_prefix("cmdstat_cluster|slots:calls="))
                .and_then(|rest| rest.split(',').next())
                .map_or(0, |calls| calls.parse().unwrap())
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrating_slot_is_followed_by_ask_then_moved_and_the_slot_map_refreshed() {
    // A cluster of its own: its slots are moved.
    let cluster = RedisCluster::start();
    let backend = RedisBackend::cluster_from_arguments(&Arguments::new(
        "redis_cluster",
        [("url", cluster.url())],
    ))
    .unwrap();
    let twin = backend.async_backend().unwrap();
    let key = unique("migrating");
    assert_eq!(backend.get(&key).unwrap(), None, "the slot map is fetched");
    let from = cluster.master_port_of(&key);
    let to = cluster
        .nodes()
        .iter()
        .map(|node| node.port())
        .find(|port| *port != from)
        .unwrap();
    let id = |port: u16| -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut cluster.node_client(port))
            .unwrap()
    };
    let (from_id, to_id) = (id(from), id(to));
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&key)
        .query(&mut cluster.node_client(from))
        .unwrap();
    let setslot = |port: u16, how: &[&str]| {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(how)
            .exec(&mut cluster.node_client(port))
            .unwrap()
    };
    // Migrating: the key is on the target only; the source answers ASK.
    setslot(to, &["IMPORTING", &from_id]);
    setslot(from, &["MIGRATING", &to_id]);
    redis::pipe()
        .cmd("ASKING")
        .cmd("SET")
        .arg(&key)
        .arg("v")
        .exec(&mut cluster.node_client(to))
        .unwrap();
    assert_eq!(
        backend.get(&key).unwrap().as_deref(),
        Some(&b"v"[..]),
        "ASK"
    );
    assert_eq!(
        twin.get(&key).await.unwrap().as_deref(),
        Some(&b"v"[..]),
        "ASK"
    );

    // Migrated: the source answers MOVED, and the slot map is fetched again.
    for node in cluster.nodes() {
        setslot(node.port(), &["NODE", &to_id]);
    }
    let before = slot_maps_served(&cluster);
    assert_eq!(
        backend.get(&key).unwrap().as_deref(),
        Some(&b"v"[..]),
        "MOVED"
    );
    assert_eq!(
        twin.get(&key).await.unwrap().as_deref(),
        Some(&b"v"[..]),
        "MOVED"
    );
    backend.set(&key, b"w".to_vec()).unwrap();
    assert!(
        slot_maps_served(&cluster) > before,
        "a MOVED makes the next request refresh the slot map"
    );
    let on_target: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query(&mut cluster.node_client(to))
        .unwrap();
    assert_eq!(
        on_target.as_deref(),
        Some(&b"w"[..]),
        "written where the slot now is"
    );
}
