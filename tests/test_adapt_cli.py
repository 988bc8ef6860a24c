"""`edgeprune adapt --device sim`: the JSON contract, budgets respected every epoch, determinism per seed,
and one-line errors for bad inputs. Runs on a small generated int8 model (seconds); the digits demo
model is exercised in the slow test at the end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_support import run_cli
from test_adapt_budget import make_model

LAYERS = [("conv", 6, 3, 1, "SAME", "RELU"), ("conv", 8, 3, 2, "SAME", "RELU"), ("mean",), ("fc", 3, "NONE")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A deployed-model folder (model.tflite) and labelled .npz files: NCHW adaptation data, NHWC eval data."""
    d = tmp_path_factory.mktemp("adapt")
    model = d / "model"
    model.mkdir()
    (model / "model.tflite").write_bytes(make_model(LAYERS, in_shape=(6, 6, 1), first=4, seed=9, sparsity=0.4))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(48, 1, 6, 6)).astype(np.float32)
    m = x[:, 0, :3].mean(axis=(1, 2))
    y = (np.argsort(np.argsort(m)) * 3 // len(x)).astype(np.int64)  # tertiles of the top rows' brightness: 16 per class
    np.savez(d / "adapt.npz", x=x, y=y)
    np.savez(d / "eval.npz", x=x[:20].transpose(0, 2, 3, 1), y=y[:20])
    np.savez(d / "badlabel.npz", x=x, y=np.where(np.arange(48) == 5, 7, y))
    np.savez(d / "badshape.npz", x=x[:, :, :5, :5], y=y)
    return model, d


def _adapt(setup, *flags):
    model, d = setup
    return run_cli("adapt", model, "--data", d / "adapt.npz", *flags)


KEYS = {"selector", "device", "seed", "budget_ram", "budget_macs", "full_ram", "accuracy_before", "accuracy_after", "epochs"}
EPOCH_KEYS = {"epoch", "accuracy", "loss", "selected", "ram_used", "macs_used", "peak_ram_measured"}


@pytest.mark.parametrize("selector", ["neq", "su", "random", "full", "cheapest", "neq-shuffled"])
def test_adapt_json_within_budget(setup, selector):
    model, d = setup
    r = _adapt(setup, "--eval-data", d / "eval.npz", "--budget-ram", "60%", "--budget-macs", "70%", "--selector", selector,
               "--epochs", "4", "--seed", "1", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert KEYS <= set(out) and out["selector"] == selector and out["device"] == "sim" and out["seed"] == 1
    assert out["evaluated_on"] == "eval-data" and out["eval_samples"] == 20
    assert len(out["epochs"]) == 4 and out["accuracy_after"] == out["epochs"][-1]["accuracy"]
    assert 0 <= out["accuracy_before"] <= 1 and out["budget_ram"] == int(0.6 * out["full_ram"])
    for e in out["epochs"]:
        assert EPOCH_KEYS <= set(e) and e["peak_ram_measured"] is None
        assert set(e["selected"]) == {"conv1", "conv2", "fc3"}
        if selector == "full":
            assert e["ram_used"] == out["full_ram"] and e["selected"] == {"conv1": 6, "conv2": 8, "fc3": 3}
        else:
            assert e["ram_used"] <= out["budget_ram"] and e["macs_used"] <= out["budget_macs"], e
            assert sum(e["selected"].values()) > 0


def test_adapt_deterministic_and_seeded(setup):
    args = ("--budget-ram", "50%", "--selector", "neq", "--epochs", "4", "--json")
    a = json.loads(_adapt(setup, *args, "--seed", "3").stdout)
    b = json.loads(_adapt(setup, *args, "--seed", "3").stdout)
    c = json.loads(_adapt(setup, *args, "--seed", "4").stdout)
    assert a == b
    assert a["epochs"] != c["epochs"]
    assert a["evaluated_on"] == "probe set" and a["probe_samples"] == 6  # 2 per class, 3 classes


def test_adapt_table(setup):
    r = _adapt(setup, "--budget-ram", "8KiB", "--selector", "su", "--epochs", "2")
    assert r.exit_code == 0, r.output
    assert "su on sim, budget 8,192 B" in r.stdout and "before (deployed int8)" in r.stdout


def test_adapt_offers_every_selector():
    """The CLI spells its choices out (it imports no numpy at start-up); they are the library's."""
    from edgeprune.adapt.selectors import INITS, SELECTORS
    from edgeprune.cli import main

    params = {p.name: p for p in main.commands["adapt"].params}
    assert tuple(params["selector"].type.choices) == SELECTORS and tuple(params["init"].type.choices) == INITS


def test_adapt_trainable_from(setup):
    """--trainable-from fc3: conv1 and conv2 join the int8 prefix; only fc3 trains, and full training
    (the base of a % budget) is full training of fc3."""
    model, d = setup
    whole = json.loads(_adapt(setup, "--selector", "full", "--epochs", "1", "--json").stdout)
    r = _adapt(setup, "--trainable-from", "fc3", "--budget-ram", "75%", "--selector", "random", "--epochs", "3", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["trainable_layers"] == ["fc3"] and out["frozen_layers"] == ["conv0", "conv1", "conv2"]
    assert out["full_ram"] < whole["full_ram"] and out["budget_ram"] == int(0.75 * out["full_ram"])
    assert out["accuracy_before"] == whole["accuracy_before"]  # the same deployed model
    assert all(set(e["selected"]) == {"fc3"} and e["ram_used"] <= out["budget_ram"] for e in out["epochs"])


@pytest.mark.parametrize("flags, message", [
    (("--budget-ram", "6 parsecs"), "--budget-ram '6 parsecs' is not a budget"),
    (("--budget-macs", "12x"), "--budget-macs '12x' is not a budget"),
    (("--budget-ram", "16"), "too small for even one neuron: the smallest workable budget is"),
    (("--rollback",), "--rollback returns a device to its factory weights; the simulation keeps none: use --device qemu"),
    (("--device", "phone"), "unknown --device phone"),
    (("--trainable-from", "conv0"), "--trainable-from conv0: the trainable region can start at conv1, conv2, fc3"),
])
def test_adapt_bad_options(setup, flags, message):
    r = _adapt(setup, *flags)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("name, message", [
    ("badlabel.npz", "has label 7 at sample 5, but the model has 3 classes"),
    ("badshape.npz", "has samples of shape (1, 5, 5) but the model takes (6, 6, 1)"),
    ("missing.npz", "does not exist"),
])
def test_adapt_bad_data(setup, name, message):
    model, d = setup
    for flag in ("--data", "--eval-data"):
        args = ["adapt", model, "--data", d / "adapt.npz", "--epochs", "1"]
        args[args.index(flag) if flag in args else len(args):] = [flag, d / name] + (["--epochs", "1"] if flag == "--data" else [])
        r = run_cli(*args)
        assert r.exit_code == 2, r.output
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_adapt_digits_demo_model(compile_once, tmp_path):
    """The digits CNN deployed at 80% sparsity adapts to a rotated + thickened held-out stream."""
    from edgeprune.adapt.shifts import write_npz

    _, out = compile_once("magnitude80", "--target", "cortex-m7", "--data", "digits", "--sparsity", "0.8")  # shared with test_compile
    adapt_npz, eval_npz = write_npz("severe", tmp_path)
    r = run_cli("adapt", out, "--data", adapt_npz, "--eval-data", eval_npz, "--budget-ram", "10%", "--selector", "full",
                "--epochs", "5", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["trainable_layers"] == ["conv1", "conv2", "fc3"] and res["frozen_layers"] == ["conv0"]
    assert res["accuracy_after"] > res["accuracy_before"] + 0.1
