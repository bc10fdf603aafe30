#!/usr/bin/env bash
# Boot a real Linux kernel on snapvm and snapshot it mid-boot.
#
# Builds snapvm if needed and the Linux test kernel if it is not cached
# (tests/linux/build-kernel.sh: Debian's linux-source-6.1, tinyconfig plus
# tests/linux/kernel.config; minutes from scratch, cached in
# /var/cache/snapvm-linux), then runs tests/linux/smoke.py: boot 1 with
# -smp 2, a qcow2 virtio-blk disk and the serial console, `savevm` over QMP
# mid-boot, and boot 2 from that snapshot in a fresh process (-loadvm).  The
# guest's serial log of both boots is printed.  Exits 0 only when Linux
# reached "Run /init as init process" in both boots, bound the virtio-blk disk
# with the right size, found ttyS0, and brought up 2 CPUs.
#
# On this workplace's PVM host CPL0 guest code is emulated at ~1M instr/s:
# a boot takes minutes of host time, and /init dies on its first system call
# (Linux userspace needs real VT-x/AMD-V; see scripts/linux-stock.sh).
#
# Usage: scripts/linux-smoke.sh [--pvh] [--timeout SECONDS-PER-BOOT]
#   --pvh  boot the same kernel's vmlinux by its PVH entry instead of the
#          bzImage by the Linux boot protocol (CI boots the bzImage)
set -euo pipefail
cd "$(dirname "$0")/.."
image=bzImage
if [[ ${1:-} == --pvh ]]; then
    image=vmlinux
    shift
fi
if [[ ! -x build/snapvm ]]; then
    bash scripts/build.sh >&2
fi
kdir=$(bash tests/linux/build-kernel.sh | tail -n 1)
exec /usr/bin/python3 tests/linux/smoke.py --kernel "$kdir/$image" --initrd "$kdir/initrd.gz" "$@"
