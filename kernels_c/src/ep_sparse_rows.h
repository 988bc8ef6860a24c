/* Row functions of the matrix formats (CONV_2D and FULLY_CONNECTED share them): the dot products of
 * every live row with one or two input columns, then requantization. Accumulators start at 0 and the
 * folded bias is added last: |sum w*x| <= 128*128*65535 < 2^31, so the partial sums cannot overflow.
 * The DSP row functions start from the bias instead (one add less per output): SMLAD/SMLABB wrap
 * modulo 2^32, so the final sum is the same int32 the portable order computes. */
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
 * output pixels (8 words per block): one decoded block feeds 8 SMLADs, and the 4 requantizations of a
 * channel share its parameters. Requantization is checked once per call (ep_sparse_fast_rq): in the
 * usual case (every live row in the rshift form of ep_fixedpoint.h, no activation clamp narrower than
 * int8) it is SMLAL, three ALU steps and one SSAT per output. The conv driver widens 4 pixels' kernel
 * rows per call when they lie inside the input (a 1x1 kernel over contiguous pixels: one call per
 * group). FULLY_CONNECTED widens one batch row at a time (2 words per block); dead rows go two at a time. */
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

/* v clamped to [lo, hi]; sat8 (a constant once inlined) says that is all of int8: one SSAT on Arm. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline int32_t ep_sparse_clamp(int32_t v, int32_t lo, int32_t hi, int sat8)
{
#if defined(EP_HAS_DSP_EXTENSION)
    if (sat8) {
        return __ssat(v, 8);
    }
#else
    (void)sat8;
#endif
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

/* Whether ep_multiply_by_quantized_multiplier_rshift applies (ep_rshift_form_applies) in two compares. */
static inline int ep_sparse_rshift_ok(int32_t m, int32_t sh)
{
    return m > 0 && (uint32_t)sh + 31u <= 29u;
}

/* Requantizes channel o's 4 accumulators, which already include its bias (the rows functions start
 * from it: SMLAD wraps, and the final sums are the int32 values the dense kernel computes), into
 * out[c * stride + o] for the first n columns. The clamp is specialized on sat8. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void ep_sparse_out4_sat(const ep_sparse_rq_t *rq, int32_t o, int32_t a0, int32_t a1, int32_t a2,
                                      int32_t a3, int8_t *out, int32_t stride, int32_t n, int sat8)
{
    const int32_t m = rq->mult[o], sh = rq->shift[o];
    if (n == 4 && ep_sparse_rshift_ok(m, sh)) {
        const int32_t oo = rq->out_offset, lo = rq->lo, hi = rq->hi;
        const int32_t v0 = ep_sparse_clamp(ep_multiply_by_quantized_multiplier_rshift(a0, m, -sh) + oo, lo, hi, sat8);
        const int32_t v1 = ep_sparse_clamp(ep_multiply_by_quantized_multiplier_rshift(a1, m, -sh) + oo, lo, hi, sat8);
        const int32_t v2 = ep_sparse_clamp(ep_multiply_by_quantized_multiplier_rshift(a2, m, -sh) + oo, lo, hi, sat8);
        const int32_t v3 = ep_sparse_clamp(ep_multiply_by_quantized_multiplier_rshift(a3, m, -sh) + oo, lo, hi, sat8);
        int8_t *p = out + o;
        p[0] = (int8_t)v0;
        p[stride] = (int8_t)v1;
        p[2 * stride] = (int8_t)v2;
        p[3 * stride] = (int8_t)v3;
        return;
    }
    const int32_t acc[4] = {a0, a1, a2, a3};
    for (int32_t c = 0; c < n; ++c) {
        out[c * stride + o] = ep_requantize_fast(acc[c], m, sh, rq->out_offset, rq->lo, rq->hi);
    }
}

/* One output of channel o (FULLY_CONNECTED); acc includes the bias. The clamp is specialized on sat8;
 * the rshift test is per row (a precheck of all rows would cost as much with one output per row). */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline int8_t ep_sparse_out1_sat(const ep_sparse_rq_t *rq, int32_t o, int32_t acc, int sat8)
{
    const int32_t m = rq->mult[o], sh = rq->shift[o];
    if (ep_sparse_rshift_ok(m, sh)) {
        return (int8_t)ep_sparse_clamp(ep_multiply_by_quantized_multiplier_rshift(acc, m, -sh) + rq->out_offset,
                                       rq->lo, rq->hi, sat8);
    }
    return ep_requantize_fast(acc, m, sh, rq->out_offset, rq->lo, rq->hi);
}

