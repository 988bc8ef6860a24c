/* Row functions of the matrix formats (CONV_2D and FULLY_CONNECTED share them): the dot products of
 * every live row with one or two input columns, then requantization. Accumulators start at 0 and the
 * folded bias is added last: |sum w*x| <= 128*128*65535 < 2^31, so the partial sums cannot overflow. */
#ifndef EP_SPARSE_ROWS_H_
#define EP_SPARSE_ROWS_H_

#include "ep_dsp_im2col.h"
#include "ep_sparse_common.h"

static inline void ep_sparse_rows_unstructured(const ep_sparse_s8_t *w, const ep_quant_t *q, const int8_t *c0,
                                               const int8_t *c1, int8_t *o0, int8_t *o1)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live;
    const int32_t n_live = w->n_live;
    const uint8_t *d = w->index;
    const int8_t *v = w->values;
    for (int32_t j = 0; j < n_live; ++j) {
        const int32_t o = live[j], n = w->count[j];
        int32_t acc0 = 0, acc1 = 0, k = 0;
        if (c1) {
            for (int32_t e = 0; e < n; ++e) {
                k += d[e];
                acc0 += v[e] * c0[k];
                acc1 += v[e] * c1[k];
            }
            o1[o] = ep_sparse_rq_out(&rq, o, acc1);
        } else {
            for (int32_t e = 0; e < n; ++e) {
                k += d[e];
                acc0 += v[e] * c0[k];
            }
        }
        o0[o] = ep_sparse_rq_out(&rq, o, acc0);
        d += n;
        v += n;
    }
}

static inline void ep_sparse_rows_block4(const ep_sparse_s8_t *w, const ep_quant_t *q, const int8_t *c0,
                                         const int8_t *c1, int8_t *o0, int8_t *o1)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live;
    const int32_t n_live = w->n_live;
    const uint8_t *d = w->index;
    const int8_t *v = w->values;
    for (int32_t j = 0; j < n_live; ++j) {
        const int32_t o = live[j], n = w->count[j];
        int32_t acc0 = 0, acc1 = 0, k = 0;
        for (int32_t e = 0; e < n; ++e, v += 4) {
            k += 4 * d[e];
            acc0 += v[0] * c0[k] + v[1] * c0[k + 1] + v[2] * c0[k + 2] + v[3] * c0[k + 3];
            if (c1) {
                acc1 += v[0] * c1[k] + v[1] * c1[k + 1] + v[2] * c1[k + 2] + v[3] * c1[k + 3];
            }
        }
        d += n;
        o0[o] = ep_sparse_rq_out(&rq, o, acc0);
        if (c1) {
            o1[o] = ep_sparse_rq_out(&rq, o, acc1);
        }
    }
}

static inline int32_t ep_sparse_nm_value_stride(int32_t cols)
{
    return ep_sparse_round4(cols / 2);
}

static inline int32_t ep_sparse_nm_index_stride(int32_t cols)
{
    return (cols + 7) / 8;
}

static inline void ep_sparse_rows_nm24(const ep_sparse_s8_t *w, const ep_quant_t *q, const int8_t *c0,
                                       const int8_t *c1, int8_t *o0, int8_t *o1)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live;
    const int32_t n_live = w->n_live;
    const int32_t groups = w->cols / 4;
    const int32_t v_stride = ep_sparse_nm_value_stride(w->cols), i_stride = ep_sparse_nm_index_stride(w->cols);
    for (int32_t j = 0; j < n_live; ++j) {
        const int32_t o = live[j];
        const int8_t *v = w->values + j * v_stride;
        const uint8_t *idx = w->index + j * i_stride;
        int32_t acc0 = 0, acc1 = 0;
        for (int32_t g = 0; g < groups; ++g) {
            const int32_t nib = (idx[g >> 1] >> ((g & 1) * 4)) & 15;
            const int32_t k0 = 4 * g + (nib & 3), k1 = 4 * g + (nib >> 2);
            acc0 += v[2 * g] * c0[k0] + v[2 * g + 1] * c0[k1];
            if (c1) {
                acc1 += v[2 * g] * c1[k0] + v[2 * g + 1] * c1[k1];
            }
        }
        o0[o] = ep_sparse_rq_out(&rq, o, acc0);
        if (c1) {
            o1[o] = ep_sparse_rq_out(&rq, o, acc1);
        }
    }
}

static inline void ep_sparse_rows_dead(const ep_sparse_s8_t *w, const ep_quant_t *q, const int8_t *c0,
                                       const int8_t *c1, int8_t *o0, int8_t *o1)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live;
    const int32_t n_live = w->n_live;
    const int32_t cols = w->cols, stride = ep_sparse_round4(cols);
    for (int32_t j = 0; j < n_live; ++j) {
        const int32_t o = live[j];
        const int8_t *v = w->values + j * stride;
        int32_t acc0 = 0, acc1 = 0;
        for (int32_t k = 0; k < cols; ++k) {
            acc0 += v[k] * c0[k];
        }
        o0[o] = ep_sparse_rq_out(&rq, o, acc0);
        if (c1) {
            for (int32_t k = 0; k < cols; ++k) {
                acc1 += v[k] * c1[k];
            }
            o1[o] = ep_sparse_rq_out(&rq, o, acc1);
        }
    }
}

#if defined(EP_DSP_ENABLED)
/* The DSP variants of block4 and dead read inputs already widened to int16 by the drivers below: per
 * block of 4 positions and per column, the words SXTB16(x) = (x0,x2) and SXTB16(x ror 8) = (x1,x3), so a
 * block costs one LDR of weights, two SXTB16 and one SMLAD pair per column. Conv drivers interleave 4
 * output pixels (8 words per block), which also lets the 4 requantizations of a channel share their
 * per-channel work; FULLY_CONNECTED widens one batch row at a time (2 words per block). */
/* Not inlined (GCC): a tight loop of its own instead of spills inside the drivers. */
#if defined(__GNUC__)
#define EP_SPARSE_NOINLINE __attribute__((noinline, unused)) static
#else
#define EP_SPARSE_NOINLINE static inline
#endif
EP_SPARSE_NOINLINE void ep_sparse_widen(const int8_t *src, int32_t n, int32_t *dst, int32_t step)
{
    const int8_t *end = src + n;
    for (; end - src >= 8; src += 8, dst += 2 * step) {
        const int32_t x0 = ep_dsp_read32(src), x1 = ep_dsp_read32(src + 4);
        dst[0] = __sxtb16(x0);
        dst[1] = ep_dsp_sxtb16_ror8(x0);
        dst[step] = __sxtb16(x1);
        dst[step + 1] = ep_dsp_sxtb16_ror8(x1);
    }
    for (; src != end; src += 4, dst += step) {
        const int32_t x = ep_dsp_read32(src);
        dst[0] = __sxtb16(x);
        dst[1] = ep_dsp_sxtb16_ror8(x);
    }
}

/* Requantizes the 4 accumulators of channel o; with all 4 columns present the calls share the
 * per-channel work (multiplier, shift, masks) once inlined. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void ep_sparse_out4(const ep_sparse_rq_t *rq, int32_t o, int32_t a0, int32_t a1, int32_t a2, int32_t a3,
                                  int8_t *out, int32_t stride, int32_t n)
{
    if (n == 4) { /* all four before any store: int8 stores could alias the parameters */
        const int32_t m = rq->mult[o], sh = rq->shift[o], b = rq->bias[o];
        const int32_t oo = rq->out_offset, lo = rq->lo, hi = rq->hi;
        int32_t v0, v1, v2, v3;
        if (ep_rshift_form_applies(m, sh)) { /* the usual case, tested once per channel */
            v0 = ep_multiply_by_quantized_multiplier_rshift(a0 + b, m, -sh) + oo;
            v1 = ep_multiply_by_quantized_multiplier_rshift(a1 + b, m, -sh) + oo;
            v2 = ep_multiply_by_quantized_multiplier_rshift(a2 + b, m, -sh) + oo;
            v3 = ep_multiply_by_quantized_multiplier_rshift(a3 + b, m, -sh) + oo;
            v0 = v0 < lo ? lo : (v0 > hi ? hi : v0);
            v1 = v1 < lo ? lo : (v1 > hi ? hi : v1);
            v2 = v2 < lo ? lo : (v2 > hi ? hi : v2);
            v3 = v3 < lo ? lo : (v3 > hi ? hi : v3);
        } else {
            v0 = ep_requantize_fast(a0 + b, m, sh, oo, lo, hi);
            v1 = ep_requantize_fast(a1 + b, m, sh, oo, lo, hi);
            v2 = ep_requantize_fast(a2 + b, m, sh, oo, lo, hi);
            v3 = ep_requantize_fast(a3 + b, m, sh, oo, lo, hi);
        }
        out[o] = (int8_t)v0;
        out[stride + o] = (int8_t)v1;
        out[2 * stride + o] = (int8_t)v2;
        out[3 * stride + o] = (int8_t)v3;
        return;
    }
    const int32_t acc[4] = {a0, a1, a2, a3};
    for (int32_t c = 0; c < n; ++c) {
        out[c * stride + o] = ep_sparse_rq_out(rq, o, acc[c]);
    }
}

#define EP_SPARSE_MAC4(w02, w13, x)       \
    do {                                  \
        a0 = __smlad(w02, x[0], a0);      \
        a0 = __smlad(w13, x[1], a0);      \
        a1 = __smlad(w02, x[2], a1);      \
        a1 = __smlad(w13, x[3], a1);      \
        a2 = __smlad(w02, x[4], a2);      \
        a2 = __smlad(w13, x[5], a2);      \
        a3 = __smlad(w02, x[6], a3);      \
        a3 = __smlad(w13, x[7], a3);      \
    } while (0)

/* 4 interleaved columns (tile: 8 words per block); writes out[c * stride + o] for the first n columns. */
EP_SPARSE_NOINLINE void ep_sparse_rows4_block4_dsp(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile,
                                                   int8_t *out, int32_t stride, int32_t n)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live;
    const int32_t n_live = w->n_live;
    const uint8_t *d = w->index;
    const int8_t *v = w->values;
    for (int32_t j = 0; j < n_live; ++j) {
        const int32_t o = live[j], cnt = w->count[j];
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        const int32_t *x = tile;
        for (int32_t e = 0; e < cnt; ++e, v += 4) {
            x += 8 * d[e];
            const int32_t wv = ep_dsp_read32(v);
            const int32_t w02 = __sxtb16(wv), w13 = ep_dsp_sxtb16_ror8(wv);
            EP_SPARSE_MAC4(w02, w13, x);
        }
        d += cnt;
        ep_sparse_out4(&rq, o, a0, a1, a2, a3, out, stride, n);
    }
}

EP_SPARSE_NOINLINE void ep_sparse_rows4_dead_dsp(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile,
                                                 int8_t *out, int32_t stride, int32_t n)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live;
    const int32_t n_live = w->n_live;
    const int32_t blocks = ep_sparse_round4(w->cols) / 4;
    for (int32_t j = 0; j < n_live; ++j) {
        const int32_t o = live[j];
        const int8_t *v = w->values + j * 4 * blocks;
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        const int32_t *x = tile;
        for (int32_t k = 0; k < blocks; ++k, x += 8) {
            const int32_t wv = ep_dsp_read32(v + 4 * k);
            const int32_t w02 = __sxtb16(wv), w13 = ep_dsp_sxtb16_ror8(wv);
            EP_SPARSE_MAC4(w02, w13, x);
        }
        ep_sparse_out4(&rq, o, a0, a1, a2, a3, out, stride, n);
    }
}

/* Values are 4-byte aligned in the blob: saying so lets GCC merge word loads into LDRD. */
#if defined(__GNUC__)
#define EP_SPARSE_ALIGNED4(p) __builtin_assume_aligned((p), 4)
#else
#define EP_SPARSE_ALIGNED4(p) (p)
#endif

/* One widened column (tile: 2 words per block), two blocks per step. */
EP_SPARSE_NOINLINE void ep_sparse_rows1_block4_dsp(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile,
                                                   int8_t *out)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live, *count = w->count;
    const int32_t n_live = w->n_live;
    const uint8_t *d = w->index;
    const int8_t *v = (const int8_t *)EP_SPARSE_ALIGNED4(w->values);
    for (int32_t j = 0; j < n_live; ++j) {
        const int32_t o = live[j], cnt = count[j];
        const uint8_t *end = d + (cnt & ~1);
        int32_t acc = 0;
        const int32_t *x = tile;
        for (; d != end; d += 2, v += 8) {
            int32_t wab[2];
            memcpy(wab, EP_SPARSE_ALIGNED4(v), 8);
            const int32_t *xa = x + 2 * d[0];
            x = xa + 2 * d[1];
            acc = __smlad(__sxtb16(wab[0]), xa[0], acc);
            acc = __smlad(ep_dsp_sxtb16_ror8(wab[0]), xa[1], acc);
            acc = __smlad(__sxtb16(wab[1]), x[0], acc);
            acc = __smlad(ep_dsp_sxtb16_ror8(wab[1]), x[1], acc);
        }
        if (cnt & 1) {
            x += 2 * *d++;
            const int32_t wa = ep_dsp_read32(v);
            acc = __smlad(__sxtb16(wa), x[0], acc);
            acc = __smlad(ep_dsp_sxtb16_ror8(wa), x[1], acc);
            v += 4;
        }
        out[o] = ep_sparse_rq_out(&rq, o, acc);
    }
}

EP_SPARSE_NOINLINE void ep_sparse_rows1_dead_dsp(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile,
                                                 int8_t *out)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live;
    const int32_t n_live = w->n_live;
    const int32_t blocks = ep_sparse_round4(w->cols) / 4;
    for (int32_t j = 0; j < n_live; ++j) {
        const int32_t o = live[j];
        const int8_t *v = w->values + j * 4 * blocks;
        int32_t acc0 = 0, acc1 = 0;
        int32_t k = 0;
        for (; k + 2 <= blocks; k += 2) {
            const int32_t wa = ep_dsp_read32(v + 4 * k), wb = ep_dsp_read32(v + 4 * k + 4);
            acc0 = __smlad(__sxtb16(wa), tile[2 * k], acc0);
            acc0 = __smlad(ep_dsp_sxtb16_ror8(wa), tile[2 * k + 1], acc0);
            acc1 = __smlad(__sxtb16(wb), tile[2 * k + 2], acc1);
            acc1 = __smlad(ep_dsp_sxtb16_ror8(wb), tile[2 * k + 3], acc1);
        }
        if (k < blocks) {
            const int32_t wa = ep_dsp_read32(v + 4 * k);
            acc0 = __smlad(__sxtb16(wa), tile[2 * k], acc0);
            acc0 = __smlad(ep_dsp_sxtb16_ror8(wa), tile[2 * k + 1], acc0);
        }
        out[o] = ep_sparse_rq_out(&rq, o, acc0 + acc1);
    }
}

typedef void (*ep_sparse_rows4_fn)(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile, int8_t *out,
                                   int32_t stride, int32_t n);
typedef void (*ep_sparse_rows1_fn)(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile, int8_t *out);

/* CONV_2D, 4 output pixels per step: their im2col columns widened into the tile. With I % 4 == 0 each
 * tap's inputs (or a row of zero points for padded taps) are widened straight from the input. */
