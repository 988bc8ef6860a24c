/* Shared pieces of the sparse kernels: requantization, constant outputs of dead channels, the im2col
 * gather, and the portable per-op drivers that walk output pixels two at a time and hand their input
 * columns to a format's row function (the DSP drivers are in ep_sparse_rows.h). Each kernel file supplies
 * one row function; the drivers are inlined into it. Requantization uses ep_requantize_fast, bit-exact
 * with ep_requantize. */
#ifndef EP_SPARSE_COMMON_H_
#define EP_SPARSE_COMMON_H_

#include <stdint.h>
#include <string.h>

#include "ep_fixedpoint.h"
#include "ep_kernels.h"

static inline int32_t ep_sparse_round4(int32_t n)
{
    return (n + 3) & ~3;
}

/* Computes, for the live rows of `w`, the outputs of one or two input columns (c1/o1 NULL for one).
 * Columns are readable up to round4(cols) bytes when the format reads words. */
typedef void (*ep_sparse_rows_fn)(const ep_sparse_s8_t *w, const ep_quant_t *q, const int8_t *c0, const int8_t *c1,
                                  int8_t *o0, int8_t *o1);

static inline int8_t ep_sparse_out(const ep_quant_t *q, int32_t o, int32_t acc)
{
    return ep_requantize_fast(acc, q->multiplier[o], q->shift[o], q->output_offset, q->activation_min,
                              q->activation_max);
}

/* Loop-invariant fields in locals: stores through int8_t pointers may alias anything, so the compiler
 * would otherwise reload them for every output. */
typedef struct {
    const int32_t *mult, *shift, *bias;
    int32_t out_offset, lo, hi;
} ep_sparse_rq_t;

static inline ep_sparse_rq_t ep_sparse_rq(const ep_quant_t *q, const ep_sparse_s8_t *w)
{
    const ep_sparse_rq_t r = {q->multiplier, q->shift, w->bias, q->output_offset, q->activation_min, q->activation_max};
    return r;
}

static inline int8_t ep_sparse_rq_out(const ep_sparse_rq_t *r, int32_t o, int32_t acc)
{
    return ep_requantize_fast(acc + r->bias[o], r->mult[o], r->shift[o], r->out_offset, r->lo, r->hi);
}

/* Dead rows output requantize(bias): computed once per call into consts[rows]. Returns 1 if any row is dead. */
static inline int ep_sparse_consts(const ep_sparse_s8_t *w, const ep_quant_t *q, int8_t *consts)
{
    const int32_t unit = w->kind == EP_SPARSE_KIND_DEPTHWISE && w->format == EP_SPARSE_BLOCK4 ? 4 : 1;
    if (w->n_live * unit >= w->rows) {
        return 0;
    }
    int32_t j = 0;
    for (int32_t o = 0; o < w->rows; ++o) {
        if (j < w->n_live && o / unit == w->live[j]) {
            j += (o + 1) % unit == 0; /* a live row (or group): the kernel writes it */
            continue;
        }
        consts[o] = ep_sparse_out(q, o, w->bias[o]);
    }
    return 1;
}

/* Byte copy with word moves where possible (GCC turns the fixed-size memcpy into LDR/STR). */
static inline void ep_sparse_copy(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t v;
        memcpy(&v, src + i, 4);
        memcpy(dst + i, &v, 4);
    }
    for (; i < n; ++i) {
        dst[i] = src[i];
    }
}

/* The dead channels' constants into one output pixel (the live ones are overwritten next). */
static inline void ep_sparse_put_consts(int8_t *out, const int8_t *consts, int32_t n)
{
    if ((n & 3) == 0) {
        ep_sparse_copy(out, consts, n);
    } else {
        memcpy(out, consts, (size_t)n);
    }
}

/* Every row dead: the outputs are the constants; no input is read. */
static inline int ep_sparse_only_consts(const ep_sparse_s8_t *w, const int8_t *consts, int8_t *out, int32_t pixels,
                                        int32_t out_c)
{
    if (w->n_live != 0) {
        return 0;
    }
    for (int32_t p = 0; p < pixels; ++p) {
        ep_sparse_put_consts(out + p * out_c, consts, out_c);
    }
    return 1;
}

static inline void ep_sparse_fill(int8_t *dst, int8_t value, int32_t n)
{
    for (int32_t i = 0; i < n; ++i) {
        dst[i] = value;
    }
}

/* The im2col column of output pixel (oy, ox) in (ky, kx, ic) order, padded taps set to the input zero
 * point (so that, with the folded bias, they contribute nothing); then zeros up to `len`. */