/* Whether the activation range is all of int8 (the clamp is then one SSAT). */
static inline int ep_sparse_sat8(const ep_quant_t *q)
{
    return q->activation_min == -128 && q->activation_max == 127;
}

/* The usual case, checked once per call: every live row takes the rshift form and the activation
 * range is all of int8. The rows functions then requantize with no per-row test and one SSAT. */
static inline int ep_sparse_fast_rq(const ep_sparse_s8_t *w, const ep_quant_t *q)
{
    if (!ep_sparse_sat8(q)) {
        return 0;
    }
    for (int32_t j = 0; j < w->n_live; ++j) {
        const int32_t o = w->live[j];
        if (!ep_sparse_rshift_ok(q->multiplier[o], q->shift[o])) {
            return 0;
        }
    }
    return 1;
}

/* ep_sparse_out4_sat for 4 columns when ep_sparse_fast_rq holds. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void ep_sparse_out4_fast(const ep_sparse_rq_t *rq, int32_t o, int32_t a0, int32_t a1, int32_t a2,
                                       int32_t a3, int8_t *out, int32_t stride)
{
    const int32_t m = rq->mult[o], r = -rq->shift[o], oo = rq->out_offset;
    const int32_t v0 = ep_sparse_clamp(ep_multiply_by_quantized_multiplier_rshift(a0, m, r) + oo, -128, 127, 1);
    const int32_t v1 = ep_sparse_clamp(ep_multiply_by_quantized_multiplier_rshift(a1, m, r) + oo, -128, 127, 1);
    const int32_t v2 = ep_sparse_clamp(ep_multiply_by_quantized_multiplier_rshift(a2, m, r) + oo, -128, 127, 1);
    const int32_t v3 = ep_sparse_clamp(ep_multiply_by_quantized_multiplier_rshift(a3, m, r) + oo, -128, 127, 1);
    int8_t *p = out + o;
    p[0] = (int8_t)v0;
    p[stride] = (int8_t)v1;
    p[2 * stride] = (int8_t)v2;
    p[3 * stride] = (int8_t)v3;
}

#if defined(__GNUC__)
#define EP_SPARSE_INLINE __attribute__((always_inline)) static inline
#else
#define EP_SPARSE_INLINE static inline
#endif

/* Two adjacent tile words (int32_t *p, byte offset off) with one LDRD: GCC 12 issues two LDRs. */
#if defined(EP_HAS_DSP_EXTENSION) && defined(__GNUC__)
#define EP_SPARSE_LDRD(a, b, p, off)                                   \
    __asm__("ldrd %0, %1, [%2, #" #off "]"                             \
            : "=&r"(a), "=&r"(b)                                       \
            : "r"(p), "m"(*(const int32_t(*)[2])((p) + (off) / 4)))
#else
#define EP_SPARSE_LDRD(a, b, p, off) ((a) = (p)[(off) / 4], (b) = (p)[(off) / 4 + 1])
#endif

#define EP_SPARSE_MAC4(w02, w13, x)                 \
    do {                                            \
        int32_t x0_, x1_, x2_, x3_, x4_, x5_, x6_, x7_; \
        EP_SPARSE_LDRD(x0_, x1_, x, 0);             \
        EP_SPARSE_LDRD(x2_, x3_, x, 8);             \
        EP_SPARSE_LDRD(x4_, x5_, x, 16);            \
        EP_SPARSE_LDRD(x6_, x7_, x, 24);            \
        a0 = __smlad(w02, x0_, a0);                 \
        a0 = __smlad(w13, x1_, a0);                 \
        a1 = __smlad(w02, x2_, a1);                 \
        a1 = __smlad(w13, x3_, a1);                 \
        a2 = __smlad(w02, x4_, a2);                 \
        a2 = __smlad(w13, x5_, a2);                 \
        a3 = __smlad(w02, x6_, a3);                 \
        a3 = __smlad(w13, x7_, a3);                 \
    } while (0)

