"""Smoke test of bench/kernels/run.py: one small layer per target, and the JSON record shape.

Instruction counts are not checked against numbers (they move with the kernels), only that every
run was counted, verified against the host's dense portable output, and recorded.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from edgeprune.device.qemu import PLUGIN

RUN = Path(__file__).resolve().parents[1] / "bench" / "kernels" / "run.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_kernels_run", RUN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    if not PLUGIN.exists():
        pytest.skip("the instruction-counting plugin is not built (make qemu-plugin)")
    return load_bench()


def test_tiny_layer_counts_on_each_target(bench, tmp_path):
    tiny = bench.Layer("t", "fc", "fully connected 16->8", (1, 16), (8, 16))
    for target, backend in [("cortex-m7", "dsp"), ("arm64", "neon_dot")]:
        records = bench.bench_program(tiny, target, backend, "dense", [0.0, 0.5], work=tmp_path)
        assert [r["sparsity"] for r in records] == [0.0, 0.5]
        assert all(r["macs"] == 128 and 0 < r["instructions"] < 10_000 for r in records), records


def test_main_writes_records_of_the_documented_shape(bench, tmp_path):
    out = tmp_path / "kernels.json"
    formats = ",".join(f for f in bench.formats_available() if f in ("dense", "unstructured"))
    assert bench.main(["--layers", "d", "--backends", "dsp,neon_dot", "--formats", formats, "--sparsities", "0.9",
                       "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    records = json.loads(out.read_text())
    keys = {"layer", "target", "backend", "format", "sparsity", "macs", "instructions"}
    assert {(r["target"], r["backend"], r["format"]) for r in records} == {
        (t, b, f) for t, b in [("cortex-m7", "dsp"), ("arm64", "neon_dot")] for f in formats.split(",")}
    for r in records:
        assert set(r) == keys, r
        assert r["layer"] == "d" and r["sparsity"] == 0.9 and r["macs"] == 256 * 128
        assert isinstance(r["instructions"], int) and r["instructions"] > 0
