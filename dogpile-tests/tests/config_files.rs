//! Regions configured from TOML and JSON files (`RegionConfig: serde::Deserialize`), as an
//! application reads its settings.

use std::collections::HashMap;
use std::time::Duration;

use dogpile::clock::ManualClock;
use dogpile::{make_region, CacheRegion, Error, RegionConfig};

/// Configures each region from the file's table of the same name.
fn configure(configs: &mut HashMap<String, RegionConfig>, regions: &[(&str, &CacheRegion)]) {
    for (name, region) in regions {
        let config = configs
            .remove(*name)
            .expect("the file configures this region");
        region.configure(config).unwrap();
    }
}

#[test]
fn a_toml_file_configures_a_memory_and_a_file_region() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let text = format!(
        r#"
        [users]
        backend = "memory"
        expiration_time = "10m"
        arguments = {{ max_entries = 1000 }}

        [reports]
        backend = "dogpile.cache.dbm"
        expiration_time = 3600

        [reports.arguments]
        filename = {store:?}
        rw_lockfile = true
        "#,
        store = store.display().to_string()
    );
    let mut configs: HashMap<String, RegionConfig> = toml::from_str(&text).unwrap();
    let (users, reports) = (make_region(), make_region());
    configure(&mut configs, &[("users", &users), ("reports", &reports)]);

    assert_eq!(users.backend_name().as_deref(), Some("memory"));
    assert_eq!(users.expiration_time(), Some(Duration::from_secs(600)));
    assert_eq!(reports.backend_name().as_deref(), Some("dogpile.cache.dbm"));
    assert_eq!(reports.expiration_time(), Some(Duration::from_secs(3600)));

    let name: String = users.get_or_create("user:5", || "ed".to_owned()).unwrap();
    assert_eq!(name, "ed");
    assert_eq!(
        users.get::<String>("user:5").unwrap().as_deref(),
        Some("ed")
    );
    let total: u64 = reports.get_or_create("total", || 42).unwrap();
    assert_eq!(total, 42);
    // The file region wrote into the configured directory, with the rw lock file asked for.
    assert!(store.join("dogpile-file-store").exists());
    assert!(store.join("rw.lock").exists());
    let again = make_region();
    again
        .configure(RegionConfig::new("file").argument("filename", store.display()))
        .unwrap();
    assert_eq!(again.get::<u64>("total").unwrap(), Some(42));
}

#[test]
fn a_json_file_configures_regions_and_expiry_applies() {
    let mut configs: HashMap<String, RegionConfig> = serde_json::from_str(
        r#"{
            "short": {"backend": "memory", "expiration_time": "1m30s"},
            "forever": {"backend": "memory_serialized", "expiration_time": -1,
                        "arguments": {"max_bytes": 1048576}}
        }"#,
    )
    .unwrap();
    let clock = std::sync::Arc::new(ManualClock::new(1_000.0));
    let short = CacheRegion::builder().clock(clock.clone()).build();
    let forever = CacheRegion::builder().clock(clock.clone()).build();
    configure(&mut configs, &[("short", &short), ("forever", &forever)]);
    short.set("k", &1u32).unwrap();
    forever.set("k", &1u32).unwrap();
    clock.advance(Duration::from_secs(89));
    assert_eq!(short.get::<u32>("k").unwrap(), Some(1));
    clock.advance(Duration::from_secs(2));
    assert_eq!(short.get::<u32>("k").unwrap(), None, "expired after 90 s");
    clock.advance(Duration::from_secs(10 * 365 * 86_400));
    assert_eq!(forever.get::<u32>("k").unwrap(), Some(1));
}

#[test]
fn a_bad_argument_value_is_refused_at_configure_naming_it() {
    let mut configs: HashMap<String, RegionConfig> =
        toml::from_str("[r]\nbackend = \"memory\"\narguments = { max_entries = \"lots\" }")
            .unwrap();
    let err = make_region()
        .configure(configs.remove("r").unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("`max_entries`") && message.contains("lots"),
        "{message}"
    );

    let mut configs: HashMap<String, RegionConfig> =
        toml::from_str("[r]\nbackend = \"memcache\"").unwrap();
    let err = make_region()
        .configure(configs.remove("r").unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("`memcache`"), "{err}");
}

#[test]
fn a_bad_file_is_refused_naming_the_field_and_its_line() {
    let err = toml::from_str::<HashMap<String, RegionConfig>>(
        "[users]\nbackend = \"memory\"\nexpiration_time = \"soon\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("invalid expiration_time: `soon`"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    let err = serde_json::from_str::<HashMap<String, RegionConfig>>(
        r#"{"users": {"backend": "memory", "arguments": {"url": {"host": "x"}}}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("of argument `url`"), "{err}");
}

#[test]
fn flat_keys_still_configure_a_region() {
    let region = make_region();
    region
        .configure_from_config(
            [
                ("cache.local.backend", "dogpile.cache.memory"),
                ("cache.local.expiration_time", "2h"),
                ("cache.local.arguments.max_entries", "10"),
            ],
            "cache.local.",
        )
        .unwrap();
    assert_eq!(region.expiration_time(), Some(Duration::from_secs(7200)));
}