static inline void ep_sparse_conv_dsp(const ep_conv_params_t *params, const ep_quant_t *quant,
                                      const ep_dims_t *input_dims, const int8_t *input, const ep_dims_t *filter_dims,
                                      const ep_sparse_s8_t *filter, const ep_dims_t *output_dims, int8_t *output,
                                      void *scratch, ep_sparse_rows4_fn rows)
{
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t out_w = output_dims->w, out_c = output_dims->c, pixels = output_dims->h * out_w;
    const int32_t cols = filter->cols, len = ep_sparse_round4(cols);
    int8_t *consts = (int8_t *)scratch;
    int32_t *tile = (int32_t *)(void *)(consts + ep_sparse_round4(out_c));
    int8_t *bytes = (int8_t *)(tile + 2 * len);
    const int any_dead = ep_sparse_consts(filter, quant, consts);
    if (ep_sparse_only_consts(filter, consts, output, input_dims->n * pixels, out_c)) {
        return;
    }
    const int8_t pad = (int8_t)(-filter->input_offset);
    const int fast = (in_c & 3) == 0;
    if (fast) {
        ep_sparse_fill(bytes, pad, in_c); /* the zero-point row padded taps read */
    }
    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *in = input + b * in_h * in_w * in_c;
        int8_t *out = output + b * pixels * out_c;
        for (int32_t px = 0; px < pixels; px += 4) {
            const int32_t n = pixels - px >= 4 ? 4 : pixels - px;
            for (int32_t c = 0; c < 4; ++c) {
                int32_t *dst = tile + 2 * c;
                if (c >= n) {
                    for (int32_t k = 0; k < len / 4; ++k) {
                        dst[8 * k] = dst[8 * k + 1] = 0;
                    }
                    continue;
                }
                const int32_t oy = (px + c) / out_w, ox = (px + c) % out_w;
                if (fast) {
                    const int32_t y0 = oy * params->stride_h - params->pad_h, x0 = ox * params->stride_w - params->pad_w;
                    for (int32_t ky = 0; ky < k_h; ++ky) {
                        const int32_t iy = y0 + params->dilation_h * ky;
                        int32_t *row = dst + 2 * ky * k_w * in_c;
                        if (iy >= 0 && iy < in_h && params->dilation_w == 1 && x0 >= 0 && x0 + k_w <= in_w) {
                            ep_sparse_widen(in + (iy * in_w + x0) * in_c, k_w * in_c, row, 8);
                            continue;
                        }
                        for (int32_t kx = 0; kx < k_w; ++kx) {
                            const int32_t ix = x0 + params->dilation_w * kx;
                            const int inside = iy >= 0 && iy < in_h && ix >= 0 && ix < in_w;
                            ep_sparse_widen(inside ? in + (iy * in_w + ix) * in_c : bytes, in_c, row + 2 * kx * in_c, 8);
                        }
                    }
                } else {
                    ep_sparse_im2col(params, input_dims, in, k_h, k_w, oy, ox, pad, cols, len, bytes);
                    ep_sparse_widen(bytes, len, dst, 8);
                }
                if (any_dead) {
                    ep_sparse_put_consts(out + (px + c) * out_c, consts, out_c);
                }
            }
            rows(filter, quant, tile, out + px * out_c, out_c, n);
        }
    }
}

/* FULLY_CONNECTED, one batch row widened at a time. */
static inline void ep_sparse_fc_dsp(const ep_quant_t *quant, int32_t batches, const int8_t *input,
                                    const ep_sparse_s8_t *filter, int8_t *output, void *scratch, ep_sparse_rows1_fn rows)
{
    const int32_t cols = filter->cols, out_c = filter->rows, len = ep_sparse_round4(cols);
    int8_t *consts = (int8_t *)scratch;
    int32_t *tile = (int32_t *)(void *)(consts + ep_sparse_round4(out_c));
    int8_t *bytes = (int8_t *)(tile + len / 2);
    const int any_dead = ep_sparse_consts(filter, quant, consts);
    if (ep_sparse_only_consts(filter, consts, output, batches, out_c)) {
        return;
    }
    for (int32_t b = 0; b < batches; ++b) {
        const int8_t *x = input + b * cols;
        if (cols != len) { /* the last block would read past the row: widen a zero-padded copy */
            ep_sparse_copy(bytes, x, cols);
            ep_sparse_fill(bytes + cols, 0, len - cols);
            x = bytes;
        }
        ep_sparse_widen(x, len, tile, 2);
        if (any_dead) {
            ep_sparse_put_consts(output + b * out_c, consts, out_c);
        }
        rows(filter, quant, tile, output + b * out_c);
    }
}

/* 2:4: two groups per step; their values split with SXTB16 into first and second values, each
 * paired with the inputs its 2-bit position selects (SMLABB/SMLATB on the halves). */
