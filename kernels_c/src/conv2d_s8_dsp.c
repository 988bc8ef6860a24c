/* CONV_2D, int8, Cortex-M DSP extension: im2col of two output pixels into int16 columns (input
 * offset added while widening, so padding becomes zeros), then a 2 channels x 2 pixels SMLAD loop
 * with four accumulators, then requantization of the block in a loop of its own. Small filters
 * whose k = k_h * k_w * in_c is not a multiple of 4 (first layers: 3x3x3) take a path of their own
 * with int16 weights padded to whole words (see ep_conv_small_k). */
#include "ep_dsp_im2col.h"

#if defined(EP_DSP_ENABLED)
#include "ep_fixedpoint.h"
#include "ep_kernels.h"

/* Column length rounded up to a multiple of 4, so every column starts 4-byte aligned. */
static int32_t ep_conv_k4(const ep_dims_t *filter_dims)
{
    return (filter_dims->h * filter_dims->w * filter_dims->c + 3) & ~3;
}

/* Small-k path (small first layers, e.g. 3x3x3 = 27): the weights are widened once into scratch
 * as int16 rows of k4 with zeros after k, and the columns are widened in natural order straight
 * from the image rows; then the dot products are one SMLAD per word of both, with no SXTB16 and
 * no scalar tail. The copy is bounded so that it stays a small part of the scratch. */
static int ep_conv_small_k(const ep_dims_t *filter_dims)
{
    const int32_t k = filter_dims->h * filter_dims->w * filter_dims->c;
    return (k & 3) != 0 && 2 * ep_conv_k4(filter_dims) * filter_dims->n <= 4096;
}

int32_t ep_conv2d_s8_scratch_size_dsp(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                      const ep_dims_t *output_dims)
{
    (void)input_dims;
    (void)output_dims;
    /* Two int16 columns, an int8 gather buffer, the int32 accumulators of two pixels, and for the
     * small-k path the int16 weights and the channels' right shifts. */
    const int32_t k4 = ep_conv_k4(filter_dims);
    return 5 * k4 + 8 * filter_dims->n + (ep_conv_small_k(filter_dims) ? (2 * k4 + 4) * filter_dims->n : 0);
}

/* Short copies and fills inline: window rows are often a few bytes, too short for a library call. */
static inline void ep_conv_copy(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        ep_dsp_write32(dst + i, ep_dsp_read32(src + i));
    }
    for (; i < n; ++i) {
        dst[i] = src[i];
    }
}

static inline void ep_conv_fill(int8_t *dst, int8_t value, int32_t n)
{
    for (int32_t i = 0; i < n; ++i) {
        dst[i] = value;
    }
}

/* The window of one output pixel as k contiguous int8 values: the input itself when the window is
 * one contiguous run inside the image (1x1 convs, 1xN kernels), else gathered into buf with padded
 * taps set to -input_offset, which the widening turns into 0 (padding contributes nothing). */
static const int8_t *ep_conv_window(const ep_conv_params_t *params, const ep_dims_t *input_dims, const int8_t *image,
                                    int32_t k_h, int32_t k_w, int32_t in_y0, int32_t in_x0, int8_t pad, int8_t *buf)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t row_len = k_w * in_c;
    const int x_inside = in_x0 >= 0 && in_x0 + params->dilation_w * (k_w - 1) < in_w;
    const int row_contiguous = params->dilation_w == 1 || k_w == 1;
    if (k_h == 1 && x_inside && row_contiguous && in_y0 >= 0 && in_y0 < in_h) {
        return &image[(in_y0 * in_w + in_x0) * in_c];
    }
    for (int32_t ky = 0; ky < k_h; ++ky) {
        const int32_t iy = in_y0 + params->dilation_h * ky;
        int8_t *dst = buf + ky * row_len;
        if (iy < 0 || iy >= in_h) {
            ep_conv_fill(dst, pad, row_len);
        } else if (x_inside && row_contiguous) {
            ep_conv_copy(dst, &image[(iy * in_w + in_x0) * in_c], row_len);
        } else {
            for (int32_t kx = 0; kx < k_w; ++kx) {
                const int32_t ix = in_x0 + params->dilation_w * kx;
                if (ix < 0 || ix >= in_w) {
                    ep_conv_fill(dst + kx * in_c, pad, in_c);
                } else {
                    ep_conv_copy(dst + kx * in_c, &image[(iy * in_w + ix) * in_c], in_c);
                }
            }
        }
    }
    return buf;
}

