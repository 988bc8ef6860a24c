"""On-device adaptation (issue 6 items 2 and 4): the firmware's adaptation mode on the emulated Cortex-M7
against `--device sim`.

The digits CNN deployed at 80% sparsity adapts to the severe shift (adapt/shifts.py) with the same data
order and seed on both: every epoch the device selects the same neurons (it runs the greedy selection and
the NEq velocities itself), its measured training RAM (the high-water mark of its static training pool)
stays within the budget, and the accuracies end within a point of each other; with either NEq history
(--neq-history recompute or int8, both kept in the training pool). After adaptation `infer`
runs the adapted model. A budget too small for one neuron is refused with the sim's message on the host
and by the device itself.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgeprune.compile import tflite_writer as W
from edgeprune.errors import UsageError

ADAPT_SAMPLES, EVAL_SAMPLES = 96, 100


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model folder, adaptation firmware folder, adaptation .npz, evaluation .npz)."""
    from edgeprune.adapt.device import build_adapt_firmware
    from edgeprune.adapt.shifts import adaptation_and_eval
    from edgeprune.api import CompileOptions, compile_model
    from edgeprune.examples import save_torchscript, train_digits_cnn

    d = tmp_path_factory.mktemp("adapt_device")
    module, _ = train_digits_cnn(epochs=12, seed=0, quiet=True)
    save_torchscript(module, d / "model.pt")
    compile_model(CompileOptions(model=d / "model.pt", out=d / "m7", data="digits", target="cortex-m7", sparsity=0.8,
                                 finetune_epochs=1, quiet=True))
    (xa, ya), (xe, ye) = adaptation_and_eval("severe")
    np.savez(d / "adapt.npz", x=xa[:ADAPT_SAMPLES], y=ya[:ADAPT_SAMPLES])
    np.savez(d / "eval.npz", x=xe[:EVAL_SAMPLES], y=ye[:EVAL_SAMPLES])
    return d / "m7", build_adapt_firmware(d / "m7"), d / "adapt.npz", d / "eval.npz"


def _options(setup, **kw):
    from edgeprune.adapt.session import AdaptOptions

    model, _, adapt_npz, eval_npz = setup
    return AdaptOptions(dir=model, data=adapt_npz, eval_data=eval_npz, **kw)


def _both(setup, monkeypatch, **kw):
    from edgeprune.adapt import selectors
    from edgeprune.adapt.device import run_on_device
    from edgeprune.adapt.session import adapt

    # The sim's record gives counts per layer; record its neurons themselves too.
    chosen = []
    select = selectors.Selector.select

    def recording(self, epoch, velocities=None, errors=None):
        sel = select(self, epoch, velocities, errors)
        chosen.append(sel.as_lists())
        return sel

    monkeypatch.setattr(selectors.Selector, "select", recording)
    sim = adapt(_options(setup, device="sim", **kw))
    monkeypatch.undo()
    for record, sel in zip(sim["epochs"], chosen, strict=True):
        record.setdefault("selection", sel)
    firmware = setup[1] if kw.get("trainable_from") is None else None  # else built for that region
    dev = run_on_device(_options(setup, device="qemu", **kw), firmware=firmware)
    return sim, dev


def _check_parity(sim, dev, case):
    assert dev["budget_ram"] == sim["budget_ram"] and dev["full_ram"] == sim["full_ram"], case
    assert dev["accuracy_before"] == sim["accuracy_before"], case  # the deployed int8 model, on the device
    assert abs(dev["accuracy_before_float"] - sim["accuracy_before_float"]) <= 0.01, case
    for s, d in zip(sim["epochs"], dev["epochs"], strict=True):
        where = f"{case}, epoch {s['epoch']}"
        assert d["selected"] == s["selected"], where
        assert d["selection"]["weights"] == s["selection"]["weights"], where  # the same neurons
        trained = [sorted(set(w) | set(b)) for w, b in zip(s["selection"]["weights"], s["selection"]["biases"])]
        assert d["selection"]["biases"] == trained, where  # the device lists every neuron whose bias trains
        assert (d["ram_used"], d["macs_used"]) == (s["ram_used"], s["macs_used"]), where
        # Measured on the device: the highest word of its painted training pool written, never above the budget.
        budget = dev["budget_ram"] if dev["budget_ram"] is not None else dev["full_ram"]  # full: no budget
        assert d["peak_ram_measured"] is not None and d["peak_ram_measured"] <= budget, where
        assert d["pool_allocated"] == d["ram_used"] == d["peak_ram_measured"], where  # allocated = counted = touched
        assert abs(d["loss"] - s["loss"]) <= 1e-3 * max(1.0, s["loss"]), where
        assert d["at_equilibrium"] == s["at_equilibrium"], where
    assert abs(dev["accuracy_after"] - sim["accuracy_after"]) <= 0.01, case


