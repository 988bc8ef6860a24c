"""The Helium (MVE) kernels on a Cortex-M55 (QEMU mps3-an547), bit for bit against the portable ones.

device_tests/variants/check_variants.c (hundreds of random configurations per dense op from a fixed
seed: kernel sizes, strides, dilations, padding, depth multipliers, batches, odd channel counts,
extreme zero points) is built for the Cortex-M55, where ep_backend.h dispatches to the mve variants,
and must report zero mismatches; the vector runner (device_tests/vectors/run_vectors.c) checks the
same build against TensorFlow Lite Micro's outputs. device_tests/variants/check_mve.c runs the five
bench layers through both variants between region markers; with the instruction-counting plugin the
test also checks that Helium pays off on each of them and prints MACs per instruction (`pytest -s`).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from device_support import OP_NAMES, RUNNER, parse_runner_output
from edgeprune.device.build import build_program
from edgeprune.device.qemu import DEFAULT_MARKERS, PLUGIN, run_cortex_m

VARIANTS = Path(__file__).resolve().parent / "variants"
CHECK_VARIANTS = VARIANTS / "check_variants.c"
CHECK_MVE = VARIANTS / "check_mve.c"
TARGET, MACHINE = "cortex-m55", "mps3-an547"

pytestmark = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
    reason="Cortex-M55 tests need arm-none-eabi-gcc and qemu-system-arm (install with `make setup`)",
)


def test_mve_variants_match_portable_on_cortex_m55(device_build_dir):
    if not CHECK_VARIANTS.exists():
        pytest.skip("device_tests/variants/check_variants.c is not there")
    # Static buffers only: a small heap leaves the RAM to them (stdio needs a little).
    elf = build_program(TARGET, [CHECK_VARIANTS], device_build_dir / "check_variants-cortex-m55.elf",
                        link_flags=["-Wl,--defsym=__heap_size__=16K"])
    result = run_cortex_m(elf, MACHINE, timeout=300)
    out = result.stdout
    assert "backend mve" in out, f"the Cortex-M55 build did not dispatch to the MVE backend:\n{out}{result.stderr[-2000:]}"
    tallies = dict(re.findall(r"^(\w+): \d+ cases, (\d+) mismatches$", out, re.M))
    assert set(tallies) == {"conv2d", "depthwise_conv2d", "fully_connected"}, f"not every op ran:\n{out}{result.stderr[-2000:]}"
    assert all(n == "0" for n in tallies.values()), f"mve differs from portable:\n{out}"
    assert result.exit_code == 0, f"exit {result.exit_code}\n{out}{result.stderr[-2000:]}"


def test_mve_build_matches_tflm_vectors(vector_file, device_build_dir):
    vectors, cases = vector_file
    elf = build_program(TARGET, [RUNNER], device_build_dir / "run_vectors-cortex-m55-mve.elf")
    result = run_cortex_m(elf, MACHINE, args=[str(vectors)], timeout=300)
    backend, ops, mismatches = parse_runner_output(result.stdout)
    assert backend == "mve", f"the Cortex-M55 build dispatched to {backend}, expected mve"
    assert result.exit_code == 0 and not mismatches, "\n".join(mismatches[:10]) + result.stderr[-2000:]
    dense = ("conv2d", "depthwise_conv2d", "fully_connected")
    expected = {name: sum(OP_NAMES[c.op] == name for c in cases) for name in dense}
    assert {name: ops.get(name, (0, 0))[0] for name in dense} == expected, f"not every dense case ran: {ops}"


def test_mve_bench_layers_bit_exact_and_faster(device_build_dir):
    elf = build_program(TARGET, [CHECK_MVE], device_build_dir / "check_mve-cortex-m55.elf",
                        link_flags=["-Wl,--defsym=__heap_size__=16K"])
    counting = PLUGIN.exists()
    result = run_cortex_m(elf, MACHINE, timeout=300, count_between=DEFAULT_MARKERS if counting else None)
    out = result.stdout
    layers = re.findall(r"^layer (\w) zp (-?\d+) macs (\d+) (ok|MISMATCH)$", out, re.M)
    assert len(layers) == 10, f"not every layer ran:\n{out}{result.stderr[-2000:]}"
    assert all(status == "ok" for *_, status in layers), f"mve differs from portable:\n{out}"
    assert result.exit_code == 0, f"exit {result.exit_code}\n{out}{result.stderr[-2000:]}"
    if not counting:
        pytest.skip(f"outputs match; no instruction counts without {PLUGIN} (`make qemu-plugin`)")
    assert len(result.regions) == 2 * len(layers), result.regions
    slow = []
    for i, (name, zp, macs, _) in enumerate(layers):
        portable, mve = result.regions[2 * i], result.regions[2 * i + 1]
        print(f"layer {name} zp {zp:>4}: portable {portable:>10,} insns ({int(macs) / portable:.3f} MACs/insn), "
              f"mve {mve:>9,} ({int(macs) / mve:.3f} MACs/insn), {portable / mve:.1f}x")
        if mve * 5 > portable:
            slow.append(f"{name} (zp {zp}): portable {portable}, mve {mve}")
    assert not slow, f"mve not 5x fewer instructions than portable on: {', '.join(slow)}"
