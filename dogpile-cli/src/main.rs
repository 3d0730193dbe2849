//! `dogpile`: look inside a dogpile cache region from the command line.
//!
//! The command reads the region file the application loads (`--config FILE`: a TOML table
//! per region name, each a `RegionConfig` table with `backend`, `expiration_time` and
//! `arguments`), or takes a backend URL in place of the region name
//! (`redis://host:port/db`, `rediss://...`, `memcache://host:port`, `file:///dir`).
//! It reads and writes the backend's stored bytes directly, decoding dogpile's byte format
//! (`{"ct":...,"v":2}|<msgpack>`, as Python's dogpile.cache writes it with msgpack) to JSON.
//!
//! Exit codes:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | an error: the configuration, the region, or the backend (server down, ...) |
//! | 2 | wrong usage (unknown command or option) |
//! | 3 | `get`: a key is absent, its bytes are not dogpile's, or its payload cannot be shown as JSON |
//! | 4 | `purge`: not confirmed (answered no, or no terminal and no `--yes`) |

use std::collections::BTreeMap;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use dogpile::backend::CacheBackend;
use dogpile::value::{CachedValue, Metadata, VALUE_VERSION};
use dogpile::RegionConfig;
use serde_json::{json, Value};

/// Look inside a dogpile cache region: show, list, delete and purge keys, ping its backend,
/// invalidate it in every process that shares its invalidation.
///
/// REGION is a region name of the `--config` file, or a backend URL: `redis://host:port/db`,
/// `rediss://host:port` (TLS), `memcache://host:port[,host:port...]`, `file:///path/to/store`.
///
/// Exit codes: 0 done; 1 error (configuration, backend unreachable, ...); 2 wrong usage;
/// 3 `get` found a key absent, not in dogpile's format, or undecodable; 4 `purge` not confirmed.
#[derive(Parser, Debug)]
#[command(name = "dogpile", version)]
struct Cli {
    /// The region file the application loads (TOML; `.json` files are read as JSON): a
    /// table per region name with `backend`, `expiration_time` and `arguments`.
    #[arg(long, short = 'c', global = true, env = "DOGPILE_CONFIG")]
    config: Option<PathBuf>,
    /// The expiration time (seconds) `get` judges values by, for a region given as a URL
    /// (a region of the file uses its own `expiration_time`).
    #[arg(long, global = true, value_name = "SECONDS")]
    expiration_time: Option<f64>,
    /// Machine-readable output: one JSON object per line.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Shows the values of keys: decoded value (as JSON), creation time, age, expired.
    Get {
        /// A region name of the config file, or a backend URL.
        region: String,
        /// The keys, as the backend stores them.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Deletes keys (deleting a missing key is not an error).
    Delete {
        /// A region name of the config file, or a backend URL.
        region: String,
        /// The keys, as the backend stores them.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Lists the region's keys matching a glob pattern (file, redis and memcached backends).
    Keys {
        /// A region name of the config file, or a backend URL.
        region: String,
        /// `*` any run of characters, `?` one character (redis `MATCH` syntax).
        #[arg(default_value = "*")]
        pattern: String,
        /// Stop after this many keys.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Reaches the backend (a read of a probe key) and prints the round-trip time.
    Ping {
        /// A region name of the config file, or a backend URL.
        region: String,
    },
    /// Invalidates a region of the config file in every process that shares its
    /// invalidation (`shared_invalidation = true`): soft (values are stale: one caller
    /// regenerates while the others get the old value; needs the region's
    /// `expiration_time`), or with `--hard` absent.
    Invalidate {
        /// A region name of the config file.
        region: String,
        /// A hard invalidation: values created before now are absent.
        #[arg(long)]
        hard: bool,
    },
    /// Deletes every key matching a glob pattern, after asking (unless `--yes`).
    Purge {
        /// A region name of the config file, or a backend URL.
        region: String,
        /// `*` any run of characters, `?` one character (redis `MATCH` syntax).
        pattern: String,
        /// Do not ask before deleting.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// A failure, with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn error(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// The region the command works on: its name (or URL), configuration and built backend.
struct Region {
    name: String,
    expiration: Option<Duration>,
    backend: Arc<dyn CacheBackend>,
    /// The region's shared invalidation, when it has one: when, and whether hard.
    invalidated: Option<(f64, bool)>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            if cli.json {
                println!("{}", json!({ "error": failure.message }));
            } else {
                eprintln!("dogpile: {}", failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}

fn run(cli: &Cli) -> Result<u8, Failure> {
    match &cli.command {
        Command::Get { region, keys } => get(cli, &open(cli, region)?, keys),
        Command::Delete { region, keys } => delete(cli, &open(cli, region)?, keys),
        Command::Keys {
            region,
            pattern,
            limit,
        } => list(cli, &open(cli, region)?, pattern, *limit),
        Command::Ping { region } => ping(cli, &open(cli, region)?),
        Command::Invalidate { region, hard } => invalidate(cli, region, *hard),
        Command::Purge {
            region,
            pattern,
            yes,
        } => purge(cli, &open(cli, region)?, pattern, *yes),
    }
}

/// The configuration of `region`: a backend URL, or a region of the config file.
fn region_config(cli: &Cli, region: &str) -> Result<RegionConfig, Failure> {
    if let Some((scheme, rest)) = region.split_once("://") {
        let config = match scheme {
            "redis" | "rediss" => RegionConfig::new("redis").argument("url", region),
            "memcache" | "memcached" => RegionConfig::new("memcached").argument("url", rest),
            "file" => RegionConfig::new("file").argument("filename", rest),
            _ => {
                return Err(Failure::error(format!(
                    "`{scheme}://` is not a backend URL this command knows: give \
                     redis://, rediss://, memcache:// or file://"
                )))
            }
        };
        return Ok(match cli.expiration_time {
            Some(seconds) => {
                let duration = Duration::try_from_secs_f64(seconds)
                    .map_err(|e| Failure::error(format!("--expiration-time {seconds}: {e}")))?;
                config.expiration_time(duration)
            }
            None => config,
        });
    }
    let Some(path) = &cli.config else {
        return Err(Failure::error(format!(
            "region `{region}`: give the region file with --config FILE (or DOGPILE_CONFIG), \
             or a backend URL in place of the region name"
        )));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::error(format!("cannot read {}: {e}", path.display())))?;
    let mut regions: BTreeMap<String, RegionConfig> =
        if path.extension().is_some_and(|ext| ext == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        }
        .map_err(|e| Failure::error(format!("{}: {e}", path.display())))?;
    let known = regions.keys().cloned().collect::<Vec<_>>().join(", ");
    regions.remove(region).ok_or_else(|| {
        Failure::error(format!(
            "{} has no region `{region}`; its regions: {known}",
            path.display()
        ))
    })
}

fn open(cli: &Cli, region: &str) -> Result<Region, Failure> {
    let config = region_config(cli, region)?;
    let backend = config
        .build_backend()
        .map_err(|e| Failure::error(format!("region `{region}`: {e}")))?;
    let invalidated = if config.shares_invalidation() {
        shared_invalidation(&*backend, region)?
    } else {
        None
    };
    Ok(Region {
        name: region.to_owned(),
        expiration: config.expiration(),
        backend,
        invalidated,
    })
}

/// The shared invalidation record of the region named `name` (`_dogpile_invalidation:`
/// and the name, JSON `{"at": seconds, "hard": bool}`), if there is one.
fn shared_invalidation(
    backend: &dyn CacheBackend,
    name: &str,
) -> Result<Option<(f64, bool)>, Failure> {
    let key = format!("_dogpile_invalidation:{name}");
    let record = backend.get(&key).map_err(|e| {
        Failure::error(format!(
            "region `{name}`: cannot read its invalidation record: {e}"
        ))
    })?;
    Ok(record.and_then(|bytes| {
        let record: Value = serde_json::from_slice(&bytes).ok()?;
        Some((record.get("at")?.as_f64()?, record.get("hard")?.as_bool()?))
    }))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What `get` reports of one key, as JSON.
fn describe(region: &Region, key: &str, bytes: Option<Vec<u8>>) -> Value {
    let Some(bytes) = bytes else {
        return json!({ "key": key, "status": "absent" });
    };
    let timing = |ct: f64| {
        let age = (now() - ct).max(0.0);
        let expired = region
            .expiration
            .is_some_and(|expiration| age > expiration.as_secs_f64());
        // By the region's shared invalidation: "hard" (absent to the application), "soft"
        // (stale), or false.
        let invalidated = match region.invalidated {
            Some((at, hard)) if ct < at => json!(if hard { "hard" } else { "soft" }),
            _ => json!(false),
        };
        json!({
            "key": key,
            "created": rfc3339(ct),
            "created_unix": ct,
            "age_seconds": age,
            "expiration_time": region.expiration.map(|e| e.as_secs_f64()),
            "expired": expired,
            "invalidated": invalidated,
        })
    };
    match CachedValue::<Value>::from_bytes(&bytes) {
        Ok(value) => {
            let mut report = timing(value.metadata.ct);
            report["status"] = json!("present");
            report["value"] = value.payload;
            report
        }
        // dogpile's metadata, but a payload JSON cannot show (binary, maps with keys that
        // are not strings, nested too deep).
        Err(reason) if metadata(&bytes).is_some() => {
            let mut report = timing(metadata(&bytes).map_or(0.0, |m| m.ct));
            report["status"] = json!("undecodable");
            report["reason"] = json!(reason);
            report["size"] = json!(bytes.len());
            report
        }
        Err(reason) => json!({
            "key": key,
            "status": "not_dogpile",
            "reason": reason,
            "size": bytes.len(),
            "preview": String::from_utf8_lossy(&bytes[..bytes.len().min(64)]),
        }),
    }
}

/// The metadata of bytes in dogpile's format (of its version), whatever the payload.
fn metadata(bytes: &[u8]) -> Option<Metadata> {
    let bar = bytes.iter().position(|&b| b == b'|')?;
    serde_json::from_slice::<Metadata>(&bytes[..bar])
        .ok()
        .filter(|m| m.v == VALUE_VERSION)
}

fn get(cli: &Cli, region: &Region, keys: &[String]) -> Result<u8, Failure> {
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let values = region.backend.get_multi(&refs).map_err(|e| {
        Failure::error(format!(
            "region `{}`: cannot read {}: {e}",
            region.name,
            keys.join(", ")
        ))
    })?;
    let mut code = 0;
    for (key, bytes) in keys.iter().zip(values) {
        let report = describe(region, key, bytes);
        if report["status"] != "present" {
            code = 3;
        }
        if cli.json {
            println!("{report}");
            continue;
        }
        match report["status"].as_str() {
            Some("present") => {
                let expired = if report["expired"] == true {
                    ", EXPIRED"
                } else {
                    ""
                };
                let limit = match region.expiration {
                    Some(e) => format!(" of {}", seconds(e.as_secs_f64())),
                    None => " (never expires)".to_owned(),
                };
                println!(
                    "{key}: created {} (age {}{limit}{expired})",
                    report["created"].as_str().unwrap_or("?"),
                    seconds(report["age_seconds"].as_f64().unwrap_or(0.0)),
                );
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report["value"]).unwrap_or_default()
                );
            }
            Some("absent") => println!("{key}: absent"),
            Some("undecodable") => println!(
                "{key}: dogpile's format, created {} ({} bytes), but its payload cannot be shown as JSON: {}",
                report["created"].as_str().unwrap_or("?"),
                report["size"],
                report["reason"].as_str().unwrap_or("")
            ),
            _ => println!(
                "{key}: not dogpile's format ({} bytes): {}",
                report["size"],
                report["reason"].as_str().unwrap_or("")
            ),
        }
    }
    Ok(code)
}

fn seconds(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1}s")
    } else if s < 7200.0 {
        format!("{:.1}m", s / 60.0)
    } else {
        format!("{:.1}h", s / 3600.0)
    }
}

/// `ct` (Unix seconds) as an RFC 3339 UTC time.
fn rfc3339(ct: f64) -> String {
    if !ct.is_finite() || ct < 0.0 {
        return format!("{ct}");
    }
    // Rounded to the microsecond (Python writes `time.time()`, microseconds at most).
    let total = (ct * 1e6).round() as i64;
    let (secs, micros) = (total.div_euclid(1_000_000), total.rem_euclid(1_000_000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn delete(cli: &Cli, region: &Region, keys: &[String]) -> Result<u8, Failure> {
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    region.backend.delete_multi(&refs).map_err(|e| {
        Failure::error(format!(
            "region `{}`: cannot delete {}: {e}",
            region.name,
            keys.join(", ")
        ))
    })?;
    if cli.json {
        println!("{}", json!({ "deleted": keys }));
    } else {
        println!("deleted {} key(s)", keys.len());
    }
    Ok(0)
}

/// Streams the keys matching `pattern` to `each`, with a progress line on a terminal.
fn scan(
    region: &Region,
    pattern: &str,
    limit: Option<usize>,
    each: &mut dyn FnMut(String),
) -> Result<usize, Failure> {
    let progress = io::stderr().is_terminal();
    let mut count = 0usize;
    let mut last = Instant::now();
    let limit = limit.unwrap_or(usize::MAX);
    if limit > 0 {
        region
            .backend
            .keys(pattern, &mut |key| {
                each(key);
                count += 1;
                if progress && last.elapsed() > Duration::from_millis(500) {
                    eprint!("\r{count} keys...");
                    last = Instant::now();
                }
                count < limit
            })
            .map_err(|e| {
                Failure::error(format!(
                    "region `{}`: cannot list keys matching `{pattern}`: {e}",
                    region.name
                ))
            })?;
    }
    if progress && count > 0 {
        eprint!("\r\x1b[K");
    }
    Ok(count)
}

fn list(cli: &Cli, region: &Region, pattern: &str, limit: Option<usize>) -> Result<u8, Failure> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    scan(region, pattern, limit, &mut |key| {
        let _ = if cli.json {
            writeln!(out, "{}", json!({ "key": key }))
        } else {
            writeln!(out, "{key}")
        };
    })?;
    Ok(0)
}

fn ping(cli: &Cli, region: &Region) -> Result<u8, Failure> {
    if let Some(servers) = region.backend.servers() {
        return ping_servers(cli, region, &servers);
    }
    let start = Instant::now();
    region
        .backend
        .get("dogpile-cli:ping")
        .map_err(|e| Failure::error(format!("region `{}` is down: {e}", region.name)))?;
    let rtt = start.elapsed();
    if cli.json {
        println!(
            "{}",
            json!({ "region": region.name, "ok": true, "rtt_ms": rtt.as_secs_f64() * 1e3 })
        );
    } else {
        println!(
            "region `{}`: reached in {:.3} ms",
            region.name,
            rtt.as_secs_f64() * 1e3
        );
    }
    Ok(0)
}

/// Each server's round trip, version and TLS; an error naming the first one down.
fn ping_servers(
    cli: &Cli,
    region: &Region,
    servers: &[dogpile::backend::ServerStatus],
) -> Result<u8, Failure> {
    for server in servers {
        let tls = if server.tls { "TLS" } else { "plain" };
        match (&server.reached, cli.json) {
            (Ok((rtt, version)), true) => println!(
                "{}",
                json!({ "region": region.name, "server": server.address, "ok": true,
                        "rtt_ms": rtt.as_secs_f64() * 1e3, "version": version, "tls": server.tls })
            ),
            (Ok((rtt, version)), false) => println!(
                "region `{}`: {} reached in {:.3} ms, version {}, {tls}",
                region.name,
                server.address,
                rtt.as_secs_f64() * 1e3,
                version.as_deref().unwrap_or("unknown"),
            ),
            (Err(error), true) => println!(
                "{}",
                json!({ "region": region.name, "server": server.address, "ok": false,
                        "error": error, "tls": server.tls })
            ),
            (Err(error), false) => println!(
                "region `{}`: {} is down: {error}",
                region.name, server.address
            ),
        }
    }
    match servers.iter().find(|server| server.reached.is_err()) {
        Some(down) => Err(Failure::error(format!(
            "region `{}` is down: server {} did not answer: {}",
            region.name,
            down.address,
            down.reached.as_ref().err().map_or("", String::as_str)
        ))),
        None => Ok(0),
    }
}

/// Invalidates the region named `name` everywhere: the shared record its processes read.
fn invalidate(cli: &Cli, name: &str, hard: bool) -> Result<u8, Failure> {
    if name.contains("://") {
        return Err(Failure::error(format!(
            "`{name}`: invalidation is by region name; give a region of the --config file"
        )));
    }
    let config = region_config(cli, name)?;
    if !config.shares_invalidation() {
        return Err(Failure::error(format!(
            "region `{name}` does not share its invalidation (set `shared_invalidation = true` \
             in its table, in the applications' file too): an invalidation from here would \
             reach no process"
        )));
    }
    if !hard && config.expiration().is_none() {
        return Err(Failure::error(format!(
            "region `{name}` has no expiration_time, so a soft invalidation has nothing to \
             expire values by: give --hard to make them absent"
        )));
    }
    let region = dogpile::CacheRegion::named(name);
    region
        .configure(config)
        .and_then(|region| region.invalidate(hard))
        .map_err(|e| Failure::error(format!("region `{name}`: {e}")))?;
    let kind = if hard { "hard" } else { "soft" };
    if cli.json {
        println!(
            "{}",
            json!({ "region": name, "invalidated": kind, "at": now() })
        );
    } else {
        println!("region `{name}` invalidated ({kind}) in every process sharing it");
    }
    Ok(0)
}

fn purge(cli: &Cli, region: &Region, pattern: &str, yes: bool) -> Result<u8, Failure> {
    let mut keys = Vec::new();
    scan(region, pattern, None, &mut |key| keys.push(key))?;
    if keys.is_empty() {
        if cli.json {
            println!("{}", json!({ "matched": 0, "deleted": 0 }));
        } else {
            println!("no key matches `{pattern}`");
        }
        return Ok(0);
    }
    if !yes {
        if !io::stdin().is_terminal() {
            return Err(Failure {
                code: 4,
                message: format!(
                    "{} key(s) match `{pattern}` in region `{}`: not deleted; confirm with --yes",
                    keys.len(),
                    region.name
                ),
            });
        }
        eprint!(
            "delete {} key(s) matching `{pattern}` in region `{}`? [y/N] ",
            keys.len(),
            region.name
        );
        let mut answer = String::new();
        let _ = io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Failure {
                code: 4,
                message: "not confirmed: nothing deleted".to_owned(),
            });
        }
    }
    let progress = io::stderr().is_terminal();
    let mut deleted = 0;
    for batch in keys.chunks(500) {
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        region.backend.delete_multi(&refs).map_err(|e| {
            Failure::error(format!(
                "region `{}`: deleted {deleted} of {} key(s) matching `{pattern}`, then: {e}",
                region.name,
                keys.len()
            ))
        })?;
        deleted += batch.len();
        if progress {
            eprint!("\rdeleted {deleted}/{}", keys.len());
        }
    }
    if progress {
        eprint!("\r\x1b[K");
    }
    if cli.json {
        println!("{}", json!({ "matched": keys.len(), "deleted": deleted }));
    } else {
        println!("deleted {deleted} key(s) matching `{pattern}`");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_times_as_rfc3339() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(951_782_400.5), "2000-02-29T00:00:00.500000Z");
        assert_eq!(rfc3339(1_795_608_176.0), "2026-11-25T12:02:56.000000Z");
        assert_eq!(rfc3339(1_795_608_176.021698), "2026-11-25T12:02:56.021698Z");
        assert_eq!(rfc3339(59.9999996), "1970-01-01T00:01:00.000000Z");
    }
}
