#!/usr/bin/env bash
# Installs what building minerva needs on a fresh Debian/Ubuntu machine (llama.cpp is compiled
# from source through cmake; bindgen needs libclang), then fetches the small test model.
# Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v c++ >/dev/null 2>&1 || need+=(g++)
# The test command compiles llama.cpp twice (for clippy and for the tests): ccache makes the
# second a cache hit.
command -v ccache >/dev/null 2>&1 || need+=(ccache)
# bindgen finds libclang through ldconfig or LIBCLANG_PATH.
if [ -z "${LIBCLANG_PATH:-}" ] && ! ldconfig -p 2>/dev/null | grep -q 'libclang\(-[0-9.]*\)\?\.so'; then
    need+=(libclang-dev clang)
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

scripts/fetch-test-model.sh
