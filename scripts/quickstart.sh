#!/usr/bin/env bash
# The main job: set up (cmake, libclang, the test model), build minerva in release and run the
# quickstart pipeline on the real model. Prints where the report is.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked
exec target/release/minerva run pipelines/quickstart.yaml "$@"
