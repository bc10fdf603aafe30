#!/usr/bin/env bash
# Build (or reuse) snapvm's Linux test kernel and its initrd.
#
# Source: Debian 12's linux-source-6.1 package (/usr/src/linux-source-6.1.tar.xz).
# Config: `make tinyconfig`, then tests/linux/kernel.config merged over it, then
# `make olddefconfig`; every option of the fragment is checked to have landed.
# Patches: tests/linux/*.patch, in name order, for instructions the PVM host's
# CPL0 emulator lacks: no-int3-selftest.patch (the boot-time int3 self-test),
# no-fwait-at-exit.patch (fwait at task exit); see docs/machine.md.
# Initrd: tests/linux/init.c (a static freestanding /init) packed by the
# kernel tree's own gen_init_cpio from tests/linux/initrd.list, gzipped.
#
# The result lives outside the git tree, in
#   ${SNAPVM_LINUX_CACHE:-/var/cache/snapvm-linux}/<key>/{bzImage,vmlinux,initrd.gz,config}
# where <key> hashes the source package version, the fragment, the patch,
# init.c, initrd.list and this script, so CI on the same machine reuses it and
# any change to the inputs builds afresh.  The unpacked source tree is kept in
# the cache (tree-<version>) so that a changed config rebuilds incrementally;
# deleting the cache directory builds everything from scratch.
#
# Prints the result directory on stdout (the last line); progress and the
# build log go to stderr.  The build runs under `nice -n 19` (shared cores).
#
# Usage: tests/linux/build-kernel.sh [-j N]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
jobs=2
if [[ ${1:-} == -j ]]; then
    jobs=$2
fi

SRC_PKG=linux-source-6.1
SRC_TAR=/usr/src/linux-source-6.1.tar.xz
CACHE=${SNAPVM_LINUX_CACHE:-/var/cache/snapvm-linux}

log() { echo "build-kernel: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

if ! ver=$(dpkg-query -W -f='${Version}' "$SRC_PKG" 2>/dev/null) || [[ ! -f $SRC_TAR ]]; then
    die "$SRC_TAR is missing: install Debian's $SRC_PKG (bash scripts/install-deps.sh)"
fi
for tool in make gcc bc bison flex cpio gzip patch; do
    command -v "$tool" >/dev/null || die "'$tool' is missing: run bash scripts/install-deps.sh"
done

patches=("$here"/*.patch)
inputs=(kernel.config init.c initrd.list build-kernel.sh)
for p in "${patches[@]}"; do
    inputs+=("$(basename "$p")")
done
key=$( (
    echo "$SRC_PKG $ver"
    for f in "${inputs[@]}"; do
        echo "== $f"
        cat "$here/$f"
    done
) | sha256sum | cut -c1-16)
out=$CACHE/$key

if [[ -f $out/done ]]; then
    log "cached: $out"
    echo "$out"
    exit 0
fi

mkdir -p "$CACHE" || die "cannot create $CACHE (set SNAPVM_LINUX_CACHE to a writable directory)"
# One build at a time per cache: a second caller waits, then finds the result.
exec 9>"$CACHE/.lock"
log "waiting for the cache lock" && flock 9
if [[ -f $out/done ]]; then
    log "cached: $out"
    echo "$out"
    exit 0
fi

start=$(date +%s)
tree=$CACHE/tree-$ver
if [[ ! -f $tree/.snapvm-unpacked ]]; then
    log "unpacking $SRC_TAR into $tree"
    rm -rf "$tree" "$tree.tmp"
    mkdir -p "$tree.tmp"
    tar -xJf "$SRC_TAR" -C "$tree.tmp" --strip-components=1
    mkdir -p "$tree.tmp/.snapvm-orig"
    touch "$tree.tmp/.snapvm-unpacked"
    mv "$tree.tmp" "$tree"
fi
cd "$tree"
# Every build starts from the package's sources whatever was patched before:
# .snapvm-orig keeps a pristine copy of each file a patch touches, taken the
# first time a patch names it (before any patch ran on it).
orig=.snapvm-orig
if [[ -f $orig/sources.tar ]]; then # the first layout: one tar of alternative.c
    tar -xf "$orig/sources.tar" -C "$orig" && rm "$orig/sources.tar"
fi
for f in $(sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "${patches[@]}" | sort -u); do
    if [[ -f $orig/$f ]]; then
        cp "$orig/$f" "$f"
    else
        mkdir -p "$orig/$(dirname "$f")"
        cp "$f" "$orig/$f"
    fi
done
for p in "${patches[@]}"; do
    patch -p1 --quiet <"$p" || die "$(basename "$p") does not apply to $SRC_PKG $ver"
done

mk() { nice -n 19 make -s "$@" >&2; }
mk tinyconfig
scripts/kconfig/merge_config.sh -m .config "$here/kernel.config" >&2
mk olddefconfig
# Every line of the fragment must survive olddefconfig (a dependency that is
# not met drops an option silently, and the boot then fails far from here).
missing=0
while IFS= read -r line; do
    case $line in
    CONFIG_*=*) grep -qx -- "$line" .config || {
        log "config: '$line' did not stick"
        missing=1
    } ;;
    "# CONFIG_"*" is not set")
        opt=${line#\# }
        opt=${opt%% *}
        if grep -q "^$opt=" .config; then
            log "config: '$opt' is still set"
            missing=1
        fi
        ;;
    esac
done <"$here/kernel.config"
((missing == 0)) || die "the config fragment did not apply (see above)"

log "building bzImage with -j$jobs under nice -n 19"
mk -j"$jobs" bzImage

# The initrd, from the tree.
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
gcc -static -nostdlib -ffreestanding -fno-stack-protector -fno-pie -no-pie -O2 -Wall -Werror \
    -o "$out.tmp/init" "$here/init.c"
gcc -O2 -o "$out.tmp/gen_init_cpio" usr/gen_init_cpio.c
sed "s|@INIT@|$out.tmp/init|" "$here/initrd.list" >"$out.tmp/initrd.list"
"$out.tmp/gen_init_cpio" "$out.tmp/initrd.list" | gzip -9n >"$out.tmp/initrd.gz"
rm -f "$out.tmp/gen_init_cpio"

cp arch/x86/boot/bzImage vmlinux "$out.tmp/"
cp .config "$out.tmp/config"
echo "$SRC_PKG $ver, built $(date -u +%FT%TZ) in $(($(date +%s) - start)) s" >"$out.tmp/done"
rm -rf "$out"
mv "$out.tmp" "$out"
log "built in $(($(date +%s) - start)) s: $out"
echo "$out"
