#!/usr/bin/env bash
# The whole test suite: install dependencies, build, run the C unit tests and
# the functional tests (pytest, real KVM, real qcow2 files, qemu-img as the
# oracle).  Exits non-zero if anything fails.  With CI=true, a skipped test
# counts as a failure (tests/functional/conftest.py enforces it per test, and
# .ci/run double-checks the summaries).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
meson test -C build --suite unit --print-errorlogs
# --- Linux boot (owner: linux) ---------------------------------------------
# A real Linux kernel on snapvm, -smp 2, a qcow2 virtio-blk disk, saved mid-boot
# and loaded in a fresh process (scripts/linux-smoke.sh).  The kernel is built
# once and cached in /var/cache/snapvm-linux.  Before pytest, so that pytest's
# summary stays the last lines .ci/run checks.
timeout 1800 bash scripts/linux-smoke.sh
# ---------------------------------------------------------------------------
# Debian's pytest: /usr/bin/python3, not whatever python3 is first on PATH.
/usr/bin/python3 -m pytest -ra -p no:cacheprovider tests/functional "$@"
