"""Int8 SOFTMAX, LOGISTIC and TANH kernels against TensorFlow Lite Micro, bit for bit.

Each case writes a one-op .tflite with a random shape and quantization (and beta), runs it in
TFLM's Python interpreter (the oracle), computes the op's parameters with
edgeprune.compile.quant_activations as the compiler does, and runs our C kernel through ctypes.
Every case is run twice: on random data, and on every int8 value (-128..127) at least once; and
through every variant: SOFTMAX with int8 and int16 output and with precomputed exps, LOGISTIC and
TANH computed and as a precomputed 256-entry table.
"""

from __future__ import annotations

import ctypes
import dataclasses

import numpy as np
import pytest

from edgeprune.compile import quant_activations as QA
from edgeprune.compile.tflite_writer import ModelSpec, OpSpec, TensorSpec, softmax_options, write_tflite
from kernels_support import ptr, tflm

CASES = 300
I8 = ctypes.c_int8


class SoftmaxParams(ctypes.Structure):
    _fields_ = [(f.name, ctypes.c_int32) for f in dataclasses.fields(QA.SoftmaxParams)]


class LogisticTanhParams(ctypes.Structure):
    _fields_ = [(f.name, ctypes.c_int32) for f in dataclasses.fields(QA.LogisticTanhParams)]


def _single_op_model(op, shape, in_scale, in_zp, out_scale, out_zp, options=None, out_dtype=np.int8) -> bytes:
    tensors = [TensorSpec(shape, scale=in_scale, zero_point=in_zp, name="input"),
               TensorSpec(shape, out_dtype, scale=out_scale, zero_point=out_zp, name="output")]
    return write_tflite(ModelSpec(tensors, [OpSpec(op, [0], [1], options, version=2)], [0], [1]))


def _random_shape(rng, last=None):
    """Rank 1-4; the innermost dim is `last` when given, the whole tensor at most ~1200 values."""
    rank = int(rng.integers(1, 5))
    last = int(rng.integers(1, 65)) if last is None else last
    outer = [int(v) for v in rng.integers(1, 5, rank - 1)]
    while outer and np.prod(outer) * last > 1200:
        outer[int(np.argmax(outer))] -= 1
    return tuple(outer) + (last,)