static inline void ep_sparse_im2col(const ep_conv_params_t *p, const ep_dims_t *in_d, const int8_t *in, int32_t k_h,
                                    int32_t k_w, int32_t oy, int32_t ox, int8_t pad, int32_t cols, int32_t len,
                                    int8_t *dst)
{
    const int32_t in_c = in_d->c;
    const int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w;
    const int32_t row_bytes = k_w * in_c;
    for (int32_t ky = 0; ky < k_h; ++ky) {
        const int32_t iy = y0 + p->dilation_h * ky;
        int8_t *d = dst + ky * row_bytes;
        if (iy < 0 || iy >= in_d->h) {
            ep_sparse_fill(d, pad, row_bytes);
            continue;
        }
        const int8_t *row = in + iy * in_d->w * in_c;
        if (p->dilation_w == 1 && x0 >= 0 && x0 + k_w <= in_d->w) {
            ep_sparse_copy(d, row + x0 * in_c, row_bytes); /* the whole kernel row is contiguous */
            continue;
        }
        for (int32_t kx = 0; kx < k_w; ++kx) {
            const int32_t ix = x0 + p->dilation_w * kx;
            if (ix < 0 || ix >= in_d->w) {
                ep_sparse_fill(d + kx * in_c, pad, in_c);
            } else {
                ep_sparse_copy(d + kx * in_c, row + ix * in_c, in_c);
            }
        }
    }
    ep_sparse_fill(dst + cols, 0, len - cols);
}

/* Scratch of the conv drivers: consts[round4(rows)], then two byte columns of round4(cols) (portable),
 * a widened tile of 8 * round4(cols) bytes and one byte column (DSP block4, dead), or four byte columns
 * and a tile of 8 * round4(cols) bytes (DSP unstructured). */
static inline int32_t ep_sparse_conv_scratch(const ep_sparse_s8_t *w)
{
    return ep_sparse_round4(w->rows) + 12 * ep_sparse_round4(w->cols);
}

/* Scratch of the fully connected drivers: consts, then two byte columns (portable) or a widened row of
 * 2 * round4(cols) bytes and one byte column (DSP). */
static inline int32_t ep_sparse_fc_scratch(const ep_sparse_s8_t *w)
{
    return ep_sparse_round4(w->rows) + 3 * ep_sparse_round4(w->cols);
}

/* CONV_2D over any matrix format. `words`: the row function reads columns as whole words. */
static inline void ep_sparse_conv(const ep_conv_params_t *params, const ep_quant_t *quant, const ep_dims_t *input_dims,
                                  const int8_t *input, const ep_dims_t *filter_dims, const ep_sparse_s8_t *filter,
                                  const ep_dims_t *output_dims, int8_t *output, void *scratch, ep_sparse_rows_fn rows,
                                  int words)
{
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w, in_c = input_dims->c;
    const int32_t out_w = output_dims->w, out_c = output_dims->c, pixels = output_dims->h * out_w;
    const int32_t cols = filter->cols, len = words ? ep_sparse_round4(cols) : cols;
    int8_t *consts = (int8_t *)scratch;
    int8_t *col[2];
    col[0] = consts + ep_sparse_round4(out_c);
    col[1] = col[0] + ep_sparse_round4(cols);
    const int any_dead = ep_sparse_consts(filter, quant, consts);
    if (ep_sparse_only_consts(filter, consts, output, input_dims->n * pixels, out_c)) {
        return;
    }
    const int8_t pad = (int8_t)(-filter->input_offset);
    /* A 1x1 kernel without padding reads each input pixel in place, unless words would overrun it. */
    const int direct = k_h == 1 && k_w == 1 && params->pad_h == 0 && params->pad_w == 0 && (!words || (in_c & 3) == 0);
    const int32_t in_image = input_dims->h * input_dims->w * in_c;

    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *in = input + b * in_image;
        int8_t *out = output + b * pixels * out_c;
        for (int32_t px = 0; px < pixels; px += 2) {
            const int32_t n = pixels - px >= 2 ? 2 : 1;
            const int8_t *c[2] = {NULL, NULL};
            for (int32_t i = 0; i < n; ++i) {
                const int32_t oy = (px + i) / out_w, ox = (px + i) % out_w;
                if (direct) {
                    c[i] = in + ((oy * params->stride_h) * input_dims->w + ox * params->stride_w) * in_c;
                } else {
                    ep_sparse_im2col(params, input_dims, in, k_h, k_w, oy, ox, pad, cols, len, col[i]);
                    c[i] = col[i];
                }
                if (any_dead) {
                    ep_sparse_put_consts(out + (px + i) * out_c, consts, out_c);
                }
            }
            rows(filter, quant, c[0], c[1], out + px * out_c, n == 2 ? out + (px + 1) * out_c : NULL);
        }
    }
}