/* 4 interleaved columns (tile: 8 words per block); writes out[c * stride + o] for the first n columns.
 * The tile words of one column pair are adjacent: one LDRD each. */
EP_SPARSE_INLINE void ep_sparse_rows4_block4_body(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile,
                                                  int8_t *out, int32_t stride, int32_t n, int fast)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live, *count = w->count;
    const int32_t n_live = w->n_live;
    const uint8_t *d = w->index;
    const int8_t *v = w->values;
    for (int32_t j = 0; j < n_live; ++j) {
        const int32_t o = live[j];
        const uint8_t *end = d + count[j];
        int32_t a0 = rq.bias[o], a1 = a0, a2 = a0, a3 = a0;
        const int32_t *x = tile;
        for (; d != end; ++d, v += 4) {
            x += 8 * *d;
            const int32_t wv = ep_dsp_read32(v);
            const int32_t w02 = __sxtb16(wv), w13 = ep_dsp_sxtb16_ror8(wv);
            int32_t x0, x1, x2, x3, x4, x5, x6, x7;
            EP_SPARSE_LDRD(x0, x1, x, 0);
            EP_SPARSE_LDRD(x2, x3, x, 8);
            EP_SPARSE_LDRD(x4, x5, x, 16);
            EP_SPARSE_LDRD(x6, x7, x, 24);
            a0 = __smlad(w02, x0, a0);
            a0 = __smlad(w13, x1, a0);
            a1 = __smlad(w02, x2, a1);
            a1 = __smlad(w13, x3, a1);
            a2 = __smlad(w02, x4, a2);
            a2 = __smlad(w13, x5, a2);
            a3 = __smlad(w02, x6, a3);
            a3 = __smlad(w13, x7, a3);
        }
        if (fast) {
            ep_sparse_out4_fast(&rq, o, a0, a1, a2, a3, out, stride);
        } else {
            ep_sparse_out4_sat(&rq, o, a0, a1, a2, a3, out, stride, n, 0);
        }
    }
}

EP_SPARSE_NOINLINE void ep_sparse_rows4_block4_dsp(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile,
                                                   int8_t *out, int32_t stride, int32_t n, int fast)
{
    if (fast && n == 4) {
        ep_sparse_rows4_block4_body(w, q, tile, out, stride, 4, 1);
    } else {
        ep_sparse_rows4_block4_body(w, q, tile, out, stride, n, 0);
    }
}

EP_SPARSE_INLINE void ep_sparse_rows4_dead_body(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile,
                                                int8_t *out, int32_t stride, int32_t n, int fast)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live;
    const int32_t n_live = w->n_live;
    const int32_t blocks = ep_sparse_round4(w->cols) / 4;
    const int32_t *end = tile + 8 * blocks;
    const int8_t *v = w->values;
    for (int32_t j = 0; j < n_live; ++j) {
        const int32_t o = live[j];
        int32_t a0 = rq.bias[o], a1 = a0, a2 = a0, a3 = a0;
        for (const int32_t *x = tile; x != end; x += 8, v += 4) {
            const int32_t wv = ep_dsp_read32(v);
            const int32_t w02 = __sxtb16(wv), w13 = ep_dsp_sxtb16_ror8(wv);
            EP_SPARSE_MAC4(w02, w13, x);
        }
        if (fast) {
            ep_sparse_out4_fast(&rq, o, a0, a1, a2, a3, out, stride);
        } else {
            ep_sparse_out4_sat(&rq, o, a0, a1, a2, a3, out, stride, n, 0);
        }
    }
}

EP_SPARSE_NOINLINE void ep_sparse_rows4_dead_dsp(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile,
                                                 int8_t *out, int32_t stride, int32_t n, int fast)
{
    if (fast && n == 4) {
        ep_sparse_rows4_dead_body(w, q, tile, out, stride, 4, 1);
    } else {
        ep_sparse_rows4_dead_body(w, q, tile, out, stride, n, 0);
    }
}

/* Values are 4-byte aligned in the blob: saying so lets GCC merge word loads into LDRD. */
#if defined(__GNUC__)
#define EP_SPARSE_ALIGNED4(p) __builtin_assume_aligned((p), 4)
#else
#define EP_SPARSE_ALIGNED4(p) (p)
#endif

