/* gemmlowp's scalar fixed-point math (exp, logistic, tanh, reciprocal) as TFLite Micro uses it.
 *
 * Values are raw int32 fixed-point numbers with `ib` integer bits (gemmlowp's
 * FixedPoint<int32_t, ib>: value = raw / 2^(31 - ib)); the C++ templates' compile-time integer
 * bits become arguments, which the compiler folds because every call passes a constant.
 * Results match gemmlowp bit for bit. gemmlowp's plain +, - and unary - are unchecked int32
 * operations; here they wrap through uint32 so that no input is undefined behaviour (on the
 * inputs TFLite feeds them they never overflow anyway).
 */
#ifndef EP_FIXEDPOINT_GEMMLOWP_H_
#define EP_FIXEDPOINT_GEMMLOWP_H_

#include <stdint.h>

#include "ep_fixedpoint.h"

static inline int32_t ep_gl_add(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

static inline int32_t ep_gl_sub(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a - (uint32_t)b);
}

static inline int32_t ep_gl_neg(int32_t a)
{
    return (int32_t)(0u - (uint32_t)a);
}

/* Fixed-point product: the integer bits of the operands add up. */
static inline int32_t ep_gl_mul(int32_t a, int32_t b)
{
    return ep_saturating_rounding_doubling_high_mul(a, b);
}

/* SaturatingRoundingMultiplyByPOT: a saturating left shift for exponent > 0, a rounding right
 * shift for exponent < 0. */
static inline int32_t ep_gl_mul_by_pot(int32_t x, int32_t exponent)
{
    if (exponent < 0) {
        return ep_rounding_divide_by_pot(x, -exponent);
    }
    if (exponent == 0) {
        return x;
    }
    const int32_t threshold = (int32_t)((1LL << (31 - exponent)) - 1);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return (int32_t)((int64_t)x * (1LL << exponent));
}

/* Rescale<dst_ib>(x with src_ib integer bits). */
static inline int32_t ep_gl_rescale(int32_t x, int32_t src_ib, int32_t dst_ib)
{
    return ep_gl_mul_by_pot(x, src_ib - dst_ib);
}

/* (a + b) / 2 rounded half away from zero (VRHADD). */
static inline int32_t ep_gl_rounding_half_sum(int32_t a, int32_t b)
{
    const int64_t sum = (int64_t)a + (int64_t)b;
    return (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
}

static inline int32_t ep_gl_clz32(uint32_t x)
{
    if (x == 0) {
        return 32;
    }
#if defined(__GNUC__)
    return __builtin_clz(x);
#else
    int32_t n = 0;
    while (!(x & 0x80000000u)) {
        x <<= 1;
        n++;
    }
    return n;
#endif
}

/* exp(a) for a in [-1/4, 0), Q0 in and out: Taylor expansion around -1/8. */
static inline int32_t ep_gl_exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a)
{
    const int32_t exp_minus_one_eighth = 1895147668;
    const int32_t one_third = 715827883;
    const int32_t x = ep_gl_add(a, 1 << 28); /* x = a + 1/8 */
    const int32_t x2 = ep_gl_mul(x, x);
    const int32_t x3 = ep_gl_mul(x2, x);
    const int32_t x4 = ep_gl_mul(x2, x2);
    const int32_t x4_over_4 = ep_gl_mul_by_pot(x4, -2);
    const int32_t poly = ep_gl_mul_by_pot(ep_gl_add(ep_gl_mul(ep_gl_add(x4_over_4, x3), one_third), x2), -1);
    return ep_gl_add(exp_minus_one_eighth, ep_gl_mul(exp_minus_one_eighth, ep_gl_add(x, poly)));
}

/* exp(a) for a <= 0 with ib integer bits; result in Q0. The fractional quarter goes through the
 * polynomial, each integer/quarter bit of -a multiplies by a constant exp(-2^k). */
