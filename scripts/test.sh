#!/usr/bin/env bash
# Runs the whole test suite. Makes sure redis-server, redis-cli, memcached and Python's
# dogpile.cache are installed (Debian packages, installed with apt-get when missing); the
# tests start their own servers on free loopback ports and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v memcached >/dev/null || missing+=(memcached)
# The redis TLS tests make their certificates with it.
command -v openssl >/dev/null || missing+=(openssl)
# The shared-invalidation tests run Python's dogpile.cache (Debian's packages) beside Rust.
/usr/bin/python3 -c "import dogpile.cache, redis, msgpack" 2>/dev/null ||
  missing+=(python3 python3-dogpile.cache python3-redis python3-msgpack)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (needed by the redis, memcached and Python interop tests)" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo test --workspace --all-features "$@"
# The compile errors of a build without the `tokio` feature (nothing to check with it on).
cargo test -p dogpile-tests --no-default-features --test compile_fail_no_tokio
# Each cargo feature on its own, and none: every combination a user may pick builds.
./scripts/features.sh
