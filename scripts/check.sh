#!/usr/bin/env bash
# The whole test suite: install dependencies, build, run the C unit tests and
# the functional tests (pytest, real KVM, real qcow2 files, qemu-img as the
# oracle); then the same again against a sanitizer build (ASan + UBSan, in
# build-asan/): the unit tests and the whole functional suite, with the tests'
# binaries taken from it (SNAPVM_BUILD=build-asan, read by
# tests/functional/conftest.py).  Exits non-zero if anything fails, including
# a sanitizer report from any process (the reports go to files, so that one
# from a process whose exit status a test does not look at is still seen).
# With CI=true, a skipped test counts as a failure (tests/functional/
# conftest.py enforces it per test, and .ci/run double-checks the summaries).
#   SNAPVM_NO_SANITIZERS=1 scripts/check.sh    the normal build only (quick)
set -euo pipefail
cd "$(dirname "$0")/.."
# The functional tests write guest RAM files and qcow2 images of up to about
# 1 GiB per test under $TMPDIR (each passed test's files are freed when it
# ends: tests/functional/conftest.py).  Too little space would fail tests far
# from the cause, so say it up front, and print what is free before each run.
need_free_disk() {
    local dir=${TMPDIR:-/tmp} free_mib
    free_mib=$(df --output=avail -BM "$dir" | tail -1 | tr -dc 0-9)
    echo "check: ${free_mib} MiB free in $dir"
    if ((free_mib < 4096)); then
        echo "check: the functional tests need at least 4096 MiB free in $dir (TMPDIR)" >&2
        exit 1
    fi
}
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
need_free_disk
/usr/bin/python3 -m pytest -ra -p no:cacheprovider tests/functional "$@"

if [[ -n "${SNAPVM_NO_SANITIZERS:-}" ]]; then
    echo "check: sanitizer build not run (SNAPVM_NO_SANITIZERS is set)"
    exit 0
fi
echo "check: sanitizer build (ASan + UBSan) in build-asan/"
if [[ ! -f build-asan/build.ninja ]]; then
    meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
meson compile -C build-asan >/dev/null || meson compile -C build-asan
san_logs=$(mktemp -d /tmp/snapvm-sanitizer.XXXXXX)
# abort_on_error: a report kills the process, so the test that ran it fails.
# verify_asan_link_order=0: the crash tests LD_PRELOAD their shims.
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:verify_asan_link_order=0:log_path=$san_logs/asan"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$san_logs/ubsan"
# The functional suite under the sanitizers runs all but the slowest tests
# (they repeat what the rest cover, many times over: under ASan they would
# take 2-3 of CI's ~15 minutes), named here and printed, so nothing is left
# out silently; the normal run above runs every test.
san_deselect=(
    "tests/functional/test_snapshot.py::test_hundred_cycles_no_drift_no_leaks"
    "tests/functional/test_qcow2_crash.py::test_power_loss_at_every_write"
    "tests/functional/test_qcow2_crash.py::test_crash_at_every_write"
    "tests/functional/test_snapshot_live.py::test_live_save_is_one_instant"
    # the fault sweep's HMP-style commands; their job twins, same code paths, do run
    "tests/functional/test_fault_sweep.py::test_fault_sweep[savevm]"
    "tests/functional/test_fault_sweep.py::test_fault_sweep[loadvm]"
    "tests/functional/test_fault_sweep.py::test_fault_sweep[delvm]"
)
echo "check: under the sanitizers, not run (the normal run ran them): ${san_deselect[*]}"
status=0
meson test -C build-asan --suite unit --print-errorlogs || status=1
need_free_disk
SNAPVM_BUILD=build-asan /usr/bin/python3 -m pytest -ra -p no:cacheprovider tests/functional \
    "${san_deselect[@]/#/--deselect=}" "$@" || status=1
if compgen -G "$san_logs/*" >/dev/null; then
    echo "check: sanitizer reports:"
    for f in "$san_logs"/*; do
        echo "---- $f"
        cat "$f"
    done
    status=1
fi
rm -rf "$san_logs"
exit "$status"
