"""kernels_c against TensorFlow Lite Micro, bit for bit, on random single-op int8 models.

Each case builds a one-op .tflite with random shapes, options and quantization, runs it in
TFLM's Python interpreter (the oracle), and runs the same op through our portable C kernel
(compiled here into a shared library and called with ctypes).
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from edgeprune.compile import quant as Q
from edgeprune.compile.tflite_writer import (
    ModelSpec, OpSpec, conv2d_options, depthwise_options, fully_connected_options, write_tflite,
)
from kernels_support import ConvParams, Dims, conv_tensors, ptr, quant_struct, random_conv_case, random_quant, tflm

CASES = 150


@pytest.mark.parametrize("depthwise", [False, True], ids=["conv2d", "depthwise"])
def test_conv_ops_match_tflite_micro(lib, depthwise):
    rng = np.random.default_rng(1 if depthwise else 0)
    for case in range(CASES):
        c = random_conv_case(rng, depthwise)
        fan_in = c["k_h"] * c["k_w"] * (1 if depthwise else c["in_c"])
        in_scale, in_zp, f_scales, out_scale, out_zp = random_quant(rng, c["out_c"], fan_in)
        w_shape = (1, c["k_h"], c["k_w"], c["out_c"]) if depthwise else (c["out_c"], c["k_h"], c["k_w"], c["in_c"])
        in_shape, out_shape = (1, c["in_h"], c["in_w"], c["in_c"]), (1, c["out_h"], c["out_w"], c["out_c"])
        tensors, w, bias = conv_tensors(rng, in_shape, w_shape, out_shape, in_scale, in_zp, f_scales, out_scale, out_zp,
                                    3 if depthwise else 0)
        opts = dict(stride=(c["s_h"], c["s_w"]), dilation=(c["d_h"], c["d_w"]), padding=c["padding"], activation=c["activation"])
        op = (OpSpec("DEPTHWISE_CONV_2D", [0, 1, 2], [3], depthwise_options(multiplier=c["mult"], **opts), version=3)
              if depthwise else OpSpec("CONV_2D", [0, 1, 2], [3], conv2d_options(**opts), version=3))
        model = write_tflite(ModelSpec(tensors, [op], [0], [3]))
        x = rng.integers(-128, 128, in_shape).astype(np.int8)
        expected = tflm(model, x)

        keep: list = []
        q = quant_struct(in_scale, in_zp, f_scales, out_scale, out_zp, c["activation"], keep)
        params = ConvParams(c["s_h"], c["s_w"], c["d_h"], c["d_w"],
                            Q.conv_padding(c["in_h"], c["k_h"], c["s_h"], c["d_h"], c["out_h"], c["padding"]),
                            Q.conv_padding(c["in_w"], c["k_w"], c["s_w"], c["d_w"], c["out_w"], c["padding"]))
        got = np.zeros(out_shape, np.int8)
        dims = [Dims(*in_shape), Dims(*w_shape), Dims(*out_shape)]
        i8, i32 = ctypes.c_int8, ctypes.c_int32
        if depthwise:
            lib.ep_depthwise_conv2d_s8_portable(ctypes.byref(params), c["mult"], ctypes.byref(q), ctypes.byref(dims[0]), ptr(x, i8),
                                       ctypes.byref(dims[1]), ptr(w, i8), ptr(bias, i32), ctypes.byref(dims[2]), ptr(got, i8), None)
        else:
            lib.ep_conv2d_s8_portable(ctypes.byref(params), ctypes.byref(q), ctypes.byref(dims[0]), ptr(x, i8), ctypes.byref(dims[1]),
                             ptr(w, i8), ptr(bias, i32), ctypes.byref(dims[2]), ptr(got, i8), None)
        assert np.array_equal(got, expected), f"case {case}: {c}, {np.count_nonzero(got != expected)} outputs differ"


def test_fully_connected_matches_tflite_micro(lib):
    rng = np.random.default_rng(2)
    for case in range(CASES):
        batches, n_in, n_out = int(rng.integers(1, 4)), int(rng.integers(1, 300)), int(rng.integers(1, 40))
        activation = str(rng.choice(["NONE", "RELU", "RELU6"]))
        in_scale, in_zp, f_scales, out_scale, out_zp = random_quant(rng, n_out, n_in)
        tensors, w, bias = conv_tensors(rng, (batches, n_in), (n_out, n_in), (batches, n_out), in_scale, in_zp, f_scales,
                                    out_scale, out_zp, 0)
        model = write_tflite(ModelSpec(tensors, [OpSpec("FULLY_CONNECTED", [0, 1, 2], [3], fully_connected_options(activation), version=4)], [0], [3]))
        x = rng.integers(-128, 128, (batches, n_in)).astype(np.int8)
        expected = tflm(model, x)
        keep: list = []
        q = quant_struct(in_scale, in_zp, f_scales, out_scale, out_zp, activation, keep)
        got = np.zeros((batches, n_out), np.int8)
        lib.ep_fully_connected_s8_portable(ctypes.byref(q), batches, n_in, n_out, ptr(x, ctypes.c_int8), ptr(w, ctypes.c_int8),
                                  ptr(bias, ctypes.c_int32), ptr(got, ctypes.c_int8), None)
        assert np.array_equal(got, expected), f"case {case}: {batches}x{n_in}->{n_out} {activation}, {np.count_nonzero(got != expected)} differ"


def test_quantize_multiplier_matches_tflite_on_edge_cases():
    assert Q.quantize_multiplier(0.0) == (0, 0)
    assert Q.quantize_multiplier(0.5) == (1 << 30, 0)
    assert Q.quantize_multiplier(1.0) == (1 << 30, 1)
    m, s = Q.quantize_multiplier(0.999999999999)  # rounds up to 2^31: renormalized
    assert (m, s) == (1 << 30, 1)
    assert Q.quantize_multiplier(2.0**-40) == (0, 0)


def test_per_channel_multipliers_refuse_bad_scales_and_accept_dead_channels():
    mult, shift = Q.per_channel_multipliers(0.1, [0.0, 0.01], 0.2)  # an all-zero channel has scale 0
    assert (mult[0], shift[0]) == (0, 0) and mult[1] > 0
    for bad in [dict(input_scale=0.0), dict(output_scale=float("nan")), dict(filter_scales=[-0.01])]:
        args = dict(input_scale=0.1, filter_scales=[0.01], output_scale=0.2) | bad
        with pytest.raises(ValueError):
            Q.per_channel_multipliers(**args)