def test_parity_neq(setup, monkeypatch):
    """neq at 40% of full's RAM, 4 epochs: the su warm-up, then the device's own velocities choose
    neurons of two layers."""
    sim, dev = _both(setup, monkeypatch, selector="neq", budget_ram="40%", epochs=4, seed=0)
    _check_parity(sim, dev, "neq 40%")
    assert [r["warmup"] for r in sim["epochs"]] == [True, True, False, False]
    # `infer` now runs the adapted region (its logits quantized like the deployed output).
    assert abs(dev["infer_accuracy_after"] - dev["accuracy_after"]) <= 0.03
    assert dev["accuracy_after"] > dev["accuracy_before"]

    # Saved to the parameter store: a rebooted device runs the adapted model; adapt_reset (--rollback)
    # brings back the factory int8 model.
    from edgeprune.adapt import region as R
    from edgeprune.adapt.device import ADAPT_RESET
    from edgeprune.device.link import open_link

    assert dev["saved_to_flash"] is True
    model, firmware, _, eval_npz = setup
    with np.load(eval_npz) as f:
        x, y = f["x"], f["y"]
    inputs = R.model_inputs(R.load_region(model), x)

    def infer_accuracy(link):
        pred = np.array([np.frombuffer(link.infer(s.tobytes())[0], np.int8)[:10].argmax() for s in inputs])
        return float(np.mean(pred == y))

    with open_link(firmware) as link:
        assert infer_accuracy(link) == dev["infer_accuracy_after"]
        link.request(ADAPT_RESET)
        assert infer_accuracy(link) == dev["accuracy_before"]
        link.request(0x0F)


@pytest.mark.parametrize("case", [
    # random: numpy's permutation, the device's greedy; with momentum and a MAC budget
    dict(selector="random", budget_ram="20%", budget_macs="30%", momentum=0.9, epochs=2, seed=3),
    # scores.py's neq-explore after a random warm-up
    dict(selector="neq-explore", init="random", budget_ram="30%", epochs=3, seed=2),
], ids=["random-momentum-macs", "neq-explore-random-init"])
def test_parity_other_selectors(setup, monkeypatch, case):
    sim, dev = _both(setup, monkeypatch, **case)
    _check_parity(sim, dev, str(case))


@pytest.mark.parametrize("case", [
    # the error mass ranks conv2's neurons against fc3's (the path to conv2 fits 40%)
    dict(selector="grad", budget_ram="40%", epochs=4, seed=0),
    # bench/adapt's smallest budget: part of fc3, rotated; a random warm-up and a MAC budget
    dict(selector="grad-explore", init="random", budget_ram="5%", budget_macs="50%", epochs=3, seed=1),
], ids=["grad-40%", "grad-explore-5%"])
def test_parity_gradient_scores(setup, monkeypatch, case):
    """The gradient-signal scores (scores.py): the device sums each candidate's error mass in its own
    backward pass (4 B per candidate in the training pool, counted) and selects the sim's neurons."""
    sim, dev = _both(setup, monkeypatch, **case)
    _check_parity(sim, dev, str(case))
    assert [r["warmup"] for r in dev["epochs"]] == [True] + [False] * (case["epochs"] - 1)  # one warm-up epoch
    candidates = dev["epochs"][0]["candidates"]
    assert dev["device_memory"]["persistent_training_state"] == 4 * candidates
    assert all(r["ram_breakdown"]["grad"] == 4 * candidates for r in sim["epochs"] + dev["epochs"])


