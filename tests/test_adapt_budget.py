"""Adaptation budget accounting (edgeprune.adapt.budget): hand-computed costs on a tiny model, agreement
with the C cost functions of kernels_c/include/ep_train_f32.h, budget strings, and the trainable region
(frozen int8 prefix, float region) of generated .tflite models.

`make_model(layers, ...)` (also used by the other adaptation tests) writes a small int8 .tflite:
a frozen first conv, then the listed layers.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from kernels_support import Dims, tflm

from edgeprune.adapt import region as R
from edgeprune.adapt.budget import CostModel, Greedy, Selection, parse_budget_macs, parse_budget_ram, too_small_message
from edgeprune.compile import tflite_writer as W
from edgeprune.errors import UsageError


def _out_hw(size, k, stride, padding):
    return -(-size // stride) if padding == "SAME" else (size - k) // stride + 1


def make_model(layers, in_shape=(6, 6, 1), first=2, seed=0, sparsity=0.5) -> bytes:
    """An int8 .tflite: input (1,*in_shape) -> 1x1 conv with `first` channels and RELU (frozen) -> layers.

    layers: ("conv", out_c, k, stride, padding, act), ("dw", multiplier, k, stride, padding, act),
    ("mean",), ("maxpool", k), ("fc", out, act); each weighted layer may end with an int8 weight array."""
    rng = np.random.default_rng(seed)
    tensors: list[W.TensorSpec] = []
    ops: list[W.OpSpec] = []

    def act(shape, scale=0.05, zp=-128):
        tensors.append(W.TensorSpec(tuple(shape), np.int8, scale, zp))
        return len(tensors) - 1

    def const(data, dtype, scale=None, zp=None, axis=0):
        tensors.append(W.TensorSpec(tuple(data.shape), dtype, scale, zp, axis, data=data.astype(dtype)))
        return len(tensors) - 1

    def weights(shape, given, axis):
        if given is not None:
            return np.asarray(given, np.int8).reshape(shape)
        w = rng.integers(-127, 128, size=shape)
        w[rng.random(shape) < sparsity] = 0
        return w.astype(np.int8)

    def weighted(kind, x, shape_in, w, axis, out_shape, options, act_name):
        channels = w.shape[axis]
        ws = rng.uniform(0.005, 0.02, channels).astype(np.float32)
        wt = const(w, np.int8, ws, np.zeros(channels, np.int64), axis)
        bs = (0.05 * ws).astype(np.float32)
        bt = const(rng.integers(-500, 500, channels), np.int32, bs, np.zeros(channels, np.int64), 0)
        out = act(out_shape, zp=-128 if act_name == "RELU" else 0)
        ops.append(W.OpSpec(kind, [x, wt, bt], [out], options))
        return out

    h, w_, c = in_shape
    x = act((1, h, w_, c), scale=1 / 255.0)
    inp = x
    x = weighted("CONV_2D", x, (h, w_, c), weights((first, 1, 1, c), None, 0), 0, (1, h, w_, first),
                 W.conv2d_options(padding="VALID", activation="RELU"), "RELU")
    c = first
    for spec in layers:
        kind = spec[0]
        if kind == "conv":
            _, oc, k, s, pad, a = spec[:6]
            oh, ow = _out_hw(h, k, s, pad), _out_hw(w_, k, s, pad)
            wt = weights((oc, k, k, c), spec[6] if len(spec) > 6 else None, 0)
            x = weighted("CONV_2D", x, (h, w_, c), wt, 0, (1, oh, ow, oc),
                         W.conv2d_options(stride=(s, s), padding=pad, activation=a), a)
            h, w_, c = oh, ow, oc
        elif kind == "dw":
            _, m, k, s, pad, a = spec[:6]
            oh, ow = _out_hw(h, k, s, pad), _out_hw(w_, k, s, pad)
            wt = weights((1, k, k, c * m), spec[6] if len(spec) > 6 else None, 3)
            x = weighted("DEPTHWISE_CONV_2D", x, (h, w_, c), wt, 3, (1, oh, ow, c * m),
                         W.depthwise_options(stride=(s, s), padding=pad, activation=a, multiplier=m), a)
            h, w_, c = oh, ow, c * m
        elif kind == "mean":
            axes = const(np.array([1, 2]), np.int32)
            out = act((1, 1, 1, c), zp=-128)
            ops.append(W.OpSpec("MEAN", [x, axes], [out], W.reducer_options(keep_dims=True)))
            x, h, w_ = out, 1, 1
        elif kind == "maxpool":
            k = spec[1]
            out = act((1, h // k, w_ // k, c), zp=-128)
            ops.append(W.OpSpec("MAX_POOL_2D", [x], [out], W.pool2d_options((k, k), (k, k))))
            x, h, w_ = out, h // k, w_ // k
        elif kind == "fc":
            _, o, a = spec[:3]
            wt = weights((o, h * w_ * c), spec[3] if len(spec) > 3 else None, 0)
            x = weighted("FULLY_CONNECTED", x, None, wt, 0, (1, o), W.fully_connected_options(a), a)
            h, w_, c = 1, 1, o
    return W.write_tflite(W.ModelSpec(tensors, ops, [inp], [x]))


# The tiny model of the hand-computed cases: input 4x4x1 -> conv0 1x1, 2 channels, RELU (frozen) ->
# conv1 1x1, 3 channels, RELU, weights per channel [5,0] [3,-2] [0,7] (non-zeros 1, 2, 1) -> MEAN ->
# fc2, 2 outputs, weights [4,-1,0] [2,6,-3] (non-zeros 2, 3). Every layer has a bias.
TINY = [("conv", 3, 1, 1, "VALID", "RELU", [[5, 0], [3, -2], [0, 7]]), ("mean",), ("fc", 2, "NONE", [[4, -1, 0], [2, 6, -3]])]


@pytest.fixture(scope="module")
def tiny():
    return R.region_from_tflite(make_model(TINY, in_shape=(4, 4, 1)))


def _sel(region, weights=(), biases=()):
    s = Selection.empty(len(region.layers))
    for i, c in weights:
        s.weights[i].add(c)
    for i, c in biases:
        s.biases[i].add(c)
    return s


def test_tiny_region_shape(tiny):
    assert tiny.layer_names == ["conv1", "fc2"] and tiny.frozen == ["conv0"]
    assert [list(lay.channel_nnz()) for lay in tiny.layers] == [[1, 2, 1], [2, 3]]
    assert [lay.positions for lay in tiny.layers] == [16, 1]
    assert [st.kind for st in tiny.steps] == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]


def test_hand_computed_full(tiny):
    cost = CostModel(tiny).cost(_sel(tiny, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]))
    # params: conv1 1+2+1 weights + 3 biases = 7, fc2 2+3 + 2 = 7: 14 floats master + 14 gradients = 112 B
    # saved: conv1 input 4*4*2 = 32 floats (weight grads), conv1 RELU output 4*4*3 = 48, fc2 input (MEAN output) 3
    #        = 83 floats = 332 B
    # errors: conv1 output 48 + MEAN output 3 + logits 2 = 53 floats = 212 B        RAM = 112 + 332 + 212 = 656
    # MACs: weight grads conv1 4 non-zeros * 16 positions = 64, fc2 5; input grad of fc2 (crossed) 5   = 74
    assert cost.breakdown["master"] == cost.breakdown["grads"] == 56
    assert (cost.breakdown["saved"], cost.breakdown["errors"]) == (332, 212)
    assert (cost.ram, cost.macs) == (656, 74)
    assert CostModel(tiny).full_cost().ram == 656
    # momentum adds one float per parameter: 656 + 56 = 712
    assert CostModel(tiny, momentum=True).cost(_sel(tiny, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)])).ram == 712


def test_hand_computed_partial(tiny):
    cm = CostModel(tiny)
    # fc2 channel 1 alone: 3 weights + 1 bias = 4 params = 32 B; saved fc2 input 3 floats = 12 B; errors logits 2 = 8 B
    # RAM 52; MACs 3 weight-gradient MACs, nothing crossed
    assert (cm.cost(_sel(tiny, [(1, 1)])).ram, cm.cost(_sel(tiny, [(1, 1)])).macs) == (52, 3)
    # conv1 channel 1 alone: 2 weights + bias = 24 B; saved conv1 input 128 + RELU output 192 = 320; errors 212
    # RAM 556; MACs 2 * 16 = 32 weight-gradient + fc2's input gradient 5 (the path) = 37
    c = cm.cost(_sel(tiny, [(0, 1)]))
    assert (c.ram, c.macs, c.breakdown["input_grad_macs"]) == (556, 37, 5)
    # conv1 channel 0's bias alone: 8 B; no input saved for weight grads, RELU output 192 still; errors 212
    # RAM 412; MACs: only the path, fc2's input gradient 5
    c = cm.cost(_sel(tiny, biases=[(0, 0)]))
    assert (c.ram, c.macs) == (412, 5)


def test_hand_computed_neq_state(tiny):
    full = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    # recompute history, 2 probe samples: +1 float per trained param (pre-epoch copy) 14 * 4 = 56,
    # + 5 floats per candidate neuron 5 * 20 = 100: 656 + 156 = 812. The probe set (2 * 16 int8) is in flash.
    cm = CostModel(tiny, neq=True, probe_samples=2)
    c = cm.cost(_sel(tiny, full))
    assert (c.ram, c.breakdown["neq"], c.breakdown["probe"], c.breakdown["probe_flash"]) == (812, 156, 0, 32)
    # int8 history: conv1 3 neurons * 2 samples * 16 positions = 96 B, fc2 2 * 2 * 1 = 4 B, + 100: 656 + 200 = 856
    assert CostModel(tiny, neq=True, probe_samples=2, history="int8").cost(_sel(tiny, full)).ram == 856
    # probe set in RAM: + 32
    assert CostModel(tiny, neq=True, probe_samples=2, probe_in_ram=True).cost(_sel(tiny, full)).ram == 844
    # full's RAM never includes NEq state
    assert cm.full_cost().ram == 656


def test_greedy_pays_the_path(tiny):
    cm = CostModel(tiny)
    # 60 B: fc2 channel 1 (52 B) fits; conv1 channel 0 would add the whole path (>400 B) and is skipped
    sel = Greedy(cm, 60, None).run([(0, 0), (1, 1), (1, 0)])
    assert sel.counts(tiny.layer_names) == {"conv1": 0, "fc2": 1}
    # fc2 channel 0 then needs 3 params = 24 B more: 76 > 60
    assert cm.cost(sel).ram == 52
    # the smallest workable budget: fc2 channel 0, 2 weights + bias = 24 B, saved 12 B, errors 8 B = 44 B; 2 MACs
    assert "the smallest workable budget is 44 B (one neuron of fc2)" in too_small_message(cm, 43, None)
    assert too_small_message(cm, 44, None) is None
    assert "smallest workable budget is 2 backward MACs" in too_small_message(cm, 10_000, 1)
    assert too_small_message(cm, 44, 2) is None


@pytest.mark.parametrize("text, expected", [("6144", 6144), ("6KiB", 6144), ("6 KiB", 6144), ("6kB", 6000), ("6 KB", 6000),
                                            ("1MiB", 1 << 20), ("20%", 131), ("0.5k", 500), ("100b", 100)])
def test_parse_budget_ram(text, expected):
    assert parse_budget_ram(text, 656) == expected


@pytest.mark.parametrize("text, expected", [("400k", 400_000), ("1.5M", 1_500_000), ("2G", 2 * 10**9), ("50%", 37), ("12", 12)])
def test_parse_budget_macs(text, expected):
    assert parse_budget_macs(text, 74) == expected
    assert parse_budget_macs(None, 74) is None


@pytest.mark.parametrize("text", ["6 parsecs", "KiB", "-5", "0", "6KiBB", "20 %%", "1e3"])
def test_parse_budget_bad_units(text):
    with pytest.raises(UsageError, match="budget"):
        parse_budget_ram(text, 656)


def _c_costs(lib, region, sel, momentum):
    """Gradient bytes and backward MACs of `sel` from ep_train_f32.h's cost functions (dense channels)."""
    i64 = ctypes.c_int64
    for name in ("ep_conv2d_f32_grad_bytes", "ep_depthwise_conv2d_f32_grad_bytes", "ep_fully_connected_f32_grad_bytes",
                 "ep_conv2d_f32_backward_macs", "ep_depthwise_conv2d_f32_backward_macs", "ep_fully_connected_f32_backward_macs"):
        getattr(lib, name).restype = i64
    deepest = sel.deepest()
    grad_bytes = macs = 0
    for i, lay in enumerate(region.layers):
        if i < deepest:
            continue
        n = len(sel.weights[i])
        bias = int(lay.bias is not None)
        crossed = int(i > deepest)
        if lay.kind == "FULLY_CONNECTED":
            grad_bytes += lib.ep_fully_connected_f32_grad_bytes(lay.in_shape[0], n, bias, int(momentum))
            macs += lib.ep_fully_connected_f32_backward_macs(1, lay.in_shape[0], lay.channels, n, crossed)
        else:
            fd = Dims(*lay.weight.shape)
            od = Dims(1, *lay.out_shape)
            pre = "ep_conv2d_f32" if lay.kind == "CONV_2D" else "ep_depthwise_conv2d_f32"
            grad_bytes += getattr(lib, pre + "_grad_bytes")(ctypes.byref(fd), n, bias, int(momentum))
            macs += getattr(lib, pre + "_backward_macs")(ctypes.byref(fd), ctypes.byref(od), n, crossed)
    return grad_bytes, macs


