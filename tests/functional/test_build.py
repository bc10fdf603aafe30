"""The build produced the binaries the README promises."""
import os

from conftest import SNAPVM


def test_snapvm_is_built():
    assert os.access(SNAPVM, os.X_OK)
