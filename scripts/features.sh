#!/usr/bin/env bash
# Checks that the library builds with each cargo feature on its own and with none (as
# `cargo hack --each-feature --no-dev-deps check` would), so a feature combination that
# does not build is caught here before a user finds it.
set -euo pipefail
cd "$(dirname "$0")/.."

features=$(sed -n '/^\[features\]/,/^\[/p' Cargo.toml | grep -oE '^[a-z][a-z-]* =' | cut -d' ' -f1 | grep -v '^default$')
for feature in "" $features; do
  echo "cargo check -p dogpile --lib --no-default-features --features '${feature}'" >&2
  cargo check -q -p dogpile --lib --no-default-features --features "${feature}"
done
