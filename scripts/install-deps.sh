#!/usr/bin/env bash
# Install every Debian package that building, testing, the demo and the
# benchmarks need.  Idempotent: packages already present are not touched, and
# apt-get runs only when something is missing.  Installing needs root: run as
# root (a fresh Debian 12 machine has no sudo), or as a user with sudo, which
# is then used for apt-get alone.
set -euo pipefail

PACKAGES=(
    build-essential meson ninja-build pkg-config   # build
    libjansson-dev zlib1g-dev libzstd-dev          # JSON, compressed clusters
    liburing-dev                                   # io_uring: the vmstate writer
    libcmocka-dev python3-pytest                   # unit and functional tests
    qemu-utils qemu-system-x86                     # qemu-img oracle, benchmark peer
    clang llvm libclang-rt-14-dev                  # libFuzzer and sanitizers
    clang-format
    libedit-dev                                    # snapvm-ctl shell: line editing, history
    groff-base man-db                              # man pages: rendered and checked by the tests
    linux-source-6.1 bc bison flex libelf-dev libssl-dev cpio   # the Linux test kernel (tests/linux)
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    exit 0
fi
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null; then
        echo "install-deps: missing packages: ${missing[*]}" >&2
        echo "install-deps: installing them needs root, and sudo is not installed: run this as root" >&2
        exit 1
    fi
    SUDO=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
