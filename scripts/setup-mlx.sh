#!/usr/bin/env bash
# Prepares the MLX backend (cargo feature `mlx`) on Linux x86_64, offline apart from package
# registries:
#
#   1. MLX itself: the C++ library, headers and CMake config of the PyPI wheel `mlx-cpu`
#      (pip download, unzipped; its BLAS/LAPACK ride along in mlx_cpu.libs/). No MLX source is
#      on any registry, and mlx-sys's own build script clones it from GitHub.
#   2. mlx-c, the C API mlx-rs binds: the copy vendored in the mlx-sys crate (cargo fetches it),
#      built with cmake against the wheel (MLX_C_USE_SYSTEM_MLX), into a static libmlxc.a.
#      GCC 12 needs two shims (scripts/mlx/*.h*): std::format, and the 16-bit float types mlx-c
#      declares only on aarch64.
#   3. The Rust bindings mlx-sys would generate: bindgen-cli over the same headers with the
#      same options as mlx-sys's build script.
#   4. .cargo/mlx.toml (included by .cargo/config.toml when present): a `links` override for
#      `mlx`, so mlx-sys's build script (clone + macOS link flags) never runs, pointing at the
#      above, and MINERVA_MLX_LIB_DIR for the binary's rpath (build.rs).
#
# BLAS: the wheel ships reference (netlib) BLAS/LAPACK, a naive single-threaded sgemm: MLX's CPU
# matmuls through it ran SmolLM2's pp512 at 10 tokens/s here, against 187 with OpenBLAS on one
# thread (238 on two). By
# default (MINERVA_MLX_BLAS=openblas) the wheel's two libraries are replaced by links to
# Debian's OpenBLAS (libopenblas0-pthread, installed if missing); MINERVA_MLX_BLAS=wheel keeps
# the wheel's own. Either way the run manifest names the BLAS library the process loaded.
#
# Versions are pinned: MLX 0.32.2 (the tag mlx-sys 0.7.0's mlx-c expects), bindgen 0.72.1.
# Idempotent: each step is skipped when its output is there for the same versions.
# Everything goes under target/mlx (MINERVA_MLX_HOME overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

MLX_VERSION=0.32.2
MLX_SYS_VERSION=0.7.0
BINDGEN_VERSION=0.72.1
home=${MINERVA_MLX_HOME:-$root/target/mlx}
mkdir -p "$home"
home=$(cd "$home" && pwd)

case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    Darwin-arm64)
        echo "setup-mlx: on Apple silicon mlx-rs builds MLX itself; nothing to do"
        exit 0
        ;;
    *)
        echo "setup-mlx: the MLX backend is prepared for Linux x86_64 (PyPI's mlx-cpu wheel) and" \
            "built natively on Apple silicon; $(uname -s)-$(uname -m) is neither" >&2
        exit 1
        ;;
esac

# -- 1. the wheel ------------------------------------------------------------------------------
sdk="$home/sdk-$MLX_VERSION"
if [ ! -f "$sdk/mlx/lib/libmlx.so" ]; then
    echo "setup-mlx: fetching mlx-cpu==$MLX_VERSION from PyPI"
    rm -rf "$sdk.tmp" && mkdir -p "$sdk.tmp/wheel"
    python3 -m pip download --quiet --no-deps --only-binary :all: \
        --dest "$sdk.tmp/wheel" "mlx-cpu==$MLX_VERSION"
    python3 -m zipfile -e "$sdk.tmp/wheel"/mlx_cpu-*.whl "$sdk.tmp"
    rm -rf "$sdk.tmp/wheel" "$sdk"
    mv "$sdk.tmp" "$sdk"
fi

# The CPU BLAS libmlx.so loads (through its RPATH, from mlx_cpu.libs/).
blas=${MINERVA_MLX_BLAS:-openblas}
libs="$sdk/mlx_cpu.libs"
wheel_blas=$(cd "$libs" && ls libblas-*.so.* | grep -v '\.wheel$' | head -1)
wheel_lapack=$(cd "$libs" && ls liblapack-*.so.* | grep -v '\.wheel$' | head -1)
for f in "$wheel_blas" "$wheel_lapack"; do
    [ -e "$libs/$f.wheel" ] || cp -P "$libs/$f" "$libs/$f.wheel"
done
case "$blas" in
    openblas)
        ob=/usr/lib/x86_64-linux-gnu/openblas-pthread
        if [ ! -e "$ob/libblas.so.3" ]; then
            echo "setup-mlx: installing libopenblas0-pthread"
            SUDO=""
            [ "$(id -u)" -ne 0 ] && SUDO="sudo"
            $SUDO apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas0-pthread >/dev/null
        fi
        ln -sfn "$ob/libblas.so.3" "$libs/$wheel_blas"
        ln -sfn "$ob/liblapack.so.3" "$libs/$wheel_lapack"
        ;;
    wheel)
        for f in "$wheel_blas" "$wheel_lapack"; do
            rm -f "$libs/$f" && cp -P "$libs/$f.wheel" "$libs/$f"
        done
        ;;
    *)
        echo "setup-mlx: MINERVA_MLX_BLAS must be openblas or wheel, not '$blas'" >&2
        exit 1
        ;;