/* One weight row against two columns: channel oc of both pixels. */
static void ep_conv_1ch_2px(const int8_t *w, const int16_t *c0, const int16_t *c1, int32_t k, int32_t *acc0,
                            int32_t *acc1)
{
    int32_t a0 = *acc0, a1 = *acc1;
    int32_t i = 0;
    for (; i + 4 <= k; i += 4) {
        const int32_t wv = ep_dsp_read32(w + i);
        const int32_t w02 = __sxtb16(wv), w13 = ep_dsp_sxtb16_ror8(wv);
        a0 = __smlad(w02, ep_dsp_read32(c0 + i), a0);
        a0 = __smlad(w13, ep_dsp_read32(c0 + i + 2), a0);
        a1 = __smlad(w02, ep_dsp_read32(c1 + i), a1);
        a1 = __smlad(w13, ep_dsp_read32(c1 + i + 2), a1);
    }
    for (; i < k; ++i) {
        a0 += w[i] * c0[i];
        a1 += w[i] * c1[i];
    }
    *acc0 = a0;
    *acc1 = a1;
}

static int32_t ep_conv_1ch_1px(const int8_t *w, const int16_t *c0, int32_t k, int32_t acc)
{
    int32_t i = 0;
    for (; i + 4 <= k; i += 4) {
        const int32_t wv = ep_dsp_read32(w + i);
        acc = __smlad(__sxtb16(wv), ep_dsp_read32(c0 + i), acc);
        acc = __smlad(ep_dsp_sxtb16_ror8(wv), ep_dsp_read32(c0 + i + 2), acc);
    }
    for (; i < k; ++i) {
        acc += w[i] * c0[i];
    }
    return acc;
}

/* Four weights of rows wa, wb against four column entries of both pixels (2x2 block). */
#define EP_CONV_STEP4(off)                                                                            \
    do {                                                                                              \
        const int32_t x0lo = ep_dsp_read32(c0 + (off)), x0hi = ep_dsp_read32(c0 + (off) + 2);         \
        const int32_t x1lo = ep_dsp_read32(c1 + (off)), x1hi = ep_dsp_read32(c1 + (off) + 2);         \
        const int32_t va = ep_dsp_read32(wa + (off)), vb = ep_dsp_read32(wb + (off));                 \
        const int32_t wa02 = __sxtb16(va), wa13 = ep_dsp_sxtb16_ror8(va);                             \
        a0 = __smlad(wa02, x0lo, a0);                                                                 \
        a0 = __smlad(wa13, x0hi, a0);                                                                 \
        a1 = __smlad(wa02, x1lo, a1);                                                                 \
        a1 = __smlad(wa13, x1hi, a1);                                                                 \
        const int32_t wb02 = __sxtb16(vb), wb13 = ep_dsp_sxtb16_ror8(vb);                             \
        b0 = __smlad(wb02, x0lo, b0);                                                                 \
        b0 = __smlad(wb13, x0hi, b0);                                                                 \
        b1 = __smlad(wb02, x1lo, b1);                                                                 \
        b1 = __smlad(wb13, x1hi, b1);                                                                 \
    } while (0)

/* Two int16 weights of rows wa, wb against two column entries of both pixels. */
#define EP_CONV_STEP16(off)                                                                           \
    do {                                                                                              \
        const int32_t x0 = ep_dsp_read32(c0 + (off)), x1 = ep_dsp_read32(c1 + (off));                 \
        const int32_t va = ep_dsp_read32(wa + (off)), vb = ep_dsp_read32(wb + (off));                 \
        a0 = __smlad(va, x0, a0);                                                                     \
        a1 = __smlad(va, x1, a1);                                                                     \
        b0 = __smlad(vb, x0, b0);                                                                     \
        b1 = __smlad(vb, x1, b1);                                                                     \
    } while (0)