MODELS = {
    "conv_mean_fc": [("conv", 4, 3, 1, "SAME", "RELU"), ("conv", 5, 3, 2, "SAME", "RELU"), ("mean",), ("fc", 3, "NONE")],
    "dw_pw_fc": [("dw", 2, 3, 1, "SAME", "RELU6"), ("conv", 4, 1, 1, "VALID", "RELU"), ("maxpool", 2), ("fc", 3, "NONE")],
    "fc_stack": [("conv", 3, 3, 2, "VALID", "RELU"), ("fc", 6, "RELU"), ("fc", 4, "NONE")],
}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_costs_match_c_cost_functions(lib, model):
    """Dense accounting equals ep_train_f32.h's gradient bytes and backward MACs for random selections."""
    region = R.region_from_tflite(make_model(MODELS[model], in_shape=(6, 6, 2), seed=1))
    rng = np.random.default_rng(7)
    for case in range(40):
        momentum = bool(case % 2)
        sel = Selection.empty(len(region.layers))
        for i, lay in enumerate(region.layers):
            if rng.random() < 0.6:
                sel.weights[i] = set(rng.choice(lay.channels, rng.integers(1, lay.channels + 1), replace=False).tolist())
        if sel.is_empty():
            continue
        cost = CostModel(region, momentum=momentum, dense=True).cost(sel)
        grad_bytes, macs = _c_costs(lib, region, sel, momentum)
        assert (cost.breakdown["grads"] + cost.breakdown["momentum"], cost.macs) == (grad_bytes, macs), \
            f"{model} case {case}: selection {sel.as_lists()}"
        # non-zero accounting never exceeds the dense one
        sparse = CostModel(region, momentum=momentum).cost(sel)
        assert sparse.ram <= cost.ram and sparse.macs <= macs, f"{model} case {case}"


