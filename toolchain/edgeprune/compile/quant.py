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
    if not (math.isfinite(real_multiplier) and real_multiplier >= 0.0):
        raise ValueError(f"multiplier must be finite and >= 0, got {real_multiplier}")
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
    """Effective scale input*filter/output per channel, in double from the float32 scales.

    A filter scale may be 0 (an all-zero channel: the multiplier is then 0, as in TFLM)."""
    in_scale, out_scale = _f64(input_scale, "input scale"), _f64(output_scale, "output scale")
    mults, shifts = [], []
    for fs in np.atleast_1d(np.asarray(filter_scales, dtype=np.float32)):
        if not (math.isfinite(float(fs)) and fs >= 0):
            raise ValueError(f"filter scales must be finite and >= 0, got {float(fs)}")
        real = in_scale * float(fs) / out_scale
        m, s = quantize_multiplier(real)
        mults.append(m)
        shifts.append(s)
    return np.array(mults, dtype=np.int32), np.array(shifts, dtype=np.int32)


def activation_range(activation: str, output_scale: float, output_zero_point: int) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized for int8 (float32 division, round half away)."""
    _f64(output_scale, "output scale")

    def quantize(value: float) -> int:
        return output_zero_point + _round_half_away(float(np.float32(value) / np.float32(output_scale)))

    if activation == "RELU":
        return max(INT8_MIN, quantize(0.0)), INT8_MAX
    if activation == "RELU6":
        return max(INT8_MIN, quantize(0.0)), min(INT8_MAX, quantize(6.0))
    if activation == "RELU_N1_TO_1":
        return max(INT8_MIN, quantize(-1.0)), min(INT8_MAX, quantize(1.0))
    if activation != "NONE":  # a misspelt name would otherwise silently mean no clamping
        raise ValueError(f"unknown fused activation {activation!r} (NONE, RELU, RELU6, RELU_N1_TO_1)")
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


# Parameters of the other int8 ops (kernels_c/include/ep_ops_s8.h): each mirrors that op's Prepare in
# TFLM, in double from the float32 scales. The dicts' keys are the C structs' field names.


def _f64(scale: float, what: str = "scale") -> float:
    """A tensor scale as TFLM sees it: a float32 widened to double. It must be finite and > 0 as a float32."""
    value = float(np.float32(scale))
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{what} must be a finite float32 > 0, got {scale}")
    return value


def _check_left_shift(shift: int, max_abs_input: int, op: str) -> None:
    """Refuse a rescale whose left shift could overflow int32 on the op's largest input.

    TFLM shifts the int32 input left by a positive shift before the multiply; beyond 2^31 that is
    undefined in TFLM and wraps in our kernels, so no such model is worth compiling."""
    if shift > 0 and max_abs_input << shift >= 1 << 31:
        raise ValueError(f"{op}: input/output scale ratio too large (the rescale shifts left by {shift}; "
                         f"at most {31 - max_abs_input.bit_length()} keeps int32 from overflowing)")


def dims4(shape) -> tuple[int, int, int, int]:
    """A shape of rank <= 4 right-aligned into (n, h, w, c), leading dims 1 (numpy broadcasting)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) > 4:
        raise ValueError(f"rank {len(shape)} > 4")
    return (1,) * (4 - len(shape)) + shape  # type: ignore[return-value]


def pool_params(input_hw: tuple[int, int], filter_hw: tuple[int, int], stride_hw: tuple[int, int], padding: str,
                activation: str, output_scale: float, output_zero_point: int) -> dict[str, int]:
    """ep_pool_params_t for AVERAGE_POOL_2D / MAX_POOL_2D (TFLM pads like a dilation-1 conv)."""
    if min(*filter_hw, *stride_hw) < 1:
        raise ValueError(f"pool filter {filter_hw} and stride {stride_hw} must be >= 1")
    pads = []
    for size, k, s in zip(input_hw, filter_hw, stride_hw):
        out = conv_output_size(size, k, s, 1, padding)
        pads.append(conv_padding(size, k, s, 1, out, padding))
    lo, hi = activation_range(activation, output_scale, output_zero_point)
    return dict(filter_h=filter_hw[0], filter_w=filter_hw[1], stride_h=stride_hw[0], stride_w=stride_hw[1],
                pad_h=pads[0], pad_w=pads[1], activation_min=lo, activation_max=hi)