@pytest.mark.parametrize("name", ["dw_pw_fc", "conv_mean_fc"])
def test_parity_other_regions(tmp_path, monkeypatch, name):
    """Regions unlike the digits CNN's, from any int8 .tflite: a depthwise conv with RELU6, a pointwise
    conv, max pooling and FC (dw_pw_fc), or strided SAME convs, MEAN and FC (conv_mean_fc). The device's
    sparse float32 kernels and steps select the sim's neurons every epoch on them too."""
    from test_adapt_budget import MODELS, make_model

    from edgeprune.adapt.device import build_adapt_firmware
    from edgeprune.api import CompileOptions, compile_model

    (tmp_path / "model.tflite").write_bytes(make_model(MODELS[name], in_shape=(6, 6, 2), seed=2, sparsity=0.5))
    model = tmp_path / "m7"
    compile_model(CompileOptions(model=tmp_path / "model.tflite", out=model, target="cortex-m7", quiet=True))
    rng = np.random.default_rng(3)
    for part, n in (("adapt", 48), ("eval", 48)):
        np.savez(tmp_path / f"{part}.npz", x=rng.uniform(0, 6, (n, 6, 6, 2)).astype(np.float32), y=rng.integers(0, 3, n))
    setup = (model, build_adapt_firmware(model), tmp_path / "adapt.npz", tmp_path / "eval.npz")
    # full trains every layer (the depthwise or strided conv too, through the whole backward path);
    # the budgeted scores choose among conv2's and fc3's neurons.
    for selector, budget in (("full", None), ("grad-explore", "30%"), ("neq", "80%")):
        sim, dev = _both(setup, monkeypatch, selector=selector, budget_ram=budget, epochs=3, seed=0, batch_size=8)
        _check_parity(sim, dev, f"{name}, {selector} {budget}")
        assert dev["device_memory"]["adapted_parameters"] == _packed_bytes(model)


def _packed_bytes(model, trainable_from=None) -> int:
    """The float32 bytes of a region's non-zero weights and biases: what the device keeps of it in RAM."""
    from edgeprune.adapt.region import load_region

    layers = load_region(model, trainable_from).layers
    return 4 * sum(int(np.count_nonzero(lay.weight)) + (len(lay.bias) if lay.bias is not None else 0) for lay in layers)


def test_parity_region_from_fc3(setup, monkeypatch):
    """--trainable-from fc3: conv1 and conv2 run in the device's int8 prefix, as deployed; the device
    keeps float32 copies of fc3 only (its non-zero weights and biases), and still selects the sim's neurons."""
    sim, dev = _both(setup, monkeypatch, selector="grad-explore", budget_ram="60%", epochs=3, seed=0, trainable_from="fc3")
    _check_parity(sim, dev, "grad-explore 60%, region fc3")
    assert dev["trainable_layers"] == ["fc3"] and dev["frozen_layers"] == ["conv0", "conv1", "conv2"]
    assert 0 < max(sum(r["selected"].values()) for r in dev["epochs"][1:]) < 10  # part of fc3 fits 60%
    m = dev["device_memory"]
    assert m["adapted_parameters"] == _packed_bytes(setup[0], "fc3")  # fc3's non-zero weights and biases
    # Everything on the device, arenas and stack included: under 20 KB (the default region's is over 80 KB).
    assert m["float_forward_buffers"] < 5000 and dev["epochs"][-1]["device_ram_peak"] < 20_000


