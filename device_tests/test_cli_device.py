"""`edgeprune flash / run / bench` end to end on the emulators: the digits model compiled once for
Cortex-M7 (firmware under qemu-system-arm) and once for arm64 (the runner under qemu-aarch64)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_support import run_cli

from edgeprune.data import load_dataset

SAMPLES = 60  # test-split samples per run: enough to catch a wrong kernel, quick under QEMU


def _device_build(out: Path, target: str) -> Path:
    """The firmware or runner, if the compile did not already build it."""
    from edgeprune.device.firmware import build_firmware

    if not (out / ("runner" if target == "arm64" else "firmware.elf")).exists():
        build_firmware(out, target)
    return out


@pytest.fixture(scope="session")
def m7_dir(tmp_path_factory):
    """The digits CNN, pruned to 80% and compiled for cortex-m7 (block4/dead formats, dsp kernels)."""
    from edgeprune.api import CompileOptions, compile_model
    from edgeprune.examples import save_torchscript, train_digits_cnn

    d = tmp_path_factory.mktemp("cli_device")
    module, _ = train_digits_cnn(epochs=20, seed=0, quiet=True)
    save_torchscript(module, d / "model.pt")
    out = d / "m7"
    compile_model(CompileOptions(model=d / "model.pt", out=out, data="digits", target="cortex-m7", sparsity=0.8,
                                 finetune_epochs=2, quiet=True))
    return _device_build(out, "cortex-m7")


@pytest.fixture(scope="session")
def arm64_dir(m7_dir, tmp_path_factory):
    """The same int8 model compiled for arm64 (the back half only: neon_dot kernels, the Linux runner)."""
    from edgeprune.api import CompileOptions, compile_model

    out = tmp_path_factory.mktemp("cli_device_arm64") / "arm64"
    compile_model(CompileOptions(model=m7_dir / "model.tflite", out=out, target="arm64", quiet=True))
    return _device_build(out, "arm64")


@pytest.fixture(scope="session")
def digits_test():
    data = load_dataset("digits")
    return data.x_test[:SAMPLES], data.y_test[:SAMPLES]


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("target", ["cortex-m7", "arm64"])
def test_run_float_inputs_bitexact(request, target, digits_test, tmp_path):
    folder = request.getfixturevalue("m7_dir" if target == "cortex-m7" else "arm64_dir")
    x, y = digits_test
    np.save(tmp_path / "x.npy", x)  # float NCHW: quantized with the model's input parameters
    np.save(tmp_path / "y.npy", y)
    d = _json(run_cli("run", folder, "--input", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                      "--out", tmp_path / "out.npy", "--json"))
    assert (d["samples"], d["bitexact"], d["mismatches"]) == (SAMPLES, True, 0), d
    assert d["device"].startswith("qemu-aarch64:" if target == "arm64" else "qemu:qemu-mps2-an500")
    assert d["accuracy"] == d["tflm_accuracy"] and d["accuracy"] > 0.8
    out = np.load(tmp_path / "out.npy")
    assert out.dtype == np.int8 and out.shape == (SAMPLES, 10)


def test_run_int8_inputs_and_verdict(m7_dir, tmp_path):
    x = np.random.default_rng(0).integers(-128, 128, (8, 8, 8, 1)).astype(np.int8)  # NHWC, used as is
    np.save(tmp_path / "x.npy", x)
    r = run_cli("run", m7_dir, "--input", tmp_path / "x.npy")
    assert r.exit_code == 0 and "8 samples, bit-exact with TFLite Micro" in r.stdout, r.output


@pytest.mark.parametrize("target", ["cortex-m7", "arm64"])
def test_bench_json(request, target):
    folder = request.getfixturevalue("m7_dir" if target == "cortex-m7" else "arm64_dir")
    d = _json(run_cli("bench", folder, "--json"))
    report = json.loads((folder / "report.json").read_text())
    assert isinstance(d["device"], str) and d["backend"] == ("neon_dot" if target == "arm64" else "dsp")
    layers = d["layers"]
    for l in layers:
        assert {"name", "op", "format", "macs", "instructions"} <= l.keys()
        assert isinstance(l["instructions"], int) and l["instructions"] > 0, l
    # Every weight layer of report.json is there with its format and MACs.
    by_name = {l["name"]: l for l in layers}
    for rl in report["model"]["layers"]:
        assert (by_name[rl["name"]]["format"], by_name[rl["name"]]["macs"]) == (rl["format"], rl["macs"])
    total = d["total_instructions"]
    assert abs(sum(l["instructions"] for l in layers) - total) <= 0.05 * total, (total, layers)
    for key in ("flash_bytes", "sram_bytes", "stack_bytes"):
        assert isinstance(d[key], int) and d[key] > 0, key
    if target == "cortex-m7":
        assert d["sram_bytes"] >= report["memory"]["arena_bytes"] and d["flash_bytes"] < 1 << 20
        assert d["stack_bytes"] < d["stack_region_bytes"]
    assert (folder / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert _json(run_cli("bench", folder, "--json", "--no-plot"))["layers"] == layers  # deterministic counts


def test_bench_table(m7_dir, tmp_path):
    r = run_cli("bench", m7_dir, "--plot", tmp_path / "chart.png")
    assert r.exit_code == 0, r.output
    assert "instr." in r.stdout and "conv_2d_1" in r.stdout and "peak stack" in r.stdout
    assert (tmp_path / "chart.png").exists()


def test_flash_qemu(m7_dir):
    r = run_cli("flash", m7_dir)
    assert r.exit_code == 0, r.output
    model_hash = next(l for l in (m7_dir / "model.h").read_text().splitlines() if "EP_MODEL_HASH" in l).split('"')[1]
    assert f"model {model_hash}" in r.stdout and "qemu-mps2-an500" in r.stdout and "no persistent flash" in r.stdout


@pytest.mark.parametrize("make_input, words", [
    (lambda: np.zeros((3, 64), np.float32), "inputs have shape (3, 64)"),
    (lambda: np.zeros((3, 8, 8, 1), np.uint8), "uint8"),
])
def test_run_bad_inputs_one_line(m7_dir, tmp_path, make_input, words):
    np.save(tmp_path / "x.npy", make_input())
    r = run_cli("run", m7_dir, "--input", tmp_path / "x.npy")
    assert r.exit_code == 2 and words in r.stderr and r.stderr.count("\n") == 1, r.output


def test_arm64_output_folder_for_phones(arm64_dir, tmp_path):
    """The int8 .tflite (LiteRT), the C library with the NEON kernels and its CMakeLists, the runner."""
    for name in ("model.tflite", "model.c", "model.h", "CMakeLists.txt", "runner", "kernels/ep_backend.h"):
        assert (arm64_dir / name).exists(), name
    assert any(p.name.endswith("_neon_dot.c") for p in (arm64_dir / "kernels").iterdir())
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    proc = subprocess.run(["cmake", "-S", str(arm64_dir), "-B", str(tmp_path / "build")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
