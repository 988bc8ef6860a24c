"""The kernels_c test suite again, with the C library built under AddressSanitizer and UBSan.

The kernel tests call the C library through ctypes, so the sanitized run preloads the
sanitizer runtimes into a fresh Python process and sets EP_SANITIZE=1, which makes
`kernels_support.build_kernel_lib` add `-fsanitize=address,undefined -fno-sanitize-recover=all`.
Any out-of-bounds access, overflow or other undefined behaviour aborts that run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
KERNEL_TEST_FILES = sorted(str(p) for p in TESTS.glob("test_kernels_*.py")) + [
    str(p) for p in [TESTS / "test_sparse.py"] if p.exists()
]


def _runtime(name: str) -> str:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path):
        pytest.skip(f"gcc has no {name}: install libasan/libubsan to run the sanitizer suite")
    return path


def test_kernel_suite_is_clean_under_asan_and_ubsan(tmp_path):
    env = dict(
        os.environ,
        EP_SANITIZE="1",
        LD_PRELOAD=f"{_runtime('libasan.so')}:{_runtime('libubsan.so')}",
        ASAN_OPTIONS="detect_leaks=0",  # the Python interpreter itself is not leak-clean
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
    )
    # --capture=sys keeps file descriptor 2 free, so a sanitizer report reaches our output.
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--capture=sys",
         "-o", f"cache_dir={tmp_path}", *KERNEL_TEST_FILES],
        cwd=TESTS.parent, env=env, capture_output=True, text=True,
    )
    assert run.returncode == 0, f"sanitized kernel tests failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