def test_m4_adapts(setup, tmp_path):
    """The Cortex-M4 (128 KiB of SRAM) adapts the whole default region: the device keeps the region's
    non-zero weights only, which leaves room for the training pool. `--trainable-from fc3` takes
    everything the device holds down further."""
    from edgeprune.adapt.device import run_on_device
    from edgeprune.adapt.session import AdaptOptions
    from edgeprune.api import CompileOptions, compile_model

    model, _, adapt_npz, eval_npz = setup
    m4 = tmp_path / "m4"
    compile_model(CompileOptions(model=model.parent / "model.pt", out=m4, data="digits", target="cortex-m4", sparsity=0.8,
                                 finetune_epochs=1, quiet=True))
    opts = dict(dir=m4, data=adapt_npz, eval_data=eval_npz, selector="grad", budget_ram="20%", epochs=2, device="qemu")
    whole = run_on_device(AdaptOptions(**opts))
    small = run_on_device(AdaptOptions(trainable_from="fc3", **opts))
    for out, region in ((whole, None), (small, "fc3")):
        assert all(e["peak_ram_measured"] == e["ram_used"] <= out["budget_ram"] for e in out["epochs"])
        assert out["device_memory"]["adapted_parameters"] == _packed_bytes(m4, region)
    peak = [max(e["device_ram_peak"] for e in out["epochs"]) for out in (whole, small)]
    assert peak[1] < peak[0] <= 128 * 1024, peak


@pytest.mark.parametrize("case", [
    # make demo's run: only fc3's 10 neurons are candidates (the conv layers' histories do not fit 10%)
    dict(selector="neq-explore", budget_ram="10%", epochs=4, seed=0),
    dict(selector="neq", budget_ram="40%", epochs=3, seed=0),
    # conv2's 32 neurons are candidates too (320 history bytes each): velocities rank them against fc3's
    dict(selector="neq-explore", budget_ram="70%", epochs=4, seed=1),
], ids=["neq-explore-10%", "neq-40%", "neq-explore-70%"])
def test_parity_int8_history(setup, monkeypatch, case):
    """--neq-history int8: the device keeps every candidate's probe outputs in int8 (neq.quantize_history
    with its layer's history_scale) in the training pool and sums them exactly, so every epoch it selects
    the sim's neurons; its pool holds exactly budget.py's bytes, the history among them."""
    from edgeprune.adapt import region as R

    sim, dev = _both(setup, monkeypatch, history="int8", **case)
    _check_parity(sim, dev, str(case))
    # The candidates are the last layers' neurons; each keeps 5 float32 (v, nu, the three sums) and its
    # outputs over the probe set in int8 (probe samples x output positions bytes). No pre-epoch copy.
    candidates, layers = sim["neq_candidates"], []
    for lay in reversed(R.load_region(setup[0]).layers):
        if sum(c.channels for c in layers) < candidates:
            layers.append(lay)
    assert sum(lay.channels for lay in layers) == candidates == dev["epochs"][0]["candidates"]
    neq_bytes = sum(lay.channels * (5 * 4 + sim["probe_samples"] * lay.positions) for lay in layers)
    assert dev["device_memory"]["persistent_training_state"] == neq_bytes
    assert all(r["ram_breakdown"]["neq"] == neq_bytes for r in sim["epochs"] + dev["epochs"])
    assert dev["neq_per_epoch"] == sim["neq_per_epoch"]  # one region pass per probe sample
    if len(layers) > 1:  # after the warm-up the velocities choose among two layers' neurons
        assert any(r["selected"]["conv2"] and r["selected"]["fc3"] for r in dev["epochs"][2:])


def test_budget_too_small_is_refused(setup):
    from edgeprune.adapt import region as R
    from edgeprune.adapt.budget import CostModel
    from edgeprune.adapt.device import ADAPT_BEGIN, begin_payload, run_on_device
    from edgeprune.adapt.selectors import Selector
    from edgeprune.adapt.session import adapt
    from edgeprune.device.link import open_link
    from edgeprune.device.protocol import DeviceError

    with pytest.raises(UsageError) as sim_err:
        adapt(_options(setup, device="sim", selector="neq", budget_ram=64, epochs=1))
    with pytest.raises(UsageError) as dev_err:
        run_on_device(_options(setup, device="qemu", selector="neq", budget_ram=64, epochs=1), firmware=setup[1])
    assert str(dev_err.value) == str(sim_err.value)
    assert "smallest workable budget is" in str(dev_err.value)

    # The device refuses on its own too (the host's check bypassed), naming the smallest budget.
    opts = _options(setup, device="qemu", selector="cheapest", budget_ram="30%", epochs=1)
    cm = CostModel(R.load_region(opts.dir))
    selector = Selector("cheapest", cm, 10_000, None)
    good = bytearray(begin_payload(cm, selector, opts, 10_000, None, 0))
    smallest = min(cm.cost(_single(cm, i, c)).ram for i, c in cm.neurons())
    with open_link(setup[1]) as link:
        for budget, message in ((64, f"the smallest workable budget is {smallest} B"),
                                (10**7, "exceeds this firmware's training pool")):
            bad = bytearray(good)
            bad[8:12] = struct.pack("<I", budget)
            with pytest.raises(DeviceError) as e:
                link.request(ADAPT_BEGIN, bytes(bad))
            assert e.value.code == 9 and message in e.value.text, (budget, e.value.text)
        link.request(0x0F)


