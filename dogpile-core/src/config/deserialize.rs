//! `RegionConfig: serde::Deserialize`, so a TOML, YAML or JSON file configures regions.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{parse_expiration, seconds_expiration, RegionConfig};

/// The fields a configuration file may give; anything else is refused by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    backend: String,
    #[serde(default, deserialize_with = "expiration_time")]
    expiration_time: Option<Duration>,
    /// Absent: off; `-1`: any age.
    #[serde(default, deserialize_with = "stale_if_error")]
    stale_if_error: Option<Duration>,
    #[serde(default, deserialize_with = "expiration_time")]
    retry_after_error: Option<Duration>,
    #[serde(default, deserialize_with = "expiration_time")]
    soft_timeout: Option<Duration>,
    #[serde(default)]
    shared_invalidation: bool,
    #[serde(default, deserialize_with = "expiration_time")]
    invalidation_poll: Option<Duration>,
    #[serde(default)]
    early_refresh: f64,
    #[serde(default, deserialize_with = "arguments")]
    arguments: BTreeMap<String, String>,
    #[serde(default)]
    replace_existing_backend: bool,
}

/// Reads a region's configuration from a file's table: `backend` (required),
/// `expiration_time` (seconds, `-1` for never, or a duration string such as `"10m"` or
/// `"1h30m"`; absent: never), `stale_if_error` (written the same way; see
/// [`RegionConfig::stale_if_error`]), `retry_after_error`, `soft_timeout` and `invalidation_poll` (likewise), `shared_invalidation` (a boolean), `early_refresh` (a number, see
/// [`RegionConfig::early_refresh`]), `arguments` (a table of strings, numbers, booleans or lists
/// of them, which become the string arguments the backend parses; a list becomes a comma
/// separated string), and `replace_existing_backend` (a boolean).
///
/// ```
/// use std::collections::HashMap;
/// use dogpile_core::RegionConfig;
///
/// let regions: HashMap<String, RegionConfig> = serde_json::from_str(r#"{
///     "users": { "backend": "memory", "expiration_time": "10m",
///                "arguments": { "max_entries": 10000 } }
/// }"#).unwrap();
/// assert!(format!("{:?}", regions["users"]).contains("max_entries"));
/// ```
impl<'de> Deserialize<'de> for RegionConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = Fields::deserialize(deserializer)?;
        Ok(RegionConfig {
            expiration_time: fields.expiration_time,
            stale_if_error: fields.stale_if_error,
            retry_after_error: fields.retry_after_error,
            soft_timeout: fields.soft_timeout,
            shared_invalidation: fields.shared_invalidation,
            invalidation_poll: fields.invalidation_poll,
            early_refresh: fields.early_refresh,
            arguments: fields.arguments,
            replace_existing_backend: fields.replace_existing_backend,
            ..RegionConfig::new(fields.backend)
        })
    }
}

/// `stale_if_error`, written as `expiration_time` is (`-1`: any age).
fn stale_if_error<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Ok(Some(expiration_time(d)?.unwrap_or(Duration::MAX)))
}

fn expiration_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct Expiration;

    impl Visitor<'_> for Expiration {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "expiration_time as a number of seconds (-1 for never) \
                 or a duration string such as \"90s\", \"10m\" or \"1h30m\"",
            )
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_f64(v as f64)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.visit_f64(v as f64)
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            seconds_expiration(v).ok_or_else(|| {
                E::custom(format!(
                    "invalid expiration_time {v}: expected a non-negative number of seconds, \
                     or -1 for never"
                ))
            })
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_expiration(v)
                .map_err(|reason| E::custom(format!("invalid expiration_time: {reason}")))
        }
    }

    d.deserialize_any(Expiration)
}

fn arguments<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Table;

    impl<'de> Visitor<'de> for Table {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("arguments as a table of argument names to strings, numbers or booleans")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut arguments = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                let value = map.next_value_seed(Argument {
                    name: &name,
                    in_list: false,
                })?;
                arguments.insert(name, value);
            }
            Ok(arguments)
        }
    }

    d.deserialize_map(Table)
}

/// One argument's value, read as the string the backend will parse; errors name it.
#[derive(Clone, Copy)]
struct Argument<'a> {
    name: &'a str,
    in_list: bool,
}

