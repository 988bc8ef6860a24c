/* Shared pieces of the arm64 NEON and NEON dot-product kernels: vector requantization with
 * TFLite Micro's exact double rounding, int8 im2col with zero-point padding, and small copies.
 *
 * The input offset is folded out of the inner loops: sum(w * (x + offset)) equals
 * sum(w * x) + offset * sum(w), exactly in int32 arithmetic (wrapping adds give the true sum
 * whenever it fits int32, which it must for the portable kernel too). A padded input position
 * filled with the input zero point then contributes w * zp + offset * w = 0, as in TFLite.
 *
 * Only included by aarch64 sources, inside their backend guards.
 */
#ifndef EP_NEON_HELPERS_H_
#define EP_NEON_HELPERS_H_

#include <arm_neon.h>
#include <stdint.h>
#include <string.h>

#include "ep_fixedpoint.h"
#include "ep_kernels.h"

/* Requantization of one output channel block.
 *
 * vqrdmulhq_s32 is exactly ep_saturating_rounding_doubling_high_mul, and its result is never
 * INT32_MIN (|a * b| < 2^62 except for INT32_MIN^2, which saturates to INT32_MAX). vrshlq_s32
 * rounds half up; subtracting 1 from negative values first turns that into round half away from
 * zero (ep_rounding_divide_by_pot), and cannot overflow since the value is above INT32_MIN.
 * `fast` is for blocks where every shift is negative (the usual case): no left shift, and the
 * fix-up applies to every lane. Otherwise only lanes with a right shift get the fix-up. */
static inline int32x4_t ep_neon_requant_s32(int32x4_t acc, int32x4_t mult, int32x4_t shift, int fast)
{
    if (fast) {
        acc = vqrdmulhq_s32(acc, mult);
        acc = vsraq_n_s32(acc, acc, 31);
        return vrshlq_s32(acc, shift);
    }
    const int32x4_t zero = vdupq_n_s32(0);
    const int32x4_t right = vminq_s32(shift, zero); /* <= 0: a rounding right shift in vrshlq */
    acc = vshlq_s32(acc, vmaxq_s32(shift, zero));  /* wraps like the portable uint32 shift */
    acc = vqrdmulhq_s32(acc, mult);
    acc = vsraq_n_s32(acc, vandq_s32(acc, right), 31);
    return vrshlq_s32(acc, right);
}

/* Output offset, clamp and narrow of 16 requantized lanes. Saturating to int16 then int8 before
 * the clamp gives the same result as clamping in int32, since the activation range is in int8. */
static inline int8x16_t ep_neon_narrow16(int32x4_t r0, int32x4_t r1, int32x4_t r2, int32x4_t r3, int16x8_t out_off,
                                         int8x16_t act_min, int8x16_t act_max)
{
    const int16x8_t lo = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(r0), r1), out_off);
    const int16x8_t hi = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(r2), r3), out_off);
    const int8x16_t v = vqmovn_high_s16(vqmovn_s16(lo), hi);
    return vminq_s8(vmaxq_s8(v, act_min), act_max);
}

/* The same for 4 lanes (one per output channel), returned in the low 4 bytes. */
static inline int8x8_t ep_neon_narrow4(int32x4_t r, int16x8_t out_off, int8x16_t act_min, int8x16_t act_max)
{
    const int16x8_t h = vqaddq_s16(vcombine_s16(vqmovn_s32(r), vdup_n_s16(0)), out_off);
    const int8x8_t v = vqmovn_s16(h);
    return vmin_s8(vmax_s8(v, vget_low_s8(act_min)), vget_low_s8(act_max));
}

/* Per-call requantization constants. */
typedef struct {
    int16x8_t out_off;
    int8x16_t act_min, act_max;
    int fast; /* every shift < 0 */
} ep_neon_out_t;

