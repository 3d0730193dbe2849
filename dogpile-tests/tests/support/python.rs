//! Python beside Rust: Debian's `python3` with dogpile.cache, redis and msgpack (which
//! `scripts/test.sh` installs), running a script against the test servers.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// A Python with dogpile.cache, redis and msgpack: Debian's, else the first `python3` on
/// the path; a test that needs it fails, saying how to install them, when neither has them.
pub fn python() -> &'static str {
    let debian = "/usr/bin/python3";
    let has_modules = |python: &str| {
        Command::new(python)
            .args(["-c", "import dogpile.cache, redis, msgpack"])
            .status()
            .is_ok_and(|status| status.success())
    };
    if Path::new(debian).exists() && has_modules(debian) {
        return debian;
    }
    assert!(
        has_modules("python3"),
        "these tests need Python with dogpile.cache, redis and msgpack: apt-get install \
         python3-dogpile.cache python3-redis python3-msgpack (scripts/test.sh does)"
    );
    "python3"
}

/// Runs `script` with `args`, the repository's `python/` directory on its path; its
/// output, trimmed. Panics with Python's error output when it fails.
pub fn run(script: &str, args: &[&str]) -> String {
    let module_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python");
    let output = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .env("PYTHONPATH", module_dir)
        .output()
        .expect("cannot run python");
    assert!(
        output.status.success(),
        "python {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
