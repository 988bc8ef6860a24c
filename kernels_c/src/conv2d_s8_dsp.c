/* CONV_2D, int8, Cortex-M DSP extension: im2col of two output pixels into int16 columns (input
 * offset added while widening, so padding becomes zeros), then a 2 channels x 2 pixels SMLAD loop
 * with four accumulators, then requantization of the block in a loop of its own. */
#include "ep_dsp_im2col.h"

#if defined(EP_DSP_ENABLED)
#include "ep_fixedpoint.h"
#include "ep_kernels.h"

/* Column length rounded up to a multiple of 4, so every column starts 4-byte aligned. */
static int32_t ep_conv_k4(const ep_dims_t *filter_dims)
{
    return (filter_dims->h * filter_dims->w * filter_dims->c + 3) & ~3;
}

int32_t ep_conv2d_s8_scratch_size_dsp(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                      const ep_dims_t *output_dims)
{
    (void)input_dims;
    (void)output_dims;
    /* Two int16 columns, an int8 gather buffer, the int32 accumulators of two pixels. */
    return 5 * ep_conv_k4(filter_dims) + 8 * filter_dims->n;
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

/* All output channels of two pixels whose columns are c0, c1 (c1 may be NULL: one pixel): the
 * accumulators into accs, then requantized. */
static void ep_conv_pixels(ep_dsp_rq_t rq, const int8_t *filter, const int32_t *bias, int32_t out_c, int32_t k,
                           const int16_t *c0, const int16_t *c1, int32_t *accs, int8_t *out)
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
        ep_dsp_requant(accs, out_c, 2, rq, out, out_c);
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

    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *image = &input[b * in_h * in_w * in_c];
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t in_y0 = oy * params->stride_h - params->pad_h;
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                const int8_t *win = ep_conv_window(params, input_dims, image, k_h, k_w, in_y0, in_x0, pad, gather);
                ep_dsp_widen_reordered(win, cols + n_cols * k4, k, quant->input_offset);
                if (++n_cols == 2) {
                    ep_conv_pixels(rq, filter, bias, out_c, k, cols, cols + k4, accs, out);
                    out += 2 * out_c;
                    n_cols = 0;
                }
            }
        }
    }
    if (n_cols == 1) {
        ep_conv_pixels(rq, filter, bias, out_c, k, cols, NULL, accs, out);
    }
}

#endif /* EP_DSP_ENABLED */