static inline ep_neon_out_t ep_neon_out_init(const ep_quant_t *quant, int32_t channels)
{
    ep_neon_out_t o;
    o.out_off = vdupq_n_s16((int16_t)quant->output_offset);
    o.act_min = vdupq_n_s8((int8_t)quant->activation_min);
    o.act_max = vdupq_n_s8((int8_t)quant->activation_max);
    int32x4_t max_shift = vdupq_n_s32(-1);
    int32_t c = 0;
    for (; c + 4 <= channels; c += 4) {
        max_shift = vmaxq_s32(max_shift, vld1q_s32(&quant->shift[c]));
    }
    int32_t m = vmaxvq_s32(max_shift);
    for (; c < channels; ++c) {
        m = quant->shift[c] > m ? quant->shift[c] : m;
    }
    o.fast = m < 0;
    return o;
}

/* Requantize 16 channels (accumulators a0..a3, multipliers and shifts 16-padded) and store the
 * first n (1..16) bytes at dst. */
static inline void ep_neon_store16(int32x4_t a0, int32x4_t a1, int32x4_t a2, int32x4_t a3, const int32_t *mult,
                                   const int32_t *shift, const ep_neon_out_t *o, int8_t *dst, int32_t n)
{
    const int32x4x4_t m = vld1q_s32_x4(mult);
    const int32x4x4_t s = vld1q_s32_x4(shift);
    const int8x16_t v = ep_neon_narrow16(ep_neon_requant_s32(a0, m.val[0], s.val[0], o->fast),
                                         ep_neon_requant_s32(a1, m.val[1], s.val[1], o->fast),
                                         ep_neon_requant_s32(a2, m.val[2], s.val[2], o->fast),
                                         ep_neon_requant_s32(a3, m.val[3], s.val[3], o->fast), o->out_off,
                                         o->act_min, o->act_max);
    if (n == 16) {
        vst1q_s8(dst, v);
    } else {
        int8_t tmp[16];
        vst1q_s8(tmp, v);
        memcpy(dst, tmp, (size_t)n);
    }
}

/* The same for a 4-pixel x 16-channel tile: acc[4 * p + q] = pixel p, channels 4q..4q+3; stores
 * `pixels` pixels `stride` bytes apart, n (1..16) channels each. */
static inline __attribute__((always_inline)) void ep_neon_store_tile(const int32x4_t acc[16], const int32_t *mult,
                                                                     const int32_t *shift, const ep_neon_out_t *o,
                                                                     int8_t *dst, int32_t stride, int32_t pixels,
                                                                     int32_t n)
{
    const int32x4x4_t m = vld1q_s32_x4(mult);
    const int32x4x4_t s = vld1q_s32_x4(shift);
    const int16x8_t out_off = o->out_off;
    const int8x16_t act_min = o->act_min, act_max = o->act_max;
    int8x16_t v[4];
    if (o->fast) {
#pragma GCC unroll 4
        for (int p = 0; p < 4; ++p) {
            v[p] = ep_neon_narrow16(ep_neon_requant_s32(acc[4 * p], m.val[0], s.val[0], 1),
                                    ep_neon_requant_s32(acc[4 * p + 1], m.val[1], s.val[1], 1),
                                    ep_neon_requant_s32(acc[4 * p + 2], m.val[2], s.val[2], 1),
                                    ep_neon_requant_s32(acc[4 * p + 3], m.val[3], s.val[3], 1), out_off, act_min,
                                    act_max);
        }
    } else {
#pragma GCC unroll 4
        for (int p = 0; p < 4; ++p) {
            v[p] = ep_neon_narrow16(ep_neon_requant_s32(acc[4 * p], m.val[0], s.val[0], 0),
                                    ep_neon_requant_s32(acc[4 * p + 1], m.val[1], s.val[1], 0),
                                    ep_neon_requant_s32(acc[4 * p + 2], m.val[2], s.val[2], 0),
                                    ep_neon_requant_s32(acc[4 * p + 3], m.val[3], s.val[3], 0), out_off, act_min,
                                    act_max);
        }
    }
    if (n == 16 && pixels == 4) {
        vst1q_s8(dst, v[0]);
        vst1q_s8(dst + stride, v[1]);
        vst1q_s8(dst + 2 * stride, v[2]);
        vst1q_s8(dst + 3 * stride, v[3]);
        return;
    }
    for (int32_t p = 0; p < pixels; ++p) {
        int8_t tmp[16];
        vst1q_s8(tmp, v[p]);
        memcpy(dst + p * stride, tmp, (size_t)n);
    }
}