def _log_uniform(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _random_int8(rng, shape):
    """Uniform int8, or values clustered near a random centre (small differences, many near-ties)."""
    if rng.random() < 0.5:
        return rng.integers(-128, 128, shape).astype(np.int8)
    centre, spread = int(rng.integers(-128, 128)), int(rng.integers(0, 12))
    return np.clip(centre + rng.integers(-spread, spread + 1, shape), -128, 127).astype(np.int8)


def _full_range(rng, depth):
    """Rows of `depth` values that hold every int8 value (shuffled), at least one row with both
    -128 and 127 when depth > 1."""
    rows = -(-256 // depth) + 1
    x = np.resize(rng.permutation(np.arange(-128, 128)), rows * depth).reshape(rows, depth)
    x[-1, 0], x[-1, -1] = 127, -128
    return x.astype(np.int8)


# ---------------------------------------------------------------------------------------------
# SOFTMAX


def softmax_c(lib, params: QA.SoftmaxParams, x: np.ndarray, out_dtype=np.int8, tabled=False) -> np.ndarray:
    depth = x.shape[-1]
    out = np.zeros(x.shape, out_dtype)
    c_params = ctypes.byref(SoftmaxParams(*dataclasses.astuple(params)))
    if tabled:  # the exps precomputed once, as a compiled model does at init
        table = np.zeros(256, np.int32)
        lib.ep_softmax_s8_exp_table(c_params, ptr(table, ctypes.c_int32))
        lib.ep_softmax_s8_tabled(ptr(table, ctypes.c_int32), x.size // depth, depth, ptr(x, I8), ptr(out, I8))
    elif out_dtype == np.int8:
        lib.ep_softmax_s8(c_params, x.size // depth, depth, ptr(x, I8), ptr(out, I8))
    else:
        lib.ep_softmax_s8_s16(c_params, x.size // depth, depth, ptr(x, I8), ptr(out, ctypes.c_int16))
    return out


def _softmax_cases(rng):
    for case in range(CASES):
        kind = case % 4
        if kind == 3:  # edges: capped multiplier (beta * scale * 2^26 >= 2^31), tiny beta * scale, depth up to 511
            in_scale, beta = [(40.0, 1.0), (1e-3, 2e-5), (7.5, 9.0), (0.9, 1.0)][case // 4 % 4]
            depth = int(rng.choice([1, 2, 10, 300, 511]))
        else:
            in_scale = _log_uniform(rng, 1e-3, 1.0)
            beta = 1.0 if kind == 0 else float(rng.uniform(0.1, 2.0))
            depth = int(rng.integers(1, 301)) if rng.random() < 0.5 else int(rng.integers(1, 17))
        yield case, in_scale, int(rng.integers(-128, 128)), beta, _random_shape(rng, depth)


# int16 output (TFLM's int8 -> int16 SOFTMAX) shows 8 more bits of the same fixed-point exp and
# reciprocal, so it catches sub-LSB slips that int8 outputs round away.
@pytest.mark.parametrize("out_dtype", [np.int8, np.int16], ids=["int8", "int16"])
def test_softmax_matches_tflite_micro(lib, out_dtype):
    rng = np.random.default_rng(10)
    out_scale, out_zp = (1 / 256, -128) if out_dtype == np.int8 else (1 / 65536, -32768)
    for case, in_scale, in_zp, beta, shape in _softmax_cases(rng):
        params = QA.softmax_params(in_scale, beta, out_scale, out_zp, out_dtype)
        for x in (_random_int8(rng, shape), _full_range(rng, shape[-1])):
            expected = tflm(_single_op_model("SOFTMAX", x.shape, in_scale, in_zp, out_scale, out_zp, softmax_options(beta),
                                             out_dtype), x)
            for tabled in (False, True) if out_dtype == np.int8 else (False,):
                got = softmax_c(lib, params, x, out_dtype, tabled)
                assert np.array_equal(got, expected), (
                    f"case {case}{' tabled' if tabled else ''}: shape {x.shape} scale {in_scale} beta {beta} {params}: "
                    f"{np.count_nonzero(got != expected)} outputs differ")


def test_softmax_beyond_tflite_micro_range_is_zero(lib):
    # 512 or more values at the row maximum: TFLM aborts (sum of exps out of range); the true
    # probabilities are at most 1/512, half an output LSB, so every output is the zero point.
    params = QA.softmax_params(0.05, 1.0)
    x = np.full((1, 1000), 7, np.int8)
    x[0, ::3] = 6  # exp(-0.05): the sum is still far above 512
    for tabled in (False, True):
        assert np.all(softmax_c(lib, params, np.full((1, 512), 7, np.int8), tabled=tabled) == -128)
        assert np.all(softmax_c(lib, params, x, tabled=tabled) == -128)
    x = np.ascontiguousarray(x[:, :511])  # within TFLM's range again (sum of exps ~502)
    model = _single_op_model("SOFTMAX", x.shape, 0.05, 0, 1 / 256, -128, softmax_options(1.0))
    assert np.array_equal(softmax_c(lib, params, x), tflm(model, x))


def test_softmax_params_mirror_tflite_prepare():
    capped = QA.softmax_params(40.0, 1.0)  # 40 * 2^26 > 2^31 - 1: capped, nothing but the max survives
    assert (capped.input_multiplier, capped.input_left_shift, capped.diff_min) == (2**31 - 1, 31, 0)
    p = QA.softmax_params(1 / 16, 1.0)  # 2^22: multiplier 0.5 * 2^31, shift 23, radius 31 * 2^26 / 2^23
    assert (p.input_multiplier, p.input_left_shift, p.diff_min) == (1 << 30, 23, -248)
    with pytest.raises(ValueError):
        QA.softmax_params(1e-9, 1.0)  # beta * scale * 2^26 <= 1: TFLM's Prepare fails
    with pytest.raises(ValueError):
        QA.softmax_params(0.1, 1.0, output_scale=1 / 255)
    for scale, beta in ((0.0, 1.0), (float("inf"), 1.0), (float("nan"), 1.0), (0.1, -1.0)):
        with pytest.raises(ValueError):
            QA.softmax_params(scale, beta)


# ---------------------------------------------------------------------------------------------
# LOGISTIC and TANH


def elementwise_c(lib, op: str, params: QA.LogisticTanhParams, x: np.ndarray, tabled=False) -> np.ndarray:
    out = np.zeros_like(x)
    c_params = ctypes.byref(LogisticTanhParams(*dataclasses.astuple(params)))
    if tabled:  # the whole op as a 256-entry table, built once
        table = np.zeros(256, np.int8)
        (lib.ep_logistic_s8_table if op == "LOGISTIC" else lib.ep_tanh_s8_table)(c_params, ptr(table, I8))
        lib.ep_table_lookup_s8(ptr(table, I8), x.size, ptr(x, I8), ptr(out, I8))
    else:
        (lib.ep_logistic_s8 if op == "LOGISTIC" else lib.ep_tanh_s8)(c_params, x.size, ptr(x, I8), ptr(out, I8))
    return out


def _elementwise_cases(rng, op):
    standard = (1 / 256, -128) if op == "LOGISTIC" else (1 / 128, 0)
    for case in range(CASES):
        kind = case % 5
        if kind == 4:  # edges: scales whose radius is 0, 1 or a few LSB; very fine scales
            in_scale = float(rng.choice([20.0, 16.0, 8.0, 4.0, 2.5, 1.0, 2.0**-7, 1e-4]))
        else:
            in_scale = _log_uniform(rng, 1e-3, 1.0)
        out_scale, out_zp = standard
        if kind == 3:  # quantizations TFLM accepts but does not read: the output means the same
            out_scale = _log_uniform(rng, 1e-3, 1.0)
            out_zp = -128 if op == "LOGISTIC" else int(rng.integers(-128, 128))
        yield case, in_scale, int(rng.integers(-128, 128)), out_scale, out_zp, _random_shape(rng)


@pytest.mark.parametrize("op", ["LOGISTIC", "TANH"])
def test_logistic_tanh_match_tflite_micro(lib, op):
    rng = np.random.default_rng(11 if op == "LOGISTIC" else 12)
    for case, in_scale, in_zp, out_scale, out_zp, shape in _elementwise_cases(rng, op):
        params = QA.logistic_params(in_scale, in_zp) if op == "LOGISTIC" else QA.tanh_params(in_scale, in_zp)
        for x in (_random_int8(rng, shape), rng.permutation(np.arange(-128, 128)).astype(np.int8)):
            model = _single_op_model(op, x.shape, in_scale, in_zp, out_scale, out_zp)
            expected = tflm(model, x)
            for tabled in (False, True):
                got = elementwise_c(lib, op, params, x, tabled)
                assert np.array_equal(got, expected), (
                    f"{op} case {case}{' tabled' if tabled else ''}: shape {x.shape} in {in_scale},{in_zp} "
                    f"out {out_scale},{out_zp} {params}: {np.count_nonzero(got != expected)} outputs differ")


def test_logistic_tanh_params_mirror_tflite_prepare():
    p = QA.logistic_params(1 / 16, 0)  # 2^23: frexp 0.5, shift 24; radius 15 * 2^27 / 2^24
    assert (p.input_multiplier, p.input_left_shift, p.input_range_radius) == (1 << 30, 24, 120)
    assert QA.tanh_params(16.0, 5).input_range_radius == 0  # every input saturates
    with pytest.raises(ValueError):
        QA.logistic_params(0.1, 0, output_zero_point=0)
    with pytest.raises(ValueError):
        QA.tanh_params(1e-9, 0)  # the radius would overflow TFLM's int
    for scale in (0.0, -0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            QA.logistic_params(scale, 0)


def test_int8_activations_run_in_place(lib):
    """The memory planner may give these ops their input's buffer as output (ep_activations_s8.h):
    each in-place call must give what the same call with a separate output gives."""
    rng = np.random.default_rng(13)
    for case in range(40):
        shape = _random_shape(rng)
        x = _random_int8(rng, shape)
        rows, depth = x.size // shape[-1], shape[-1]
        softmax = ctypes.byref(SoftmaxParams(*dataclasses.astuple(QA.softmax_params(_log_uniform(rng, 1e-3, 1.0)))))
        exps = np.zeros(256, np.int32)
        lib.ep_softmax_s8_exp_table(softmax, ptr(exps, ctypes.c_int32))
        logistic_tanh = ctypes.byref(LogisticTanhParams(*dataclasses.astuple(QA.tanh_params(_log_uniform(rng, 1e-3, 1.0), 3))))
        table = np.zeros(256, np.int8)
        lib.ep_tanh_s8_table(logistic_tanh, ptr(table, I8))
        calls = {
            "SOFTMAX": lambda src, dst: lib.ep_softmax_s8(softmax, rows, depth, src, dst),
            "SOFTMAX tabled": lambda src, dst: lib.ep_softmax_s8_tabled(ptr(exps, ctypes.c_int32), rows, depth, src, dst),
            "LOGISTIC": lambda src, dst: lib.ep_logistic_s8(logistic_tanh, x.size, src, dst),
            "TANH": lambda src, dst: lib.ep_tanh_s8(logistic_tanh, x.size, src, dst),
            "table lookup": lambda src, dst: lib.ep_table_lookup_s8(ptr(table, I8), x.size, src, dst),
        }
        for name, call in calls.items():
            separate = np.zeros_like(x)
            call(ptr(x, I8), ptr(separate, I8))
            in_place = x.copy()
            call(ptr(in_place, I8), ptr(in_place, I8))
            assert np.array_equal(in_place, separate), f"case {case}: {name} in place, shape {shape}: differs"