/* One widened column (tile: 2 words per block). */
EP_SPARSE_INLINE void ep_sparse_rows1_block4_body(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile,
                                                  int8_t *out, int sat8)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live, *count = w->count;
    const uint16_t *live_end = live + w->n_live;
    const uint8_t *d = w->index;
    const int8_t *v = (const int8_t *)EP_SPARSE_ALIGNED4(w->values); /* one block per word */
    for (; live != live_end; ++live, ++count) {
        const int32_t o = *live, cnt = *count;
        const uint8_t *end = d + (cnt & ~1);
        int32_t acc = rq.bias[o];
        const int32_t *x = tile;
        while (d != end) { /* two blocks per step */
            int32_t xa0, xa1, xb0, xb1;
            x += 2 * *d++;
            const int32_t wa = ep_dsp_read32(v);
            EP_SPARSE_LDRD(xa0, xa1, x, 0);
            x += 2 * *d++;
            const int32_t wb = ep_dsp_read32(v + 4);
            EP_SPARSE_LDRD(xb0, xb1, x, 0);
            v += 8;
            acc = __smlad(__sxtb16(wa), xa0, acc);
            acc = __smlad(ep_dsp_sxtb16_ror8(wa), xa1, acc);
            acc = __smlad(__sxtb16(wb), xb0, acc);
            acc = __smlad(ep_dsp_sxtb16_ror8(wb), xb1, acc);
        }
        if (cnt & 1) {
            x += 2 * *d++;
            const int32_t wa = ep_dsp_read32(v);
            v += 4;
            acc = __smlad(__sxtb16(wa), x[0], acc);
            acc = __smlad(ep_dsp_sxtb16_ror8(wa), x[1], acc);
        }
        out[o] = ep_sparse_out1_sat(&rq, o, acc, sat8);
    }
}

EP_SPARSE_NOINLINE void ep_sparse_rows1_block4_dsp(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile,
                                                   int8_t *out, int sat8)
{
    if (sat8) {
        ep_sparse_rows1_block4_body(w, q, tile, out, 1);
    } else {
        ep_sparse_rows1_block4_body(w, q, tile, out, 0);
    }
}

/* Two live rows per step share each widened input pair (dense rows: every block is used). */
EP_SPARSE_INLINE void ep_sparse_rows1_dead_body(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile,
                                                int8_t *out, int sat8)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live;
    const int32_t n_live = w->n_live;
    const int32_t stride = ep_sparse_round4(w->cols);
    const int32_t *x_end = tile + stride / 2;
    const int8_t *v = (const int8_t *)EP_SPARSE_ALIGNED4(w->values);
    int32_t j = 0;
    for (; j + 2 <= n_live; j += 2, v += 2 * stride) {
        const int32_t o0 = live[j], o1 = live[j + 1];
        int32_t acc0 = rq.bias[o0], acc1 = rq.bias[o1];
        const int8_t *v0 = v, *v1 = v + stride;
        for (const int32_t *x = tile; x != x_end; x += 2, v0 += 4, v1 += 4) {
            const int32_t x02 = x[0], x13 = x[1];
            const int32_t wa = ep_dsp_read32(v0), wb = ep_dsp_read32(v1);
            acc0 = __smlad(__sxtb16(wa), x02, acc0);
            acc0 = __smlad(ep_dsp_sxtb16_ror8(wa), x13, acc0);
            acc1 = __smlad(__sxtb16(wb), x02, acc1);
            acc1 = __smlad(ep_dsp_sxtb16_ror8(wb), x13, acc1);
        }
        out[o0] = ep_sparse_out1_sat(&rq, o0, acc0, sat8);
        out[o1] = ep_sparse_out1_sat(&rq, o1, acc1, sat8);
    }
    if (j < n_live) {
        const int32_t o = live[j];
        int32_t acc = rq.bias[o];
        for (const int32_t *x = tile; x != x_end; x += 2, v += 4) {
            const int32_t wa = ep_dsp_read32(v);
            acc = __smlad(__sxtb16(wa), x[0], acc);
            acc = __smlad(ep_dsp_sxtb16_ror8(wa), x[1], acc);
        }
        out[o] = ep_sparse_out1_sat(&rq, o, acc, sat8);
    }
}