/* Multipliers and shifts copied into 16-padded arrays (padding: multiplier 0, shift -1), so
 * channel tails load whole vectors without reading past the caller's arrays. */
static inline void ep_neon_pad_quant(const ep_quant_t *quant, int32_t channels, int32_t padded, int32_t *mult,
                                     int32_t *shift)
{
    int32_t c = 0;
    for (; c + 4 <= channels; c += 4) {
        vst1q_s32(&mult[c], vld1q_s32(&quant->multiplier[c]));
        vst1q_s32(&shift[c], vld1q_s32(&quant->shift[c]));
    }
    for (; c < padded; ++c) {
        mult[c] = c < channels ? quant->multiplier[c] : 0;
        shift[c] = c < channels ? quant->shift[c] : -1;
    }
}

static inline int32_t ep_neon_round_up(int32_t x, int32_t m)
{
    return (x + m - 1) / m * m;
}

/* Copy n bytes with wide loads and stores: memcpy with a run-time size would be a call. */
static inline void ep_neon_copy(int8_t *dst, const int8_t *src, int32_t n)
{
    for (; n >= 16; n -= 16, src += 16, dst += 16) {
        vst1q_s8(dst, vld1q_s8(src));
    }
    if (n >= 8) {
        vst1_s8(dst, vld1_s8(src));
        n -= 8, src += 8, dst += 8;
    }
    for (; n > 0; --n) {
        *dst++ = *src++;
    }
}

static inline void ep_neon_fill(int8_t *dst, int8_t value, int32_t n)
{
    const int8x16_t v = vdupq_n_s8(value);
    for (; n >= 16; n -= 16, dst += 16) {
        vst1q_s8(dst, v);
    }
    for (; n > 0; --n) {
        *dst++ = value;
    }
}

/* One im2col row: the receptive field of output pixel (b, oy, ox) in the filter's (H, W, I)
 * order, K = k_h * k_w * in_c bytes, out-of-image taps filled with the input zero point. */
static inline void ep_neon_im2col_row(const ep_conv_params_t *params, const ep_dims_t *input_dims,
                                      const int8_t *input, int32_t k_h, int32_t k_w, int32_t b, int32_t oy,
                                      int32_t ox, int8_t zero_point, int8_t *row)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t iy0 = oy * params->stride_h - params->pad_h;
    const int32_t ix0 = ox * params->stride_w - params->pad_w;
    const int32_t seg = k_w * in_c;
    for (int32_t ky = 0; ky < k_h; ++ky, row += seg) {
        const int32_t iy = iy0 + params->dilation_h * ky;
        if (iy < 0 || iy >= in_h) {
            ep_neon_fill(row, zero_point, seg);
            continue;
        }
        const int8_t *in_row = &input[(b * in_h + iy) * in_w * in_c];
        if (params->dilation_w == 1 && ix0 >= 0 && ix0 + k_w <= in_w) {
            ep_neon_copy(row, &in_row[ix0 * in_c], seg); /* the whole kernel row is contiguous */
            continue;
        }
        for (int32_t kx = 0; kx < k_w; ++kx) {
            const int32_t ix = ix0 + params->dilation_w * kx;
            if (ix < 0 || ix >= in_w) {
                ep_neon_fill(&row[kx * in_c], zero_point, in_c);
            } else {
                ep_neon_copy(&row[kx * in_c], &in_row[ix * in_c], in_c);
            }
        }
    }
}

/* True when the input pixels themselves are the im2col rows (1x1 kernel, stride 1, no padding). */
static inline int ep_neon_conv_is_pointwise(const ep_conv_params_t *params, const ep_dims_t *input_dims,
                                            const ep_dims_t *filter_dims, const ep_dims_t *output_dims)
{
    return filter_dims->h == 1 && filter_dims->w == 1 && params->stride_h == 1 && params->stride_w == 1 &&
           params->pad_h == 0 && params->pad_w == 0 && output_dims->h == input_dims->h &&
           output_dims->w == input_dims->w;
}