esac
echo "setup-mlx: CPU BLAS: $blas ($(readlink -f "$libs/$wheel_blas"))"

# -- 2. mlx-c ----------------------------------------------------------------------------------
# The mlx-sys crate source, as cargo fetched it for this lock file.
mlx_sys_dir=$(cargo metadata --format-version 1 --locked --features mlx 2>/dev/null |
    python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "mlx-sys" and p["version"] == sys.argv[1]:
        print(os.path.dirname(p["manifest_path"]))
' "$MLX_SYS_VERSION")
mlxc_src="$mlx_sys_dir/src/mlx-c"
if [ -z "$mlx_sys_dir" ] || [ ! -f "$mlxc_src/CMakeLists.txt" ]; then
    echo "setup-mlx: mlx-sys $MLX_SYS_VERSION's source was not found (cargo fetch failed?)" >&2
    exit 1
fi
if ! grep -q "GIT_TAG v$MLX_VERSION)" "$mlxc_src/CMakeLists.txt"; then
    echo "setup-mlx: mlx-sys $MLX_SYS_VERSION's mlx-c does not target MLX $MLX_VERSION:" \
        "$(grep GIT_TAG "$mlxc_src/CMakeLists.txt")" >&2
    exit 1
fi
shims="$root/scripts/mlx"
mlxc_build="$home/mlx-c-$MLX_SYS_VERSION"
if [ ! -f "$mlxc_build/libmlxc.a" ]; then
    echo "setup-mlx: building mlx-c (mlx-sys $MLX_SYS_VERSION) against MLX $MLX_VERSION"
    launcher=()
    if command -v ccache >/dev/null 2>&1; then
        launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
    fi
    rm -rf "$mlxc_build"
    cmake -S "$mlxc_src" -B "$mlxc_build" -DCMAKE_BUILD_TYPE=Release \
        -DMLX_C_USE_SYSTEM_MLX=ON -DMLX_DIR="$sdk/mlx/share/cmake/MLX" \
        -DMLX_C_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF \
        "-DCMAKE_CXX_FLAGS=-include $shims/format_compat.hpp -include $shims/half_compat.h" \
        "-DCMAKE_C_FLAGS=-include $shims/half_compat.h" \
        "${launcher[@]}" >"$home/mlx-c-cmake.log" 2>&1 ||
        { tail -30 "$home/mlx-c-cmake.log" >&2; exit 1; }
    cmake --build "$mlxc_build" -j "$(nproc)" >"$home/mlx-c-build.log" 2>&1 ||
        { grep -E "error" "$home/mlx-c-build.log" | head -30 >&2; exit 1; }
fi

# -- 3. bindings -------------------------------------------------------------------------------
bindgen="$home/tools/bin/bindgen"
if ! "$bindgen" --version 2>/dev/null | grep -q "$BINDGEN_VERSION"; then
    echo "setup-mlx: installing bindgen-cli $BINDGEN_VERSION"
    cargo install --quiet --locked --root "$home/tools" "bindgen-cli@$BINDGEN_VERSION"
fi
out="$home/bindings-$MLX_SYS_VERSION"
if [ ! -f "$out/bindings.rs" ]; then
    mkdir -p "$out"
    # Every header of mlx/c, sorted, as mlx-sys's build script passes them.
    for h in $(cd "$mlxc_src" && ls mlx/c/*.h | LC_ALL=C sort); do
        echo "#include \"$h\""
    done >"$out/wrapper.h"
    "$bindgen" "$out/wrapper.h" --rust-target 1.73.0 \
        --blocklist-function malloc --blocklist-function realloc \
        -o "$out/bindings.rs.tmp" -- -I"$mlxc_src" -DMINERVA_BINDGEN -include "$shims/half_compat.h"
    mv "$out/bindings.rs.tmp" "$out/bindings.rs"
fi

# -- 4. cargo configuration --------------------------------------------------------------------
cat >"$root/.cargo/mlx.toml.tmp" <<EOF
# Written by scripts/setup-mlx.sh for this checkout (absolute paths); not committed.
# mlx-sys's build script is replaced: link the mlx-c built against the PyPI MLX library.
[target.x86_64-unknown-linux-gnu.mlx]
rustc-link-search = ["native=$mlxc_build", "native=$sdk/mlx/lib"]
rustc-link-lib = ["static=mlxc", "dylib=mlx", "dylib=stdc++"]
rustc-env = { OUT_DIR = "$out" }

[env]
# build.rs: the rpath of minerva's binaries, so they find libmlx.so at run time.
MINERVA_MLX_LIB_DIR = "$sdk/mlx/lib"
EOF
mv "$root/.cargo/mlx.toml.tmp" "$root/.cargo/mlx.toml"
echo "setup-mlx: ready (MLX $MLX_VERSION in $sdk); build with: cargo build --features mlx"