def _plain_ops_model(seed=1) -> bytes:
    """An int8 model with every plain op the device's region supports: input 8x8x1 -> conv 1x1 (3, RELU,
    frozen) -> PAD 1 -> AVERAGE_POOL 2/2 -> conv 3x3 (4, RELU6) -> MAX_POOL 2/1 -> depthwise 3x3 SAME
    (RELU) -> RESHAPE (1,16) -> fully connected 3 -> SOFTMAX."""
    rng = np.random.default_rng(seed)
    t, ops = [], []

    def act(shape, scale=0.05, zp=-128):
        t.append(W.TensorSpec(tuple(shape), np.int8, scale, zp))
        return len(t) - 1

    def const(data, dtype, scale=None, zp=None, axis=0):
        t.append(W.TensorSpec(tuple(data.shape), dtype, scale, zp, axis, data=np.asarray(data).astype(dtype)))
        return len(t) - 1

    def weighted(kind, x, wshape, axis, out_shape, options, zp=-128):
        w = rng.integers(-127, 128, size=wshape)
        w[rng.random(wshape) < 0.5] = 0
        ch = wshape[axis]
        ws = rng.uniform(0.005, 0.02, ch).astype(np.float32)
        wt = const(w, np.int8, ws, np.zeros(ch, np.int64), axis)
        bt = const(rng.integers(-500, 500, ch), np.int32, (0.05 * ws).astype(np.float32), np.zeros(ch, np.int64))
        out = act(out_shape, zp=zp)
        ops.append(W.OpSpec(kind, [x, wt, bt], [out], options))
        return out

    x = inp = act((1, 8, 8, 1), scale=1 / 255.0)
    x = weighted("CONV_2D", x, (3, 1, 1, 1), 0, (1, 8, 8, 3), W.conv2d_options(activation="RELU"))
    p = act((1, 10, 10, 3))
    ops.append(W.OpSpec("PAD", [x, const(np.array([[0, 0], [1, 1], [1, 1], [0, 0]]), np.int32)], [p], W.pad_options()))
    x = p
    p = act((1, 5, 5, 3))
    ops.append(W.OpSpec("AVERAGE_POOL_2D", [x], [p], W.pool2d_options((2, 2), (2, 2))))
    x = p
    x = weighted("CONV_2D", x, (4, 3, 3, 3), 0, (1, 3, 3, 4), W.conv2d_options(activation="RELU6"))
    p = act((1, 2, 2, 4))
    ops.append(W.OpSpec("MAX_POOL_2D", [x], [p], W.pool2d_options((2, 2), (1, 1))))
    x = p
    x = weighted("DEPTHWISE_CONV_2D", x, (1, 3, 3, 4), 3, (1, 2, 2, 4), W.depthwise_options(padding="SAME", activation="RELU"))
    p = act((1, 16))
    ops.append(W.OpSpec("RESHAPE", [x, const(np.array([1, 16]), np.int32)], [p], W.reshape_options([1, 16])))
    x = p
    x = weighted("FULLY_CONNECTED", x, (3, 16), 0, (1, 3), W.fully_connected_options("NONE"), zp=0)
    p = act((1, 3), scale=1 / 256.0, zp=-128)
    ops.append(W.OpSpec("SOFTMAX", [x], [p], W.softmax_options()))
    return W.write_tflite(W.ModelSpec(t, ops, [inp], [p]))