/* acc += the 16 products a[i] * b[i], summed four by four into the 4 lanes (the lane split
 * differs between the two forms, only the total over lanes matters). `sdot` selects SDOT
 * (Armv8.2 dot product); otherwise widening multiplies, exact since int8 products fit int16. */
static inline int32x4_t ep_neon_dot16(int32x4_t acc, int8x16_t a, int8x16_t b, int sdot)
{
#if defined(__ARM_FEATURE_DOTPROD)
    if (sdot) {
        return vdotq_s32(acc, a, b);
    }
#endif
    (void)sdot;
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
}

/* acc += the sum of the 16 bytes of a (over the 4 lanes). */
static inline int32x4_t ep_neon_sum16(int32x4_t acc, int8x16_t a, int sdot)
{
#if defined(__ARM_FEATURE_DOTPROD)
    if (sdot) {
        return vdotq_s32(acc, a, vdupq_n_s8(1));
    }
#endif
    (void)sdot;
    return vpadalq_s16(acc, vpaddlq_s8(a));
}

/* Sums over the first k16 (a multiple of 16) columns of 4 rows of w (row stride `stride`) with
 * one input row x: dot[r] = sum(w[r] * x), and when with_sum, wsum[r] = sum(w[r]). */
static inline __attribute__((always_inline)) void ep_neon_rows4(const int8_t *x, const int8_t *w, int32_t stride,
                                                                int32_t k16, int with_sum, int sdot, int32x4_t *dot,
                                                                int32x4_t *wsum)
{
    const int8_t *w0 = w, *w1 = w + stride, *w2 = w + 2 * stride, *w3 = w + 3 * stride;
    int32x4_t d0 = vdupq_n_s32(0), d1 = d0, d2 = d0, d3 = d0;
    int32x4_t s0 = d0, s1 = d0, s2 = d0, s3 = d0;
    int32_t k = 0;
    for (; k + 64 <= k16; k += 64) {
        const int8x16x4_t xv = vld1q_s8_x4(x + k);
        const int8x16x4_t v0 = vld1q_s8_x4(w0 + k), v1 = vld1q_s8_x4(w1 + k);
        const int8x16x4_t v2 = vld1q_s8_x4(w2 + k), v3 = vld1q_s8_x4(w3 + k);
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
            d0 = ep_neon_dot16(d0, v0.val[j], xv.val[j], sdot);
            d1 = ep_neon_dot16(d1, v1.val[j], xv.val[j], sdot);
            d2 = ep_neon_dot16(d2, v2.val[j], xv.val[j], sdot);
            d3 = ep_neon_dot16(d3, v3.val[j], xv.val[j], sdot);
            if (with_sum) {
                s0 = ep_neon_sum16(s0, v0.val[j], sdot);
                s1 = ep_neon_sum16(s1, v1.val[j], sdot);
                s2 = ep_neon_sum16(s2, v2.val[j], sdot);
                s3 = ep_neon_sum16(s3, v3.val[j], sdot);
            }
        }
    }
    for (; k < k16; k += 16) {
        const int8x16_t xv = vld1q_s8(x + k);
        const int8x16_t v0 = vld1q_s8(w0 + k), v1 = vld1q_s8(w1 + k), v2 = vld1q_s8(w2 + k), v3 = vld1q_s8(w3 + k);
        d0 = ep_neon_dot16(d0, v0, xv, sdot);
        d1 = ep_neon_dot16(d1, v1, xv, sdot);
        d2 = ep_neon_dot16(d2, v2, xv, sdot);
        d3 = ep_neon_dot16(d3, v3, xv, sdot);
        if (with_sum) {
            s0 = ep_neon_sum16(s0, v0, sdot);
            s1 = ep_neon_sum16(s1, v1, sdot);
            s2 = ep_neon_sum16(s2, v2, sdot);
            s3 = ep_neon_sum16(s3, v3, sdot);
        }
    }
    *dot = vpaddq_s32(vpaddq_s32(d0, d1), vpaddq_s32(d2, d3));
    if (with_sum) {
        *wsum = vpaddq_s32(vpaddq_s32(s0, s1), vpaddq_s32(s2, s3));
    }
}

