#!/usr/bin/env bash
# Prepares the CUDA build (cargo feature `cuda`: llama.cpp's and candle's CUDA backends) on Linux
# x86_64 from PyPI wheels alone, so it works where only package registries are reachable:
#
#   scripts/setup-cuda.sh [ARCH]        # ARCH: the GPU's compute capability, default 90 (H100/H200)
#   . target/cuda/env.sh
#   cargo build --release --features cuda
#
# 1. The toolkit: NVIDIA's CUDA 13.0 wheels (nvcc, cicc, the crt headers, cudart, cuBLAS, cuRAND,
#    NVRTC and CCCL), installed with pip into target/cuda/py. They all unpack into one tree,
#    nvidia/cu13/{bin,include,lib,nvvm}, the layout of a CUDA installation. (The CUDA 12 wheels
#    ship ptxas but not nvcc itself, so they cannot compile llama.cpp's kernels.)
# 2. What a system toolkit has and the wheels do not, in lib/stubs, as in a system install:
#    - libcuda.so, the driver API's link stub: every function cuda.h declares, as an empty
#      function, with the soname libcuda.so.1. It only satisfies the linker; at run time the
#      driver's own libcuda.so.1 is loaded, so a cuda build starts only where a driver is.
#    - empty libcublas_static.a, libcublasLt_static.a and libculibos.a: llama-cpp-sys-2 names the
#      static cuBLAS archives, which NVIDIA ships only in its installers; the wheels have the
#      shared cuBLAS, which minerva's build.rs links instead (and which candle links anyway).
#    - the unversioned libX.so links the linker looks for, and lib64 -> lib.
# 3. target/cuda/env.sh: CUDA_PATH and CUDA_LIBRARY_PATH for llama-cpp-sys-2 and cudarc, nvcc on PATH,
#    CMAKE_CUDA_ARCHITECTURES and CUDA_COMPUTE_CAP set to ARCH (one architecture keeps the
#    compile affordable: llama.cpp's default list is 8 of them), and MINERVA_CUDA_LIB_DIR, which
#    build.rs writes into the binary's rpath so it finds cuBLAS without LD_LIBRARY_PATH.
#
# Idempotent: the wheels are installed again only when the pinned set changes. Everything goes
# under target/cuda (MINERVA_CUDA_HOME overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

arch=${1:-${MINERVA_CUDA_ARCH:-90}}
home=${MINERVA_CUDA_HOME:-$root/target/cuda}
pkgs=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
    nvidia-cublas==13.0.2.14
    nvidia-curand==10.4.0.35
    nvidia-cuda-nvrtc==13.0.88
)
case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) echo "setup-cuda: the PyPI toolkit is for Linux x86_64; elsewhere install CUDA and set CUDA_PATH" >&2; exit 2 ;;
esac
case "$arch" in
    ''|*[!0-9a-z]*) echo "setup-cuda: ARCH is a compute capability such as 80, 89, 90 or 120, not '$arch'" >&2; exit 2 ;;
esac
command -v c++ >/dev/null || scripts/setup.sh >/dev/null

mkdir -p "$home"
home=$(cd "$home" && pwd)
stamp="$home/.wheels"
if [ "$(cat "$stamp" 2>/dev/null)" != "${pkgs[*]}" ]; then
    echo "setup-cuda: installing ${pkgs[*]} into $home/py"
    rm -rf "$home/py"
    python3 -m pip install --no-deps --quiet --disable-pip-version-check --target "$home/py" "${pkgs[@]}"
    echo "${pkgs[*]}" > "$stamp"
fi
tk="$home/py/nvidia/cu13"
[ -x "$tk/bin/nvcc" ] || { echo "setup-cuda: $tk/bin/nvcc is missing after the install" >&2; exit 1; }

# Unversioned names for the linker (libcublas.so -> libcublas.so.13, ...), and lib64.
(
    cd "$tk/lib"
    for f in lib*.so.*; do
        case "$f" in *.alt.so*|*-builtins*) continue ;; esac
        ln -sfn "$f" "${f%%.so.*}.so"
    done
)
ln -sfn lib "$tk/lib64"
stubs="$tk/lib/stubs"
mkdir -p "$stubs"

# The driver API's link stub, from the preprocessed cuda.h, so the _v2/_v3 names the macros
# select are the ones defined.
if [ ! -f "$stubs/libcuda.so" ] || [ "$tk/include/cuda.h" -nt "$stubs/libcuda.so" ]; then
    echo '#include <cuda.h>' | cc -E -P -I"$tk/include" - \
        | python3 -c '
import re, sys
names = sorted(set(re.findall(r"\bCUresult\s+(cu[A-Za-z0-9_]+)\s*\(", sys.stdin.read())))
if len(names) < 300:
    sys.exit(f"setup-cuda: only {len(names)} driver functions found in cuda.h")
print("/* Link stub for libcuda.so.1, written by scripts/setup-cuda.sh: never loaded at run time. */")
for n in names:
    print(f"int {n}(void) {{ return 999; }}")
' > "$stubs/cuda-stub.c"
    cc -shared -fPIC -o "$stubs/libcuda.so" -Wl,-soname,libcuda.so.1 "$stubs/cuda-stub.c"
fi
for a in cublas_static cublasLt_static culibos; do
    [ -f "$stubs/lib$a.a" ] || ar rcs "$stubs/lib$a.a"
done

cat > "$home/env.sh" <<EOF
# Written by scripts/setup-cuda.sh: source it before \`cargo build --features cuda\`.
export CUDA_PATH="$tk"
export CUDA_HOME="$tk"
export CUDA_ROOT="$tk"
# find_cuda_helper (llama-cpp-sys-2's link search) reads this on Linux, not CUDA_PATH.
export CUDA_LIBRARY_PATH="$tk"
export PATH="$tk/bin:\$PATH"
export CMAKE_CUDA_COMPILER="$tk/bin/nvcc"
export CMAKE_CUDA_ARCHITECTURES="$arch"
export CUDA_COMPUTE_CAP="$arch"
export MINERVA_CUDA_LIB_DIR="$tk/lib"
EOF
echo "setup-cuda: toolkit $("$tk/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') in $tk, sm_$arch; now: . ${home#"$root"/}/env.sh && cargo build --release --features cuda"
