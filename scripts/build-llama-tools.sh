#!/usr/bin/env bash
# Builds llama.cpp's own tools (llama-bench, llama-server) from the full llama.cpp tree inside the
# PyPI sdist of llama-cpp-python (the llama-cpp-sys-2 crate's copy omits the tools' sources),
# fetched through pip, with cmake in release mode. Cached under target/fidelity/.
#
#   scripts/build-llama-tools.sh TARGET...      # llama-bench, llama-server
#
# Two builds, chosen by LLAMA_TOOLS_BUILD:
#   default  llama.cpp's own defaults (GGML_NATIVE=ON: -march=native, AVX-512 where the CPU has
#            it): what a user who builds llama.cpp gets, the match of minerva's native build.
#            On CPUs with AMX, the AMX kernels are left out as minerva's native build leaves
#            them out: they crash there (scripts/native-env.sh).
#   avx2     (the default here) the CPU features of minerva's portable build (x86-64-v3):
#            AVX/AVX2/FMA/F16C/BMI2, so the two compare tools and not instruction sets.
set -euo pipefail
cd "$(dirname "$0")/.."
SDIST="llama-cpp-python==0.3.36"
WORK="target/fidelity"
FLAVOUR="${LLAMA_TOOLS_BUILD:-avx2}"
BUILD="$WORK/llama.cpp/build-$FLAVOUR"
case "$FLAVOUR" in
    default)
        cpu=()
        if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
            no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
            cpu=("-DCMAKE_C_FLAGS=$no_amx" "-DCMAKE_CXX_FLAGS=$no_amx")
            BUILD="$WORK/llama.cpp/build-default-noamx"
        fi
        ;;
    avx2) cpu=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON) ;;
    *) echo "build-llama-tools: LLAMA_TOOLS_BUILD is default or avx2, not '$FLAVOUR'" >&2; exit 2 ;;
esac

scripts/setup.sh >/dev/null
mkdir -p "$WORK"
if [ ! -d "$WORK/llama.cpp" ]; then
    python3 -m pip download --no-deps --no-binary :all: --quiet --disable-pip-version-check -d "$WORK" "$SDIST"
    tar -xzf "$WORK"/llama_cpp_python-*.tar.gz -C "$WORK"
    mv "$WORK"/llama_cpp_python-*/vendor/llama.cpp "$WORK/llama.cpp"
fi
for t in "$@"; do
    if [ ! -x "$BUILD/bin/$t" ]; then
        # Only what the tools need is switched off (curl: no model downloads; tests and examples:
        # build time); static libraries so the binaries run from anywhere.
        cmake -S "$WORK/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
            -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
            -DLLAMA_BUILD_TOOLS=ON -DBUILD_SHARED_LIBS=OFF "${cpu[@]}" >/dev/null
        cmake --build "$BUILD" --target "$t" -j "$(nproc)" >/dev/null
    fi
    echo "$BUILD/bin/$t"
done
