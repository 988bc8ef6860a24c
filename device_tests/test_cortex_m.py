"""Every backend variant against the portable kernels, bare metal on Cortex-M7 and Cortex-M4.

device_tests/variants/check_variants.c (random variant-vs-portable checks, also run on arm64 by
test_arm64.py) is built for each board with its DSP backend and run under QEMU; it exits non-zero
on any difference.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeprune.device.build import BUILD_TARGETS, BuildError, build_program
from edgeprune.device.qemu import run_cortex_m

CHECK_VARIANTS = Path(__file__).resolve().parent / "variants" / "check_variants.c"


# The Cortex-M4 board has 128 KiB of SRAM: smaller buffers, and the bench-sized cases are skipped.
SMALL_BOARD_BUFFERS = ("MAX_IN=12288", "MAX_OUT=8192", "MAX_FILTER=16384", "MAX_SCRATCH=16384", "BIG_CASES_OPTIONAL=1")


@pytest.mark.parametrize("target", ["cortex-m7", "cortex-m4"])
def test_variants_match_portable_on_cortex_m(device_build_dir, target):
    if not CHECK_VARIANTS.exists():
        pytest.skip("device_tests/variants/check_variants.c is not written yet")
    build = BUILD_TARGETS[target]
    try:
        # Static buffers only: a small heap leaves the RAM to them (stdio needs a little).
        elf = build_program(build, [CHECK_VARIANTS], device_build_dir / f"check_variants-{target}.elf",
                            defines=SMALL_BOARD_BUFFERS if target == "cortex-m4" else (),
                            link_flags=["-Wl,--defsym=__heap_size__=16K"])
    except BuildError as e:
        if "will not fit in region `RAM'" in e.detail:
            pytest.xfail(f"check_variants.c's static buffers do not fit the {target} board's SRAM: {e}")
        raise
    result = run_cortex_m(elf, build.machine, timeout=150)
    assert result.exit_code == 0, f"{target}: exit {result.exit_code}\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
    assert "backend dsp" in result.stdout, f"{target}: the build did not dispatch to the DSP backend\n{result.stdout}"
