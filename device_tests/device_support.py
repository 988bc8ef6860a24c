"""Test vectors for the device runner (device_tests/vectors/run_vectors.c) and the builds to run them.

A vector file holds single-op cases: random shapes, options and quantization (the generators of
tests/kernels_support.py), each with TensorFlow Lite Micro's output as the expected result, so the
device builds are checked against the same oracle as the host kernels. Format: see run_vectors.c.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.compile import quant as Q
from edgeprune.compile.tflite_writer import (
    ModelSpec, OpSpec, TensorSpec, add_options, conv2d_options, depthwise_options, fully_connected_options,
    mul_options, pool2d_options, reducer_options, softmax_options, write_tflite,
)
from kernels_support import conv_tensors, random_conv_case, random_quant, tflm

RUNNER = Path(__file__).resolve().parent / "vectors" / "run_vectors.c"

# Op codes of the runner's table.
CONV2D, DEPTHWISE_CONV2D, FULLY_CONNECTED = 1, 2, 3
AVERAGE_POOL2D, MAX_POOL2D, ADD, MUL, MEAN, SOFTMAX, LOGISTIC, TANH = 4, 5, 6, 7, 8, 9, 10, 11
OP_NAMES = {CONV2D: "conv2d", DEPTHWISE_CONV2D: "depthwise_conv2d", FULLY_CONNECTED: "fully_connected",
            AVERAGE_POOL2D: "average_pool2d", MAX_POOL2D: "max_pool2d", ADD: "add", MUL: "mul", MEAN: "mean",
            SOFTMAX: "softmax", LOGISTIC: "logistic", TANH: "tanh"}

# Field order of the C parameter structs (ep_ops_s8.h); quant.py's dicts use these names.
POOL_FIELDS = "filter_h filter_w stride_h stride_w pad_h pad_w activation_min activation_max".split()
ADD_FIELDS = ("input1_offset input2_offset left_shift input1_multiplier input1_shift input2_multiplier input2_shift "
              "output_multiplier output_shift output_offset activation_min activation_max").split()
MUL_FIELDS = "input1_offset input2_offset output_multiplier output_shift output_offset activation_min activation_max".split()
MEAN_FIELDS = "input_zero_point output_zero_point multiplier shift".split()


@dataclass
class VectorCase:
    op: int
    id: int
    params: list[int]
    arrays: list[np.ndarray]  # int8 or int32; the last is the expected int8 output
    description: dict = field(default_factory=dict)


def write_vectors(path: Path, cases: list[VectorCase]) -> Path:
    """The binary vector file run_vectors.c reads (little-endian, 4-byte aligned arrays)."""
    out = bytearray(b"EPV1" + struct.pack("<I", len(cases)))
    for c in cases:
        out += struct.pack(f"<III{len(c.params)}iI", c.op, c.id, len(c.params), *c.params, len(c.arrays))
        for a in c.arrays:
            a = np.ascontiguousarray(a)
            assert a.dtype in (np.int8, np.int32), a.dtype
            data = a.astype(a.dtype.newbyteorder("<")).tobytes()
            out += struct.pack("<II", a.dtype.itemsize, a.size) + data + bytes(-len(data) % 4)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(bytes(out))
    tmp.replace(path)
    return path


def _quant_params(in_scale, in_zp, f_scales, out_scale, out_zp, activation):
    mult, shift = Q.per_channel_multipliers(in_scale, f_scales, out_scale)
    lo, hi = Q.activation_range(activation, np.float32(out_scale), out_zp)
    return [-in_zp, out_zp, lo, hi], mult, shift


def _wide_conv_case(rng, depthwise: bool):
    """Channel counts where SIMD variants take their main paths (multiples of 4/8/16, and odd tails)."""
    while True:
        c = random_conv_case(rng, depthwise)
        c["in_c"] = int(rng.choice([4, 8, 12, 16, 17, 24, 32, 48, 64]))
        c["out_c"] = c["in_c"] * c["mult"] if depthwise else int(rng.choice([4, 8, 15, 16, 32]))
        c["in_h"], c["in_w"] = (int(v) for v in rng.integers(1, 9, 2))
        c["out_h"] = Q.conv_output_size(c["in_h"], c["k_h"], c["s_h"], c["d_h"], c["padding"])
        c["out_w"] = Q.conv_output_size(c["in_w"], c["k_w"], c["s_w"], c["d_w"], c["padding"])
        if c["out_h"] > 0 and c["out_w"] > 0:
            return c


def conv_vector(rng, case_id: int, c: dict, depthwise: bool) -> VectorCase:
    fan_in = c["k_h"] * c["k_w"] * (1 if depthwise else c["in_c"])
    in_scale, in_zp, f_scales, out_scale, out_zp = random_quant(rng, c["out_c"], fan_in)
    w_shape = (1, c["k_h"], c["k_w"], c["out_c"]) if depthwise else (c["out_c"], c["k_h"], c["k_w"], c["in_c"])
    in_shape, out_shape = (1, c["in_h"], c["in_w"], c["in_c"]), (1, c["out_h"], c["out_w"], c["out_c"])
    tensors, w, bias = conv_tensors(rng, in_shape, w_shape, out_shape, in_scale, in_zp, f_scales, out_scale, out_zp,
                                    3 if depthwise else 0)
    opts = dict(stride=(c["s_h"], c["s_w"]), dilation=(c["d_h"], c["d_w"]), padding=c["padding"], activation=c["activation"])
    op = (OpSpec("DEPTHWISE_CONV_2D", [0, 1, 2], [3], depthwise_options(multiplier=c["mult"], **opts), version=3)
          if depthwise else OpSpec("CONV_2D", [0, 1, 2], [3], conv2d_options(**opts), version=3))
    x = rng.integers(-128, 128, in_shape).astype(np.int8)
    expected = tflm(write_tflite(ModelSpec(tensors, [op], [0], [3])), x)
    quant, mult, shift = _quant_params(in_scale, in_zp, f_scales, out_scale, out_zp, c["activation"])
    pad_h = Q.conv_padding(c["in_h"], c["k_h"], c["s_h"], c["d_h"], c["out_h"], c["padding"])
    pad_w = Q.conv_padding(c["in_w"], c["k_w"], c["s_w"], c["d_w"], c["out_w"], c["padding"])
    params = [*in_shape, *w_shape, *out_shape, c["s_h"], c["s_w"], c["d_h"], c["d_w"], pad_h, pad_w, *quant]
    if depthwise:
        params.append(c["mult"])
    return VectorCase(DEPTHWISE_CONV2D if depthwise else CONV2D, case_id, params,
                      [x, w, bias, mult, shift, expected.astype(np.int8)], c)


def fully_connected_vector(rng, case_id: int, wide: bool = False) -> VectorCase:
    batches = int(rng.integers(1, 4))
    n_in = int(rng.choice([16, 64, 100, 128, 256, 257, 512])) if wide else int(rng.integers(1, 300))
    n_out = int(rng.choice([8, 16, 31, 48])) if wide else int(rng.integers(1, 40))
    activation = str(rng.choice(["NONE", "RELU", "RELU6"]))
    in_scale, in_zp, f_scales, out_scale, out_zp = random_quant(rng, n_out, n_in)
    tensors, w, bias = conv_tensors(rng, (batches, n_in), (n_out, n_in), (batches, n_out), in_scale, in_zp, f_scales,
                                    out_scale, out_zp, 0)
    op = OpSpec("FULLY_CONNECTED", [0, 1, 2], [3], fully_connected_options(activation), version=4)
    x = rng.integers(-128, 128, (batches, n_in)).astype(np.int8)
    expected = tflm(write_tflite(ModelSpec(tensors, [op], [0], [3])), x)
    quant, mult, shift = _quant_params(in_scale, in_zp, f_scales, out_scale, out_zp, activation)
    return VectorCase(FULLY_CONNECTED, case_id, [batches, n_in, n_out, *quant], [x, w, bias, mult, shift, expected.astype(np.int8)],
                      dict(batches=batches, n_in=n_in, n_out=n_out, activation=activation))


def _scale(rng, lo=-3.0, hi=-0.5) -> float:
    return float(np.float32(10 ** rng.uniform(lo, hi)))


def _one_op(tensors, op, inputs, outputs, *xs) -> np.ndarray:
    return tflm(write_tflite(ModelSpec(tensors, [op], inputs, outputs)), *xs).astype(np.int8)


def pool_vector(rng, case_id: int, op: int) -> VectorCase:
    while True:
        n, h, w, c = int(rng.integers(1, 3)), int(rng.integers(1, 13)), int(rng.integers(1, 13)), int(rng.integers(1, 17))
        k = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        st = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        padding = str(rng.choice(["SAME", "VALID"]))
        oh, ow = Q.conv_output_size(h, k[0], st[0], 1, padding), Q.conv_output_size(w, k[1], st[1], 1, padding)
        if oh > 0 and ow > 0:
            break
    activation = str(rng.choice(["NONE", "RELU", "RELU6"]))
    scale, zp = _scale(rng), int(rng.integers(-128, 128))  # TFLM: output quantized like the input
    name = "AVERAGE_POOL_2D" if op == AVERAGE_POOL2D else "MAX_POOL_2D"
    tensors = [TensorSpec((n, h, w, c), scale=scale, zero_point=zp), TensorSpec((n, oh, ow, c), scale=scale, zero_point=zp)]
    x = rng.integers(-128, 128, (n, h, w, c)).astype(np.int8)
    expected = _one_op(tensors, OpSpec(name, [0], [1], pool2d_options(k, st, padding, activation), version=2), [0], [1], x)
    p = Q.pool_params((h, w), k, st, padding, activation, scale, zp)
    return VectorCase(op, case_id, [n, h, w, c, n, oh, ow, c, *(p[f] for f in POOL_FIELDS)], [x, expected],
                      dict(shape=(n, h, w, c), k=k, s=st, padding=padding))


def add_mul_vector(rng, case_id: int, op: int) -> VectorCase:
    rank = int(rng.integers(1, 5))
    out = tuple(int(v) for v in rng.integers(1, 9, rank))
    a, b = list(out), list(out)
    for d in range(rank):  # broadcast some dims of either input
        if rng.random() < 0.3:
            (a if rng.random() < 0.5 else b)[d] = 1
    a, b = tuple(a), tuple(b)
    activation = str(rng.choice(["NONE", "RELU", "RELU6"]))
    s1, z1, s2, z2 = _scale(rng), int(rng.integers(-128, 128)), _scale(rng), int(rng.integers(-128, 128))
    if op == ADD:
        so = float(np.float32((s1 + s2) * 10 ** rng.uniform(-1.3, 0.5)))
    else:
        so = float(np.float32(s1 * s2 * 10 ** rng.uniform(-0.5, 3.0)))
    zo = int(rng.integers(-128, 128))
    tensors = [TensorSpec(a, scale=s1, zero_point=z1), TensorSpec(b, scale=s2, zero_point=z2),
               TensorSpec(out, scale=so, zero_point=zo)]
    options = add_options(activation) if op == ADD else mul_options(activation)
    x, y = rng.integers(-128, 128, a).astype(np.int8), rng.integers(-128, 128, b).astype(np.int8)
    expected = _one_op(tensors, OpSpec("ADD" if op == ADD else "MUL", [0, 1], [2], options, version=2), [0, 1], [2], x, y)
    if op == ADD:
        p = Q.add_params(s1, z1, s2, z2, so, zo, activation)
        fields = ADD_FIELDS
    else:
        p = Q.mul_params(s1, z1, s2, z2, so, zo, activation)
        fields = MUL_FIELDS
    dims = [*Q.dims4(a), *Q.dims4(b), *Q.dims4(out)]
    return VectorCase(op, case_id, [*dims, *(p[f] for f in fields)], [x, y, expected], dict(a=a, b=b, out=out))


def mean_vector(rng, case_id: int) -> VectorCase:
    n, h, w, c = int(rng.integers(1, 3)), int(rng.integers(1, 12)), int(rng.integers(1, 12)), int(rng.integers(1, 17))
    si, zi = _scale(rng), int(rng.integers(-128, 128))
    so, zo = float(np.float32(si * 10 ** rng.uniform(-1.5, 1.5))), int(rng.integers(-128, 128))
    tensors = [TensorSpec((n, h, w, c), scale=si, zero_point=zi),
               TensorSpec((2,), np.int32, data=np.array([1, 2], np.int32), name="axis"),
               TensorSpec((n, c), scale=so, zero_point=zo)]
    x = rng.integers(-128, 128, (n, h, w, c)).astype(np.int8)
    expected = _one_op(tensors, OpSpec("MEAN", [0, 1], [2], reducer_options(False), version=2), [0], [2], x)
    p = Q.mean_params(si, zi, so, zo, h * w)
    return VectorCase(MEAN, case_id, [n, h, w, c, *(p[f] for f in MEAN_FIELDS)], [x, expected], dict(shape=(n, h, w, c)))


def activation_vector(rng, case_id: int, op: int) -> VectorCase:
    from edgeprune.compile import quant_activations as QA

    outer, depth = int(rng.integers(1, 5)), int(rng.integers(1, 65))
    in_scale = float(np.exp(rng.uniform(np.log(1e-3), np.log(1.0))))
    in_zp = int(rng.integers(-128, 128))
    name, (out_scale, out_zp) = {SOFTMAX: ("SOFTMAX", (1 / 256, -128)), LOGISTIC: ("LOGISTIC", (1 / 256, -128)),
                                 TANH: ("TANH", (1 / 128, 0))}[op]
    tensors = [TensorSpec((outer, depth), scale=in_scale, zero_point=in_zp),
               TensorSpec((outer, depth), scale=out_scale, zero_point=out_zp)]
    x = rng.integers(-128, 128, (outer, depth)).astype(np.int8)
    if op == SOFTMAX:
        beta = float(rng.uniform(0.1, 2.0))
        expected = _one_op(tensors, OpSpec(name, [0], [1], softmax_options(beta), version=2), [0], [1], x)
        params = [outer, depth, *dataclasses.astuple(QA.softmax_params(in_scale, beta))]
    else:
        expected = _one_op(tensors, OpSpec(name, [0], [1], None, version=2), [0], [1], x)
        qp = QA.logistic_params(in_scale, in_zp) if op == LOGISTIC else QA.tanh_params(in_scale, in_zp)
        params = [x.size, *dataclasses.astuple(qp)]
    return VectorCase(op, case_id, [int(v) for v in params], [x, expected], dict(shape=x.shape, scale=in_scale))


def generate_cases(seed: int = 100, per_op: int = 120, wide_per_op: int = 80, other_ops: int = 40) -> list[VectorCase]:
    """Small random cases like the host tests', plus wider-channel ones for the SIMD paths, plus
    `other_ops` cases of each op of ep_ops_s8.h / ep_activations_s8.h the runner knows."""
    rng = np.random.default_rng(seed)
    cases: list[VectorCase] = []
    for depthwise in (False, True):
        for i in range(per_op + wide_per_op):
            c = random_conv_case(rng, depthwise) if i < per_op else _wide_conv_case(rng, depthwise)
            cases.append(conv_vector(rng, len(cases), c, depthwise))
    for i in range(per_op + wide_per_op):
        cases.append(fully_connected_vector(rng, len(cases), wide=i >= per_op))
    makers = [lambda i: pool_vector(rng, i, AVERAGE_POOL2D), lambda i: pool_vector(rng, i, MAX_POOL2D),
              lambda i: add_mul_vector(rng, i, ADD), lambda i: add_mul_vector(rng, i, MUL), lambda i: mean_vector(rng, i),
              lambda i: activation_vector(rng, i, SOFTMAX), lambda i: activation_vector(rng, i, LOGISTIC),
              lambda i: activation_vector(rng, i, TANH)]
    for make in makers:
        for _ in range(other_ops):
            cases.append(make(len(cases)))
    return cases


def parse_runner_output(stdout: str) -> tuple[str | None, dict[str, tuple[int, int]], list[str]]:
    """(backend name, {op: (cases, mismatches)}, mismatch lines) from run_vectors' output."""
    backend, ops, mismatches = None, {}, []
    for line in stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["backend"] and len(parts) == 2:
            backend = parts[1]
        elif parts[:1] == ["op"] and len(parts) == 6:
            ops[parts[1]] = (int(parts[3]), int(parts[5]))
        elif parts[:1] == ["MISMATCH"]:
            mismatches.append(line)
    return backend, ops, mismatches