EP_SPARSE_NOINLINE void ep_sparse_rows1_dead_dsp(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile,
                                                 int8_t *out, int sat8)
{
    if (sat8) {
        ep_sparse_rows1_dead_body(w, q, tile, out, 1);
    } else {
        ep_sparse_rows1_dead_body(w, q, tile, out, 0);
    }
}

/* fast: ep_sparse_fast_rq(w, q), computed once per kernel call. */
typedef void (*ep_sparse_rows4_fn)(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile, int8_t *out,
                                   int32_t stride, int32_t n, int fast);
/* sat8: ep_sparse_sat8(q). */
typedef void (*ep_sparse_rows1_fn)(const ep_sparse_s8_t *w, const ep_quant_t *q, const int32_t *tile, int8_t *out,
                                   int sat8);

/* ep_sparse_consts for the matrix formats (one live entry per row), walking the gaps between live rows
 * instead of testing every row. */
static inline int ep_sparse_consts_rows(const ep_sparse_s8_t *w, const ep_quant_t *q, int8_t *consts)
{
    if (w->n_live >= w->rows) {
        return 0;
    }
    int32_t o = 0;
    for (int32_t j = 0; j <= w->n_live; ++j) {
        const int32_t next = j < w->n_live ? w->live[j] : w->rows;
        for (; o < next; ++o) {
            consts[o] = ep_sparse_out(q, o, w->bias[o]);
        }
        o = next + 1;
    }
    return 1;
}

/* ep_sparse_widen with step 8 (the 4-column conv tile) for n % 8 == 0: the two words of each block are
 * adjacent, so they go out with one STRD. */
EP_SPARSE_NOINLINE void ep_sparse_widen8(const int8_t *src, int32_t n, int32_t *dst)
{
    const int8_t *end = src + n;
    for (; src != end; src += 8, dst += 16) {
        const int32_t x0 = ep_dsp_read32(src), x1 = ep_dsp_read32(src + 4);
        const int32_t a = __sxtb16(x0), b = ep_dsp_sxtb16_ror8(x0);
        const int32_t c = __sxtb16(x1), d = ep_dsp_sxtb16_ror8(x1);
        dst[0] = a;
        dst[1] = b;
        dst[8] = c;
        dst[9] = d;
    }
}

/* The same n bytes (n % 8 == 0) of 4 pixels `pstride` bytes apart, into the 4 columns of the tile:
 * one call per kernel row of a group of 4 output pixels. */
EP_SPARSE_NOINLINE void ep_sparse_widen8x4(const int8_t *src, int32_t pstride, int32_t n, int32_t *dst)
{
    for (int32_t c = 0; c < 4; ++c, src += pstride, dst += 2) {
        const int8_t *s = src, *end = src + n;
        int32_t *d = dst;
        for (; s != end; s += 8, d += 16) {
            const int32_t x0 = ep_dsp_read32(s), x1 = ep_dsp_read32(s + 4);
            const int32_t a = __sxtb16(x0), b = ep_dsp_sxtb16_ror8(x0);
            const int32_t e = __sxtb16(x1), f = ep_dsp_sxtb16_ror8(x1);
            d[0] = a;
            d[1] = b;
            d[8] = e;
            d[9] = f;
        }
    }
}

