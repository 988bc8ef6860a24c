/* Shared pieces of the Helium (MVE) kernels (*_mve.c): TFLite's requantization on four int32 lanes.
 *
 * The MVE code is compiled whenever the compiler targets integer MVE (bit 0 of __ARM_FEATURE_MVE,
 * e.g. -mcpu=cortex-m55), also in builds forced to EP_BACKEND_PORTABLE, so one program can compare
 * both; elsewhere EP_MVE_ENABLED stays undefined and the files compile to nothing.
 *
 * Input offset: every kernel multiplies the raw int8 input and adds input_offset * sum(w) apart
 * (the convolutions fold it into the bias once per call, with padding taps holding -input_offset so
 * they still add nothing; FULLY_CONNECTED adds it in the same accumulators).
 */
#ifndef EP_MVE_HELPERS_H_
#define EP_MVE_HELPERS_H_

#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#define EP_MVE_ENABLED 1

#include <arm_mve.h>
#include <stddef.h>
#include <stdint.h>

#include "ep_types.h"

#if defined(__GNUC__)
#define EP_MVE_INLINE static inline __attribute__((always_inline))
#define EP_MVE_NOINLINE __attribute__((noinline))
#else
#define EP_MVE_INLINE static inline
#define EP_MVE_NOINLINE
#endif

/* The padding value -input_offset must be an int8: true for every int8 zero point. */
static inline int ep_mve_offset_ok(int32_t input_offset)
{
    return input_offset >= -127 && input_offset <= 128;
}

/* TFLite's MultiplyByQuantizedMultiplier on four lanes, each with its own multiplier and shift.
 * VQRDMULH computes sat((2ab + 2^31) >> 32) == floor((ab + 2^30) / 2^31), which equals TFLite's
 * SaturatingRoundingDoublingHighMul for every input (see ep_fixedpoint.h), saturation included.
 * VRSHL rounds half up; subtracting 1 from negative values first (only where there is a right
 * shift) makes it round half away from zero like RoundingDivideByPOT. The subtraction saturates
 * at INT32_MIN, which is exactly divisible, so its result is still right. */
EP_MVE_INLINE int32x4_t ep_mve_mbqm(int32x4_t x, int32x4_t multiplier, int32x4_t shift)
{
    const int32x4_t zero = vdupq_n_s32(0);
    const int32x4_t right = vminq_s32(shift, zero); /* <= 0: VRSHL shifts right by -right */
    x = vqrdmulhq_s32(vshlq_s32(x, vmaxq_s32(shift, zero)), multiplier);
    x = vqaddq_s32(x, vshrq_n_s32(vandq_s32(x, right), 31)); /* -1 where x < 0 and right < 0 */
    return vrshlq_s32(x, right);
}

/* The same with one multiplier and shift for all four lanes. */
EP_MVE_INLINE int32x4_t ep_mve_mbqm_n(int32x4_t x, int32_t multiplier, int32_t shift)
{
    if (shift > 0) {
        return vqrdmulhq_n_s32(vshlq_r_s32(x, shift), multiplier);
    }
    x = vqrdmulhq_n_s32(x, multiplier);
    if (shift < 0) {
        x = vqaddq_s32(x, vshrq_n_s32(x, 31));
        x = vrshlq_n_s32(x, shift);
    }
    return x;
}

/* Output offset and the fused activation range (callers keep these in locals: int8 stores may
 * alias ep_quant_t, so reading them through the pointer in a loop would reload them every time). */
EP_MVE_INLINE int32x4_t ep_mve_clamp(int32x4_t x, int32_t output_offset, int32_t activation_min,
                                     int32_t activation_max)
{
    x = vaddq_n_s32(x, output_offset);
    x = vmaxq_s32(x, vdupq_n_s32(activation_min));
    return vminq_s32(x, vdupq_n_s32(activation_max));
}

/* out[r] = bias[r] + input_offset * sum(row r) for n contiguous rows of k weights, row_stride apart. */
static inline void ep_mve_offset_bias(const int8_t *filter, int32_t n, int32_t k, int32_t row_stride,
                                      const int32_t *bias, int32_t input_offset, int32_t *out)
{
    for (int32_t r = 0; r < n; ++r) {
        const int8_t *w = filter + r * row_stride;
        int32_t sum = 0, i = 0;
        for (; i + 16 <= k; i += 16) {
            sum = vaddvaq_s8(sum, vldrbq_s8(w + i));
        }
        if (i < k) {
            sum = vaddvaq_s8(sum, vldrbq_z_s8(w + i, vctp8q((uint32_t)(k - i))));
        }
        out[r] = (bias ? bias[r] : 0) + input_offset * sum;
    }
}

/* Short copies and fills for im2col: window rows are often a few bytes, too short for a call. */
EP_MVE_INLINE void ep_mve_copy(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        vstrbq_s8(dst + i, vldrbq_s8(src + i));
    }
    if (i < n) {
        const mve_pred16_t p = vctp8q((uint32_t)(n - i));
        vstrbq_p_s8(dst + i, vldrbq_z_s8(src + i, p), p);
    }
}

EP_MVE_INLINE void ep_mve_fill(int8_t *dst, int8_t value, int32_t n)
{
    const int8x16_t v = vdupq_n_s8(value);
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        vstrbq_s8(dst + i, v);
    }
    if (i < n) {
        vstrbq_p_s8(dst + i, v, vctp8q((uint32_t)(n - i)));
    }
}

/* The window of one output pixel, (k_h, k_w, c) in the input's NHWC order, gathered into buf with
 * out-of-image taps set to pad. */
static inline void ep_mve_im2col(const ep_conv_params_t *params, const ep_dims_t *input_dims, const int8_t *image,
                                 int32_t k_h, int32_t k_w, int32_t in_y0, int32_t in_x0, int8_t pad, int8_t *buf)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t row_len = k_w * in_c;
    const int x_inside = in_x0 >= 0 && in_x0 + params->dilation_w * (k_w - 1) < in_w;
    const int row_contiguous = params->dilation_w == 1 || k_w == 1;
    for (int32_t ky = 0; ky < k_h; ++ky) {
        const int32_t iy = in_y0 + params->dilation_h * ky;
        int8_t *dst = buf + ky * row_len;
        if (iy < 0 || iy >= in_h) {
            ep_mve_fill(dst, pad, row_len);
        } else if (x_inside && row_contiguous) {
            ep_mve_copy(dst, &image[(iy * in_w + in_x0) * in_c], row_len);
        } else {
            for (int32_t kx = 0; kx < k_w; ++kx) {
                const int32_t ix = in_x0 + params->dilation_w * kx;
                if (ix < 0 || ix >= in_w) {
                    ep_mve_fill(dst + kx * in_c, pad, in_c);
                } else {
                    ep_mve_copy(dst + kx * in_c, &image[(iy * in_w + ix) * in_c], in_c);
                }
            }
        }
    }
}

#endif /* integer MVE */
#endif /* EP_MVE_HELPERS_H_ */