/* Small-k path: all output channels of two pixels (c1 may be NULL: one pixel), int16 weight rows
 * w16 of k4 (a multiple of 4), 2 channels x 2 pixels per pass. */
static void ep_conv_pixels16(const int16_t *w16, const int32_t *bias, int32_t out_c, int32_t k4, const int16_t *c0,
                             const int16_t *c1, int32_t *accs)
{
    int32_t oc = 0;
    if (c1 != NULL) {
        for (; oc + 2 <= out_c; oc += 2) {
            const int16_t *wa = w16 + oc * k4, *wb = wa + k4;
            int32_t a0 = bias ? bias[oc] : 0, b0 = bias ? bias[oc + 1] : 0;
            int32_t a1 = a0, b1 = b0;
            int32_t i = 0;
            for (; i + 8 <= k4; i += 8) { /* unrolled: fewer loop instructions per SMLAD */
                EP_CONV_STEP16(i);
                EP_CONV_STEP16(i + 2);
                EP_CONV_STEP16(i + 4);
                EP_CONV_STEP16(i + 6);
            }
            if (i < k4) {
                EP_CONV_STEP16(i);
                EP_CONV_STEP16(i + 2);
            }
            accs[2 * oc] = a0;
            accs[2 * oc + 1] = a1;
            accs[2 * oc + 2] = b0;
            accs[2 * oc + 3] = b1;
        }
        if (oc < out_c) {
            const int16_t *wa = w16 + oc * k4;
            int32_t a0 = bias ? bias[oc] : 0, a1 = a0;
            for (int32_t i = 0; i < k4; i += 2) {
                const int32_t va = ep_dsp_read32(wa + i);
                a0 = __smlad(va, ep_dsp_read32(c0 + i), a0);
                a1 = __smlad(va, ep_dsp_read32(c1 + i), a1);
            }
            accs[2 * oc] = a0;
            accs[2 * oc + 1] = a1;
        }
        return;
    }
    for (; oc < out_c; ++oc) {
        const int16_t *wa = w16 + oc * k4;
        int32_t a0 = bias ? bias[oc] : 0;
        for (int32_t i = 0; i < k4; i += 2) {
            a0 = __smlad(ep_dsp_read32(wa + i), ep_dsp_read32(c0 + i), a0);
        }
        accs[oc] = a0;
    }
}

/* Requantizes two pixels' accumulators, acc[2 * ch + p] to out[p * out_c + ch], when every
 * channel takes the one-shift form (checked once per call): no per-channel test in the loop. */
static EP_DSP_ALWAYS_INLINE void ep_conv_requant2_rshift_impl(int full, const int32_t *acc, int32_t out_c,
                                                              ep_dsp_rq_t rq, const int32_t *rshift, int8_t *out)
{
    /* The output offset goes into the final halving: ((f + 1) >> 1) + zp == (f + 1 + 2 zp) >> 1. */
    const int32_t zp2 = 2 * rq.output_offset + 1, lo = rq.activation_min, hi = rq.activation_max;
    for (int32_t ch = 0; ch < out_c; ++ch) {
        const int32_t m = rq.multiplier[ch], r = rshift != NULL ? rshift[ch] : -rq.shift[ch];
        const int32_t v0 = (ep_multiply_by_quantized_multiplier_rshift_floor(acc[2 * ch], m, r) + zp2) >> 1;
        const int32_t v1 = (ep_multiply_by_quantized_multiplier_rshift_floor(acc[2 * ch + 1], m, r) + zp2) >> 1;
        out[ch] = (int8_t)ep_dsp_clamp(full, v0, lo, hi);
        out[out_c + ch] = (int8_t)ep_dsp_clamp(full, v1, lo, hi);
    }
}

/* rshift[ch], when given, is -shift[ch]: negated once per call rather than per pixel pair. */
static void ep_conv_requant2_rshift(const int32_t *acc, int32_t out_c, ep_dsp_rq_t rq, const int32_t *rshift,
                                    int8_t *out)
{
    const int full = rq.activation_min == -128 && rq.activation_max == 127;
    if (rshift != NULL) {
        if (full) {
            ep_conv_requant2_rshift_impl(1, acc, out_c, rq, rshift, out);
        } else {
            ep_conv_requant2_rshift_impl(0, acc, out_c, rq, rshift, out);
        }
    } else if (full) {
        ep_conv_requant2_rshift_impl(1, acc, out_c, rq, NULL, out);
    } else {
        ep_conv_requant2_rshift_impl(0, acc, out_c, rq, NULL, out);
    }
}

