#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need on a fresh machine (cmake,
# libclang, the test model), then checks formatting and lints, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# Rust components for the checks (present on most toolchains; cheap when they are).
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked
