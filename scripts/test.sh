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

# llama-cpp-sys-2's cmake build runs once for clippy and once for the tests (cargo keys the two
# build-script runs apart); through ccache the second compiles nothing. CMake reads these
# variables as the default compiler launchers; paths are made relative so the two build
# directories share cache entries.
if command -v ccache >/dev/null 2>&1; then
    export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache
    export CCACHE_BASEDIR=/ CCACHE_NOHASHDIR=true
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked
if command -v ccache >/dev/null 2>&1; then
    echo "== ccache"
    ccache --show-stats 2>/dev/null | grep -Ei "hits|misses" || true
fi