static inline int32_t ep_gl_exp_on_negative_values(int32_t a, int32_t ib)
{
    static const int32_t multipliers[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    const int32_t frac_bits = 31 - ib;
    const int32_t one_quarter = (int32_t)1 << (frac_bits - 2);
    const int32_t a_mod_quarter_minus_one_quarter = ep_gl_sub(a & (one_quarter - 1), one_quarter);
    int32_t result = ep_gl_exp_on_interval_between_negative_one_quarter_and_0_excl(
        ep_gl_rescale(a_mod_quarter_minus_one_quarter, ib, 0));
    const int32_t remainder = ep_gl_sub(a_mod_quarter_minus_one_quarter, a);
    int32_t k;
    for (k = -2; k <= 4; k++) { /* multiplier for exp(-2^k), used when ib > k */
        if (ib > k && (remainder & ((int32_t)1 << (frac_bits + k)))) {
            result = ep_gl_mul(result, multipliers[k + 2]);
        }
    }
    if (ib > 5 && a < -((int32_t)1 << (36 - ib))) { /* below -32: exp underflows to 0 */
        result = 0;
    }
    if (a == 0) {
        result = INT32_MAX;
    }
    return result;
}

/* 3 Newton-Raphson steps for 1 / half_denominator in Q2, from the 48/17 - 32/17 d estimate. */
static inline int32_t ep_gl_newton_reciprocal_q2(int32_t half_denominator)
{
    const int32_t q2_one = 1 << 29;
    int32_t x = ep_gl_add(1515870810, ep_gl_mul(half_denominator, -1010580540));
    int i;
    for (i = 0; i < 3; i++) {
        const int32_t one_minus_dx = ep_gl_sub(q2_one, ep_gl_mul(half_denominator, x));
        x = ep_gl_add(x, ep_gl_rescale(ep_gl_mul(x, one_minus_dx), 4, 2));
    }
    return x;
}

/* 1 / (1 + a) for a in [0, 1), Q0 in and out. */
static inline int32_t ep_gl_one_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    const int32_t x = ep_gl_newton_reciprocal_q2(ep_gl_rounding_half_sum(a, INT32_MAX));
    return ep_gl_rescale(x, 1, 0); /* x / 2, read as Q1, to Q0 */
}

/* (1 - a) / (1 + a) for a in [0, 1), Q0 in and out. */
static inline int32_t ep_gl_one_minus_x_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    const int32_t x = ep_gl_newton_reciprocal_q2(ep_gl_rounding_half_sum(a, INT32_MAX));
    return ep_gl_rescale(ep_gl_sub(x, 1 << 29), 2, 0);
}

/* logistic(a) = 1 / (1 + exp(-a)), a with ib integer bits, result in Q0. */
static inline int32_t ep_gl_logistic(int32_t a, int32_t ib)
{
    if (a == 0) {
        return 1 << 30;
    }
    const int32_t abs_a = a > 0 ? a : ep_gl_neg(a);
    const int32_t if_positive = ep_gl_one_over_one_plus_x_for_x_in_0_1(ep_gl_exp_on_negative_values(ep_gl_neg(abs_a), ib));
    return a > 0 ? if_positive : ep_gl_sub(INT32_MAX, if_positive);
}

/* tanh(a) = (1 - exp(-2|a|)) / (1 + exp(-2|a|)) with a's sign; a with ib integer bits, Q0 out. */
static inline int32_t ep_gl_tanh(int32_t a, int32_t ib)
{
    if (a == 0) {
        return 0;
    }
    const int32_t neg_abs_a = a < 0 ? a : ep_gl_neg(a);
    /* The same raw value read with one more integer bit is 2 * (-|a|). */
    const int32_t t = ep_gl_one_minus_x_over_one_plus_x_for_x_in_0_1(ep_gl_exp_on_negative_values(neg_abs_a, ib + 1));
    return a < 0 ? ep_gl_neg(t) : t;
}

/* TFLite's GetReciprocal: 1 / x for x > 0 with x_ib integer bits, as a Q0 value times
 * 2^-num_bits_over_unit. */
static inline int32_t ep_gl_get_reciprocal(int32_t x, int32_t x_ib, int32_t *num_bits_over_unit)
{
    const int32_t headroom_plus_one = ep_gl_clz32((uint32_t)x);
    *num_bits_over_unit = x_ib - headroom_plus_one;
    /* x normalized to [1, 2), minus 1, as Q0 */
    const uint32_t normalized = headroom_plus_one < 32 ? (uint32_t)x << headroom_plus_one : 0u;
    const int32_t shifted_minus_one = (int32_t)(normalized - 0x80000000u);
    return ep_gl_one_over_one_plus_x_for_x_in_0_1(shifted_minus_one);
}

#endif /* EP_FIXEDPOINT_GEMMLOWP_H_ */
