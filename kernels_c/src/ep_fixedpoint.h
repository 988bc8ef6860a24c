/* Fixed-point helpers shared by every int8 op: TFLite Micro's double rounding, exactly.
 *
 * An accumulator is scaled by multiplier * 2^shift / 2^31: first a rounding doubling high
 * multiply (round half away from zero), then a rounding right shift (round half away from
 * zero). Doing the rounding once instead of twice can differ by one LSB, so we keep both.
 */
#ifndef EP_FIXEDPOINT_H_
#define EP_FIXEDPOINT_H_

#include <stdint.h>

static inline int32_t ep_saturating_rounding_doubling_high_mul(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX; /* the only product that overflows */
    }
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
    return (int32_t)((ab + nudge) / (1LL << 31));
}

static inline int32_t ep_rounding_divide_by_pot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)((1LL << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static inline int32_t ep_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left_shift = shift > 0 ? shift : 0;
    const int32_t right_shift = shift > 0 ? 0 : -shift;
    /* TFLite shifts in int32; shifting the unsigned bits gives the same result without UB. */
    const int32_t shifted = (int32_t)((uint32_t)x << left_shift);
    return ep_rounding_divide_by_pot(ep_saturating_rounding_doubling_high_mul(shifted, multiplier), right_shift);
}

static inline int8_t ep_requantize(int32_t acc, int32_t multiplier, int32_t shift, int32_t output_offset,
                                   int32_t activation_min, int32_t activation_max)
{
    int32_t v = ep_multiply_by_quantized_multiplier(acc, multiplier, shift) + output_offset;
    v = v < activation_min ? activation_min : v;
    v = v > activation_max ? activation_max : v;
    return (int8_t)v;
}

/* Cheaper forms of the two functions above with the same result for every input (the DSP kernels
 * use them; tests/test_kernels_dsp.py checks them against the originals). For either sign of ab,
 * truncating (ab + nudge) / 2^31 equals flooring (ab + 2^30) / 2^31: for ab < 0,
 * ceil((ab + 1 - 2^30) / 2^31) == floor((ab + 2^30) / 2^31). So one 64-bit add and an arithmetic
 * shift (SMLAL on Arm) replace the sign-dependent nudge and the division's sign fix-up.
 * Assumes >> of a negative int64 is arithmetic, as in GCC and Clang. */
static inline int32_t ep_saturating_rounding_doubling_high_mul_fast(int32_t a, int32_t b)
{
    if (b == INT32_MIN && a == INT32_MIN) {
        return INT32_MAX;
    }
    return (int32_t)(((int64_t)a * (int64_t)b + (1LL << 30)) >> 31);
}

/* ep_multiply_by_quantized_multiplier for multiplier > 0 and shift = -r, r in [2, 31] (the usual
 * case), with both roundings folded into one. The double rounding is
 * floor((x m + 2^30 + 2^(30 + r) - [x < 0] 2^31) / 2^(31 + r)), because nested floors of divisions
 * by powers of two compose, and with m > 0 the sign of x m + 2^30 may be replaced by that of x.
 * With t = x m + (x < 0 ? -2^30 : 2^30) that is (floor(t / 2^(30 + r)) + 1) >> 1, and for r >= 2
 * the inner floor is the high word of t shifted right by r - 2: SMLAL, then three 32-bit steps. */
static inline int32_t ep_multiply_by_quantized_multiplier_rshift_floor(int32_t x, int32_t multiplier,
                                                                       int32_t right_shift)
{
    /* x < 0 ? -2^30 : 2^30, built from the sign word so that no branch or select is needed. */
    const int32_t sign = x >> 31;
    const uint32_t nudge_lo = ((uint32_t)sign & 0x80000000u) | 0x40000000u;
    const int64_t nudge = (int64_t)(((uint64_t)(uint32_t)sign << 32) | nudge_lo);
    const int64_t t = (int64_t)x * (int64_t)multiplier + nudge;
    return (int32_t)(t >> 32) >> (right_shift - 2);
}

/* The result is (floor + 1) >> 1 of the function above, which kernels may use directly to fold an
 * output offset z in: ((f + 1) >> 1) + z == (f + 1 + 2 z) >> 1 (one SSAT with ASR #1 on Arm). */
static inline int32_t ep_multiply_by_quantized_multiplier_rshift(int32_t x, int32_t multiplier, int32_t right_shift)
{
    return (ep_multiply_by_quantized_multiplier_rshift_floor(x, multiplier, right_shift) + 1) >> 1;
}

/* Whether ep_multiply_by_quantized_multiplier_rshift(x, multiplier, -shift) applies. */
static inline int ep_rshift_form_applies(int32_t multiplier, int32_t shift)
{
    return multiplier > 0 && shift <= -2 && shift >= -31;
}

static inline int8_t ep_requantize_fast(int32_t acc, int32_t multiplier, int32_t shift, int32_t output_offset,
                                        int32_t activation_min, int32_t activation_max)
{
    int32_t v;
    if (ep_rshift_form_applies(multiplier, shift)) {
        v = ep_multiply_by_quantized_multiplier_rshift(acc, multiplier, -shift) + output_offset;
    } else {
        const int32_t left_shift = shift > 0 ? shift : 0;
        const int32_t right_shift = shift > 0 ? 0 : -shift;
        const int32_t shifted = (int32_t)((uint32_t)acc << left_shift);
        v = ep_rounding_divide_by_pot(ep_saturating_rounding_doubling_high_mul_fast(shifted, multiplier),
                                      right_shift) + output_offset;
    }
    v = v < activation_min ? activation_min : v;
    v = v > activation_max ? activation_max : v;
    return (int8_t)v;
}

#endif /* EP_FIXEDPOINT_H_ */