/* FULLY_CONNECTED over any matrix format: batches two at a time, copied to scratch when words would overrun. */
static inline void ep_sparse_fc(const ep_quant_t *quant, int32_t batches, const int8_t *input,
                                const ep_sparse_s8_t *filter, int8_t *output, void *scratch, ep_sparse_rows_fn rows,
                                int words)
{
    const int32_t cols = filter->cols, out_c = filter->rows, len = ep_sparse_round4(cols);
    int8_t *consts = (int8_t *)scratch;
    int8_t *col[2];
    col[0] = consts + ep_sparse_round4(out_c);
    col[1] = col[0] + len;
    const int any_dead = ep_sparse_consts(filter, quant, consts);
    if (ep_sparse_only_consts(filter, consts, output, batches, out_c)) {
        return;
    }
    const int copy = words && (cols & 3) != 0;
    for (int32_t b = 0; b < batches; b += 2) {
        const int32_t n = batches - b >= 2 ? 2 : 1;
        const int8_t *c[2] = {NULL, NULL};
        for (int32_t i = 0; i < n; ++i) {
            c[i] = input + (b + i) * cols;
            if (copy) {
                ep_sparse_copy(col[i], c[i], cols);
                ep_sparse_fill(col[i] + cols, 0, len - cols);
                c[i] = col[i];
            }
            if (any_dead) {
                ep_sparse_put_consts(output + (b + i) * out_c, consts, out_c);
            }
        }
        rows(filter, quant, c[0], c[1], output + b * out_c, n == 2 ? output + (b + 1) * out_c : NULL);
    }
}

/* DEPTHWISE: per output pixel, a table of kh*kw pointers to the input pixel of each tap (a row of zero
 * points for padded taps); the channel function computes the live channels of that pixel. */
typedef void (*ep_sparse_dw_fn)(const ep_sparse_s8_t *w, const ep_quant_t *q, int32_t depth_multiplier,
                                int32_t in_c, const int8_t *const *taps, int8_t *out);

/* Scratch: tap pointers[kh*kw] (first, for their alignment), consts[round4(rows)], zero-point row[round4(in_c)]. */
static inline int32_t ep_sparse_dw_scratch(const ep_sparse_s8_t *w, int32_t in_c, int32_t taps)
{
    return ep_sparse_round4(taps * (int32_t)sizeof(const int8_t *)) + ep_sparse_round4(w->rows) +
           ep_sparse_round4(in_c);
}

static inline void ep_sparse_dw(const ep_conv_params_t *params, int32_t depth_multiplier, const ep_quant_t *quant,
                                const ep_dims_t *input_dims, const int8_t *input, const ep_dims_t *filter_dims,
                                const ep_sparse_s8_t *filter, const ep_dims_t *output_dims, int8_t *output,
                                void *scratch, ep_sparse_dw_fn channels)
{
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int8_t **taps = (const int8_t **)scratch;
    int8_t *consts = (int8_t *)scratch + ep_sparse_round4(k_h * k_w * (int32_t)sizeof(const int8_t *));
    int8_t *zp_row = consts + ep_sparse_round4(out_c);
    const int any_dead = ep_sparse_consts(filter, quant, consts);
    if (ep_sparse_only_consts(filter, consts, output, input_dims->n * out_h * out_w, out_c)) {
        return;
    }
    ep_sparse_fill(zp_row, (int8_t)(-filter->input_offset), ep_sparse_round4(in_c));

    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *in = input + b * in_h * in_w * in_c;
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * params->stride_h - params->pad_h;
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * params->stride_w - params->pad_w;
                for (int32_t ky = 0; ky < k_h; ++ky) {
                    const int32_t iy = y0 + params->dilation_h * ky;
                    for (int32_t kx = 0; kx < k_w; ++kx) {
                        const int32_t ix = x0 + params->dilation_w * kx;
                        const int inside = iy >= 0 && iy < in_h && ix >= 0 && ix < in_w;
                        taps[ky * k_w + kx] = inside ? in + (iy * in_w + ix) * in_c : zp_row;
                    }
                }
                int8_t *out = output + ((b * out_h + oy) * out_w + ox) * out_c;
                if (any_dead) {
                    ep_sparse_put_consts(out, consts, out_c);
                }
                channels(filter, quant, depth_multiplier, in_c, taps, out);
            }
        }
    }
}

#endif /* EP_SPARSE_COMMON_H_ */
