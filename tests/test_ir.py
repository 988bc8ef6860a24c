"""The compiler's IR and graph passes on small int8 models written with tflite_writer.

Options must survive the round trip .tflite -> reader -> IR; unsupported models fail with one line
naming the op, its version and index; and every pass that claims bit-exactness is checked against
TFLite Micro (PAD fusion through the portable conv kernels, dead-channel constants through TFLM).
"""

from __future__ import annotations

import ctypes
import subprocess

import numpy as np
import pytest

from edgeprune.compile import ir, passes
from edgeprune.compile import quant as Q
from edgeprune.compile.tflite_reader import read_tflite
from edgeprune.compile.tflite_writer import (
    ModelSpec, OpSpec, TensorSpec, add_options, concatenation_options, conv2d_options, depthwise_options,
    fully_connected_options, mul_options, pad_options, pool2d_options, reducer_options, reshape_options,
    softmax_options, write_tflite,
)
from edgeprune.errors import UsageError
from kernels_support import KERNELS, ConvParams, Dims, ptr, quant_struct, random_quant, tflm


def _graph(tensors, ops, inputs, outputs) -> ir.Graph:
    return ir.build_graph(read_tflite(write_tflite(ModelSpec(tensors, ops, inputs, outputs))))


def _act(shape, scale=0.05, zp=0, name="", dtype=np.int8):
    return TensorSpec(tuple(shape), dtype, scale=scale, zero_point=zp, name=name)


def _weights(rng, shape, n_out, axis, in_scale=0.05, dead=()):
    w = rng.integers(-127, 128, shape).astype(np.int8)
    w[rng.random(shape) < 0.5] = 0
    for c in dead:
        np.moveaxis(w, axis, 0)[c] = 0
    scales = rng.uniform(0.001, 0.02, n_out).astype(np.float32)
    bias = rng.integers(-3000, 3000, n_out).astype(np.int32)
    return [TensorSpec(shape, scale=scales, zero_point=np.zeros(n_out, np.int64), quantized_dimension=axis, data=w, name="w"),
            TensorSpec((n_out,), np.int32, scale=(in_scale * scales).astype(np.float32), zero_point=np.zeros(n_out, np.int64),
                       data=bias, name="b")]


