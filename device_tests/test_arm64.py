"""The arm64 NEON backends against the portable kernels, bit for bit, under qemu-aarch64.

device_tests/variants/check_variants.c draws a few hundred random configurations per dense op
(conv, depthwise, fully connected) from a fixed seed, runs the build's dispatched variant and the
portable one on the same data and prints one line per op. It is cross-compiled twice with the
dense kernels: with the dot product (`-march=armv8.2-a+dotprod`, backend neon_dot, run on
`-cpu max`) and without (`-march=armv8-a`, backend neon, run on a Cortex-A53, which has no SDOT),
each also with AddressSanitizer and UBSan.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels_c"
CHECK = Path(__file__).resolve().parent / "variants" / "check_variants.c"
CC, QEMU, OBJDUMP = "aarch64-linux-gnu-gcc", "qemu-aarch64", "aarch64-linux-gnu-objdump"

# The dense ops, their portable references, the dispatcher and the two arm64 backends. Only these
# sources, so the check does not depend on the other kernel families.
SOURCES = [
    "dispatch.c",
    *(f"{op}_s8{variant}.c" for op in ("conv2d", "depthwise_conv2d", "fully_connected")
      for variant in ("", "_neon", "_neon_dot")),
]

BUILDS = {  # backend: (march, qemu cpu)
    "neon_dot": ("armv8.2-a+dotprod", "max"),
    "neon": ("armv8-a", "cortex-a53"),
}
# The sanitizer builds poison the unused tails of check_variants' buffers around each call, so any
# read or write past the inputs, outputs or requested scratch fails the run (libasan, dynamic).
SANITIZE = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
SYSROOT = "/usr/aarch64-linux-gnu"

missing = [t for t in (CC, QEMU, OBJDUMP) if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(
    bool(missing), reason=f"arm64 checks need {', '.join(missing)} (install with `make setup`)"
)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """build(backend, sanitize) -> the cross-compiled check_variants (built once per module)."""
    out = tmp_path_factory.mktemp("arm64")
    built = {}

    def get(backend, sanitize=False):
        key = (backend, sanitize)
        if key not in built:
            exe = out / f"check_variants_{backend}{'_asan' if sanitize else ''}"
            flags = SANITIZE if sanitize else ["-O2", "-static"]
            run = subprocess.run(
                [CC, "-std=c99", *flags, "-Wall", "-Wextra", "-Werror", f"-march={BUILDS[backend][0]}",
                 "-I", str(KERNELS / "include"), *(str(KERNELS / "src" / s) for s in SOURCES), str(CHECK),
                 "-o", str(exe)],
                capture_output=True, text=True,
            )
            if sanitize and run.returncode != 0 and "asan" in run.stderr:
                pytest.skip(f"no arm64 libasan to link with: {run.stderr.strip().splitlines()[-1]}")
            assert run.returncode == 0, run.stderr
            built[key] = exe
        return built[key]

    return get


def run_checks(exe, backend, sanitize=False):
    cmd = [QEMU, "-cpu", BUILDS[backend][1], *(["-L", SYSROOT] if sanitize else []), str(exe)]
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    out = run.stdout
    assert f"backend {backend}" in out, out + run.stderr
    counts = {op: (int(n), int(bad)) for op, n, bad in re.findall(r"^(\w+): (\d+) cases, (\d+) mismatches$", out, re.M)}
    assert set(counts) == {"conv2d", "depthwise_conv2d", "fully_connected"}, out + run.stderr
    assert all(n >= 300 for n, _ in counts.values()), counts
    assert run.returncode == 0 and all(bad == 0 for _, bad in counts.values()), out + run.stderr


@pytest.mark.parametrize("backend", list(BUILDS))
def test_variants_match_portable(build, backend):
    run_checks(build(backend), backend)


@pytest.mark.parametrize("backend", list(BUILDS))
def test_variants_stay_in_bounds(build, backend):
    """The same cases under AddressSanitizer and UBSan."""
    run_checks(build(backend, sanitize=True), backend, sanitize=True)


def test_dot_product_build_uses_sdot(build):
    """The neon_dot build runs SDOT; the plain NEON build has none (it must run on a Cortex-A53)."""

    def sdot_count(exe):
        asm = subprocess.run([OBJDUMP, "-d", str(exe)], check=True, capture_output=True, text=True).stdout
        return len(re.findall(r"\tsdot\t", asm))

    assert sdot_count(build("neon_dot")) > 0
    assert sdot_count(build("neon")) == 0
