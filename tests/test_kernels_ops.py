"""The int8 ops of ep_ops_s8.h against TensorFlow Lite Micro, bit for bit, on random single-op models.

Each case writes a one-op .tflite with random shapes, options and quantization (equal scales
included), runs it in TFLM's Python interpreter (the oracle), and runs our C kernel through ctypes
with the parameters that edgeprune.compile.quant computes from the same scales and zero points.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from edgeprune.compile import quant as Q
from edgeprune.compile.tflite_writer import (
    ModelSpec, OpSpec, TensorSpec, add_options, concatenation_options, mul_options, pad_options, pool2d_options,
    reducer_options, reshape_options, write_tflite,
)
from kernels_support import Dims, ptr, tflm

CASES = 250
ACTIVATIONS = ["NONE", "RELU", "RELU6"]
I8, I32, F32 = ctypes.c_int8, ctypes.c_int32, ctypes.c_float


def _struct(name: str, fields: str):
    return type(name, (ctypes.Structure,), {"_fields_": [(f, ctypes.c_int32) for f in fields.split()]})


# Mirrors of the C parameter structs; quant.py's dicts use the same field names.
PoolParams = _struct("PoolParams", "filter_h filter_w stride_h stride_w pad_h pad_w activation_min activation_max")
AddParams = _struct("AddParams", "input1_offset input2_offset left_shift input1_multiplier input1_shift "
                    "input2_multiplier input2_shift output_multiplier output_shift output_offset activation_min activation_max")
MulParams = _struct("MulParams", "input1_offset input2_offset output_multiplier output_shift output_offset "
                    "activation_min activation_max")
MeanParams = _struct("MeanParams", "input_zero_point output_zero_point multiplier shift")


def _scale(rng, lo=-3.0, hi=-0.5) -> float:
    return float(np.float32(10 ** rng.uniform(lo, hi)))


def _zp(rng) -> int:
    return int(rng.integers(-128, 128))


def _int8(rng, shape) -> np.ndarray:
    return np.asarray(rng.integers(-128, 128, shape), dtype=np.int8)


def _model(tensors, op, inputs, outputs) -> bytes:
    return write_tflite(ModelSpec(tensors, [op], inputs, outputs))


def _check(got, expected, case, what):
    assert got.shape == expected.shape or got.size == expected.size, f"case {case}: {what}: shape {got.shape} vs {expected.shape}"
    got, expected = got.reshape(expected.shape), np.asarray(expected)
    n = np.count_nonzero(got != expected)
    assert n == 0, f"case {case}: {what}: {n} of {got.size} outputs differ, max |diff| {np.abs(got.astype(np.int64) - expected).max()}"


@pytest.mark.parametrize("op", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
def test_pooling_matches_tflite_micro(lib, op):
    rng = np.random.default_rng(10 if op == "AVERAGE_POOL_2D" else 11)
    fn = lib.ep_average_pool2d_s8 if op == "AVERAGE_POOL_2D" else lib.ep_max_pool2d_s8
    for case in range(CASES):
        while True:
            n, h, w, c = int(rng.integers(1, 3)), int(rng.integers(1, 13)), int(rng.integers(1, 13)), int(rng.integers(1, 9))
            k = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
            s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            padding = str(rng.choice(["SAME", "VALID"]))
            oh, ow = Q.conv_output_size(h, k[0], s[0], 1, padding), Q.conv_output_size(w, k[1], s[1], 1, padding)
            if oh > 0 and ow > 0:
                break
        activation = str(rng.choice(ACTIVATIONS))
        scale, zp = _scale(rng), _zp(rng)  # TFLM requires the output quantized like the input
        tensors = [TensorSpec((n, h, w, c), scale=scale, zero_point=zp), TensorSpec((n, oh, ow, c), scale=scale, zero_point=zp)]
        model = _model(tensors, OpSpec(op, [0], [1], pool2d_options(k, s, padding, activation), version=2), [0], [1])
        x = _int8(rng, (n, h, w, c))
        expected = tflm(model, x)

        params = PoolParams(**Q.pool_params((h, w), k, s, padding, activation, scale, zp))
        got = np.zeros((n, oh, ow, c), np.int8)
        fn(ctypes.byref(params), ctypes.byref(Dims(n, h, w, c)), ptr(x, I8), ctypes.byref(Dims(n, oh, ow, c)), ptr(got, I8))
        _check(got, expected, case, f"{op} {(n, h, w, c)} k={k} s={s} {padding} {activation}")


def _broadcast_shapes(rng):
    """An output shape of rank 1-4 and two input shapes that broadcast to it (right-aligned, numpy rules)."""
    rank = int(rng.integers(1, 5))
    out = [int(v) for v in rng.integers(1, 7, rank)]
    mode = str(rng.choice(["same", "one", "both", "scalar"]))
    a, b = list(out), list(out)
    if mode in ("one", "both"):
        for d in range(rank):
            if rng.random() < 0.5:
                (b if mode == "one" or rng.random() < 0.5 else a)[d] = 1
        if mode == "one" and rng.random() < 0.5:
            b = b[int(rng.integers(0, rank)):]  # lower rank, e.g. a per-channel vector
    elif mode == "scalar":
        b = [1] * int(rng.integers(0, rank + 1))
    if rng.random() < 0.5:
        a, b = b, a
    return tuple(a), tuple(b), tuple(int(d) for d in np.broadcast_shapes(tuple(a), tuple(b))), mode


@pytest.mark.parametrize("op", ["ADD", "MUL"])
def test_add_mul_match_tflite_micro(lib, op):
    rng = np.random.default_rng(12 if op == "ADD" else 13)
    for case in range(CASES):
        a_shape, b_shape, out_shape, mode = _broadcast_shapes(rng)
        activation = str(rng.choice(ACTIVATIONS))
        s1, z1, s2, z2 = _scale(rng), _zp(rng), _scale(rng), _zp(rng)
        if rng.random() < 0.25:
            s2, z2 = s1, z1  # equal input quantization, a common case in real graphs
        # Output scales from mostly saturating to barely used; MUL's rescale reaches above 1.
        if op == "ADD":
            so = float(np.float32((s1 + s2) * 10 ** rng.uniform(-1.3, 0.5)))
        else:
            so = float(np.float32(s1 * s2 * 10 ** rng.uniform(-0.5, 3.0)))
        zo = _zp(rng)
        if op == "ADD" and rng.random() < 0.15:
            so, zo = s1, z1
        tensors = [TensorSpec(a_shape, scale=s1, zero_point=z1), TensorSpec(b_shape, scale=s2, zero_point=z2),
                   TensorSpec(out_shape, scale=so, zero_point=zo)]
        options = add_options(activation) if op == "ADD" else mul_options(activation)
        model = _model(tensors, OpSpec(op, [0, 1], [2], options, version=2), [0, 1], [2])
        x, y = _int8(rng, a_shape), _int8(rng, b_shape)
        expected = tflm(model, x, y)

        got = np.zeros(out_shape, np.int8)
        dims = [Dims(*Q.dims4(s)) for s in (a_shape, b_shape, out_shape)]
        if op == "ADD":
            params = AddParams(**Q.add_params(s1, z1, s2, z2, so, zo, activation))
            fn = lib.ep_add_s8
        else:
            params = MulParams(**Q.mul_params(s1, z1, s2, z2, so, zo, activation))
            fn = lib.ep_mul_s8
        fn(ctypes.byref(params), ctypes.byref(dims[0]), ptr(x, I8), ctypes.byref(dims[1]), ptr(y, I8),
           ctypes.byref(dims[2]), ptr(got, I8))
        _check(got, expected, case, f"{op} {a_shape} x {b_shape} -> {out_shape} ({mode}) {activation}")


def test_mean_matches_tflite_micro(lib):
    rng = np.random.default_rng(14)
    for case in range(CASES):
        n, h, w, c = int(rng.integers(1, 3)), int(rng.integers(1, 12)), int(rng.integers(1, 12)), int(rng.integers(1, 9))
        if rng.random() < 0.1:
            h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))  # a large count: the multiplier's shift
        keep_dims = bool(rng.random() < 0.5)
        axes = [[1, 2], [2, 1], [-3, -2], [-2, 1]][int(rng.integers(0, 4))]
        si, zi = _scale(rng), _zp(rng)
        if rng.random() < 0.3:
            so, zo = si, zi  # equal quantization: TFLM still takes the rescaling path for int8
        else:
            so, zo = float(np.float32(si * 10 ** rng.uniform(-1.5, 1.5))), _zp(rng)
        out_shape = (n, 1, 1, c) if keep_dims else (n, c)
        tensors = [TensorSpec((n, h, w, c), scale=si, zero_point=zi),
                   TensorSpec((2,), np.int32, data=np.array(axes, np.int32), name="axis"),
                   TensorSpec(out_shape, scale=so, zero_point=zo)]
        model = _model(tensors, OpSpec("MEAN", [0, 1], [2], reducer_options(keep_dims), version=2), [0], [2])
        x = _int8(rng, (n, h, w, c))
        expected = tflm(model, x)

        params = MeanParams(**Q.mean_params(si, zi, so, zo, h * w))
        got = np.zeros(out_shape, np.int8)
        lib.ep_mean_s8(ctypes.byref(params), ctypes.byref(Dims(n, h, w, c)), ptr(x, I8), ptr(got, I8))
        _check(got, expected, case, f"MEAN {(n, h, w, c)} axes={axes} keep_dims={keep_dims} equal={si == so and zi == zo}")


def test_pad_matches_tflite_micro(lib):
    rng = np.random.default_rng(15)
    for case in range(CASES):
        rank = int(rng.integers(1, 5))
        shape = tuple(int(v) for v in rng.integers(1, 7, rank))
        paddings = rng.integers(0, 4, (rank, 2)).astype(np.int32)
        out_shape = tuple(int(d + p.sum()) for d, p in zip(shape, paddings))
        scale, zp = _scale(rng), _zp(rng)
        v2 = bool(rng.random() < 0.3)  # PADV2: an explicit constant instead of the zero point
        constant = np.array(_zp(rng), np.int8)
        tensors = [TensorSpec(shape, scale=scale, zero_point=zp),
                   TensorSpec((rank, 2), np.int32, data=paddings, name="paddings"),
                   TensorSpec(out_shape, scale=scale, zero_point=zp),
                   TensorSpec((), scale=scale, zero_point=zp, data=constant, name="constant")]
        op = OpSpec("PADV2", [0, 1, 3], [2], version=2) if v2 else OpSpec("PAD", [0, 1], [2], pad_options(), version=2)
        model = _model(tensors, op, [0], [2])
        x = _int8(rng, shape)
        expected = tflm(model, x)

        got = np.zeros(out_shape, np.int8)
        pads = np.array(Q.pad_paddings(paddings), np.int32)
        lib.ep_pad_s8(ctypes.byref(Dims(*Q.dims4(shape))), ptr(x, I8), ptr(pads, I32), int(constant) if v2 else zp, ptr(got, I8))
        _check(got, expected, case, f"{'PADV2' if v2 else 'PAD'} {shape} paddings={paddings.tolist()}")


def test_concatenation_matches_tflite_micro(lib):
    rng = np.random.default_rng(16)
    for case in range(CASES):
        rank, count = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        base = [int(v) for v in rng.integers(1, 6, rank)]
        axis = int(rng.integers(-rank, rank))
        shapes = []
        for _ in range(count):
            s = list(base)
            s[axis] = int(rng.integers(1, 6))
            shapes.append(tuple(s))
        out_shape = list(base)
        out_shape[axis] = sum(s[axis] for s in shapes)
        scale, zp = _scale(rng), _zp(rng)  # TFLM rejects inputs quantized unlike the output
        tensors = [TensorSpec(s, scale=scale, zero_point=zp) for s in shapes] + [TensorSpec(tuple(out_shape), scale=scale, zero_point=zp)]
        op = OpSpec("CONCATENATION", list(range(count)), [count], concatenation_options(axis), version=2)
        model = _model(tensors, op, list(range(count)), [count])
        xs = [_int8(rng, s) for s in shapes]
        expected = tflm(model, *xs)

        outer, sizes = Q.concatenation_sizes(shapes, axis)
        got = np.zeros(out_shape, np.int8)
        in_ptrs = (ctypes.POINTER(I8) * count)(*[ptr(x, I8) for x in xs])
        lib.ep_concatenation_s8(count, in_ptrs, (I32 * count)(*sizes), outer, ptr(got, I8))
        _check(got, expected, case, f"CONCATENATION {shapes} axis={axis}")


def test_reshape_matches_tflite_micro(lib):
    rng = np.random.default_rng(17)
    for case in range(CASES):
        shape = tuple(int(v) for v in rng.integers(1, 6, int(rng.integers(1, 5))))
        size = int(np.prod(shape))
        new_shape = tuple(int(v) for v in rng.permutation(list(shape) + [1] * int(rng.integers(0, 2))))
        scale, zp = _scale(rng), _zp(rng)
        tensors = [TensorSpec(shape, scale=scale, zero_point=zp),
                   TensorSpec((len(new_shape),), np.int32, data=np.array(new_shape, np.int32), name="shape"),
                   TensorSpec(new_shape, scale=scale, zero_point=zp)]
        model = _model(tensors, OpSpec("RESHAPE", [0, 1], [2], reshape_options(new_shape)), [0], [2])
        x = _int8(rng, shape)
        expected = tflm(model, x)
        got = np.zeros(new_shape, np.int8)
        lib.ep_reshape_s8(ptr(x, I8), ptr(got, I8), size)
        _check(got, expected, case, f"RESHAPE {shape} -> {new_shape}")


def test_quantize_float_matches_tflite_micro(lib):
    rng = np.random.default_rng(18)
    for case in range(CASES):
        size = int(rng.integers(1, 300))
        scale, zp = _scale(rng), _zp(rng)
        x = (rng.standard_normal(size) * scale * 80).astype(np.float32)
        ties = rng.random(size) < 0.3  # exact halves, where the rounding mode shows
        x[ties] = (rng.integers(-200, 200, ties.sum()) + 0.5).astype(np.float32) * np.float32(scale)
        x[rng.random(size) < 0.05] = np.float32(rng.uniform(-1e6, 1e6))  # saturation
        tensors = [TensorSpec((size,), np.float32), TensorSpec((size,), scale=scale, zero_point=zp)]
        model = _model(tensors, OpSpec("QUANTIZE", [0], [1], version=2), [0], [1])
        expected = tflm(model, x)
        got = np.zeros(size, np.int8)
        lib.ep_quantize_f32_s8(ptr(x, F32), size, F32(scale), zp, ptr(got, I8))
        _check(got, expected, case, f"QUANTIZE f32 scale={scale} zp={zp}")
    # Values TFLM leaves undefined (its float -> int conversion overflows): ours saturate, NaN gives the zero point.
    x = np.array([np.nan, np.inf, -np.inf, 3e38, -3e38], np.float32)
    got = np.zeros(x.size, np.int8)
    lib.ep_quantize_f32_s8(ptr(x, F32), x.size, F32(0.1), 5, ptr(got, I8))
    assert got.tolist() == [5, 127, -128, 127, -128], f"QUANTIZE f32 of NaN/inf/huge: {got.tolist()}"


def test_requantize_matches_tflite_micro(lib):
    rng = np.random.default_rng(19)
    for case in range(CASES):
        size = int(rng.integers(1, 300))
        si, zi = _scale(rng), _zp(rng)
        so = [si, float(np.float32(si * rng.uniform(0.1, 10.0)))][int(rng.random() < 0.8)]
        zo = _zp(rng)
        tensors = [TensorSpec((size,), scale=si, zero_point=zi), TensorSpec((size,), scale=so, zero_point=zo)]
        model = _model(tensors, OpSpec("QUANTIZE", [0], [1], version=2), [0], [1])
        x = _int8(rng, size)
        expected = tflm(model, x)
        p = Q.requantize_params(si, zi, so, zo)
        got = np.zeros(size, np.int8)
        lib.ep_requantize_s8(ptr(x, I8), size, p["input_zero_point"], p["multiplier"], p["shift"], p["output_zero_point"], ptr(got, I8))
        _check(got, expected, case, f"QUANTIZE int8 {si}/{zi} -> {so}/{zo}")


def test_dequantize_matches_tflite_micro(lib):
    rng = np.random.default_rng(20)
    for case in range(CASES):
        size = int(rng.integers(1, 300))
        scale, zp = _scale(rng, -6.0, 1.0), _zp(rng)
        tensors = [TensorSpec((size,), scale=scale, zero_point=zp), TensorSpec((size,), np.float32)]
        model = _model(tensors, OpSpec("DEQUANTIZE", [0], [1], version=2), [0], [1])
        x = _int8(rng, size)
        expected = tflm(model, x)
        got = np.zeros(size, np.float32)
        lib.ep_dequantize_s8_f32(ptr(x, I8), size, F32(scale), zp, ptr(got, F32))
        _check(got.view(np.uint32), expected.view(np.uint32), case, f"DEQUANTIZE scale={scale} zp={zp}")  # bit for bit


def test_elementwise_ops_run_in_place(lib):
    """The memory planner may give an element-wise op its input's buffer as output (ep_ops_s8.h):
    each such call must give what the same call with a separate output gives."""
    rng = np.random.default_rng(21)
    for case in range(40):
        shape = tuple(int(v) for v in rng.integers(1, 6, 4))
        bcast = tuple(d if rng.random() < 0.5 else 1 for d in shape)  # the other input may broadcast
        s1, z1, s2, z2, so, zo = _scale(rng), _zp(rng), _scale(rng), _zp(rng), _scale(rng), _zp(rng)
        x, y = _int8(rng, shape), _int8(rng, bcast)
        d_x, d_y = Dims(*shape), Dims(*bcast)
        add = AddParams(**Q.add_params(s1, z1, s2, z2, float(np.float32(s1 + s2)), zo))
        mul = MulParams(**Q.mul_params(s1, z1, s2, z2, float(np.float32(s1 * s2 * 4)), zo))
        req = Q.requantize_params(s1, z1, so, zo)
        calls = {
            "ADD": lambda src, dst: lib.ep_add_s8(ctypes.byref(add), ctypes.byref(d_x), src, ctypes.byref(d_y),
                                                  ptr(y, I8), ctypes.byref(d_x), dst),
            "ADD (input 2)": lambda src, dst: lib.ep_add_s8(ctypes.byref(add), ctypes.byref(d_y), ptr(y, I8),
                                                            ctypes.byref(d_x), src, ctypes.byref(d_x), dst),
            "MUL": lambda src, dst: lib.ep_mul_s8(ctypes.byref(mul), ctypes.byref(d_x), src, ctypes.byref(d_y),
                                                  ptr(y, I8), ctypes.byref(d_x), dst),
            "QUANTIZE int8": lambda src, dst: lib.ep_requantize_s8(src, x.size, req["input_zero_point"], req["multiplier"],
                                                                    req["shift"], req["output_zero_point"], dst),
            "RESHAPE": lambda src, dst: lib.ep_reshape_s8(src, dst, x.size),
        }
        for name, call in calls.items():
            separate = np.zeros_like(x)
            call(ptr(x, I8), ptr(separate, I8))
            in_place = x.copy()
            call(ptr(in_place, I8), ptr(in_place, I8))
            _check(in_place, separate, case, f"{name} in place, {shape} with {bcast}")


def test_large_reductions_do_not_overflow(lib):
    """MEAN and AVERAGE_POOL_2D sum in int32: the largest sums of realistic shapes, all values at one
    end of the int8 range and the zero point at the other, still match TFLM."""
    for case, (h, w, value, zp) in enumerate([(96, 96, -128, 127), (96, 96, 127, -128), (64, 200, -128, -128)]):
        shape, scale = (1, h, w, 2), 0.02
        x = np.full(shape, value, np.int8)
        # MEAN over all of H and W (the classifier head's global average).
        tensors = [TensorSpec(shape, scale=scale, zero_point=zp),
                   TensorSpec((2,), np.int32, data=np.array([1, 2], np.int32), name="axis"),
                   TensorSpec((1, 2), scale=scale * 2, zero_point=0)]
        expected = tflm(_model(tensors, OpSpec("MEAN", [0, 1], [2], reducer_options(False), version=2), [0], [2]), x)
        params = MeanParams(**Q.mean_params(scale, zp, scale * 2, 0, h * w))
        got = np.zeros((1, 2), np.int8)
        lib.ep_mean_s8(ctypes.byref(params), ctypes.byref(Dims(*shape)), ptr(x, I8), ptr(got, I8))
        _check(got, expected, case, f"MEAN {shape} of {value}, zero point {zp}")
        # AVERAGE_POOL_2D with one window over the whole input.
        tensors = [TensorSpec(shape, scale=scale, zero_point=zp), TensorSpec((1, 1, 1, 2), scale=scale, zero_point=zp)]
        options = pool2d_options((h, w), (1, 1), "VALID", "NONE")
        expected = tflm(_model(tensors, OpSpec("AVERAGE_POOL_2D", [0], [1], options, version=2), [0], [1]), x)
        pool = PoolParams(**Q.pool_params((h, w), (h, w), (1, 1), "VALID", "NONE", scale, zp))
        got = np.zeros((1, 1, 1, 2), np.int8)
        lib.ep_average_pool2d_s8(ctypes.byref(pool), ctypes.byref(Dims(*shape)), ptr(x, I8),
                                 ctypes.byref(Dims(1, 1, 1, 2)), ptr(got, I8))
        _check(got, expected, case, f"AVERAGE_POOL_2D {shape} of {value}")


# Quantizations the parameter helpers must refuse with a ValueError naming the problem (rather
# than a ZeroDivisionError, or parameters whose fixed-point arithmetic overflows int32).
BAD_PARAMS = [
    (lambda: Q.add_params(0.0, 0, 0.1, 0, 0.1, 0), "zero input scale"),
    (lambda: Q.add_params(0.1, 0, 0.1, 0, float("nan"), 0), "NaN output scale"),
    (lambda: Q.add_params(0.1, 0, 0.1, 0, 1e-9, 0), "ADD rescale above 1"),
    (lambda: Q.mul_params(0.1, 0, 0.1, 0, 0.0, 0), "zero output scale"),
    (lambda: Q.mul_params(0.1, 0, 0.1, 0, 1e-9, 0), "MUL rescale 10^7 overflows int32"),
    (lambda: Q.mean_params(0.1, 0, 0.1, 0, 0), "MEAN over nothing"),
    (lambda: Q.mean_params(0.1, 0, 0.1, 0, 1 << 23), "MEAN sum beyond int32"),
    (lambda: Q.mean_params(0.1, 0, 1e-9, 0, 4), "MEAN rescale 10^8 overflows int32"),
    (lambda: Q.requantize_params(float("inf"), 0, 0.1, 0), "infinite input scale"),
    (lambda: Q.requantize_params(0.1, 0, -0.1, 0), "negative output scale"),
    (lambda: Q.requantize_params(1.0, 0, 1e-7, 0), "QUANTIZE rescale 10^7 overflows int32"),
    (lambda: Q.pool_params((4, 4), (2, 2), (0, 1), "VALID", "NONE", 0.1, 0), "zero stride"),
    (lambda: Q.pad_paddings([[0, 1], [-1, 0]]), "negative padding"),
    (lambda: Q.pad_paddings(np.zeros((5, 2), np.int32)), "rank 5"),
    (lambda: Q.concatenation_sizes([(2, 3), (2, 4)], 0), "shapes differ outside the axis"),
    (lambda: Q.concatenation_sizes([(2, 3), (2, 4)], 2), "axis out of range"),
    (lambda: Q.quantize_multiplier(-0.5), "negative multiplier"),
    (lambda: Q.activation_range("relu", 0.1, 0), "unknown activation name"),
]


@pytest.mark.parametrize("call", [call for call, _ in BAD_PARAMS], ids=[why for _, why in BAD_PARAMS])
def test_param_helpers_refuse_bad_quantization(call):
    with pytest.raises(ValueError):
        call()