def _error(tensors, ops, inputs, outputs) -> str:
    with pytest.raises(UsageError) as e:
        _graph(tensors, ops, inputs, outputs)
    message = str(e.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# Options and validation


def test_options_of_every_supported_op_round_trip():
    rng = np.random.default_rng(0)
    for case in range(40):
        stride = tuple(int(v) for v in rng.integers(1, 4, 2))
        dilation = tuple(int(v) for v in rng.integers(1, 3, 2))
        padding, act = str(rng.choice(["SAME", "VALID"])), str(rng.choice(["NONE", "RELU", "RELU6"]))
        mult = int(rng.integers(1, 3))
        t = [_act((1, 9, 9, 2)), *_weights(rng, (3, 3, 3, 2), 3, 0), _act((1, 4, 4, 3)),
             *_weights(rng, (1, 3, 3, 2 * mult), 2 * mult, 3), _act((1, 4, 4, 2 * mult)),
             *_weights(rng, (5, 162), 5, 0), _act((1, 5)), _act((1, 3, 3, 2)),
             TensorSpec((2,), np.int32, data=np.array([-2, 1], np.int32)), _act((1, 1, 1, 2)),
             _act((1, 5)), TensorSpec((4, 2), np.int32, data=rng.integers(0, 3, (4, 2)).astype(np.int32)), _act((1, 9, 9, 2)),
             _act((1, 9, 9, 4))]
        ops = [OpSpec("CONV_2D", [0, 1, 2], [3], conv2d_options(stride, dilation, padding, act), version=3),
               OpSpec("DEPTHWISE_CONV_2D", [0, 4, 5], [6], depthwise_options(stride, dilation, padding, act, mult), version=3),
               OpSpec("FULLY_CONNECTED", [0, 7, 8], [9], fully_connected_options(act)),
               OpSpec("MAX_POOL_2D", [0], [10], pool2d_options((3, 2), stride, padding, act)),
               OpSpec("MEAN", [10, 11], [12], reducer_options(keep_dims=bool(case % 2))),
               OpSpec("SOFTMAX", [9], [13], softmax_options(0.5 + case)),
               OpSpec("PAD", [0, 14], [15], pad_options()),
               OpSpec("CONCATENATION", [0, 15], [16], concatenation_options(-1, act))]
        g = _graph(t, ops, [0], [3, 6, 9, 12, 13, 15, 16])
        c, dw, fc, pool, mean, sm, pad, cat = (op.options for op in g.ops)
        assert c == ir.Conv2DOptions(*stride, *dilation, padding, act), f"case {case}"
        assert dw == ir.DepthwiseConv2DOptions(*stride, *dilation, padding, act, mult), f"case {case}"
        assert fc == ir.FullyConnectedOptions(act, False) and pool == ir.Pool2DOptions(3, 2, *stride, padding, act)
        assert mean == ir.ReducerOptions((1, 2), bool(case % 2)), f"case {case}: axes -2, 1 of rank 4 are 1, 2"
        assert sm == ir.SoftmaxOptions(0.5 + case) and cat == ir.ConcatenationOptions(3, act)
        assert pad.paddings == tuple(map(tuple, t[14].data.tolist())) and pad.pad_value is None
        assert g.tensors[1].per_channel and g.tensors[1].is_constant and not g.tensors[3].is_constant


def test_elementwise_reshape_quantize_and_activation_options():
    t = [_act((1, 4, 4, 2), 0.1, 3), _act((1, 4, 4, 2), 0.2, -1), _act((1, 4, 4, 2), 0.3, 0), _act((1, 4, 4, 2), 0.3, 0),
         _act((1, 32), 0.3, 0), _act((1, 32), 0.05, 4), _act((1, 32), 1 / 256, -128), _act((1, 32), 1 / 128, 0),
         TensorSpec((1, 32), np.float32), TensorSpec((1, 4, 4, 2), np.float32),
         TensorSpec((4, 2), np.int32, data=np.ones((4, 2), np.int32)),
         _act((1, 6, 6, 4), 0.1, 3), TensorSpec((), scale=0.1, zero_point=3, data=np.array(7, np.int8))]
    ops = [OpSpec("QUANTIZE", [9], [0]), OpSpec("ADD", [0, 1], [2], add_options("RELU6"), version=2),
           OpSpec("MUL", [2, 1], [3], mul_options("RELU"), version=2), OpSpec("RESHAPE", [3], [4], reshape_options([1, -1])),
           OpSpec("QUANTIZE", [4], [5]), OpSpec("LOGISTIC", [5], [6]), OpSpec("TANH", [5], [7]), OpSpec("DEQUANTIZE", [7], [8]),
           OpSpec("PADV2", [0, 10, 12], [11], version=2)]
    g = _graph(t, ops, [9, 1], [6, 8, 11])
    assert [op.kind for op in g.ops] == ["QUANTIZE", "ADD", "MUL", "RESHAPE", "QUANTIZE", "LOGISTIC", "TANH", "DEQUANTIZE", "PADV2"]
    assert g.ops[1].options == ir.ElementwiseOptions("RELU6") and g.ops[2].options == ir.ElementwiseOptions("RELU")
    assert g.ops[3].options == ir.ReshapeOptions((1, 32)), "the output shape, not the -1 of NewShape"
    assert g.ops[0].options == ir.NoOptions() and g.ops[8].options == ir.PadOptions(((1, 1),) * 4, 7)
    assert g.tensors[9].dtype == np.float32 and g.tensors[8].dtype == np.float32  # float only at the boundary


def test_unsupported_op_is_one_line_naming_op_version_index_and_the_supported_ops():
    t = [_act((1, 4, 8)), _act((1, 8, 3)), _act((1, 4, 3)), _act((1, 4, 3))]
    message = _error(t, [OpSpec("ADD", [2, 2], [3], add_options()), OpSpec("BATCH_MATMUL", [0, 1], [2], version=4)], [0, 1], [2])
    assert "BATCH_MATMUL (version 4) at operator 1" in message
    assert all(op in message for op in ir.SUPPORTED_OPS)


def test_float_int16_and_dynamic_models_are_rejected_in_one_line():
    rng = np.random.default_rng(1)
    w = [TensorSpec((2, 3, 3, 1), np.float32, data=rng.standard_normal((2, 3, 3, 1)).astype(np.float32)),
         TensorSpec((2,), np.float32, data=np.zeros(2, np.float32))]
    message = _error([TensorSpec((1, 5, 5, 1), np.float32), *w, TensorSpec((1, 3, 3, 2), np.float32)],
                     [OpSpec("CONV_2D", [0, 1, 2], [3], conv2d_options())], [0], [3])
    assert "float32 tensor 0" in message and "CONV_2D (version 1) at operator 0" in message

    message = _error([_act((1, 8), dtype=np.int16), _act((1, 8), dtype=np.int16)], [OpSpec("LOGISTIC", [0], [1])], [0], [1])
    assert "int16 tensor 0" in message and "LOGISTIC" in message

    message = _error([_act((1, 0, 8)), _act((1, 0, 8))], [OpSpec("TANH", [0], [1])], [0], [1])
    assert "dynamic or empty shape" in message

    t = [_act((1, 5, 5, 1)), *_weights(rng, (2, 3, 3, 1), 2, 0), _act((1, 3, 3, 2)), _act((1, 3, 3, 2))]
    message = _error(t, [OpSpec("CONV_2D", [0, 1, 2], [3], conv2d_options())], [0], [4])
    assert "never written" in message


def test_fused_tanh_activation_is_rejected():
    import tflite as T

    def options(b):
        T.AddOptionsStart(b)
        T.AddOptionsAddFusedActivationFunction(b, 4)  # TANH
        return T.BuiltinOptions.AddOptions, T.AddOptionsEnd(b)

    message = _error([_act((4,)), _act((4,)), _act((4,))], [OpSpec("ADD", [0, 1], [2], options)], [0, 1], [2])
    assert "fused activation 4 of ADD" in message


# ---------------------------------------------------------------------------------------------
# Passes


def test_reshape_and_identity_quantize_become_aliases():
    t = [_act((1, 4, 4, 2), 0.1, 3), _act((1, 32), 0.1, 3), _act((1, 32), 0.1, 3), _act((1, 32), 0.2, 3), _act((1, 32), 1 / 256, -128)]
    ops = [OpSpec("RESHAPE", [0], [1], reshape_options([1, 32])), OpSpec("QUANTIZE", [1], [2]),
           OpSpec("QUANTIZE", [2], [3]), OpSpec("LOGISTIC", [3], [4])]
    g = _graph(t, ops, [0], [4])
    s = passes.simplify(g)
    assert [op.kind for op in s.ops] == ["QUANTIZE", "LOGISTIC"], "the requantizing QUANTIZE (0.1 -> 0.2) stays"
    assert s.ops[0].inputs == [2] and s.buffer_of(2) == 0 and s.buffer_of(1) == 0
    assert g.ops[0].kind == "RESHAPE" and not g.aliases, "passes do not modify their input"


def test_in_place_candidates():
    rng = np.random.default_rng(2)
    t = [_act((1, 6, 6, 4)), *_weights(rng, (1, 3, 3, 4), 4, 3), _act((1, 6, 6, 4)), _act((1, 6, 6, 4)), _act((1, 1, 1, 4)),
         _act((1, 6, 6, 4), 1 / 256, -128), *_weights(rng, (1, 3, 3, 4), 4, 3), _act((1, 4, 4, 4)),
         *_weights(rng, (1, 5, 5, 4), 4, 3), _act((1, 6, 6, 4)), _act((1, 6, 6, 4), 1 / 128, 0),
         *_weights(rng, (1, 5, 5, 4), 4, 3), _act((1, 6, 6, 4))]
    ops = [OpSpec("DEPTHWISE_CONV_2D", [0, 1, 2], [3], depthwise_options(padding="SAME")),  # 0 dies here: in place
           OpSpec("ADD", [3, 5], [4], add_options()),  # 5 broadcasts; 3 dies: in place over 3
           OpSpec("LOGISTIC", [4], [6]),  # 4 is read again by op 3: not in place
           OpSpec("DEPTHWISE_CONV_2D", [4, 7, 8], [9], depthwise_options(padding="VALID")),  # smaller output
           OpSpec("DEPTHWISE_CONV_2D", [6, 10, 11], [12], depthwise_options(padding="SAME")),  # 6 is a graph output
           OpSpec("TANH", [12], [13]),  # in place
           OpSpec("DEPTHWISE_CONV_2D", [13, 14, 15], [16], depthwise_options(padding="SAME"))]  # 5x5: 2-row bands
    g = _graph(t, ops, [0, 5], [6, 9, 16])
    found = passes.find_in_place(g)
    row = 6 * 4
    # 3x3 SAME: 1-row bands, double-buffered (pad 1); 5x5 SAME: 2-row bands (pad 2)
    assert found == {0: passes.InPlace(0, 0, 3, extra_bytes=2 * row, band_rows=1), 1: passes.InPlace(1, 3, 4),
                     5: passes.InPlace(5, 12, 13), 6: passes.InPlace(6, 13, 16, extra_bytes=4 * row, band_rows=2)}


def _conv_lib(tmp_path):
    """Just the two portable conv kernels (fast to build; the full library is the kernel tests' business)."""
    so = tmp_path / "libconv.so"
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-I", str(KERNELS / "include"),
                    str(KERNELS / "src" / "conv2d_s8.c"), str(KERNELS / "src" / "depthwise_conv2d_s8.c"), "-o", str(so)], check=True)
    return ctypes.CDLL(str(so))


