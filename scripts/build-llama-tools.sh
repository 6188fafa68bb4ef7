#!/usr/bin/env bash
# Builds llama.cpp's own tools (llama-bench, llama-server) from the full llama.cpp tree inside the
# PyPI sdist of llama-cpp-python (the llama-cpp-sys-2 crate's copy omits the tools' sources),
# fetched through pip, with cmake in release mode. Cached under target/fidelity/.
#
#   scripts/build-llama-tools.sh TARGET...      # llama-bench, llama-server
#
# Built with the CPU features llama-cpp-sys-2 compiles llama.cpp with by default (it does not
# build for the native CPU unless RUSTFLAGS has -C target-cpu=native): AVX/AVX2/FMA/F16C/BMI2.
# A -march=native build would use AVX-512 where the CPU has it and compare builds, not tools.
set -euo pipefail
cd "$(dirname "$0")/.."
SDIST="llama-cpp-python==0.3.36"
WORK="target/fidelity"
BUILD="$WORK/llama.cpp/build-avx2"

scripts/setup.sh >/dev/null
mkdir -p "$WORK"
if [ ! -d "$WORK/llama.cpp" ]; then
    python3 -m pip download --no-deps --no-binary :all: --quiet --disable-pip-version-check -d "$WORK" "$SDIST"
    tar -xzf "$WORK"/llama_cpp_python-*.tar.gz -C "$WORK"
    mv "$WORK"/llama_cpp_python-*/vendor/llama.cpp "$WORK/llama.cpp"
fi
for t in "$@"; do
    if [ ! -x "$BUILD/bin/$t" ]; then
        cmake -S "$WORK/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
            -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
            -DLLAMA_BUILD_TOOLS=ON -DBUILD_SHARED_LIBS=OFF \
            -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON >/dev/null
        cmake --build "$BUILD" --target "$t" -j "$(nproc)" >/dev/null
    fi
    echo "$BUILD/bin/$t"
done
