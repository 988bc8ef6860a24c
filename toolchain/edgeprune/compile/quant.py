"""Fixed-point requantization parameters, computed exactly as TensorFlow Lite Micro does.

The kernels take a multiplier and shift per output channel; any difference here (a float
instead of a double, numpy's round-half-to-even instead of C's round-half-away) would cost
bit-exactness, so each step mirrors TFLite's QuantizeMultiplier and activation-range code.
"""

from __future__ import annotations

import math

import numpy as np

INT8_MIN, INT8_MAX = -128, 127


def _round_half_away(x: float) -> int:
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = multiplier * 2^shift / 2^31, multiplier in [2^30, 2^31)."""
    if real_multiplier == 0.0:
        return 0, 0
    q, shift = math.frexp(real_multiplier)
    q_fixed = _round_half_away(q * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def per_channel_multipliers(input_scale: float, filter_scales, output_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Effective scale input*filter/output per channel, in double from the float32 scales."""
    mults, shifts = [], []
    for fs in np.atleast_1d(np.asarray(filter_scales, dtype=np.float32)):
        real = float(np.float32(input_scale)) * float(fs) / float(np.float32(output_scale))
        m, s = quantize_multiplier(real)
        mults.append(m)
        shifts.append(s)
    return np.array(mults, dtype=np.int32), np.array(shifts, dtype=np.int32)


def activation_range(activation: str, output_scale: float, output_zero_point: int) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized for int8 (float32 division, round half away)."""

    def quantize(value: float) -> int:
        return output_zero_point + _round_half_away(float(np.float32(value) / np.float32(output_scale)))

    if activation == "RELU":
        return max(INT8_MIN, quantize(0.0)), INT8_MAX
    if activation == "RELU6":
        return max(INT8_MIN, quantize(0.0)), min(INT8_MAX, quantize(6.0))
    if activation == "RELU_N1_TO_1":
        return max(INT8_MIN, quantize(-1.0)), min(INT8_MAX, quantize(1.0))
    return INT8_MIN, INT8_MAX


def conv_output_size(in_size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    effective = (kernel - 1) * dilation + 1
    if padding == "SAME":
        return (in_size + stride - 1) // stride
    return (in_size - effective + stride) // stride


def conv_padding(in_size: int, kernel: int, stride: int, dilation: int, out_size: int, padding: str) -> int:
    """Top/left padding (TFLite's ComputePaddingWithOffset: the odd pixel goes bottom/right)."""
    if padding != "SAME":
        return 0
    effective = (kernel - 1) * dilation + 1
    total = max(0, (out_size - 1) * stride + effective - in_size)
    return total // 2
