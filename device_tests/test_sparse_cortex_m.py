"""The sparse formats on emulated Cortex-M cores, with the real DSP instructions.

tests/test_sparse.py checks every format against the dense kernel on the host, with the DSP
intrinsics emulated in C. Here small layers run on QEMU: Cortex-M7 and M4 (DSP backend) and
Cortex-M55 (MVE backend, whose sparse layers use the DSP variants), each format pruned in its
own pattern at two sparsities, and every output must equal the host's dense portable kernel.
"""

from __future__ import annotations

import pytest
from test_bench_kernels import load_bench

from edgeprune.device.qemu import PLUGIN

BOARDS = [("cortex-m7", "dsp"), ("cortex-m4", "dsp"), ("cortex-m55", "mve")]


@pytest.fixture(scope="module")
def bench():
    if not PLUGIN.exists():
        pytest.skip("the instruction-counting plugin is not built (make qemu-plugin)")
    return load_bench()


def small_layers(bench):
    return [
        bench.Layer("s", "conv", "conv 3x3 s1 SAME 8->12 @9x7", (1, 9, 7, 8), (12, 3, 3, 8)),
        bench.Layer("p", "conv", "conv 1x1 16->8 @5x3", (1, 5, 3, 16), (8, 1, 1, 16)),
        bench.Layer("w", "depthwise", "depthwise 3x3 s1 SAME 12ch @6x5", (1, 6, 5, 12), (1, 3, 3, 12)),
        bench.Layer("f", "fc", "fully connected 40->12", (1, 40), (12, 40)),
    ]


@pytest.mark.parametrize("target,backend", BOARDS, ids=[t for t, _ in BOARDS])
def test_sparse_formats_bit_exact_on_cortex_m(bench, tmp_path, target, backend):
    formats = [f for f in bench.formats_available() if f != "dense"]
    ran = 0
    for layer in small_layers(bench):
        for fmt in formats:
            # bench_program raises unless every output equals the host's dense portable result
            ran += len(bench.bench_program(layer, target, backend, fmt, [0.5, 0.9], work=tmp_path))
    assert ran >= 20, f"only {ran} format x sparsity runs on {target}"