static inline void ep_sparse_rows_nm24_dsp(const ep_sparse_s8_t *w, const ep_quant_t *q, const int8_t *c0,
                                           const int8_t *c1, int8_t *o0, int8_t *o1)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live;
    const int32_t n_live = w->n_live;
    const int32_t groups = w->cols / 4;
    const int32_t v_stride = ep_sparse_nm_value_stride(w->cols), i_stride = ep_sparse_nm_index_stride(w->cols);
    for (int32_t j = 0; j < n_live; ++j) {
        const int32_t o = live[j];
        const int8_t *v = w->values + j * v_stride;
        const uint8_t *idx = w->index + j * i_stride;
        int32_t acc0 = 0, acc1 = 0;
        int32_t g = 0;
        for (; g + 2 <= groups; g += 2) {
            const int32_t nib = idx[g >> 1];
            const int32_t wv = ep_dsp_read32(v + 2 * g);
            const int32_t first = __sxtb16(wv), second = ep_dsp_sxtb16_ror8(wv);
            const int32_t a0 = 4 * g + (nib & 3), a1 = 4 * g + ((nib >> 2) & 3);
            const int32_t b0 = 4 * g + 4 + ((nib >> 4) & 3), b1 = 4 * g + 4 + (nib >> 6);
            acc0 = __smlad(first, (int32_t)(((uint32_t)(uint16_t)c0[a0]) | ((uint32_t)c0[b0] << 16)), acc0);
            acc0 = __smlad(second, (int32_t)(((uint32_t)(uint16_t)c0[a1]) | ((uint32_t)c0[b1] << 16)), acc0);
            if (c1) {
                acc1 = __smlad(first, (int32_t)(((uint32_t)(uint16_t)c1[a0]) | ((uint32_t)c1[b0] << 16)), acc1);
                acc1 = __smlad(second, (int32_t)(((uint32_t)(uint16_t)c1[a1]) | ((uint32_t)c1[b1] << 16)), acc1);
            }
        }
        if (g < groups) {
            const int32_t nib = idx[g >> 1];
            const int32_t k0 = 4 * g + (nib & 3), k1 = 4 * g + ((nib >> 2) & 3);
            acc0 += v[2 * g] * c0[k0] + v[2 * g + 1] * c0[k1];
            if (c1) {
                acc1 += v[2 * g] * c1[k0] + v[2 * g + 1] * c1[k1];
            }
        }
        o0[o] = ep_sparse_rq_out(&rq, o, acc0);
        if (c1) {
            o1[o] = ep_sparse_rq_out(&rq, o, acc1);
        }
    }
}
/* Unstructured, 4 output pixels: the tile holds, for every im2col position k, the 4 columns' inputs as
 * int16 pairs (c0,c1), (c2,c3) (8 bytes per position), so an entry costs one LDRD and four halfword
 * multiply-accumulates whatever its position. Built from 4 byte columns with SXTB16 and PKHBT/PKHTB. */
static inline int32_t ep_sparse_smlabt(int32_t a, int32_t b, int32_t acc)
{
#if defined(EP_BACKEND_DSP)
    return __smlabt(a, b, acc);
#else /* not in ep_acle_host.h: bottom half of a times top half of b */
    return (int32_t)((uint32_t)acc + (uint32_t)(ep_host_lo16(a) * ep_host_hi16(b)));
#endif
}

static inline int32_t ep_sparse_pack_lo(int32_t x, int32_t y)
{
    return (int32_t)(((uint32_t)x & 0xFFFFu) | ((uint32_t)y << 16));
}

static inline int32_t ep_sparse_pack_hi(int32_t x, int32_t y)
{
    return (int32_t)(((uint32_t)x >> 16) | ((uint32_t)y & 0xFFFF0000u));
}

EP_SPARSE_NOINLINE void ep_sparse_pairs4(const int8_t *c0, const int8_t *c1, const int8_t *c2, const int8_t *c3,
                                         int32_t len, int32_t *tile)
{
    for (int32_t k = 0; k < len; k += 4, tile += 8) {
        const int32_t a = ep_dsp_read32(c0 + k), b = ep_dsp_read32(c1 + k);
        const int32_t c = ep_dsp_read32(c2 + k), d = ep_dsp_read32(c3 + k);
        const int32_t a02 = __sxtb16(a), b02 = __sxtb16(b), c02 = __sxtb16(c), d02 = __sxtb16(d);
        const int32_t a13 = ep_dsp_sxtb16_ror8(a), b13 = ep_dsp_sxtb16_ror8(b);
        const int32_t c13 = ep_dsp_sxtb16_ror8(c), d13 = ep_dsp_sxtb16_ror8(d);
        tile[0] = ep_sparse_pack_lo(a02, b02); /* position k */
        tile[1] = ep_sparse_pack_lo(c02, d02);
        tile[2] = ep_sparse_pack_lo(a13, b13); /* k + 1 */
        tile[3] = ep_sparse_pack_lo(c13, d13);
        tile[4] = ep_sparse_pack_hi(a02, b02); /* k + 2 */
        tile[5] = ep_sparse_pack_hi(c02, d02);
        tile[6] = ep_sparse_pack_hi(a13, b13); /* k + 3 */
        tile[7] = ep_sparse_pack_hi(c13, d13);
    }
}

