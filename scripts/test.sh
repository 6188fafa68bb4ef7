#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need on a fresh machine (cmake,
# libclang, the test model, llama.cpp's compare-llama-bench.py with GitPython and tabulate, and on
# Linux x86_64 the MLX library with mlx-c and its bindings),
# then checks formatting and lints in both builds (with and without feature `mlx`), runs every
# test with the MLX backend, the Slurm end-to-end script (scripts/slurm-localhost.sh), and the
# tests of a build without MLX.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# The MLX backend: PyPI's mlx-cpu wheel, mlx-c and the bindings (Linux x86_64; a no-op on Apple
# silicon, where mlx-rs builds MLX itself and the backend is always in).
mlx_features=()
case "$(uname -s)-$(uname -m)" in
    Linux-x86_64)
        scripts/setup-mlx.sh
        mlx_features=(--features mlx)
        ;;
esac

# llama.cpp's scripts/compare-llama-bench.py (from the llama-cpp-python sdist, fetched through
# pip; nothing is built without arguments) and the two libraries it imports, for the test that
# it reads `minerva export`.
scripts/build-llama-tools.sh
python3 -m pip install --quiet --disable-pip-version-check "GitPython==3.1.45" "tabulate==0.9.0"

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

# A CI run builds everything once: incremental state would only take disk and time.
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0
fi
echo "== disk: $(df -h . | awk 'NR==2 {print $4 " free of " $2}')"

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
if [ ${#mlx_features[@]} -gt 0 ]; then
    echo "== cargo clippy --all-targets ${mlx_features[*]} -- -D warnings"
    cargo clippy --all-targets --locked "${mlx_features[@]}" -- -D warnings
fi
echo "== cargo test ${mlx_features[*]}"
cargo test --locked "${mlx_features[@]}"
# A real one-node Slurm cluster (Debian's slurm-wlm and munge, installed when missing) runs the
# script `minerva fleet slurm` writes for a 3-shard pipeline and its merge (needs root or sudo;
# skipped, saying so, without).
echo "== scripts/slurm-localhost.sh"
MINERVA_BIN=target/debug/minerva scripts/slurm-localhost.sh
if [ ${#mlx_features[@]} -gt 0 ]; then
    # A build without the feature: MLX jobs are reported as unavailable, not dropped.
    echo "== cargo test --test cli (without feature mlx)"
    cargo test --locked --test cli
fi
if command -v ccache >/dev/null 2>&1; then
    echo "== ccache"
    ccache --show-stats 2>/dev/null | grep -Ei "hits|misses" || true
fi
