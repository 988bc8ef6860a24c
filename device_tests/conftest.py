"""Device tests: kernels_c cross-compiled and run on emulated Cortex-M boards and arm64.

Puts tests/ on sys.path (kernels_support, the TFLM oracle and the case generators are shared with
the host tests) and skips every device test, with the reason, when a cross tool or QEMU is missing.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "tests", Path(__file__).resolve().parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

TOOLS = ("arm-none-eabi-gcc", "aarch64-linux-gnu-gcc", "qemu-system-arm", "qemu-aarch64")


def pytest_collection_modifyitems(config, items):
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"device tests need {', '.join(missing)} (install with `make setup`)")
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(item.path).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def vector_file(tmp_path_factory):
    """A few hundred single-op cases with TFLM's outputs, written once for every device run."""
    from device_support import generate_cases, write_vectors

    cases = generate_cases()
    return write_vectors(tmp_path_factory.mktemp("vectors") / "kernels.epv", cases), cases


@pytest.fixture(scope="session")
def device_build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("device_builds")
