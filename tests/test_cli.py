"""The CLI: one clear line and a non-zero exit for every user error."""

import json

import numpy as np
import pytest
import torch
from cli_support import run_cli


def test_targets_lists_profiles_with_limits():
    result = run_cli("targets", "--json")
    assert result.exit_code == 0
    targets = {t["name"]: t for t in json.loads(result.stdout)}
    assert {"cortex-m7", "cortex-m4", "cortex-m55", "arm64", "host"} <= targets.keys()
    assert targets["cortex-m7"]["sram_bytes"] == 320 * 1024
    assert targets["cortex-m7"]["flash_bytes"] == 1024 * 1024
    assert "STM32F746" in run_cli("targets").stdout


def test_example_saves_torchscript(tmp_path):
    out = tmp_path / "m.pt"
    result = run_cli("example", "digits", "--out", out, "--epochs", "1", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["params"] == sum(p.numel() for p in torch.jit.load(str(out)).parameters())


def test_pickle_is_refused_without_the_flag(model_dir, tmp_path):
    result = run_cli("compile", model_dir / "pickled.pt", "--out", tmp_path / "b")
    assert result.exit_code != 0
    assert result.stderr.count("\n") == 1 and "--trust-pickle" in result.stderr
    assert not (tmp_path / "b").exists()


def _bad_npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d, t: [d / "model.pt", "--target", "cortex-m9"], "unknown target 'cortex-m9'"),
        (lambda d, t: [t / "missing.pt"], "does not exist"),
        (lambda d, t: [d / "model.pt", "--data", _bad_npz(t, z=np.zeros(3))], "no array 'x'"),
        (lambda d, t: [d / "model.pt", "--data", _bad_npz(t, x=np.full((4, 1, 8, 8), np.nan, np.float32))], "NaN"),
        (lambda d, t: [d / "model.pt", "--data", _bad_npz(t, x=np.zeros((4, 3, 8, 8), np.float32))], "does not run on inputs"),
        (lambda d, t: [d / "model.pt", "--input-shape", "1,9,9"], "does not match the data"),
        (lambda d, t: [d / "model.pt", "--prune", "magnitude"], "needs --sparsity"),
        (lambda d, t: [d / "model.pt", "--prune", "nm", "--nm", "4:2"], "0 < N < M"),
        (lambda d, t: [d / "model.pth"], "--arch"),
        (lambda d, t: [d / "model.pt2", "--prune", "channel", "--sparsity", "0.5"], "channel pruning needs"),
        (lambda d, t: [d / "model.pt", "--format", "csr"], "unknown --format csr"),
        (lambda d, t: [t / "missing.tflite"], "does not exist"),
    ],
)
def test_bad_inputs_give_one_clear_line_and_nonzero_exit(model_dir, tmp_path, make_args, message):
    result = run_cli("compile", *make_args(model_dir, tmp_path), "--out", tmp_path / "build")
    assert result.exit_code != 0
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "build").exists()