def test_pad_fused_into_conv_is_bit_exact_with_tflite_micro(tmp_path):
    """PAD + CONV_2D / DEPTHWISE_CONV_2D in TFLM == one portable kernel call with the fused (top, left) padding."""
    lib = _conv_lib(tmp_path)
    rng = np.random.default_rng(3)
    ran = 0
    for case in range(150):
        depthwise = bool(case % 2)
        h, w, c = (int(v) for v in rng.integers(2, 9, 3))
        pads = rng.integers(0, 3, (4, 2)).astype(np.int32)
        pads[0] = pads[3] = 0
        k = tuple(int(v) for v in rng.choice([1, 2, 3], 2))
        s = tuple(int(v) for v in rng.integers(1, 3, 2))
        padding = str(rng.choice(["VALID", "SAME"]))
        ph, pw = h + pads[1].sum(), w + pads[2].sum()
        oh, ow = Q.conv_output_size(ph, k[0], s[0], 1, padding), Q.conv_output_size(pw, k[1], s[1], 1, padding)
        if oh <= 0 or ow <= 0:
            continue
        n_out = c if depthwise else int(rng.integers(1, 6))
        in_scale, in_zp, f_scales, out_scale, out_zp = random_quant(rng, n_out, k[0] * k[1] * c)
        act = str(rng.choice(["NONE", "RELU"]))
        w_shape = (1, *k, n_out) if depthwise else (n_out, *k, c)
        t = [_act((1, h, w, c), in_scale, in_zp), TensorSpec((4, 2), np.int32, data=pads), _act((1, ph, pw, c), in_scale, in_zp),
             *_weights(rng, w_shape, n_out, 3 if depthwise else 0, in_scale), _act((1, oh, ow, n_out), out_scale, out_zp)]
        t[3].scale = f_scales
        t[4].scale = (in_scale * f_scales).astype(np.float32)
        conv = (OpSpec("DEPTHWISE_CONV_2D", [2, 3, 4], [5], depthwise_options(s, padding=padding, activation=act), version=3)
                if depthwise else OpSpec("CONV_2D", [2, 3, 4], [5], conv2d_options(s, padding=padding, activation=act), version=3))
        spec = ModelSpec(t, [OpSpec("PAD", [0, 1], [2], pad_options(), version=2), conv], [0], [5])
        model = write_tflite(spec)
        g = passes.simplify(ir.build_graph(read_tflite(model)))
        assert [op.kind for op in g.ops] == [conv.op] and g.ops[0].inputs[0] == 0, f"case {case}: PAD not fused"
        top, left = g.conv_padding(g.ops[0])

        x = rng.integers(-128, 128, (1, h, w, c)).astype(np.int8)
        expected = tflm(model, x)
        keep = []
        q = quant_struct(in_scale, in_zp, f_scales, out_scale, out_zp, act, keep)
        params = ConvParams(s[0], s[1], 1, 1, top, left)
        weights, bias = t[3].data, t[4].data
        got = np.zeros((1, oh, ow, n_out), np.int8)
        dims = [Dims(1, h, w, c), Dims(*w_shape), Dims(1, oh, ow, n_out)]
        args = (ctypes.byref(q), ctypes.byref(dims[0]), ptr(x, ctypes.c_int8), ctypes.byref(dims[1]), ptr(weights, ctypes.c_int8),
                ptr(bias, ctypes.c_int32), ctypes.byref(dims[2]), ptr(got, ctypes.c_int8), None)
        if depthwise:
            lib.ep_depthwise_conv2d_s8_portable(ctypes.byref(params), 1, *args)
        else:
            lib.ep_conv2d_s8_portable(ctypes.byref(params), *args)
        assert np.array_equal(got, expected), f"case {case}: {conv.op} {(h, w, c)} pads={pads[1:3].tolist()} k={k} s={s} {padding}"
        ran += 1
    assert ran > 100