# (model, --trainable-from): the default region, and regions starting at a later layer, whose prefix
# then holds more int8 layers (a depthwise conv and a max pool; a fully connected layer).
REGIONS = [(m, None) for m in sorted(MODELS)] + [("conv_mean_fc", "conv2"), ("dw_pw_fc", "fc3"), ("fc_stack", "fc3")]


@pytest.mark.parametrize("model, trainable_from", REGIONS)
def test_prefix_and_float_region(model, trainable_from):
    """The int8 prefix output (TFLite Micro) through the float region tracks the whole int8 model's logits."""
    data = make_model(MODELS[model], in_shape=(6, 6, 2), seed=2, sparsity=0.3)
    region = R.region_from_tflite(data, trainable_from)
    if trainable_from is not None:  # the region starts there; every weighted layer before it is frozen
        assert region.layer_names[0] == trainable_from and trainable_from not in region.frozen
        assert len(region.frozen) == int(trainable_from[-1])
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, size=(16, 2, 6, 6)).astype(np.float32)  # NCHW like the training data
    inputs = R.model_inputs(region, x)
    assert inputs.shape == (16, 6, 6, 2) and inputs.dtype == np.int8
    assert np.array_equal(R.model_inputs(region, x.transpose(0, 2, 3, 1)), inputs)  # NHWC accepted too
    q = R.prefix_int8(region, inputs)
    import torch

    logits = R.forward(region, R.torch_params(region), torch.tensor(R.dequantize_input(region, q))).numpy()
    from edgeprune.compile.ir import build_graph
    from edgeprune.compile.tflite_reader import read_tflite

    g = build_graph(read_tflite(data))
    out = g.tensors[g.outputs[0]]
    deq = (np.stack([tflm(data, s[None]).reshape(-1) for s in inputs]).astype(np.float32) - out.zero_point[0]) * out.scale[0]
    span = float(out.scale[0]) * 255
    assert np.max(np.abs(deq - logits)) < 0.1 * span + 8 * float(out.scale[0]), model


