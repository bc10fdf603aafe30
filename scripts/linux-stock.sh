#!/usr/bin/env bash
# Boot Debian's stock kernel (linux-image-amd64) on snapvm to a shell on the
# serial console, snapshot it, and boot the snapshot in a fresh process.
#
# ** For hosts with real hardware virtualization (Intel VT-x or AMD-V). **
# It does not run on this project's PVM development host: there a guest's
# `syscall` never reaches the guest kernel, so no Linux userspace (not even
# the initramfs shell) can run, and the stock kernel's CPL0 code needs
# instructions the host's emulator lacks.  The script checks for vmx/svm in
# /proc/cpuinfo and for the PVM module and refuses to start without them
# (exit status 77, "skipped").  It has therefore NOT been run by this project
# yet; docs/machine.md says the same.  What runs here is scripts/linux-smoke.sh.
#
# What it does (tests/linux/stock.py does the VM part):
#  1. fetches linux-image-amd64 and busybox-static with `apt-get download`
#     (no installation, nothing changes on the host) and unpacks them;
#  2. builds an initramfs: busybox, the virtio modules of that kernel
#     (virtio, virtio_ring, virtio_pci*, virtio_blk; Debian builds them as
#     modules), and an /init that loads them, mounts proc/sys/dev, prints
#     "snapvm-stock: shell ready" and runs a shell on ttyS0;
#  3. boots /boot/vmlinuz (a bzImage) with -smp 2, a qcow2 disk on
#     virtio-blk-pci and console=ttyS0; types commands into the shell and
#     checks the answers (2 CPUs, /sys/block/vda/size = the disk's size);
#  4. `savevm shell` over QMP, quits, starts a fresh snapvm with
#     `-loadvm shell`, and checks the restored shell still answers (it echoes
#     a marker and the disk reads back what was written before the save).
#
# Usage: scripts/linux-stock.sh [WORKDIR]   (default: a temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if ! grep -qwE 'vmx|svm' /proc/cpuinfo || [[ -d /sys/module/kvm_pvm ]]; then
    echo "linux-stock: this host has no VT-x/AMD-V for guests (or is a PVM host):" >&2
    echo "linux-stock: Linux userspace cannot run here; use scripts/linux-smoke.sh" >&2
    exit 77
fi
for tool in apt-get dpkg-deb cpio gzip qemu-img; do
    command -v "$tool" >/dev/null || {
        echo "linux-stock: '$tool' is missing (bash scripts/install-deps.sh)" >&2
        exit 1
    }
done
if [[ ! -x build/snapvm ]]; then
    bash scripts/build.sh >&2
fi

work=${1:-$(mktemp -d /tmp/snapvm-linux-stock.XXXXXX)}
mkdir -p "$work/debs" "$work/pkg" "$work/initramfs"
cd "$work/debs"
# The metapackage names the versioned kernel package; fetch that one too.
apt-get download linux-image-amd64 busybox-static >&2
kpkg=$(dpkg-deb -f linux-image-amd64_*.deb Depends | grep -o 'linux-image-[0-9][^ ,]*' | head -n 1)
apt-get download "$kpkg" >&2
for deb in *.deb; do
    dpkg-deb -x "$deb" "$work/pkg"
done
kver=${kpkg#linux-image-}
kernel=$work/pkg/boot/vmlinuz-$kver
[[ -f $kernel ]] || {
    echo "linux-stock: $kpkg has no /boot/vmlinuz-$kver" >&2
    exit 1
}

# The initramfs.
ir=$work/initramfs
mkdir -p "$ir"/{bin,dev,proc,sys,lib/modules}
cp "$work/pkg/bin/busybox" "$ir/bin/busybox"
for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
    f=$(find "$work/pkg/lib/modules/$kver" -name "$m.ko*" | head -n 1)
    if [[ -n $f ]]; then
        # busybox insmod takes plain .ko files.
        case $f in
        *.xz) xz -dc "$f" >"$ir/lib/modules/$m.ko" ;;
        *.zst) zstd -qdc "$f" >"$ir/lib/modules/$m.ko" ;;
        *) cp "$f" "$ir/lib/modules/$m.ko" ;;
        esac
        echo "$m" >>"$ir/lib/modules/order"
    fi
done
cat >"$ir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko; done
echo "snapvm-stock: shell ready"
exec setsid cttyhack sh
INIT
chmod +x "$ir/init"
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -9n) >"$work/initramfs.gz"

exec /usr/bin/python3 "$root/tests/linux/stock.py" --kernel "$kernel" \
    --initrd "$work/initramfs.gz" --workdir "$work"
