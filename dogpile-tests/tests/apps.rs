//! Applications outside the workspace, built and run with cargo as a user's would be: each
//! in `tests/apps/NAME`, a package with its own `[workspace]` table that depends on dogpile
//! by path.
//!
//! - `redis_tokio_comp` depends on the `redis` crate with `tokio-comp` and on dogpile with
//!   its default features (`tls` included). dogpile's TLS must not turn on a feature of the
//!   redis crate (its `tls-rustls` without `tokio-rustls-comp` fails to build under
//!   `tokio-comp`: `missing connect_tcp_tls`), so the application builds, and runs.
//!
//! The build uses the applications' committed `Cargo.lock` (cargo fetches what the
//! registry cache lacks, as on a fresh machine), into `$CARGO_TARGET_DIR/apps` or
//! `target/apps`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("apps")
}

/// Builds and runs the application in `tests/apps/{name}`, returning what it printed.
fn build_and_run(name: &str) -> String {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apps")
        .join(name)
        .join("Cargo.toml");
    let output = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo for {name}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the application {name} did not build or run ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn an_application_using_redis_with_tokio_comp_builds_and_runs_beside_dogpile() {
    let printed = build_and_run("redis_tokio_comp");
    assert!(
        printed.contains("dogpile beside redis/tokio-comp: ok (42, Some(\"redis\"))"),
        "{printed}"
    );
}
