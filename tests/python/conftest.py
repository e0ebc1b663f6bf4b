"""pytest setup for the lmfuse bindings.

Puts python_bindings/ on sys.path and finds liblmfuse the way the package does ($LMFUSE_LIBRARY,
the package directory, <repo>/build*/host/, the system). Without a library every test is skipped
with the reason. Tests marked ``@pytest.mark.cuda`` are skipped (not passed) unless torch sees a GPU
and the loaded liblmfuse has a usable CUDA backend.

Run:  LMFUSE_LIBRARY=/path/to/liblmfuse.so /usr/bin/python3 -m pytest tests/python
"""

import os
import sys

import pytest

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(_REPO, "python_bindings"))

import lmfuse  # noqa: E402
from lmfuse import _lib  # noqa: E402

_LIB_PATH, _WHERE = _lib.find_library()


def _cuda_ready():
    if _LIB_PATH is None:
        return False, "no liblmfuse"
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA device"
    if not lmfuse.backend_available("cuda"):
        return False, "the loaded liblmfuse has no usable CUDA backend"
    return True, ""


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a GPU and a CUDA build of liblmfuse")


def pytest_report_header(config):
    if _LIB_PATH is None:
        return "lmfuse: NO LIBRARY FOUND (%s)" % _WHERE
    return "lmfuse: %s (found via %s)" % (_LIB_PATH, _WHERE)


def pytest_collection_modifyitems(config, items):
    if _LIB_PATH is None:
        skip = pytest.mark.skip(reason="liblmfuse not found: " + _WHERE)
        for item in items:
            item.add_marker(skip)
        return
    ok, why = _cuda_ready()
    if not ok:
        skip = pytest.mark.skip(reason="CUDA test skipped: " + why)
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def ctx():
    """A CPU context, closed after the test."""
    with lmfuse.Context("cpu") as c:
        yield c
