/* DEPTHWISE_CONV_2D, int8, plain Armv8.0 NEON (also the general path of the dot-product build).
 *
 * 16 channels per step: the input plus its offset widened to int16 (x + offset fits int16), the
 * weights widened to int16 once per call, and widening multiply-accumulates into int32
 * (vmlal_s16) over the taps that fall inside the image (a range of rows and columns per pixel);
 * taps outside are skipped, as in TFLite. With a depth multiplier above 1, each tap's input pixel
 * is first expanded so that lane oc holds input channel oc / depth_multiplier. Channels past the
 * last multiple of 16 are done in scalar code.
 *
 * Scratch (bytes; OCp = output channels rounded up to 16): multipliers and shifts, 2 x OCp
 * int32; the weights as int16, k_h x k_w x OCp; 16 bytes for the expanded input.
 */
#include "ep_backend.h"
#include "ep_kernels.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#include "ep_neon_helpers.h"

int32_t ep_depthwise_conv2d_s8_scratch_size_neon(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                                 const ep_dims_t *output_dims)
{
    (void)input_dims;
    const int32_t ocp = ep_neon_round_up(output_dims->c, 16);
    return 2 * ocp * 4 + filter_dims->h * filter_dims->w * ocp * 2 + 16;
}

void ep_depthwise_conv2d_s8_neon(const ep_conv_params_t *params, int32_t depth_multiplier, const ep_quant_t *quant,
                                 const ep_dims_t *input_dims, const int8_t *input, const ep_dims_t *filter_dims,
                                 const int8_t *filter, const int32_t *bias, const ep_dims_t *output_dims,
                                 int8_t *output, void *scratch)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int32_t ocp = ep_neon_round_up(out_c, 16), c16 = out_c & ~15;
    int32_t *mult = (int32_t *)scratch;
    int32_t *shift = mult + ocp;
    int16_t *w16 = (int16_t *)(void *)(shift + ocp);
    int8_t *expanded = (int8_t *)(w16 + k_h * k_w * ocp);
    ep_neon_pad_quant(quant, out_c, ocp, mult, shift);
    const ep_neon_out_t o = ep_neon_out_init(quant, out_c);
    const int16x8_t offset = vdupq_n_s16((int16_t)quant->input_offset);
    for (int32_t t = 0; t < k_h * k_w; ++t) {
        for (int32_t c = 0; c < c16; c += 16) {
            const int8x16_t w = vld1q_s8(&filter[t * out_c + c]);
            vst1q_s16(&w16[t * ocp + c], vmovl_s8(vget_low_s8(w)));
            vst1q_s16(&w16[t * ocp + c + 8], vmovl_high_s8(w));
        }
    }
    const int32_t dh = params->dilation_h, dw = params->dilation_w;

    for (int32_t b = 0; b < input_dims->n; ++b) {
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t iy0 = oy * params->stride_h - params->pad_h;
            /* The kernel rows inside the image: ky0 <= ky < ky1. */
            int32_t ky0 = 0, ky1 = k_h;
            while (ky0 < k_h && iy0 + ky0 * dh < 0) {
                ++ky0;
            }
            while (ky1 > ky0 && iy0 + (ky1 - 1) * dh >= in_h) {
                --ky1;
            }
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t ix0 = ox * params->stride_w - params->pad_w;
                int32_t kx0 = 0, kx1 = k_w;
                while (kx0 < k_w && ix0 + kx0 * dw < 0) {
                    ++kx0;
                }
                while (kx1 > kx0 && ix0 + (kx1 - 1) * dw >= in_w) {
                    --kx1;
                }
                const int32_t corner = ((b * in_h + iy0) * in_w + ix0) * in_c; /* tap (0, 0), maybe outside */
                int8_t *out = &output[((b * out_h + oy) * out_w + ox) * out_c];
                for (int32_t c = 0; c < c16; c += 16) {
                    int32x4_t acc[4];
                    for (int q = 0; q < 4; ++q) {
                        acc[q] = bias ? vld1q_s32(&bias[c + 4 * q]) : vdupq_n_s32(0);
                    }
                    for (int32_t ky = ky0; ky < ky1; ++ky) {
                        const int32_t row = corner + ky * dh * in_w * in_c; /* offset of tap (ky, 0) */
                        const int16_t *w_row = &w16[ky * k_w * ocp + c];
                        for (int32_t kx = kx0; kx < kx1; ++kx) {
                            int8x16_t x;
                            if (depth_multiplier == 1) {
                                x = vld1q_s8(&input[row + kx * dw * in_c + c]);
                            } else {
                                for (int32_t j = 0; j < 16; ++j) {
                                    expanded[j] = input[row + kx * dw * in_c + (c + j) / depth_multiplier];
                                }
                                x = vld1q_s8(expanded);
                            }
                            const int16x8x2_t w = vld1q_s16_x2(&w_row[kx * ocp]);
                            const int16x8_t x_lo = vaddw_s8(offset, vget_low_s8(x)), x_hi = vaddw_high_s8(offset, x);
                            acc[0] = vmlal_s16(acc[0], vget_low_s16(x_lo), vget_low_s16(w.val[0]));
                            acc[1] = vmlal_high_s16(acc[1], x_lo, w.val[0]);
                            acc[2] = vmlal_s16(acc[2], vget_low_s16(x_hi), vget_low_s16(w.val[1]));
                            acc[3] = vmlal_high_s16(acc[3], x_hi, w.val[1]);
                        }
                    }
                    ep_neon_store16(acc[0], acc[1], acc[2], acc[3], &mult[c], &shift[c], &o, &out[c], 16);
                }
                for (int32_t oc = c16; oc < out_c; ++oc) { /* the last 1-15 channels */
                    const int32_t ic = oc / depth_multiplier;
                    uint32_t acc = bias ? (uint32_t)bias[oc] : 0;
                    for (int32_t ky = ky0; ky < ky1; ++ky) {
                        for (int32_t kx = kx0; kx < kx1; ++kx) {
                            const int32_t x = input[corner + (ky * dh * in_w + kx * dw) * in_c + ic];
                            acc += (uint32_t)(filter[(ky * k_w + kx) * out_c + oc] * (x + quant->input_offset));
                        }
                    }
                    out[oc] = ep_requantize((int32_t)acc, quant->multiplier[oc], quant->shift[oc],
                                            quant->output_offset, quant->activation_min, quant->activation_max);
                }
            }
        }
    }
}
#else
typedef int ep_depthwise_conv2d_s8_neon_unused; /* ISO C wants a non-empty file */
#endif