/* All output channels of two pixels whose columns are c0, c1 (c1 may be NULL: one pixel): the
 * accumulators into accs, then requantized. */
static void ep_conv_pixels(ep_dsp_rq_t rq, int all_rshift, const int8_t *filter, const int32_t *bias, int32_t out_c,
                           int32_t k, const int16_t *c0, const int16_t *c1, int32_t *accs, int8_t *out)
{
    int32_t oc = 0;
    if (c1 != NULL) {
        for (; oc + 2 <= out_c; oc += 2) {
            const int8_t *wa = filter + oc * k, *wb = wa + k;
            int32_t a0 = bias ? bias[oc] : 0, b0 = bias ? bias[oc + 1] : 0;
            int32_t a1 = a0, b1 = b0;
            int32_t i = 0;
            for (; i + 8 <= k; i += 8) { /* unrolled twice: fewer loop instructions per SMLAD */
                EP_CONV_STEP4(i);
                EP_CONV_STEP4(i + 4);
            }
            if (i + 4 <= k) {
                EP_CONV_STEP4(i);
                i += 4;
            }
            for (; i < k; ++i) {
                a0 += wa[i] * c0[i];
                a1 += wa[i] * c1[i];
                b0 += wb[i] * c0[i];
                b1 += wb[i] * c1[i];
            }
            accs[2 * oc] = a0;
            accs[2 * oc + 1] = a1;
            accs[2 * oc + 2] = b0;
            accs[2 * oc + 3] = b1;
        }
        if (oc < out_c) {
            int32_t a0 = bias ? bias[oc] : 0, a1 = a0;
            ep_conv_1ch_2px(filter + oc * k, c0, c1, k, &a0, &a1);
            accs[2 * oc] = a0;
            accs[2 * oc + 1] = a1;
        }
        if (all_rshift) {
            ep_conv_requant2_rshift(accs, out_c, rq, NULL, out);
        } else {
            ep_dsp_requant(accs, out_c, 2, rq, out, out_c);
        }
        return;
    }
    for (; oc < out_c; ++oc) {
        accs[oc] = ep_conv_1ch_1px(filter + oc * k, c0, k, bias ? bias[oc] : 0);
    }
    ep_dsp_requant(accs, out_c, 1, rq, out, out_c);
}