/* Widens n bytes (n % 4 == 0) into the 4-column tile. */
static inline void ep_sparse_widen_tile(const int8_t *src, int32_t n, int32_t *dst)
{
    if ((n & 7) == 0) {
        ep_sparse_widen8(src, n, dst);
    } else {
        ep_sparse_widen(src, n, dst, 8);
    }
}

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
    const int any_dead = ep_sparse_consts_rows(filter, quant, consts);
    if (ep_sparse_only_consts(filter, consts, output, input_dims->n * pixels, out_c)) {
        return;
    }
    const int fast = ep_sparse_fast_rq(filter, quant);
    const int8_t pad = (int8_t)(-filter->input_offset);
    const int by_tap = (in_c & 3) == 0;
    const int32_t sh = params->stride_h, sw = params->stride_w, dh = params->dilation_h, dw = params->dilation_w;
    const int32_t row_bytes = k_w * in_c, x_span = (k_w - 1) * dw;
    if (by_tap) {
        ep_sparse_fill(bytes, pad, in_c); /* the zero-point row padded taps read */
    }
    const int rows8 = by_tap && dw == 1 && (row_bytes & 7) == 0;
    const int contiguous = rows8 && k_h == 1 && k_w == 1 && sh == 1 && sw == 1 && params->pad_h == 0 &&
                           params->pad_w == 0 && in_w == out_w && in_h == output_dims->h;
    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *in = input + b * in_h * in_w * in_c;
        int8_t *out = output + b * pixels * out_c;
        int32_t oy = 0, ox = 0; /* of pixel px, stepped instead of divided */
        for (int32_t px = 0; px < pixels; px += 4) {
            const int32_t n = pixels - px >= 4 ? 4 : pixels - px;
            /* Fast paths for 4 pixels whose kernel rows are all inside the input and evenly spaced: one
             * widening call per kernel row (a 1x1 kernel without padding and stride: one per group). */
            if (n == 4 && contiguous) {
                ep_sparse_widen8x4(in + px * in_c, in_c, in_c, tile);
                if (any_dead) {
                    for (int32_t c = 0; c < 4; ++c) {
                        ep_sparse_put_consts(out + (px + c) * out_c, consts, out_c);
                    }
                }
                rows(filter, quant, tile, out + px * out_c, out_c, 4, fast);
                for (ox += 4; ox >= out_w; ox -= out_w) {
                    ++oy;
                }
                continue;
            }
            if (n == 4 && rows8 && ox + 3 < out_w) {
                const int32_t y0 = oy * sh - params->pad_h, x0 = ox * sw - params->pad_w;
                if (x0 >= 0 && x0 + 3 * sw + x_span < in_w && y0 >= 0 && y0 + (k_h - 1) * dh < in_h) {
                    const int8_t *src = in + (y0 * in_w + x0) * in_c;
                    for (int32_t ky = 0; ky < k_h; ++ky, src += dh * in_w * in_c) {
                        ep_sparse_widen8x4(src, sw * in_c, row_bytes, tile + 2 * ky * row_bytes);
                    }
                    if (any_dead) {
                        for (int32_t c = 0; c < 4; ++c) {
                            ep_sparse_put_consts(out + (px + c) * out_c, consts, out_c);
                        }
                    }
                    rows(filter, quant, tile, out + px * out_c, out_c, 4, fast);
                    ox += 4;
                    if (ox == out_w) {
                        ox = 0;
                        ++oy;
                    }
                    continue;
                }
            }
            for (int32_t c = 0; c < 4; ++c) {
                int32_t *dst = tile + 2 * c;
                if (c >= n) {
                    for (int32_t k = 0; k < len / 4; ++k) {
                        dst[8 * k] = dst[8 * k + 1] = 0;
                    }
                    continue;
                }
                if (by_tap) {
                    const int32_t y0 = oy * sh - params->pad_h, x0 = ox * sw - params->pad_w;
                    const int x_inside = x0 >= 0 && x0 + x_span < in_w;
                    for (int32_t ky = 0; ky < k_h; ++ky) {
                        const int32_t iy = y0 + dh * ky;
                        int32_t *row = dst + 2 * ky * row_bytes;
                        const int y_inside = iy >= 0 && iy < in_h;
                        if (y_inside && x_inside && dw == 1) { /* the kernel row is contiguous */
                            ep_sparse_widen_tile(in + (iy * in_w + x0) * in_c, row_bytes, row);
                            continue;
                        }
                        for (int32_t kx = 0; kx < k_w; ++kx) {
                            const int32_t ix = x0 + dw * kx;
                            const int inside = y_inside && ix >= 0 && ix < in_w;
                            ep_sparse_widen_tile(inside ? in + (iy * in_w + ix) * in_c : bytes, in_c, row + 2 * kx * in_c);
                        }
                    }
                } else {
                    ep_sparse_im2col(params, input_dims, in, k_h, k_w, oy, ox, pad, cols, len, bytes);
                    ep_sparse_widen(bytes, len, dst, 8);
                }
                if (any_dead) {
                    ep_sparse_put_consts(out + (px + c) * out_c, consts, out_c);
                }
                if (++ox == out_w) {
                    ox = 0;
                    ++oy;
                }
            }
            rows(filter, quant, tile, out + px * out_c, out_c, n, fast);
        }
    }
}

