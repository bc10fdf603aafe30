#!/usr/bin/env bash
# Seed corpus for fuzz_qcow2_open: small qcow2 images in many geometries,
# made by qemu-img (with data, a snapshot and compressed clusters).
set -euo pipefail
out=${1:-build-fuzz/corpus-qcow2}
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{ head -c 131072 /dev/urandom; head -c 131072 /dev/zero | tr '\000' s; } >"$tmp/data.raw"
i=0
for opts in compat=0.10 cluster_size=512 cluster_size=4096,refcount_bits=1 \
    cluster_size=4096,refcount_bits=64 lazy_refcounts=on compression_type=zstd,cluster_size=4096; do
    img="$tmp/$i.qcow2"
    qemu-img convert -q -c -O qcow2 -o "$opts" "$tmp/data.raw" "$img"
    case "$opts" in *refcount_bits=1*) ;; *) qemu-img snapshot -c snap "$img" ;; esac
    cp "$img" "$out/seed-$i.qcow2"
    i=$((i + 1))
done
echo "corpus: $(ls "$out" | wc -l) images in $out"
