"""Shared helpers for the kernels_c tests: build the C library, ctypes structs, the TFLM oracle.

Tests import this module directly (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

import numpy as np

from edgeprune.compile import quant as Q
from edgeprune.compile.tflite_writer import TensorSpec

KERNELS = Path(__file__).resolve().parents[1] / "kernels_c"


class Dims(ctypes.Structure):
    _fields_ = [("n", ctypes.c_int32), ("h", ctypes.c_int32), ("w", ctypes.c_int32), ("c", ctypes.c_int32)]


class Quant(ctypes.Structure):
    _fields_ = [
        ("input_offset", ctypes.c_int32), ("output_offset", ctypes.c_int32),
        ("activation_min", ctypes.c_int32), ("activation_max", ctypes.c_int32),
        ("multiplier", ctypes.POINTER(ctypes.c_int32)), ("shift", ctypes.POINTER(ctypes.c_int32)),
    ]


class ConvParams(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("stride_h", "stride_w", "dilation_h", "dilation_w", "pad_h", "pad_w")]


SANITIZE = os.environ.get("EP_SANITIZE") == "1"  # set by the sanitizer run of the kernel tests


def build_kernel_lib(out: Path, *extra_flags: str) -> ctypes.CDLL:
    """Every kernels_c source compiled for the host into one shared library."""
    sources = sorted(str(p) for p in (KERNELS / "src").glob("*.c"))
    flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"] if SANITIZE else []
    subprocess.run(
        ["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-I", str(KERNELS / "include"),
         *flags, *extra_flags, *sources, "-lm", "-o", str(out)],
        check=True,
    )
    return ctypes.CDLL(str(out))


def ptr(a: np.ndarray, ctype):
    return a.ctypes.data_as(ctypes.POINTER(ctype))


def tflm(model: bytes, *inputs: np.ndarray) -> np.ndarray:
    """Run a .tflite in TFLite Micro's Python interpreter (the bit-exact oracle); first output."""
    from tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(model, arena_size=256 * 1024)
    for i, x in enumerate(inputs):
        it.set_input(x, i)
    it.invoke()
    return it.get_output(0)


def random_quant(rng, out_channels, fan_in):
    in_scale = float(rng.uniform(0.005, 0.1))
    in_zp = int(rng.integers(-128, 128))
    f_scales = rng.uniform(0.001, 0.02, out_channels).astype(np.float32)
    # An output scale near the accumulator's spread: some outputs saturate, most do not.
    out_scale = float(in_scale * f_scales.mean() * 64 * np.sqrt(fan_in) * rng.uniform(0.2, 2.0))
    out_zp = int(rng.integers(-128, 128))
    return in_scale, in_zp, f_scales, out_scale, out_zp


def quant_struct(in_scale, in_zp, f_scales, out_scale, out_zp, activation, keep):
    mult, shift = Q.per_channel_multipliers(in_scale, f_scales, out_scale)
    lo, hi = Q.activation_range(activation, np.float32(out_scale), out_zp)
    keep += [mult, shift]
    return Quant(-in_zp, out_zp, lo, hi, ptr(mult, ctypes.c_int32), ptr(shift, ctypes.c_int32))


def conv_tensors(rng, in_shape, w_shape, out_shape, in_scale, in_zp, f_scales, out_scale, out_zp, w_axis):
    w = rng.integers(-127, 128, w_shape).astype(np.int8)
    w[rng.random(w_shape) < rng.uniform(0, 0.9)] = 0  # pruned weights: zeros must be exact too
    n_out = len(f_scales)
    bias = rng.integers(-3000, 3000, n_out).astype(np.int32)
    tensors = [
        TensorSpec(in_shape, scale=in_scale, zero_point=in_zp, name="input"),
        TensorSpec(w.shape, scale=f_scales, zero_point=np.zeros(n_out, np.int64), quantized_dimension=w_axis, data=w, name="weights"),
        TensorSpec((n_out,), np.int32, scale=(in_scale * f_scales).astype(np.float32), zero_point=np.zeros(n_out, np.int64), data=bias, name="bias"),
        TensorSpec(out_shape, scale=out_scale, zero_point=out_zp, name="output"),
    ]
    return tensors, w, bias


def random_conv_case(rng, depthwise: bool):
    """A random CONV_2D or DEPTHWISE_CONV_2D geometry (small shapes, all strides, dilations, paddings)."""
    while True:
        in_h, in_w = (int(v) for v in rng.integers(1, 13, 2))
        k_h, k_w = (int(v) for v in rng.choice([1, 2, 3, 5], 2))
        s_h, s_w = (int(v) for v in rng.integers(1, 4, 2))
        d_h, d_w = (int(v) for v in rng.choice([1, 1, 2], 2))
        padding = str(rng.choice(["SAME", "VALID"]))
        out_h = Q.conv_output_size(in_h, k_h, s_h, d_h, padding)
        out_w = Q.conv_output_size(in_w, k_w, s_w, d_w, padding)
        if out_h > 0 and out_w > 0:
            break
    in_c = int(rng.integers(1, 9))
    mult = int(rng.choice([1, 1, 2, 3])) if depthwise else 1
    out_c = in_c * mult if depthwise else int(rng.integers(1, 9))
    activation = str(rng.choice(["NONE", "RELU", "RELU6"]))
    return dict(in_h=in_h, in_w=in_w, in_c=in_c, out_c=out_c, k_h=k_h, k_w=k_w, s_h=s_h, s_w=s_w, d_h=d_h, d_w=d_w,
                padding=padding, out_h=out_h, out_w=out_w, activation=activation, mult=mult)