/* Exact sum(w * (x + offset)) over n columns, for the tails that do not fill a vector. */
static inline int32_t ep_neon_tail_dot(const int8_t *x, const int8_t *w, int32_t n, int32_t offset)
{
    uint32_t acc = 0;
    for (int32_t i = 0; i < n; ++i) {
        acc += (uint32_t)((int32_t)w[i] * ((int32_t)x[i] + offset));
    }
    return (int32_t)acc;
}

/* FULLY_CONNECTED for both arm64 backends: 4 output features at a time, the input offset folded
 * into the weight sums (computed on the first batch, reused by the others). */
static inline void ep_neon_fully_connected(const ep_quant_t *quant, int32_t batches, int32_t in_features,
                                           int32_t out_features, const int8_t *input, const int8_t *filter,
                                           const int32_t *bias, int8_t *output, int sdot)
{
    const int32_t k16 = in_features & ~15;
    const int32_t tail = in_features - k16;
    const int32_t off = quant->input_offset;
    const ep_neon_out_t o = ep_neon_out_init(quant, out_features);
    int32_t n = 0;
    for (; n + 4 <= out_features; n += 4) {
        const int8_t *w = &filter[n * in_features];
        const int32x4_t b4 = bias ? vld1q_s32(&bias[n]) : vdupq_n_s32(0);
        const int32x4_t mult = vld1q_s32(&quant->multiplier[n]);
        const int32x4_t shift = vld1q_s32(&quant->shift[n]);
        int32x4_t wsum = vdupq_n_s32(0);
        for (int32_t b = 0; b < batches; ++b) {
            const int8_t *x = &input[b * in_features];
            int32x4_t dot;
            if (b == 0) {
                ep_neon_rows4(x, w, in_features, k16, 1, sdot, &dot, &wsum);
            } else {
                ep_neon_rows4(x, w, in_features, k16, 0, sdot, &dot, &wsum);
            }
            int32x4_t acc = vaddq_s32(vmlaq_n_s32(dot, wsum, off), b4);
            if (tail) {
                int32_t t[4];
                for (int r = 0; r < 4; ++r) {
                    t[r] = ep_neon_tail_dot(&x[k16], &w[r * in_features + k16], tail, off);
                }
                acc = vaddq_s32(acc, vld1q_s32(t));
            }
            const int8x8_t v = ep_neon_narrow4(ep_neon_requant_s32(acc, mult, shift, o.fast), o.out_off, o.act_min,
                                               o.act_max);
            const int32_t four = vget_lane_s32(vreinterpret_s32_s8(v), 0);
            memcpy(&output[b * out_features + n], &four, 4);
        }
    }
    for (; n < out_features; ++n) { /* the last 1-3 features: one row at a time */
        const int8_t *w = &filter[n * in_features];
        for (int32_t b = 0; b < batches; ++b) {
            const int8_t *x = &input[b * in_features];
            int32x4_t d = vdupq_n_s32(0), s = d;
            for (int32_t k = 0; k < k16; k += 16) {
                const int8x16_t wv = vld1q_s8(w + k);
                d = ep_neon_dot16(d, wv, vld1q_s8(x + k), sdot);
                s = ep_neon_sum16(s, wv, sdot);
            }
            const uint32_t acc = (uint32_t)vaddvq_s32(d) + (uint32_t)vaddvq_s32(s) * (uint32_t)off +
                                 (uint32_t)ep_neon_tail_dot(&x[k16], &w[k16], tail, off) +
                                 (uint32_t)(bias ? bias[n] : 0);
            output[b * out_features + n] = ep_requantize((int32_t)acc, quant->multiplier[n], quant->shift[n],
                                                         quant->output_offset, quant->activation_min,
                                                         quant->activation_max);
        }
    }
}

#endif /* EP_NEON_HELPERS_H_ */