impl<'de> DeserializeSeed<'de> for Argument<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Argument<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.in_list {
            "strings, numbers or booleans in the list"
        } else {
            "a string, number, boolean or list of them"
        };
        write!(f, "{what} of argument `{}`", self.name)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        if self.in_list {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let item = Argument {
            in_list: true,
            ..self
        };
        let mut items = Vec::new();
        while let Some(value) = seq.next_element_seed(item)? {
            items.push(value);
        }
        Ok(items.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn toml(text: &str) -> Result<HashMap<String, RegionConfig>, String> {
        ::toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_toml_file_gives_each_region_its_config() {
        let regions = toml(
            r#"
            [users]
            backend = "redis"
            expiration_time = "1h30m"
            arguments = { url = "redis://127.0.0.1:7000/2", distributed_lock = true, lock_timeout = 2.5, connection_pool = 8 }

            [local]
            backend = "dogpile.cache.memory"
            expiration_time = 60
            replace_existing_backend = true

            [servers]
            backend = "memcached"
            expiration_time = -1
            [servers.arguments]
            url = ["10.0.0.1:11211", "10.0.0.2:11211"]
            "#,
        )
        .unwrap();
        let users = &regions["users"];
        assert_eq!(users.backend.name(), "redis");
        assert_eq!(users.expiration_time, Some(Duration::from_secs(5400)));
        let expected: BTreeMap<String, String> = [
            ("url", "redis://127.0.0.1:7000/2"),
            ("distributed_lock", "true"),
            ("lock_timeout", "2.5"),
            ("connection_pool", "8"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(users.arguments, expected);
        assert!(!users.replace_existing_backend);

        let local = &regions["local"];
        assert_eq!(local.backend.name(), "dogpile.cache.memory");
        assert_eq!(local.expiration_time, Some(Duration::from_secs(60)));
        assert!(local.arguments.is_empty());
        assert!(local.replace_existing_backend);

        let servers = &regions["servers"];
        assert_eq!(servers.expiration_time, None);
        assert_eq!(servers.arguments["url"], "10.0.0.1:11211, 10.0.0.2:11211");
    }

    #[test]
    fn json_reads_the_same() {
        let regions: HashMap<String, RegionConfig> = serde_json::from_str(
            r#"{"a": {"backend": "memory", "expiration_time": 0.5,
                      "arguments": {"max_entries": 100, "flag": false}}}"#,
        )
        .unwrap();
        let a = &regions["a"];
        assert_eq!(a.expiration_time, Some(Duration::from_millis(500)));
        assert_eq!(a.arguments["max_entries"], "100");
        assert_eq!(a.arguments["flag"], "false");
    }

    #[test]
    fn bad_input_is_refused_naming_the_field() {
        let cases = [
            ("[r]\nexpiration_time = 3", "missing field `backend`"),
            (
                "[r]\nbackend = \"memory\"\nexpire = 3",
                "unknown field `expire`, expected one of `backend`, `expiration_time`, \
                 `stale_if_error`, `retry_after_error`, `soft_timeout`, `shared_invalidation`, `invalidation_poll`, `early_refresh`, `arguments`, \
                 `replace_existing_backend`",
            ),
            (
                "[r]\nbackend = \"memory\"\nexpiration_time = \"soon\"",
                "invalid expiration_time: `soon`",
            ),
            (
                "[r]\nbackend = \"memory\"\nexpiration_time = -5",
                "invalid expiration_time -5",
            ),
            (
                "[r]\nbackend = \"memory\"\nexpiration_time = true",
                "expiration_time as a number of seconds",
            ),
            (
                "[r]\nbackend = \"memory\"\narguments = { url = { host = \"x\" } }",
                "of argument `url`",
            ),
            (
                "[r]\nbackend = \"memory\"\narguments = { url = [[\"a\"]] }",
                "in the list of argument `url`",
            ),
            (
                "[r]\nbackend = \"memory\"\narguments = [\"url\"]",
                "arguments as a table",
            ),
            (
                "[r]\nbackend = 5",
                "invalid type: integer `5`, expected a string",
            ),
        ];
        for (text, expected) in cases {
            let err = toml(text).unwrap_err();
            assert!(
                err.contains(expected),
                "{text}\n-> {err}\nexpected: {expected}"
            );
        }
        let err = serde_json::from_str::<HashMap<String, RegionConfig>>(
            r#"{"r": {"backend": "memory", "arguments": {"pool": null}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("of argument `pool`"), "{err}");
    }
}
