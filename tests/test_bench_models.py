"""bench/models end to end on a shrunken MLPerf Tiny autoencoder: train, compile through the front
half, measure against TFLite Micro, and check the record that goes into bench/results/models.json."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from edgeprune.compile.tflm_arena import tflm_runs

BENCH = Path(__file__).resolve().parents[1] / "bench" / "models"


def _bench_module():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_models_run", BENCH / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zoo_architectures_match_the_reference_shapes():
    """Parameter counts and output shapes of the four models as described by MLPerf Tiny."""
    import torch

    zoo = _bench_module().zoo
    expected = {"ad": (267_928, (2, 640)), "kws": (23_180, (2, 12)), "ic": (77_946, (2, 10)), "vww": (213_586, (2, 2))}
    for name, (params, out_shape) in expected.items():
        entry = zoo.ZOO[name]
        model = entry.build().eval()
        with torch.no_grad():
            out = model(torch.zeros((2, *entry.sample_shape)))
        assert sum(p.numel() for p in model.parameters()) == params, name
        assert tuple(out.shape) == out_shape, name
        x, y = zoo.synthetic_data(entry, samples=8)
        assert x.shape == (8, *entry.sample_shape) and x.dtype.name == "float32", name
        assert (y is None) == (entry.num_classes is None), name


@pytest.mark.slow
def test_tiny_autoencoder_bench_record(tmp_path):
    """The autoencoder at hidden width 32, 50% sparsity: one onnx2tf conversion, a TFLM bisection, our plan."""
    run = _bench_module()
    entry = run.zoo.ZOO["ad"]
    rows = run.bench_model(entry, sparsities=(0.5,), work=tmp_path, samples=64, epochs=1, hidden=32)
    assert len(rows) == 1
    r = rows[0]
    assert r["error"] is None, r["error"]
    assert r["model"] == "ad" and r["sparsity"] == 0.5 and r["target"] == run.TARGET
    assert r["achieved_sparsity"] >= 0.5
    assert r["tflite_ops"] == {"FULLY_CONNECTED": 10}
    ours, tflm = r["ours"], r["tflm"]
    assert ours["op_kinds"] == ["FULLY_CONNECTED"] and ours["ops_after_passes"] == 10
    # A chain of FC layers: the widest adjacent pair (640-wide input and 32-wide output) bounds the plan.
    assert ours["activation_plan_bytes"] == ours["peak_live_bytes"] == 640 + 32
    assert 0 < ours["activation_plan_bytes"] <= tflm["head_bytes"] < tflm["minimal_arena"]
    assert r["plan_vs_tflm_head"] <= 1.0 and r["targets_met"]["plan_le_tflm_head"]
    if r["back_half"] is None:
        assert r["arena_bytes"] == ours["activation_plan_bytes"] and r["flash_bytes"] is None
    else:
        assert r["arena_bytes"] >= ours["activation_plan_bytes"] and r["flash_bytes"] > 0
    assert r["arena_vs_tflm_minimal"] == round(r["arena_bytes"] / tflm["minimal_arena"], 4)

    # The bisection is exact: TFLM runs at the minimal arena and not 16 bytes below it.
    model = (tmp_path / "ad" / "s50" / "model.tflite").read_bytes()
    assert r["tflite_bytes"] == len(model)
    assert tflm_runs(model, tflm["minimal_arena"])
    assert not tflm_runs(model, tflm["minimal_arena"] - 16)

    # Reruns come from the cache; the table and the results file render.
    assert run.bench_model(entry, sparsities=(0.5,), work=tmp_path)[0]["tflm"] == tflm
    assert "ad" in run.table(rows)
    out = tmp_path / "models.json"
    run.write_results(rows, out)
    assert json.loads(out.read_text())["records"][0]["model"] == "ad"