def add_params(input1_scale: float, input1_zero_point: int, input2_scale: float, input2_zero_point: int,
               output_scale: float, output_zero_point: int, activation: str = "NONE") -> dict[str, int]:
    """ep_add_params_t: TFLM's int8 ADD rescales both inputs to twice the larger scale over 2^20."""
    left_shift = 20
    scale1, scale2 = _f64(input1_scale, "input1 scale"), _f64(input2_scale, "input2 scale")
    twice_max = 2 * max(scale1, scale2)
    m1, s1 = quantize_multiplier(scale1 / twice_max)
    m2, s2 = quantize_multiplier(scale2 / twice_max)
    mo, so = quantize_multiplier(twice_max / ((1 << left_shift) * _f64(output_scale, "output scale")))
    if so > 0:
        raise ValueError("ADD output scale too small: TFLM requires a rescale below 1")
    lo, hi = activation_range(activation, output_scale, output_zero_point)
    return dict(input1_offset=-int(input1_zero_point), input2_offset=-int(input2_zero_point), left_shift=left_shift,
                input1_multiplier=m1, input1_shift=s1, input2_multiplier=m2, input2_shift=s2,
                output_multiplier=mo, output_shift=so, output_offset=int(output_zero_point),
                activation_min=lo, activation_max=hi)


def mul_params(input1_scale: float, input1_zero_point: int, input2_scale: float, input2_zero_point: int,
               output_scale: float, output_zero_point: int, activation: str = "NONE") -> dict[str, int]:
    """ep_mul_params_t: one rescale by input1 * input2 / output."""
    m, s = quantize_multiplier(_f64(input1_scale, "input1 scale") * _f64(input2_scale, "input2 scale")
                               / _f64(output_scale, "output scale"))
    _check_left_shift(s, 255 * 255, "MUL")  # the product of two offset int8 values
    lo, hi = activation_range(activation, output_scale, output_zero_point)
    return dict(input1_offset=-int(input1_zero_point), input2_offset=-int(input2_zero_point),
                output_multiplier=m, output_shift=s, output_offset=int(output_zero_point),
                activation_min=lo, activation_max=hi)


def mean_params(input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int,
                count: int) -> dict[str, int]:
    """ep_mean_params_t for MEAN over `count` elements (h * w), as TFLM's QuantizedMeanOrSum.

    TFLM folds 1/count into the input/output multiplier at run time: multiply by 2^shift with
    shift = floor(log2(count)) (at most 32, and no lower than the multiplier allows), divide by
    count with integer truncation, and take shift off the exponent.
    """
    count = int(count)
    if not 1 <= count < 1 << 23:  # the kernel's int32 sum holds up to 256 * count
        raise ValueError(f"MEAN over {count} elements: the int8 kernel needs 1 to 2^23 - 1")
    m, s = quantize_multiplier(_f64(input_scale, "input scale") / _f64(output_scale, "output scale"))
    shift = min(count.bit_length() - 1, 32, 31 + s)
    multiplier = (m << shift) // count
    _check_left_shift(s - shift, 255 * count, "MEAN")
    return dict(input_zero_point=int(input_zero_point), output_zero_point=int(output_zero_point),
                multiplier=multiplier, shift=s - shift)


def requantize_params(input_scale: float, input_zero_point: int, output_scale: float,
                      output_zero_point: int) -> dict[str, int]:
    """ep_requantize_s8's arguments for an int8 -> int8 QUANTIZE."""
    m, s = quantize_multiplier(_f64(input_scale, "input scale") / _f64(output_scale, "output scale"))
    _check_left_shift(s, 255, "QUANTIZE")  # an int8 value minus its zero point
    return dict(input_zero_point=int(input_zero_point), multiplier=m, shift=s,
                output_zero_point=int(output_zero_point))


def pad_paddings(paddings) -> list[int]:
    """TFLite's [rank, 2] paddings, rank <= 4, as ep_pad_s8's 8 values (leading dims unpadded)."""
    rows = [[int(a), int(b)] for a, b in np.asarray(paddings).reshape(-1, 2)]
    if len(rows) > 4:
        raise ValueError(f"PAD of rank {len(rows)} > 4")
    if any(v < 0 for row in rows for v in row):
        raise ValueError(f"negative paddings {rows}")
    return [v for row in [[0, 0]] * (4 - len(rows)) + rows for v in row]


def concatenation_sizes(shapes, axis: int) -> tuple[int, list[int]]:
    """ep_concatenation_s8's outer_size and per-input copy_sizes for inputs of the given shapes."""
    rank = len(shapes[0])
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    axis = axis + rank if axis < 0 else axis
    for s in shapes:
        if len(s) != rank or any(int(a) != int(b) for i, (a, b) in enumerate(zip(s, shapes[0])) if i != axis):
            raise ValueError(f"CONCATENATION inputs {list(shapes)} differ outside axis {axis}")
    outer = int(np.prod(shapes[0][:axis], dtype=np.int64))
    return outer, [int(np.prod(s[axis:], dtype=np.int64)) for s in shapes]