def test_pad_not_fused_when_it_would_change_bits():
    rng = np.random.default_rng(4)
    base = [_act((1, 4, 4, 2), 0.1, 3), TensorSpec((4, 2), np.int32, data=np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32)),
            _act((1, 6, 6, 2), 0.1, 3), *_weights(rng, (2, 3, 3, 2), 2, 0, 0.1), _act((1, 4, 4, 2), 0.2, 0),
            TensorSpec((), scale=0.1, zero_point=3, data=np.array(5, np.int8)), _act((1, 2, 2, 2), 0.1, 3)]
    conv = OpSpec("CONV_2D", [2, 3, 4], [5], conv2d_options())
    cases = {
        "PADV2 with a value other than the zero point": ([OpSpec("PADV2", [0, 1, 6], [2]), conv], [5]),
        "the padded tensor also read by a pool": ([OpSpec("PAD", [0, 1], [2], pad_options()), conv,
                                                   OpSpec("MAX_POOL_2D", [2], [7], pool2d_options((3, 3), (3, 3)))], [5, 7]),
        "a pool reads the PAD": ([OpSpec("PAD", [0, 1], [2], pad_options()),
                                  OpSpec("AVERAGE_POOL_2D", [2], [7], pool2d_options((3, 3), (3, 3)))], [7]),
    }
    for what, (ops, outputs) in cases.items():
        g = passes.simplify(_graph(base, ops, [0], outputs))
        assert g.ops[0].kind in ("PAD", "PADV2"), what


