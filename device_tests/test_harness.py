"""The emulator harness itself (edgeprune.device): build, semihosting I/O, exit codes, counts, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeprune.device.build import BUILD_TARGETS, BuildError, build_program
from edgeprune.device.qemu import DEFAULT_MARKERS, PLUGIN, run_arm64, run_cortex_m
from edgeprune.errors import EdgepruneError

PROBE = Path(__file__).resolve().parent / "harness" / "probe.c"


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe")
    return {t: build_program(t, [PROBE], d / f"probe-{t}.elf", with_kernels=False) for t in ("cortex-m7", "cortex-m4", "cortex-m55", "arm64")}


def run(probes, target, *args, **kw):
    build = BUILD_TARGETS[target]
    if build.bare_metal:
        return run_cortex_m(probes[target], build.machine, args=args, **kw)
    return run_arm64(probes[target], cpu="max", args=args, **kw)


@pytest.mark.parametrize("target", ["cortex-m7", "cortex-m4", "cortex-m55", "arm64"])
def test_program_reads_host_file_prints_and_returns_its_exit_code(probes, target, tmp_path):
    data = tmp_path / "hello.txt"
    data.write_text("hello device\n")
    r = run(probes, target, str(data), timeout=60)
    assert r.exit_code == 7, r
    assert r.stdout == "argc 2 file 'hello device\n' sum 499500\n", r


@pytest.mark.skipif(not PLUGIN.exists(), reason="instruction-counting plugin not built (make qemu-plugin)")
@pytest.mark.parametrize("target", ["cortex-m7", "arm64"])
def test_counts_between_markers_are_exact_and_repeatable(probes, target):
    first = run(probes, target, count_between=DEFAULT_MARKERS)
    second = run(probes, target, count_between=DEFAULT_MARKERS)
    assert len(first.regions) == 1 and first.regions == second.regions and first.total == second.total
    assert 3000 < first.regions[0] < 20000  # a 1000-iteration loop through a volatile
    assert first.total > first.regions[0]


def test_a_fault_exits_with_1_and_a_hang_times_out(probes):
    assert run(probes, "cortex-m4", "fault", timeout=30).exit_code == 1
    with pytest.raises(EdgepruneError, match="did not finish within 2 s"):
        run(probes, "cortex-m4", "hang", timeout=2)


def test_overflowing_the_board_is_a_one_line_link_error(tmp_path):
    src = tmp_path / "big.c"
    src.write_text("static char big[150 * 1024];\nint main(void) { big[7] = 1; return big[3]; }\n")
    build_program("cortex-m7", [src], tmp_path / "fits.elf", with_kernels=False)  # 150 KiB (+ heap and stack) fits the M7's 320 KiB
    with pytest.raises(BuildError, match="will not fit in region `RAM'") as e:
        build_program("cortex-m4", [src], tmp_path / "big.elf", with_kernels=False)  # not the M4's 128 KiB
    assert "\n" not in str(e.value)