def test_trainable_from_names_the_choices():
    data = make_model(MODELS["conv_mean_fc"], in_shape=(6, 6, 2), seed=2)
    for bad in ("conv0", "fc9"):  # the first layer always stays int8; a layer the model lacks
        with pytest.raises(UsageError, match=r"--trainable-from .*: the trainable region can start at conv1, conv2, fc3 "):
            R.region_from_tflite(data, bad)


def test_wrong_input_shape(tiny):
    with pytest.raises(UsageError, match=r"samples of shape \(1, 5, 5\)"):
        R.model_inputs(tiny, np.zeros((2, 1, 5, 5), np.float32))


def test_region_refuses_residual_add(tmp_path):
    tensors = [W.TensorSpec((1, 4, 4, 1), np.int8, 0.05, 0)]
    ops = []
    for k in range(2):
        tensors.append(W.TensorSpec((1, 1, 1, 1), np.int8, [0.01], [0], 0, data=np.array([[[[10]]]], np.int8)))
        tensors.append(W.TensorSpec((1,), np.int32, [0.0005], [0], 0, data=np.array([0], np.int32)))
        tensors.append(W.TensorSpec((1, 4, 4, 1), np.int8, 0.05, 0))
        src = 0 if k == 0 else 3
        ops.append(W.OpSpec("CONV_2D", [src, len(tensors) - 3, len(tensors) - 2], [len(tensors) - 1], W.conv2d_options()))
    tensors.append(W.TensorSpec((1, 4, 4, 1), np.int8, 0.05, 0))
    ops.append(W.OpSpec("ADD", [3, 6], [7], W.add_options()))
    with pytest.raises(UsageError, match="ADD"):
        R.region_from_tflite(W.write_tflite(W.ModelSpec(tensors, ops, [0], [7])))


def test_adaptation_firmware_too_big_suggests_a_smaller_region(tmp_path, monkeypatch):
    """A board whose SRAM cannot hold the adaptation firmware gets one line: what does not fit, and the
    smaller region (the last weighted layer) that might."""
    from edgeprune.adapt.device import build_adapt_firmware
    from edgeprune.device import firmware

    (tmp_path / "model.tflite").write_bytes(make_model(MODELS["conv_mean_fc"], in_shape=(6, 6, 2), seed=2))

    def overflow(*args, **kwargs):
        raise firmware.FirmwareTooBig("model does not fit stm32f446 SRAM: needs 171264 bytes, has 131072; use a bigger part")

    monkeypatch.setattr(firmware, "build_firmware", overflow)
    with pytest.raises(firmware.FirmwareTooBig, match=r"^the adaptation firmware does not fit stm32f446 SRAM: needs 171264 "
                                                      r"bytes, has 131072; train fewer layers \(--trainable-from fc3\), "):
        build_adapt_firmware(tmp_path, target="cortex-m4")
