# Sourced by scripts/quickstart.sh and scripts/bench-fidelity.sh: the environment of minerva's
# native build, for this machine's CPU.
#
# - Rust: -C target-cpu=native. llama-cpp-sys-2 then builds llama.cpp with GGML_NATIVE
#   (-march=native), llama.cpp's own default.
# - Except AMX: on CPUs with AMX (Sapphire Rapids and later Xeons), -march=native compiles
#   ggml's AMX matmul kernels, and on this project's AMX Xeons they crash (SIGSEGV in
#   ggml::cpu::amx::tensor_traits::compute_forward) as soon as a prompt is processed, in both
#   llama.cpp revisions tried (ggml 0.25.3 and 0.26.0; upstream llama.cpp issue #20824 is open).
#   -mno-amx-* (GCC lets explicit -mno- flags win over -march) keeps every other feature:
#   AVX-512, VNNI, BF16.
# - target/native, so the portable build of target/ (tests, CI) is not rebuilt each time.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/native}"
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-cpu=native"
MINERVA_NO_AMX=""
if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
    MINERVA_NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    export CFLAGS="${CFLAGS:+$CFLAGS }$MINERVA_NO_AMX"
    export CXXFLAGS="${CXXFLAGS:+$CXXFLAGS }$MINERVA_NO_AMX"
fi
# llama-cpp-sys-2 configures llama.cpp's CMake build once and keeps its cache, so flags that
# change afterwards would not reach it: when they differ from the last build's, its build
# directories and fingerprints are removed, so its build script runs and configures afresh.
stamp="$CARGO_TARGET_DIR/.native-cflags"
if [ -d "$CARGO_TARGET_DIR" ] && [ "$(cat "$stamp" 2>/dev/null)" != "${CFLAGS:-}" ]; then
    rm -rf "$CARGO_TARGET_DIR"/*/build/llama-cpp-sys-2-* "$CARGO_TARGET_DIR"/*/.fingerprint/llama-cpp-sys-2-*
fi
mkdir -p "$CARGO_TARGET_DIR"
printf '%s\n' "${CFLAGS:-}" > "$stamp"
