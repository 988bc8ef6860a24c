"""End to end: PyTorch -> pruned int8 TFLite, through onnx2tf (each compile runs once per session)."""

import subprocess

import numpy as np
import pytest

from edgeprune.compile.tflite_reader import read_tflite

pytestmark = pytest.mark.slow

REPORT_KEYS = {"target", "input_shape", "model", "accuracy", "files", "timings_s"}
LAYER_KEYS = {"name", "op", "weight_shape", "sparsity", "macs"}


def int8_weights(path):
    model = read_tflite(path)
    return [
        model.tensors[op.inputs[1]].data
        for op in model.operators
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    ]


def test_digits_at_80_percent_is_int8_sparse_and_agrees_with_float(compile_once):
    report, out = compile_once("magnitude80", "--target", "cortex-m7", "--data", "digits", "--sparsity", "0.8")
    model = read_tflite(out / "model.tflite")
    assert model.tensors[model.inputs[0]].dtype is np.int8
    assert model.tensors[model.outputs[0]].dtype is np.int8
    assert report["model"]["sparsity"] >= 0.79
    assert report["accuracy"]["agreement"] >= 0.95
    assert abs(report["accuracy"]["int8"] - report["accuracy"]["float"]) <= 0.02
    assert all(layer["zeros_preserved"] for layer in report["model"]["layers"])
    # Per-channel int8 weights (4 layers), int32 biases.
    assert len(int8_weights(out / "model.tflite")) == 4


def test_report_has_the_documented_shape(compile_once):
    report, out = compile_once("magnitude80", "--target", "cortex-m7", "--data", "digits", "--sparsity", "0.8")
    assert REPORT_KEYS <= report.keys()
    assert report["target"] == "cortex-m7" and report["input_shape"] == [1, 1, 8, 8]
    m = report["model"]
    assert {"params", "nonzero_params", "sparsity", "macs", "nonzero_macs", "layers"} <= m.keys()
    assert all(LAYER_KEYS <= layer.keys() for layer in m["layers"])
    assert m["nonzero_macs"] < m["macs"]
    assert {"float", "int8", "agreement"} <= report["accuracy"].keys()
    for name in ("model.onnx", "model.tflite", "model_data.c", "model_data.h", "report.md"):
        assert report["files"][name] == (out / name).stat().st_size
    assert (out / "report.json").is_file()
    assert not any(p.name.startswith(".") for p in out.parent.iterdir() if p.is_dir() and "staging" in p.name)


def test_c_array_holds_the_flatbuffer_and_compiles_cleanly(compile_once, tmp_path):
    _, out = compile_once("magnitude80", "--target", "cortex-m7", "--data", "digits", "--sparsity", "0.8")
    size = (out / "model.tflite").stat().st_size
    assert f"#define G_MODEL_DATA_LEN {size}u" in (out / "model_data.h").read_text()
    main = tmp_path / "main.c"
    main.write_text(
        '#include <stdio.h>\n#include <string.h>\n#include "model_data.h"\n'
        "int main(void) {\n"
        '  if (g_model_data_len != G_MODEL_DATA_LEN || ((unsigned long)g_model_data & 15u) != 0) return 1;\n'
        "  fwrite(g_model_data, 1, g_model_data_len, stdout);\n  return 0;\n}\n"
    )
    exe = tmp_path / "dump"
    subprocess.run(
        ["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-I", str(out), str(main), str(out / "model_data.c"), "-o", str(exe)],
        check=True,
    )
    assert subprocess.run([str(exe)], check=True, capture_output=True).stdout == (out / "model.tflite").read_bytes()


@pytest.mark.parametrize(
    "name, flags, target",
    [
        ("gmp90", ["--prune", "gmp", "--sparsity", "0.9", "--finetune-epochs", "5"], 0.9),
        ("layer70", ["--sparsity", "0.7", "--scope", "layer"], 0.7),
        ("erk80_keep", ["--sparsity", "0.8", "--scope", "erk", "--keep-first-last"], 0.8),
    ],
)
def test_unstructured_modes_reach_target_and_keep_zeros_in_int8(compile_once, name, flags, target):
    report, _ = compile_once(name, *flags)
    assert abs(report["pruning"]["achieved_sparsity"] - target) <= 0.005
    # The int8 model may gain a few zeros from rounding, never lose one.
    assert report["model"]["sparsity"] >= target - 0.005
    assert report["model"]["sparsity"] - target < 0.005
    for layer in report["model"]["layers"]:
        assert layer["zeros_preserved"]
        assert layer["sparsity"] >= layer["float_sparsity"]
    if "--keep-first-last" in flags:
        first, last = report["model"]["layers"][0], report["model"]["layers"][-1]
        assert first["float_sparsity"] == 0 and last["float_sparsity"] == 0