def test_dead_channels_output_the_requantized_bias_as_tflite_micro_does():
    rng = np.random.default_rng(5)
    for case in range(30):
        kind = ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"][case % 3]
        c, n_out = int(rng.integers(1, 5)), int(rng.integers(2, 7))
        if kind == "DEPTHWISE_CONV_2D":
            n_out = c
        dead = tuple(sorted(int(v) for v in rng.choice(n_out, int(rng.integers(1, n_out + 1)), replace=False)))
        in_scale, in_zp, f_scales, out_scale, out_zp = random_quant(rng, n_out, 9 * c)
        out_scale *= float(rng.uniform(0.002, 0.5))  # biases alone are small: make some of them saturate
        act = str(rng.choice(["NONE", "RELU", "RELU6"]))
        if kind == "FULLY_CONNECTED":
            in_shape, w_shape, out_shape, axis = (2, 3 * c), (n_out, 3 * c), (2, n_out), 0
            op = OpSpec(kind, [0, 1, 2], [3], fully_connected_options(act))
        else:
            in_shape, out_shape = (1, 5, 5, c), (1, 5, 5, n_out)
            w_shape, axis = ((1, 3, 3, n_out), 3) if kind == "DEPTHWISE_CONV_2D" else ((n_out, 3, 3, c), 0)
            options = (depthwise_options if axis == 3 else conv2d_options)(padding="SAME", activation=act)
            op = OpSpec(kind, [0, 1, 2], [3], options, version=3)
        t = [_act(in_shape, in_scale, in_zp), *_weights(rng, w_shape, n_out, axis, in_scale, dead), _act(out_shape, out_scale, out_zp)]
        t[1].scale, t[2].scale = f_scales, (in_scale * f_scales).astype(np.float32)
        t[2].data = (t[2].data * rng.choice([1, 30])).astype(np.int32)
        model = write_tflite(ModelSpec(t, [op], [0], [3]))
        found = passes.find_dead_channels(ir.build_graph(read_tflite(model)))
        assert found[0].channels == dead, f"case {case}"
        y = tflm(model, rng.integers(-128, 128, in_shape).astype(np.int8))
        for ch, value in zip(found[0].channels, found[0].values):
            assert (y[..., ch] == value).all(), f"case {case}: {kind} {act} channel {ch}: TFLM {np.unique(y[..., ch])}, ours {value}"
        assert found[0].exact_fold_consumers == ()


