"""Parameters of the int8 SOFTMAX, LOGISTIC and TANH kernels, computed as TFLite Micro's Prepare does.

These ops run gemmlowp's fixed-point exp/logistic/tanh on a rescaled input. The rescaling
multiplier, shift and the saturation radius come from the float32 scales (and beta) in double
precision; every step below mirrors TFLM's Prepare (softmax_common.cc CalculateSoftmaxParams,
logistic_common.cc, tanh.cc CalculateArithmeticOpData) so the kernels stay bit-exact with it.

What TFLM requires of the tensors (int8 in, int8 out):
- SOFTMAX: output zero point -128 and output scale exactly float32(1/256) (or an int16 output:
  -32768 and 1/65536); beta * input scale must be large enough that beta * scale * 2^26 > 1.
- LOGISTIC: output zero point -128. The output scale is not checked; the kernel always produces
  values in units of 1/256 (what TFLite's converter writes).
- TANH: nothing is checked; the kernel always produces values in units of 1/128 around 0 (the
  converter writes scale 1/128, zero point 0), whatever the output tensor says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeprune.compile.quant import _f64, _round_half_away, quantize_multiplier

# Integer bits of the fixed-point input to exp() (softmax) and to logistic()/tanh().
SOFTMAX_SCALED_DIFF_INTEGER_BITS = 5
LOGISTIC_TANH_INPUT_INTEGER_BITS = 4


@dataclass(frozen=True)
class SoftmaxParams:
    """Fields of ep_softmax_s8_params_t."""

    input_multiplier: int
    input_left_shift: int
    diff_min: int  # differences from the row maximum below this contribute exp() = 0


@dataclass(frozen=True)
class LogisticTanhParams:
    """Fields of ep_logistic_tanh_s8_params_t (shared by LOGISTIC and TANH)."""

    input_zero_point: int
    input_range_radius: int  # |input - zero point| >= radius saturates the output
    input_multiplier: int
    input_left_shift: int


def calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31) -> int:
    """TFLite's CalculateInputRadius: the largest |input| whose rescaled value still fits."""
    max_input_rescaled = (
        1.0 * ((1 << input_integer_bits) - 1) * (1 << (total_signed_bits - input_integer_bits)) / 2.0**input_left_shift
    )
    return int(math.floor(max_input_rescaled))


def softmax_params(input_scale: float, beta: float = 1.0, output_scale: float = 1.0 / 256,
                   output_zero_point: int = -128, output_dtype=np.int8) -> SoftmaxParams:
    """SOFTMAX int8 -> int8 (or int16): PreprocessSoftmaxScaling with 5 integer bits, then the radius.

    TFLM requires an int8 output of scale exactly 1/256, zero point -128, or an int16 output of
    scale 1/65536 (to 0.1%), zero point -32768. The parameters are the same for both."""
    if np.dtype(output_dtype) == np.int16:
        ok = output_zero_point == -32768 and abs(np.float32(output_scale) - np.float32(1 / 65536)) <= np.float32(0.001 / 65536)
    else:
        ok = output_zero_point == -128 and np.float32(output_scale) == np.float32(1.0 / 256)
    if not ok:
        raise ValueError(f"{np.dtype(output_dtype).name} SOFTMAX output quantization not accepted by TFLM: "
                         f"scale {output_scale}, zero point {output_zero_point}")
    bits = SOFTMAX_SCALED_DIFF_INTEGER_BITS
    real = min(_f64(beta, "beta") * _f64(input_scale, "input scale") * (1 << (31 - bits)), (1 << 31) - 1.0)
    if not real > 1.0:  # QuantizeMultiplierGreaterThanOne's check
        raise ValueError(f"beta * input scale too small for int8 SOFTMAX: {beta} * {input_scale}")
    multiplier, shift = quantize_multiplier(real)
    if shift < 0:
        raise ValueError(f"int8 SOFTMAX input multiplier has a negative shift ({shift})")
    return SoftmaxParams(multiplier, shift, -calculate_input_radius(bits, shift))


def _logistic_tanh_params(input_scale: float, input_zero_point: int) -> LogisticTanhParams:
    bits = LOGISTIC_TANH_INPUT_INTEGER_BITS
    real = _f64(input_scale, "input scale") * float(1 << (31 - bits))
    # frexp and a plain round, no renormalization: a float32 scale times 2^27 has at most 24
    # significant bits, so q * 2^31 is an exact integer below 2^31.
    q, shift = math.frexp(real)
    multiplier = _round_half_away(q * (1 << 31))
    radius = calculate_input_radius(bits, shift)
    # Below scale 2^-28 the radius no longer fits an int (TFLM's conversion overflows): refuse.
    if not 0 < multiplier < (1 << 31) or radius > (1 << 31) - 1:
        raise ValueError(f"input scale {input_scale} out of range for int8 LOGISTIC/TANH")
    return LogisticTanhParams(int(input_zero_point), radius, multiplier, shift)


def logistic_params(input_scale: float, input_zero_point: int, output_zero_point: int = -128) -> LogisticTanhParams:
    """LOGISTIC int8 -> int8. TFLM checks only the output zero point (-128)."""
    if output_zero_point != -128:
        raise ValueError(f"int8 LOGISTIC needs output zero point -128, got {output_zero_point}")
    return _logistic_tanh_params(input_scale, input_zero_point)


def tanh_params(input_scale: float, input_zero_point: int) -> LogisticTanhParams:
    """TANH int8 -> int8. TFLM checks nothing about the output; it is always scale 1/128, zero point 0."""
    return _logistic_tanh_params(input_scale, input_zero_point)