void ep_conv2d_s8_dsp(const ep_conv_params_t *params, const ep_quant_t *quant, const ep_dims_t *input_dims,
                      const int8_t *input, const ep_dims_t *filter_dims, const int8_t *filter, const int32_t *bias,
                      const ep_dims_t *output_dims, int8_t *output, void *scratch)
{
    if (!ep_dsp_offset_ok(quant->input_offset) || scratch == NULL) {
        ep_conv2d_s8_portable(params, quant, input_dims, input, filter_dims, filter, bias, output_dims, output, NULL);
        return;
    }
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int32_t k = k_h * k_w * in_c, k4 = ep_conv_k4(filter_dims);
    int16_t *cols = (int16_t *)scratch; /* two columns of k4 */
    int8_t *gather = (int8_t *)(cols + 2 * k4);
    int32_t *accs = (int32_t *)(gather + k4);
    const int8_t pad = (int8_t)(-quant->input_offset);
    int32_t n_cols = 0;
    int8_t *out = output;
    const ep_dsp_rq_t rq = ep_dsp_rq_init(quant);
    int all_rshift = 1;
    for (int32_t oc = 0; oc < out_c; ++oc) {
        all_rshift = all_rshift && ep_rshift_form_applies(quant->multiplier[oc], quant->shift[oc]);
    }
    if (ep_conv_small_k(filter_dims)) {
        int16_t *w16 = (int16_t *)(accs + 2 * out_c);
        int32_t *rshift = (int32_t *)(w16 + out_c * k4);
        for (int32_t oc = 0; all_rshift && oc < out_c; ++oc) {
            rshift[oc] = -quant->shift[oc];
        }
        for (int32_t oc = 0; oc < out_c; ++oc) {
            ep_dsp_widen_natural(filter + oc * k, w16 + oc * k4, k, 0);
            for (int32_t i = k; i < k4; ++i) {
                w16[oc * k4 + i] = 0;
            }
        }
        for (int32_t i = k; i < k4; ++i) { /* column tails stay 0 */
            cols[i] = 0;
            cols[k4 + i] = 0;
        }
        const int32_t row_len = k_w * in_c, row_step = params->dilation_h * in_w * in_c;
        const int32_t offset = quant->input_offset, offset2 = ep_dsp_pair16(offset); /* locals: not reloaded */
        const int row_contiguous = params->dilation_w == 1 || k_w == 1;
        for (int32_t b = 0; b < input_dims->n; ++b) {
            const int8_t *image = &input[b * in_h * in_w * in_c];
            for (int32_t oy = 0; oy < out_h; ++oy) {
                const int32_t in_y0 = oy * params->stride_h - params->pad_h;
                const int y_inside = in_y0 >= 0 && in_y0 + params->dilation_h * (k_h - 1) < in_h;
                for (int32_t ox = 0; ox < out_w; ++ox) {
                    const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                    int16_t *col = cols + n_cols * k4;
                    if (y_inside && row_contiguous && in_x0 >= 0 && in_x0 + params->dilation_w * (k_w - 1) < in_w) {
                        /* Window inside the image: widen its rows straight from the input. */
                        const int8_t *src = &image[(in_y0 * in_w + in_x0) * in_c];
                        int16_t *dst = col;
                        for (int32_t ky = 0; ky < k_h; ++ky, src += row_step, dst += row_len) {
                            int32_t i = 0;
                            for (; i + 4 <= row_len; i += 4) {
                                const int32_t x = ep_dsp_read32(src + i);
                                const int32_t even = __sxtab16(offset2, x), odd = ep_dsp_sxtab16_ror8(offset2, x);
                                ep_dsp_write32(dst + i, ep_dsp_pack_lo(even, odd));
                                ep_dsp_write32(dst + i + 2, ep_dsp_pack_hi(even, odd));
                            }
                            for (; i < row_len; ++i) {
                                dst[i] = (int16_t)(src[i] + offset);
                            }
                        }
                    } else {
                        const int8_t *win =
                            ep_conv_window(params, input_dims, image, k_h, k_w, in_y0, in_x0, pad, gather);
                        ep_dsp_widen_natural(win, col, k, offset);
                    }
                    if (++n_cols == 2) {
                        ep_conv_pixels16(w16, bias, out_c, k4, cols, cols + k4, accs);
                        if (all_rshift) {
                            ep_conv_requant2_rshift(accs, out_c, rq, rshift, out);
                        } else {
                            ep_dsp_requant(accs, out_c, 2, rq, out, out_c);
                        }
                        out += 2 * out_c;
                        n_cols = 0;
                    }
                }
            }
        }
        if (n_cols == 1) {
            ep_conv_pixels16(w16, bias, out_c, k4, cols, NULL, accs);
            ep_dsp_requant(accs, out_c, 1, rq, out, out_c);
        }
        return;
    }

    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *image = &input[b * in_h * in_w * in_c];
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t in_y0 = oy * params->stride_h - params->pad_h;
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                const int8_t *win = ep_conv_window(params, input_dims, image, k_h, k_w, in_y0, in_x0, pad, gather);
                ep_dsp_widen_reordered(win, cols + n_cols * k4, k, quant->input_offset);
                if (++n_cols == 2) {
                    ep_conv_pixels(rq, all_rshift, filter, bias, out_c, k, cols, cols + k4, accs, out);
                    out += 2 * out_c;
                    n_cols = 0;
                }
            }
        }
    }
    if (n_cols == 1) {
        ep_conv_pixels(rq, all_rshift, filter, bias, out_c, k, cols, NULL, accs, out);
    }
}

#endif /* EP_DSP_ENABLED */
