"""Shared fixtures for snapvm's functional tests.

Everything here drives the real thing: the built `build/snapvm` binary on real
KVM, real qcow2 files made and checked by Debian's `qemu-img`, real sockets.

KVM tests are marked with the `kvm` marker.  Without /dev/kvm they skip for a
developer; with CI=true in the environment any skip is turned into a failure,
so CI can never go green without having run them.
"""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# SNAPVM_BUILD selects another build directory (relative to the repository
# or absolute), e.g. the sanitizer build that scripts/check.sh runs the suite
# against: SNAPVM_BUILD=build-asan.  Every binary a test runs comes from it.
BUILD = os.path.join(ROOT, os.environ.get("SNAPVM_BUILD") or "build")
SNAPVM = os.path.join(BUILD, "snapvm")
# Each test's reports by phase ("setup", "call", "teardown").
_REPORTS = pytest.StashKey[dict]()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config):
    config.addinivalue_line("markers", "kvm: needs /dev/kvm")


def pytest_collection_modifyitems(config, items):
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        return
    skip = pytest.mark.skip(reason="/dev/kvm is not available")
    for item in items:
        if "kvm" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (not allowed): {report.longrepr}"


@pytest.fixture(autouse=True)
def _free_tmp_path_of_a_passed_test(request):
    """Delete a test's tmp_path once it has passed; keep it when it failed.

    Why: pytest keeps every test's directory until the run ends (and the last
    three runs').  Guest RAM files and multi-GiB qcow2 images add up to about
    15 GiB per run of this suite, and CI runs it twice: a machine with less
    free disk than that failed every later test in setup, with ENOSPC on
    mkdir.  Freeing each passed test's files bounds the suite's disk use by
    its largest test (about 1 GiB) and keeps what a failure left behind."""
    yield
    if "tmp_path" not in request.fixturenames:
        return
    call = request.node.stash.get(_REPORTS, {}).get("call")
    path = request.node.funcargs.get("tmp_path")
    if call is not None and call.passed and path is not None:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def snapvm_bin():
    assert os.access(SNAPVM, os.X_OK), f"{SNAPVM} is not built: run scripts/build.sh"
    return SNAPVM


@pytest.fixture(scope="session")
def qemu_img():
    path = shutil.which("qemu-img")
    assert path, "qemu-img is missing: run scripts/install-deps.sh"
    return path


def run_qemu_img(*args, check=True):
    """Run qemu-img and return its CompletedProcess (text mode)."""
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=check)
