#!/usr/bin/env bash
# The main job: set up (cmake, libclang, the test model; on Linux x86_64 the MLX library, mlx-c
# and bindings), build minerva in release with the MLX backend and run the quickstart pipeline
# on the real model. Prints where the report is.
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
cargo build --release --locked "${features[@]}"
exec target/release/minerva run pipelines/quickstart.yaml "$@"