def test_dead_channel_fold_is_reported_only_where_exact():
    rng = np.random.default_rng(6)
    t = [_act((1, 6, 6, 2)), *_weights(rng, (4, 3, 3, 2), 4, 0, dead=(1,)), _act((1, 6, 6, 4)),
         *_weights(rng, (3, 1, 1, 4), 3, 0), _act((1, 6, 6, 3)), *_weights(rng, (3, 3, 3, 4), 3, 0), _act((1, 6, 6, 3)),
         *_weights(rng, (3, 3, 3, 4), 3, 0), _act((1, 4, 4, 3))]
    ops = [OpSpec("CONV_2D", [0, 1, 2], [3], conv2d_options(padding="SAME")),
           OpSpec("CONV_2D", [3, 4, 5], [6], conv2d_options(padding="SAME")),  # 1x1: exact
           OpSpec("CONV_2D", [3, 7, 8], [9], conv2d_options(padding="SAME")),  # 3x3 SAME: borders differ
           OpSpec("CONV_2D", [3, 10, 11], [12], conv2d_options(padding="VALID"))]  # exact
    found = passes.find_dead_channels(_graph(t, ops, [0], [6, 9, 12]))
    assert list(found) == [0] and found[0].channels == (1,) and found[0].exact_fold_consumers == (1, 3)


def test_multiply_by_quantized_multiplier_edge_cases():
    x = np.array([0, 1, -1, 1000, -1000, 2**31 - 1, -(2**31), -(2**31)], np.int64)
    m = np.array([2**30, 2**30, 2**30, 1518500250, 1518500250, 2**31 - 1, 2**30, -(2**31)], np.int64)
    s = np.array([1, 1, 1, -3, -3, 0, 1, 0], np.int64)
    got = passes.multiply_by_quantized_multiplier(x, m, s)
    # 2^30 with shift 1 is exactly 1.0 (with shift 0 it is 0.5, and SRDHM rounds -0.5 to 0);
    # 1518500250 / 2^31 ~ 1/sqrt(2), then / 8 with round half away from zero.
    assert got.tolist()[:3] == [0, 1, -1] and got[3] == round(1000 / np.sqrt(2) / 8) and got[4] == -got[3]
    assert got[5] == 2**31 - 2 and got[7] == 2**31 - 1
