#!/usr/bin/env bash
# The main job: set up (cmake, libclang, the test model; on Linux x86_64 the MLX library, mlx-c
# and bindings), build minerva in release with the MLX backend and run the quickstart pipeline
# on the real model. Prints where the report is.
#
# The build is for this machine's CPU (Rust `-C target-cpu=native`, with which llama-cpp-sys-2
# builds llama.cpp with GGML_NATIVE, llama.cpp's own default; AMX kernels off, see
# scripts/native-env.sh), in target/native, so the portable build the tests use (target/) is
# left alone. MINERVA_PORTABLE=1 builds and runs the portable
# x86-64-v3 binary in target/ instead (what CI builds; it runs on any x86_64 server since 2015,
# but without AVX-512 kernels where the CPU has them). The run manifest records which it was.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
features=()
case "$(uname -s)-$(uname -m)" in
    Linux-x86_64)
        scripts/setup-mlx.sh
        features=(--features mlx)
        ;;
esac
if [ "${MINERVA_PORTABLE:-0}" = 1 ]; then
    bin=target/release/minerva
else
    . scripts/native-env.sh
    bin="$CARGO_TARGET_DIR/release/minerva"
fi
cargo build --release --locked "${features[@]}"
exec "$bin" run pipelines/quickstart.yaml "$@"