EP_SPARSE_NOINLINE void ep_sparse_rows4_unstructured_dsp(const ep_sparse_s8_t *w, const ep_quant_t *q,
                                                         const int32_t *tile, int8_t *out, int32_t stride, int32_t n)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live, *count = w->count;
    const int32_t n_live = w->n_live;
    const uint8_t *d = w->index;
    const int8_t *v = w->values;
    for (int32_t j = 0; j < n_live; ++j) {
        const int32_t o = live[j], cnt = count[j];
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        const int32_t *x = tile;
        for (int32_t e = 0; e < cnt; ++e) {
            x += 2 * d[e];
            const int32_t wv = v[e], x01 = x[0], x23 = x[1];
            a0 = __smlabb(wv, x01, a0);
            a1 = ep_sparse_smlabt(wv, x01, a1);
            a2 = __smlabb(wv, x23, a2);
            a3 = ep_sparse_smlabt(wv, x23, a3);
        }
        d += cnt;
        v += cnt;
        ep_sparse_out4(&rq, o, a0, a1, a2, a3, out, stride, n);
    }
}

/* Scratch of ep_sparse_conv_pairs: consts[round4(rows)], 4 byte columns, then the tile (8 * round4(cols)). */
static inline void ep_sparse_conv_pairs(const ep_conv_params_t *params, const ep_quant_t *quant,
                                        const ep_dims_t *input_dims, const int8_t *input, const ep_dims_t *filter_dims,
                                        const ep_sparse_s8_t *filter, const ep_dims_t *output_dims, int8_t *output,
                                        void *scratch, ep_sparse_rows4_fn rows)
{
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w, in_c = input_dims->c;
    const int32_t out_w = output_dims->w, out_c = output_dims->c, pixels = output_dims->h * out_w;
    const int32_t cols = filter->cols, len = ep_sparse_round4(cols);
    int8_t *consts = (int8_t *)scratch;
    int8_t *col[4];
    col[0] = consts + ep_sparse_round4(out_c);
    for (int c = 1; c < 4; ++c) {
        col[c] = col[c - 1] + len;
    }
    int32_t *tile = (int32_t *)(void *)(col[3] + len);
    const int any_dead = ep_sparse_consts(filter, quant, consts);
    if (ep_sparse_only_consts(filter, consts, output, input_dims->n * pixels, out_c)) {
        return;
    }
    const int8_t pad = (int8_t)(-filter->input_offset);
    const int direct = k_h == 1 && k_w == 1 && params->pad_h == 0 && params->pad_w == 0 && (in_c & 3) == 0;
    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *in = input + b * input_dims->h * input_dims->w * in_c;
        int8_t *out = output + b * pixels * out_c;
        for (int32_t px = 0; px < pixels; px += 4) {
            const int32_t n = pixels - px >= 4 ? 4 : pixels - px;
            const int8_t *c[4];
            for (int32_t i = 0; i < 4; ++i) {
                const int32_t p = px + (i < n ? i : 0); /* missing pixels repeat the first; not stored */
                const int32_t oy = p / out_w, ox = p % out_w;
                if (direct) {
                    c[i] = in + ((oy * params->stride_h) * input_dims->w + ox * params->stride_w) * in_c;
                } else if (i < n) {
                    ep_sparse_im2col(params, input_dims, in, k_h, k_w, oy, ox, pad, cols, len, col[i]);
                    c[i] = col[i];
                } else {
                    c[i] = col[0];
                }
                if (any_dead && i < n) {
                    ep_sparse_put_consts(out + p * out_c, consts, out_c);
                }
            }
            ep_sparse_pairs4(c[0], c[1], c[2], c[3], len, tile);
            rows(filter, quant, tile, out + px * out_c, out_c, n);
        }
    }
}

#endif /* EP_DSP_ENABLED */

#endif /* EP_SPARSE_ROWS_H_ */
