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

#endif /* EP_FIXEDPOINT_H_ */