/* ep_sparse_widen with step 2 (one column) for n % 8 == 0, 8 bytes per step. */
EP_SPARSE_NOINLINE void ep_sparse_widen2(const int8_t *src, int32_t n, int32_t *dst)
{
    const int8_t *end = src + n;
    for (; src != end; src += 8, dst += 4) {
        const int32_t x0 = ep_dsp_read32(src), x1 = ep_dsp_read32(src + 4);
        const int32_t a = __sxtb16(x0), b = ep_dsp_sxtb16_ror8(x0);
        const int32_t c = __sxtb16(x1), d = ep_dsp_sxtb16_ror8(x1);
        dst[0] = a;
        dst[1] = b;
        dst[2] = c;
        dst[3] = d;
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
    const int any_dead = ep_sparse_consts_rows(filter, quant, consts);
    if (ep_sparse_only_consts(filter, consts, output, batches, out_c)) {
        return;
    }
    const int sat8 = ep_sparse_sat8(quant);
    for (int32_t b = 0; b < batches; ++b) {
        const int8_t *x = input + b * cols;
        if (cols != len) { /* the last block would read past the row: widen a zero-padded copy */
            ep_sparse_copy(bytes, x, cols);
            ep_sparse_fill(bytes + cols, 0, len - cols);
            x = bytes;
        }
        if ((len & 7) == 0) {
            ep_sparse_widen2(x, len, tile);
        } else {
            ep_sparse_widen(x, len, tile, 2);
        }
        if (any_dead) {
            ep_sparse_put_consts(output + b * out_c, consts, out_c);
        }
        rows(filter, quant, tile, output + b * out_c, sat8);
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
#if defined(EP_HAS_DSP_EXTENSION)
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

EP_SPARSE_INLINE void ep_sparse_rows4_unstructured_body(const ep_sparse_s8_t *w, const ep_quant_t *q,
                                                        const int32_t *tile, int8_t *out, int32_t stride, int32_t n,
                                                        int fast)
{
    const ep_sparse_rq_t rq = ep_sparse_rq(q, w);
    const uint16_t *live = w->live, *count = w->count;
    const int32_t n_live = w->n_live;
    const uint8_t *d = w->index;
    const int8_t *v = w->values;
    for (int32_t j = 0; j < n_live; ++j) {
        const int32_t o = live[j];
        const uint8_t *end = d + count[j];
        int32_t a0 = rq.bias[o], a1 = a0, a2 = a0, a3 = a0;
        const int32_t *x = tile;
        for (; d != end; ++d, ++v) {
            x += 2 * *d;
            const int32_t wv = *v, x01 = x[0], x23 = x[1];
            a0 = __smlabb(wv, x01, a0);
            a1 = ep_sparse_smlabt(wv, x01, a1);
            a2 = __smlabb(wv, x23, a2);
            a3 = ep_sparse_smlabt(wv, x23, a3);
        }
        if (fast) {
            ep_sparse_out4_fast(&rq, o, a0, a1, a2, a3, out, stride);
        } else {
            ep_sparse_out4_sat(&rq, o, a0, a1, a2, a3, out, stride, n, 0);
        }
    }
}

EP_SPARSE_NOINLINE void ep_sparse_rows4_unstructured_dsp(const ep_sparse_s8_t *w, const ep_quant_t *q,
                                                         const int32_t *tile, int8_t *out, int32_t stride, int32_t n, int fast)
{
    if (fast && n == 4) {
        ep_sparse_rows4_unstructured_body(w, q, tile, out, stride, 4, 1);
    } else {
        ep_sparse_rows4_unstructured_body(w, q, tile, out, stride, n, 0);
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
    const int any_dead = ep_sparse_consts_rows(filter, quant, consts);
    if (ep_sparse_only_consts(filter, consts, output, input_dims->n * pixels, out_c)) {
        return;
    }
    const int8_t pad = (int8_t)(-filter->input_offset);
    const int direct = k_h == 1 && k_w == 1 && params->pad_h == 0 && params->pad_w == 0 && (in_c & 3) == 0;
    const int fast = ep_sparse_fast_rq(filter, quant);
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
            rows(filter, quant, tile, out + px * out_c, out_c, n, fast);
        }
    }
}

#endif /* EP_DSP_ENABLED */

#endif /* EP_SPARSE_ROWS_H_ */