def test_nm_pattern_holds_in_the_int8_tflite(compile_once):
    report, out = compile_once("nm24", "--prune", "nm", "--nm", "2:4")
    weights = int8_weights(out / "model.tflite")
    checked = 0
    for w in weights:
        if w.shape[-1] % 4 == 0:  # groups of 4 consecutive input channels, TFLite (O,H,W,I) layout
            assert int((w.reshape(-1, 4) != 0).sum(axis=1).max()) <= 2
            checked += 1
    assert checked == 3
    assert [l["nm_pattern"] for l in report["model"]["layers"]] == [None, "2:4", "2:4", "2:4"]
    assert abs(report["pruning"]["achieved_sparsity"] - 0.5 * 14144 / 14288) <= 0.005


def test_channel_pruning_makes_the_tflite_smaller(compile_once):
    dense, dense_out = compile_once("dense")
    pruned, pruned_out = compile_once("channel50", "--prune", "channel", "--sparsity", "0.5")
    assert pruned["pruning"]["channel_fraction"] == pytest.approx(0.5, abs=0.005)
    assert (pruned_out / "model.tflite").stat().st_size < 0.6 * (dense_out / "model.tflite").stat().st_size
    assert pruned["model"]["params"] < 0.3 * dense["model"]["params"]
    shapes = [l["weight_shape"] for l in pruned["model"]["layers"]]
    assert shapes == [[8, 3, 3, 1], [16, 3, 3, 8], [16, 3, 3, 16], [10, 16]]
    assert pruned["accuracy"]["agreement"] >= 0.9


def test_onnx_input_skips_the_pytorch_stages(compile_once):
    _, out80 = compile_once("magnitude80", "--target", "cortex-m7", "--data", "digits", "--sparsity", "0.8")
    report, _ = compile_once("from_onnx", model=str(out80 / "model.onnx"))
    assert "prune_finetune" not in report["timings_s"]
    assert report["model"]["sparsity"] >= 0.79
    assert report["accuracy"]["agreement"] >= 0.95


def test_low_agreement_fails_and_writes_nothing(model_dir, tmp_path, monkeypatch):
    from cli_support import run_cli

    from edgeprune.front import fidelity

    real = fidelity.compare

    def pessimistic(*args, **kwargs):
        fid = real(*args, **kwargs)
        fid.agreement = 0.5
        return fid

    monkeypatch.setattr(fidelity, "compare", pessimistic)
    out = tmp_path / "build"
    result = run_cli("compile", model_dir / "model.pt", "--out", out, "--sparsity", "0.5", "--finetune-epochs", "0")
    assert result.exit_code != 0
    assert "agrees with float on only 50.0%" in result.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_generated_c_is_validated_fits_and_is_reported(compile_once):
    """The back half on the digits model: generated C bit-exact with TFLite Micro on the test split, memory fields."""
    report, out = compile_once("magnitude80", "--target", "cortex-m7", "--data", "digits", "--sparsity", "0.8")
    assert report["validation"]["bitexact"] is True and report["validation"]["oracle"] == "tflite-micro"
    assert report["validation"]["samples"] >= 16 and report["validation"]["inputs"] == "eval data"
    mem = report["memory"]
    assert mem["flash_bytes"] == mem["weights_bytes"] + mem["code_bytes"] <= 1024 * 1024
    assert mem["arena_bytes"] < mem["sram_peak_bytes"] <= 320 * 1024
    for layer in report["model"]["layers"]:
        assert layer["format"] in ("dense", "unstructured", "block4", "nm24", "dead"), layer
        assert layer["weight_bytes"] > 0 and layer["instructions_estimate"] > 0, layer
    # Recorded for bench/models (speed claims live there, not in tests).
    assert report["backend_timings_s"]["back_half"] > 0
    for name in ("model.c", "model.h", "CMakeLists.txt", "model.mk", "kernels/ep_kernels.h"):
        assert (out / name).is_file(), name