def test_parity_plain_ops(tmp_path, monkeypatch):
    """PAD, AVERAGE_POOL_2D, RELU6, MAX_POOL_2D (its saved input), DEPTHWISE_CONV_2D with RELU, RESHAPE:
    the same neurons and the same losses on a synthetic model, for neq (velocities, with either history)
    and full (the backward pass through every op). With 3 classes the int8 history is 330 B, not a
    multiple of 4: the float buffers after it still take exactly budget.py's bytes."""
    from edgeprune.adapt.device import build_adapt_firmware
    from edgeprune.api import CompileOptions, compile_model

    (tmp_path / "m.tflite").write_bytes(_plain_ops_model())
    compile_model(CompileOptions(model=tmp_path / "m.tflite", out=tmp_path / "m7", target="cortex-m7", quiet=True))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", x=rng.random((48, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 3, 48))
    synthetic = (tmp_path / "m7", build_adapt_firmware(tmp_path / "m7"), tmp_path / "a.npz", tmp_path / "a.npz")
    for case in (dict(selector="neq", budget_ram="50%", epochs=4), dict(selector="full", budget_ram=None, epochs=2),
                 dict(selector="neq", budget_ram="70%", epochs=3, history="int8")):
        sim, dev = _both(synthetic, monkeypatch, momentum=0.5, lr=0.5, seed=0, **case)
        _check_parity(sim, dev, str(case))
        # `infer` applies the deployed SOFTMAX to the adapted logits before quantizing them.
        assert abs(dev["infer_accuracy_after"] - dev["accuracy_after"]) <= 0.05, case


def _single(cm, i, c):
    from edgeprune.adapt.budget import Selection

    sel = Selection.empty(len(cm.region.layers))
    sel.weights[i].add(c)
    return sel


def test_cli_adapt_on_qemu_then_rollback(setup):
    """What a user types: `edgeprune adapt DIR --device qemu --json`, then `--rollback --device qemu`."""
    import json

    from click.testing import CliRunner

    from edgeprune.cli import main

    model, firmware, adapt_npz, eval_npz = setup
    r = CliRunner().invoke(main, ["adapt", str(model), "--data", str(adapt_npz), "--eval-data", str(eval_npz),
                                  "--budget-ram", "20%", "--selector", "neq", "--epochs", "3", "--device", "qemu", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["device"] == "qemu" and out["selector"] == "neq" and len(out["epochs"]) == 3
    assert all(e["peak_ram_measured"] <= out["budget_ram"] for e in out["epochs"])
    m = out["device_memory"]
    assert m["adapted_parameters"] == _packed_bytes(model)  # the region's non-zeros and biases, not its dense tensors
    assert all(e["device_ram_peak"] == e["peak_ram_measured"] + e["stack_peak_measured"] + m["float_forward_buffers"]
               + m["adapted_parameters"] + m["int8_arena"] + m["prefix_arena"] for e in out["epochs"])
    assert out["saved_to_flash"] is True

    r = CliRunner().invoke(main, ["adapt", str(model), "--rollback", "--device", "qemu"])
    assert r.exit_code == 0, r.output
    assert "back to its factory weights" in r.stdout
    from edgeprune.adapt import region as R
    from edgeprune.device.link import open_link

    with np.load(eval_npz) as f:
        x, y = f["x"], f["y"]
    inputs = R.model_inputs(R.load_region(model), x)
    # Every region's firmware (test_parity_region_from_fc3 saved one for fc3) has its own flash file;
    # a rollback without --trainable-from resets them all.
    folders = sorted(p.parent for p in model.glob("firmware-adapt*/firmware.json"))
    assert firmware in folders
    for folder in folders:
        with open_link(folder) as link:  # a reboot: the factory model, the adapted slots are gone
            pred = np.array([np.frombuffer(link.infer(s.tobytes())[0], np.int8)[:10].argmax() for s in inputs])
            link.request(0x0F)
        assert float(np.mean(pred == y)) == out["accuracy_before"], folder
