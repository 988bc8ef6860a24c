/* arm64 NEON pieces of the sparse int8 kernels (block4, dead and nm24 matrix formats).
 *
 * CONV_2D works on tiles of 16 output pixels. Their im2col columns are transposed into a panel of
 * 4 groups of 4 pixels: group g, block kb (4 consecutive columns) holds the 4 bytes of the 4 pixels
 * (16 bytes, ST4 writes it straight from 4 column loads). One int8x4 weight block then feeds 4 dot
 * products (one per group) giving 16 pixel accumulators of one output channel, so the sparse index
 * is decoded once per 16 pixels. Interior pixels (every tap inside the image) are tiled first and read
 * their kernel rows in place; border pixels follow, with rows of input zero points for the padded taps
 * (which the folded bias turns into exact zeros). Requantization runs on the 16 lanes with the
 * channel's multiplier; the int8 results go to a [channel][16] stage that a 16x16 byte transpose writes
 * to the NHWC output. Dead channels keep their constant in the stage for the whole call. nm24 rows are
 * expanded once per call to dense rows and run as the dead format. Dead-format spatial convs with at
 * most 4 live channels and in_c % 16 == 0 take a transpose-free path instead (ep_sn_conv_few below).
 *
 * Each source including this header picks the dot product first: EP_SPARSE_NEON_SDOT 1 uses SDOT
 * (Armv8.2 dot product), 0 the same per-lane sums with widening multiplies (plain Armv8.0 NEON).
 * Only included by aarch64 sources, inside their backend guards.
 */
#ifndef EP_SPARSE_NEON_H_
#define EP_SPARSE_NEON_H_

#include <arm_neon.h>

#include "ep_neon_helpers.h"
#include "ep_sparse_rows.h"

#define EP_SN_TILE 16 /* output pixels per tile */

/* acc[i] += sum of a[4i..4i+3] * b[4i..4i+3]: exactly SDOT's lanes. */
static inline int32x4_t ep_sn_dot(int32x4_t acc, int8x16_t a, int8x16_t b)
{
#if EP_SPARSE_NEON_SDOT
    return vdotq_s32(acc, a, b);
#else
    const int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b)); /* int8 products fit int16 */
    const int16x8_t hi = vmull_high_s8(a, b);
    return vaddq_s32(acc, vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)));
#endif
}

/* An int8x4 block broadcast to all 4 lanes. */
static inline int8x16_t ep_sn_block(const int8_t *v)
{
    int32_t w;
    memcpy(&w, v, 4);
    return vreinterpretq_s8_s32(vdupq_n_s32(w));
}

/* Block `lane` (0..3) of 4 blocks loaded together, broadcast. */
#define EP_SN_BCAST(w4, lane) vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(w4), lane))

#if EP_SPARSE_NEON_SDOT
#define EP_SN_DOT_LANE(acc, x, w4, lane) vdotq_laneq_s32(acc, x, w4, lane)
#else
#define EP_SN_DOT_LANE(acc, x, w4, lane) ep_sn_dot(acc, x, EP_SN_BCAST(w4, lane))
#endif

/* Requantizes 4 lanes of accumulators of possibly different channels (per-lane multiplier and
 * shift vectors), n_rows of them from acc (int32), int8 results to out. */
static inline void ep_sn_requant_rows(const int32_t *acc, const ep_quant_t *q, int32_t n, int8_t *out)
{
    const int16x8_t off = vdupq_n_s16((int16_t)q->output_offset);
    const int8x16_t lo = vdupq_n_s8((int8_t)q->activation_min), hi = vdupq_n_s8((int8_t)q->activation_max);
    int32_t o = 0;
    for (; o + 4 <= n; o += 4) {
        const int32x4_t r = ep_neon_requant_s32(vld1q_s32(acc + o), vld1q_s32(q->multiplier + o),
                                                vld1q_s32(q->shift + o), 0);
        const int8x8_t v = ep_neon_narrow4(r, off, lo, hi);
        vst1_lane_s32((int32_t *)(void *)(out + o), vreinterpret_s32_s8(v), 0);
    }
    for (; o < n; ++o) {
        out[o] = ep_sparse_out(q, o, acc[o]);
    }
}

/* Requantizes 16 pixel accumulators of channel o; int8 results to dst[0..15]. */
static inline void ep_sn_requant16(int32x4_t a0, int32x4_t a1, int32x4_t a2, int32x4_t a3, const ep_quant_t *q,
                                   int32_t o, const ep_neon_out_t *oc, int8_t *dst)
{
    const int32x4_t m = vdupq_n_s32(q->multiplier[o]), s = vdupq_n_s32(q->shift[o]);
    const int fast = q->shift[o] < 0;
    vst1q_s8(dst, ep_neon_narrow16(ep_neon_requant_s32(a0, m, s, fast), ep_neon_requant_s32(a1, m, s, fast),
                                   ep_neon_requant_s32(a2, m, s, fast), ep_neon_requant_s32(a3, m, s, fast),
                                   oc->out_off, oc->act_min, oc->act_max));
}

/* The geometry and buffers of one CONV_2D call. */
typedef struct {
    const ep_sparse_s8_t *w;
    const ep_quant_t *q;
    ep_neon_out_t oc;
    const int8_t *panel;
    int32_t group_stride; /* bytes between the 4 pixel groups of the panel */
    int32_t nkb;          /* blocks per column: round4(cols) / 4 */
    const int8_t *dense;  /* dead / nm24: n_live dense rows of round4(cols) bytes */
    int8_t *stage;        /* [round16(rows)][16] */
} ep_sn_conv_t;

typedef void (*ep_sn_tile_fn)(const ep_sn_conv_t *c);

/* block4: per live row, each block (delta-coded) against the 16 pixels. */
static inline void ep_sn_tile_block4(const ep_sn_conv_t *c)
{
    const ep_sparse_s8_t *w = c->w;
    const uint8_t *d = w->index;
    const int8_t *v = w->values;
    const int8_t *p0 = c->panel, *p1 = p0 + c->group_stride, *p2 = p1 + c->group_stride, *p3 = p2 + c->group_stride;
    for (int32_t j = 0; j < w->n_live; ++j) {
        const int32_t o = w->live[j], n = w->count[j];
        int32x4_t a0 = vdupq_n_s32(w->bias[o]), a1 = a0, a2 = a0, a3 = a0;
        int32_t k = 0, e = 0;
        for (; e + 4 <= n; e += 4, v += 16) { /* 4 blocks share one weight load */
            const int8x16_t w4 = vld1q_s8(v);
            k += 16 * d[e];
            a0 = EP_SN_DOT_LANE(a0, vld1q_s8(p0 + k), w4, 0);
            a1 = EP_SN_DOT_LANE(a1, vld1q_s8(p1 + k), w4, 0);
            a2 = EP_SN_DOT_LANE(a2, vld1q_s8(p2 + k), w4, 0);
            a3 = EP_SN_DOT_LANE(a3, vld1q_s8(p3 + k), w4, 0);
            k += 16 * d[e + 1];
            a0 = EP_SN_DOT_LANE(a0, vld1q_s8(p0 + k), w4, 1);
            a1 = EP_SN_DOT_LANE(a1, vld1q_s8(p1 + k), w4, 1);
            a2 = EP_SN_DOT_LANE(a2, vld1q_s8(p2 + k), w4, 1);
            a3 = EP_SN_DOT_LANE(a3, vld1q_s8(p3 + k), w4, 1);
            k += 16 * d[e + 2];
            a0 = EP_SN_DOT_LANE(a0, vld1q_s8(p0 + k), w4, 2);
            a1 = EP_SN_DOT_LANE(a1, vld1q_s8(p1 + k), w4, 2);
            a2 = EP_SN_DOT_LANE(a2, vld1q_s8(p2 + k), w4, 2);
            a3 = EP_SN_DOT_LANE(a3, vld1q_s8(p3 + k), w4, 2);
            k += 16 * d[e + 3];
            a0 = EP_SN_DOT_LANE(a0, vld1q_s8(p0 + k), w4, 3);
            a1 = EP_SN_DOT_LANE(a1, vld1q_s8(p1 + k), w4, 3);
            a2 = EP_SN_DOT_LANE(a2, vld1q_s8(p2 + k), w4, 3);
            a3 = EP_SN_DOT_LANE(a3, vld1q_s8(p3 + k), w4, 3);
        }
        for (; e < n; ++e, v += 4) {
            const int8x16_t wb = ep_sn_block(v);
            k += 16 * d[e];
            a0 = ep_sn_dot(a0, vld1q_s8(p0 + k), wb);
            a1 = ep_sn_dot(a1, vld1q_s8(p1 + k), wb);
            a2 = ep_sn_dot(a2, vld1q_s8(p2 + k), wb);
            a3 = ep_sn_dot(a3, vld1q_s8(p3 + k), wb);
        }
        d += n;
        ep_sn_requant16(a0, a1, a2, a3, c->q, o, &c->oc, c->stage + 16 * o);
    }
}

/* Dense rows (dead format, or nm24 expanded): every block of the row against the 16 pixels, two rows
 * at a time so that each panel load feeds two dot products. */
#define EP_SN_DENSE_STEP(lane, off)                                                                             \
    do {                                                                                                        \
        const int8x16_t x0 = vld1q_s8(p0 + k + (off)), x1 = vld1q_s8(p1 + k + (off));                           \
        const int8x16_t x2 = vld1q_s8(p2 + k + (off)), x3 = vld1q_s8(p3 + k + (off));                           \
        a0 = EP_SN_DOT_LANE(a0, x0, wa, lane);                                                                  \
        a1 = EP_SN_DOT_LANE(a1, x1, wa, lane);                                                                  \
        a2 = EP_SN_DOT_LANE(a2, x2, wa, lane);                                                                  \
        a3 = EP_SN_DOT_LANE(a3, x3, wa, lane);                                                                  \
        b0 = EP_SN_DOT_LANE(b0, x0, wb, lane);                                                                  \
        b1 = EP_SN_DOT_LANE(b1, x1, wb, lane);                                                                  \
        b2 = EP_SN_DOT_LANE(b2, x2, wb, lane);                                                                  \
        b3 = EP_SN_DOT_LANE(b3, x3, wb, lane);                                                                  \
    } while (0)

static inline void ep_sn_tile_dense(const ep_sn_conv_t *c)
{
    const ep_sparse_s8_t *w = c->w;
    const int32_t nkb = c->nkb, stride = 4 * nkb;
    const int8_t *p0 = c->panel, *p1 = p0 + c->group_stride, *p2 = p1 + c->group_stride, *p3 = p2 + c->group_stride;
    for (int32_t j = 0; j < w->n_live; j += 2) {
        /* An odd last row runs paired with itself. */
        const int32_t oa = w->live[j], jb = j + 1 < w->n_live ? j + 1 : j, ob = w->live[jb];
        const int8_t *va = c->dense + j * stride, *vb = c->dense + jb * stride;
        int32x4_t a0 = vdupq_n_s32(w->bias[oa]), a1 = a0, a2 = a0, a3 = a0;
        int32x4_t b0 = vdupq_n_s32(w->bias[ob]), b1 = b0, b2 = b0, b3 = b0;
        int32_t kb = 0;
        for (; kb + 4 <= nkb; kb += 4) {
            const int8x16_t wa = vld1q_s8(va + 4 * kb), wb = vld1q_s8(vb + 4 * kb);
            const int32_t k = 16 * kb;
            EP_SN_DENSE_STEP(0, 0);
            EP_SN_DENSE_STEP(1, 16);
            EP_SN_DENSE_STEP(2, 32);
            EP_SN_DENSE_STEP(3, 48);
        }
        for (; kb < nkb; ++kb) {
            const int8x16_t wa = ep_sn_block(va + 4 * kb), wb = ep_sn_block(vb + 4 * kb);
            const int32_t k = 16 * kb;
            EP_SN_DENSE_STEP(0, 0);
        }
        ep_sn_requant16(a0, a1, a2, a3, c->q, oa, &c->oc, c->stage + 16 * oa);
        if (jb != j) {
            ep_sn_requant16(b0, b1, b2, b3, c->q, ob, &c->oc, c->stage + 16 * ob);
        }
    }
}

/* Transposes `len` bytes (a multiple of 4) from 4 pixel sources into panel words: 16 bytes of the
 * 4 pixels per ST4, word by word for the tail. dst advances 4 bytes per source byte. */
static inline void ep_sn_transpose4(const int8_t *s0, const int8_t *s1, const int8_t *s2, const int8_t *s3,
                                    int32_t len, int8_t *dst)
{
    int32_t i = 0;
    for (; i + 16 <= len; i += 16) {
#if defined(__GNUC__)
        /* GCC 12 passes an int32x4x4_t for vst4q through the stack: 4 more stores and a load. */
        __asm__ volatile("ldr q28, [%1], #16\n\t"
                         "ldr q29, [%2], #16\n\t"
                         "ldr q30, [%3], #16\n\t"
                         "ldr q31, [%4], #16\n\t"
                         "st4 {v28.4s, v29.4s, v30.4s, v31.4s}, [%0], #64"
                         : "+r"(dst), "+r"(s0), "+r"(s1), "+r"(s2), "+r"(s3)
                         :
                         : "v28", "v29", "v30", "v31", "memory");
#else
        int32x4x4_t t;
        t.val[0] = vreinterpretq_s32_s8(vld1q_s8(s0));
        t.val[1] = vreinterpretq_s32_s8(vld1q_s8(s1));
        t.val[2] = vreinterpretq_s32_s8(vld1q_s8(s2));
        t.val[3] = vreinterpretq_s32_s8(vld1q_s8(s3));
        vst4q_s32((int32_t *)(void *)dst, t);
        s0 += 16, s1 += 16, s2 += 16, s3 += 16, dst += 64;
#endif
    }
    for (; i < len; i += 4, dst += 16, s0 += 4, s1 += 4, s2 += 4, s3 += 4) {
        memcpy(dst, s0, 4);
        memcpy(dst + 4, s1, 4);
        memcpy(dst + 8, s2, 4);
        memcpy(dst + 12, s3, 4);
    }
}

/* 16x16 byte transpose of stage rows (channels o..o+15) into `pixels` output pixels, out_c apart:
 * TRN on bytes, halfwords, words, then doublewords, each level pairing rows 1, 2, 4, 8 apart. */
#define EP_SN_TRN(T, R, a, b, x, y)                                                                         \
    do {                                                                                                    \
        const T##_t ta = vreinterpretq_##R##_s8(x), tb = vreinterpretq_##R##_s8(y);                         \
        a = vreinterpretq_s8_##R(vtrn1q_##R(ta, tb));                                                       \
        b = vreinterpretq_s8_##R(vtrn2q_##R(ta, tb));                                                       \
    } while (0)

static inline void ep_sn_store16x16(const int8_t *stage, int8_t *out, int32_t out_c, const int32_t *pix,
                                    int32_t pixels)
{
    const int8x16_t r0 = vld1q_s8(stage), r1 = vld1q_s8(stage + 16), r2 = vld1q_s8(stage + 32);
    const int8x16_t r3 = vld1q_s8(stage + 48), r4 = vld1q_s8(stage + 64), r5 = vld1q_s8(stage + 80);
    const int8x16_t r6 = vld1q_s8(stage + 96), r7 = vld1q_s8(stage + 112), r8 = vld1q_s8(stage + 128);
    const int8x16_t r9 = vld1q_s8(stage + 144), r10 = vld1q_s8(stage + 160), r11 = vld1q_s8(stage + 176);
    const int8x16_t r12 = vld1q_s8(stage + 192), r13 = vld1q_s8(stage + 208), r14 = vld1q_s8(stage + 224);
    const int8x16_t r15 = vld1q_s8(stage + 240);
    int8x16_t a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15;
    int8x16_t b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15;
    a0 = vtrn1q_s8(r0, r1), a1 = vtrn2q_s8(r0, r1), a2 = vtrn1q_s8(r2, r3), a3 = vtrn2q_s8(r2, r3);
    a4 = vtrn1q_s8(r4, r5), a5 = vtrn2q_s8(r4, r5), a6 = vtrn1q_s8(r6, r7), a7 = vtrn2q_s8(r6, r7);
    a8 = vtrn1q_s8(r8, r9), a9 = vtrn2q_s8(r8, r9), a10 = vtrn1q_s8(r10, r11), a11 = vtrn2q_s8(r10, r11);
    a12 = vtrn1q_s8(r12, r13), a13 = vtrn2q_s8(r12, r13), a14 = vtrn1q_s8(r14, r15), a15 = vtrn2q_s8(r14, r15);
    EP_SN_TRN(int16x8, s16, b0, b2, a0, a2);
    EP_SN_TRN(int16x8, s16, b1, b3, a1, a3);
    EP_SN_TRN(int16x8, s16, b4, b6, a4, a6);
    EP_SN_TRN(int16x8, s16, b5, b7, a5, a7);
    EP_SN_TRN(int16x8, s16, b8, b10, a8, a10);
    EP_SN_TRN(int16x8, s16, b9, b11, a9, a11);
    EP_SN_TRN(int16x8, s16, b12, b14, a12, a14);
    EP_SN_TRN(int16x8, s16, b13, b15, a13, a15);
    EP_SN_TRN(int32x4, s32, a0, a4, b0, b4);
    EP_SN_TRN(int32x4, s32, a1, a5, b1, b5);
    EP_SN_TRN(int32x4, s32, a2, a6, b2, b6);
    EP_SN_TRN(int32x4, s32, a3, a7, b3, b7);
    EP_SN_TRN(int32x4, s32, a8, a12, b8, b12);
    EP_SN_TRN(int32x4, s32, a9, a13, b9, b13);
    EP_SN_TRN(int32x4, s32, a10, a14, b10, b14);
    EP_SN_TRN(int32x4, s32, a11, a15, b11, b15);
    EP_SN_TRN(int64x2, s64, b0, b8, a0, a8);
    EP_SN_TRN(int64x2, s64, b1, b9, a1, a9);
    EP_SN_TRN(int64x2, s64, b2, b10, a2, a10);
    EP_SN_TRN(int64x2, s64, b3, b11, a3, a11);
    EP_SN_TRN(int64x2, s64, b4, b12, a4, a12);
    EP_SN_TRN(int64x2, s64, b5, b13, a5, a13);
    EP_SN_TRN(int64x2, s64, b6, b14, a6, a14);
    EP_SN_TRN(int64x2, s64, b7, b15, a7, a15);
    if (pixels == 16) { /* full tiles: no array of rows on the stack */
        vst1q_s8(out + pix[0] * out_c, b0), vst1q_s8(out + pix[1] * out_c, b1);
        vst1q_s8(out + pix[2] * out_c, b2), vst1q_s8(out + pix[3] * out_c, b3);
        vst1q_s8(out + pix[4] * out_c, b4), vst1q_s8(out + pix[5] * out_c, b5);
        vst1q_s8(out + pix[6] * out_c, b6), vst1q_s8(out + pix[7] * out_c, b7);
        vst1q_s8(out + pix[8] * out_c, b8), vst1q_s8(out + pix[9] * out_c, b9);
        vst1q_s8(out + pix[10] * out_c, b10), vst1q_s8(out + pix[11] * out_c, b11);
        vst1q_s8(out + pix[12] * out_c, b12), vst1q_s8(out + pix[13] * out_c, b13);
        vst1q_s8(out + pix[14] * out_c, b14), vst1q_s8(out + pix[15] * out_c, b15);
        return;
    }
    const int8x16_t rows[16] = {b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15};
    for (int32_t p = 0; p < pixels; ++p) {
        vst1q_s8(out + pix[p] * out_c, rows[p]);
    }
}

/* Scratch of the NEON conv variants: stage[round16(rows) * 16], int32 accumulators and consts
 * [round16(rows)], the panel (4 groups of round16(cols) * 4 bytes), 4 im2col columns of round16(cols)
 * bytes, 16 kernel rows and a row of zero points of round16(kw * in_c) bytes, and for nm24 the expanded
 * dense rows. */
static inline int32_t ep_sn_conv_scratch(const ep_sparse_s8_t *w, const ep_dims_t *in_d, const ep_dims_t *f_d)
{
    const int32_t rows16 = ep_neon_round_up(w->rows, 16), cols16 = ep_neon_round_up(w->cols, 16);
    const int32_t row16 = ep_neon_round_up(f_d->w * in_d->c, 16);
    const int32_t dense = w->format == EP_SPARSE_NM24 ? w->n_live * ep_sparse_round4(w->cols) : 0;
    return 16 * rows16 + 5 * rows16 + 16 * cols16 + 4 * cols16 + 17 * row16 + dense + 16;
}

/* Output pixels in tile order: first the interior ones (every tap inside the image) in raster order,
 * whose kernel rows are read in place, then the border ones, gathered through im2col. */
typedef struct {
    int32_t out_h, out_w;
    int32_t y_lo, y_hi, x_lo, x_hi; /* the interior rectangle (empty when lo > hi) */
    int32_t phase, oy, ox;
    int32_t row_bytes, step_x, step_y, pad_off; /* byte offsets of interior pixels' first taps */
} ep_sn_pixels_t;

static inline int32_t ep_sn_div_up(int32_t a, int32_t b)
{
    return a <= 0 ? 0 : (a + b - 1) / b;
}

static inline void ep_sn_pixels_init(ep_sn_pixels_t *it, const ep_conv_params_t *p, const ep_dims_t *in_d,
                                     const ep_dims_t *f_d, const ep_dims_t *out_d, int in_place)
{
    it->out_h = out_d->h;
    it->out_w = out_d->w;
    it->row_bytes = in_d->w * in_d->c;
    it->step_x = p->stride_w * in_d->c;
    it->step_y = p->stride_h * it->row_bytes;
    it->pad_off = -p->pad_h * it->row_bytes - p->pad_w * in_d->c;
    const int32_t span_h = (f_d->h - 1) * p->dilation_h, span_w = (f_d->w - 1) * p->dilation_w;
    it->y_lo = ep_sn_div_up(p->pad_h, p->stride_h);
    it->x_lo = ep_sn_div_up(p->pad_w, p->stride_w);
    const int32_t ry = in_d->h - 1 - span_h + p->pad_h, rx = in_d->w - 1 - span_w + p->pad_w;
    it->y_hi = ry < 0 ? -1 : ry / p->stride_h;
    it->x_hi = rx < 0 ? -1 : rx / p->stride_w;
    it->y_hi = it->y_hi < out_d->h - 1 ? it->y_hi : out_d->h - 1;
    it->x_hi = it->x_hi < out_d->w - 1 ? it->x_hi : out_d->w - 1;
    if (!in_place || it->y_lo > it->y_hi || it->x_lo > it->x_hi) {
        it->y_lo = it->x_lo = 0;
        it->y_hi = it->x_hi = -1;
    }
    it->phase = it->y_hi >= 0 ? 0 : 1;
    it->oy = it->phase == 0 ? it->y_lo : 0;
    it->ox = it->phase == 0 ? it->x_lo : 0;
}

/* Up to 16 next pixels (as oy * out_w + ox) into pix; returns how many, and whether they are interior
 * (then off[] holds the input offset of each one's first tap). */
static inline int32_t ep_sn_pixels_next(ep_sn_pixels_t *it, int32_t *pix, int32_t *off, int *interior)
{
    int32_t n = 0;
    *interior = it->phase == 0;
    if (it->phase == 0) {
        while (n < EP_SN_TILE && it->oy <= it->y_hi) {
            pix[n] = it->oy * it->out_w + it->ox;
            off[n++] = it->pad_off + it->oy * it->step_y + it->ox * it->step_x;
            if (++it->ox > it->x_hi) {
                it->ox = it->x_lo;
                ++it->oy;
            }
        }
        if (it->oy > it->y_hi) {
            it->phase = 1;
            it->oy = it->ox = 0;
        }
        if (n > 0) {
            return n;
        }
        *interior = 0;
    }
    while (n < EP_SN_TILE && it->oy < it->out_h) {
        if (it->ox == it->x_lo && it->oy >= it->y_lo && it->oy <= it->y_hi) {
            it->ox = it->x_hi + 1; /* jump over the interior part of the row */
        } else {
            pix[n++] = it->oy * it->out_w + it->ox++;
        }
        if (it->ox == it->out_w) {
            it->ox = 0;
            ++it->oy;
        }
    }
    return n;
}

/* nm24 rows expanded to dense int8 rows of round4(cols) bytes (the 2 values at their positions). */
static inline void ep_sn_expand_nm24(const ep_sparse_s8_t *w, int8_t *dense)
{
    const int32_t groups = w->cols / 4, stride = ep_sparse_round4(w->cols);
    const int32_t v_stride = ep_sparse_nm_value_stride(w->cols), i_stride = ep_sparse_nm_index_stride(w->cols);
    for (int32_t j = 0; j < w->n_live; ++j) {
        const int8_t *v = w->values + j * v_stride;
        const uint8_t *idx = w->index + j * i_stride;
        int8_t *dst = dense + j * stride;
        for (int32_t g = 0; g < groups; ++g) {
            const int32_t nib = (idx[g >> 1] >> ((g & 1) * 4)) & 15;
            uint32_t word = ((uint32_t)(uint8_t)v[2 * g] << (8 * (nib & 3))) |
                            ((uint32_t)(uint8_t)v[2 * g + 1] << (8 * (nib >> 2)));
            memcpy(dst + 4 * g, &word, 4);
        }
    }
}

/* Few live channels (dead format, in_c % 16 == 0). With 4 or fewer live channels the panel and the
 * 16x16 output transposes would cost more than the dot products they serve, so nothing is
 * transposed: one pixel's 16 input channels at a tap are one vector, dotted with the channel's 16
 * weights there (4 partial sums per lane, added pairwise at the end). A group is 4 pixels by up to 4
 * live channels, or 8 pixels by 1 or 2 (16 accumulators; each input load feeds every channel).
 * Interior pixels read the input in place; border pixels read a gathered im2col row. TBX then merges
 * the live results into the dead channels' constants, one output vector per pixel and 16 channels.
 * Layer 3x3 16->16 on 32x32 with 2 live channels: 79.4K instructions against 142K for the panel. */
#define EP_SN_FEW_MAX 4

static inline int ep_sn_few_ok(const ep_sparse_s8_t *w, int32_t in_c, int32_t taps)
{
    /* Pointwise convs keep the panel path: it measured faster there (1x1 64->64 on 25x5, 3 live channels). */
    return w->format == EP_SPARSE_DEAD && w->n_live <= EP_SN_FEW_MAX && in_c % 16 == 0 && taps > 1;
}

#define EP_SN_FEW_DOT(A, wp)                                                                                    \
    do {                                                                                                        \
        const int8x16_t wv = vld1q_s8(wp);                                                                      \
        A##0 = ep_sn_dot(A##0, x0, wv);                                                                         \
        A##1 = ep_sn_dot(A##1, x1, wv);                                                                         \
        A##2 = ep_sn_dot(A##2, x2, wv);                                                                         \
        A##3 = ep_sn_dot(A##3, x3, wv);                                                                         \
    } while (0)

/* Per live channel j (< EP_SN_FEW_MAX): its bias, multiplier and shift broadcast, set once per call. */
typedef struct {
    int32x4_t bias[EP_SN_FEW_MAX], mult[EP_SN_FEW_MAX], shift[EP_SN_FEW_MAX];
    int fast[EP_SN_FEW_MAX]; /* shift < 0 */
} ep_sn_few_q_t;

/* The 4 pixels' sums (pairwise adds of their partial lanes) plus the bias, requantized for live channel j. */
static inline int32x4_t ep_sn_few_finish(int32x4_t a0, int32x4_t a1, int32x4_t a2, int32x4_t a3,
                                         const ep_sn_few_q_t *cq, int j)
{
    const int32x4_t s = vaddq_s32(vpaddq_s32(vpaddq_s32(a0, a1), vpaddq_s32(a2, a3)), cq->bias[j]);
    return ep_neon_requant_s32(s, cq->mult[j], cq->shift[j], cq->fast[j]);
}

/* One group: pixel l's chunk i (16 bytes) at p<l> + xoff[i], live row j's at dense + j * stride + 16 * i.
 * Returns the int8 results, byte 4 * j + l. nch (1..4) is a constant after inlining. */
static inline __attribute__((always_inline)) int8x16_t
ep_sn_few_group(const int8_t *p0, const int8_t *p1, const int8_t *p2, const int8_t *p3, const int32_t *xoff,
                int32_t chunks, const int8_t *dense, int32_t stride, const ep_sn_few_q_t *cq, const ep_neon_out_t *oc,
                int nch)
{
    const int8_t *w0 = dense, *w1 = dense + (nch > 1 ? stride : 0);
    const int8_t *w2 = dense + (nch > 2 ? 2 * stride : 0), *w3 = dense + (nch > 3 ? 3 * stride : 0);
    const int32x4_t z = vdupq_n_s32(0);
    int32x4_t A0 = z, A1 = z, A2 = z, A3 = z, B0 = z, B1 = z, B2 = z, B3 = z;
    int32x4_t C0 = z, C1 = z, C2 = z, C3 = z, D0 = z, D1 = z, D2 = z, D3 = z;
    for (int32_t i = 0; i < chunks; ++i) {
        const int32_t o = xoff[i], k = 16 * i;
        const int8x16_t x0 = vld1q_s8(p0 + o), x1 = vld1q_s8(p1 + o), x2 = vld1q_s8(p2 + o), x3 = vld1q_s8(p3 + o);
        EP_SN_FEW_DOT(A, w0 + k);
        if (nch > 1) {
            EP_SN_FEW_DOT(B, w1 + k);
        }
        if (nch > 2) {
            EP_SN_FEW_DOT(C, w2 + k);
        }
        if (nch > 3) {
            EP_SN_FEW_DOT(D, w3 + k);
        }
    }
    const int32x4_t r0 = ep_sn_few_finish(A0, A1, A2, A3, cq, 0);
    const int32x4_t r1 = nch > 1 ? ep_sn_few_finish(B0, B1, B2, B3, cq, 1) : r0;
    const int32x4_t r2 = nch > 2 ? ep_sn_few_finish(C0, C1, C2, C3, cq, 2) : r0;
    const int32x4_t r3 = nch > 3 ? ep_sn_few_finish(D0, D1, D2, D3, cq, 3) : r0;
    return ep_neon_narrow16(r0, r1, r2, r3, oc->out_off, oc->act_min, oc->act_max);
}

/* 8 pixels p + l * sx by 1 or 2 live channels (24 accumulators would not leave room for the loads):
 * each weight load feeds 8 dot products. Byte 4 * j + l of the result for pixels 0..3, 8 + 4 * j + l - 4
 * for pixels 4..7. */
#define EP_SN_FEW_DOT8(A, wp)                                                                                   \
    do {                                                                                                        \
        const int8x16_t wv = vld1q_s8(wp);                                                                      \
        A##0 = ep_sn_dot(A##0, x0, wv);                                                                         \
        A##1 = ep_sn_dot(A##1, x1, wv);                                                                         \
        A##2 = ep_sn_dot(A##2, x2, wv);                                                                         \
        A##3 = ep_sn_dot(A##3, x3, wv);                                                                         \
        A##4 = ep_sn_dot(A##4, x4, wv);                                                                         \
        A##5 = ep_sn_dot(A##5, x5, wv);                                                                         \
        A##6 = ep_sn_dot(A##6, x6, wv);                                                                         \
        A##7 = ep_sn_dot(A##7, x7, wv);                                                                         \
    } while (0)

static inline __attribute__((always_inline)) int8x16_t
ep_sn_few_group8(const int8_t *p, int32_t sx, const int32_t *xoff, int32_t chunks, const int8_t *dense, int32_t stride,
                 const ep_sn_few_q_t *cq, const ep_neon_out_t *oc, int nch)
{
    const int8_t *p0 = p, *p1 = p0 + sx, *p2 = p1 + sx, *p3 = p2 + sx, *p4 = p3 + sx, *p5 = p4 + sx, *p6 = p5 + sx;
    const int8_t *p7 = p6 + sx;
    const int8_t *w0 = dense, *w1 = dense + (nch > 1 ? stride : 0);
    const int32x4_t z = vdupq_n_s32(0);
    int32x4_t A0 = z, A1 = z, A2 = z, A3 = z, A4 = z, A5 = z, A6 = z, A7 = z;
    int32x4_t B0 = z, B1 = z, B2 = z, B3 = z, B4 = z, B5 = z, B6 = z, B7 = z;
    for (int32_t i = 0; i < chunks; ++i) {
        const int32_t o = xoff[i], k = 16 * i;
        const int8x16_t x0 = vld1q_s8(p0 + o), x1 = vld1q_s8(p1 + o), x2 = vld1q_s8(p2 + o), x3 = vld1q_s8(p3 + o);
        const int8x16_t x4 = vld1q_s8(p4 + o), x5 = vld1q_s8(p5 + o), x6 = vld1q_s8(p6 + o), x7 = vld1q_s8(p7 + o);
        EP_SN_FEW_DOT8(A, w0 + k);
        if (nch > 1) {
            EP_SN_FEW_DOT8(B, w1 + k);
        }
    }
    const int32x4_t a_lo = ep_sn_few_finish(A0, A1, A2, A3, cq, 0);
    const int32x4_t a_hi = ep_sn_few_finish(A4, A5, A6, A7, cq, 0);
    const int32x4_t b_lo = nch > 1 ? ep_sn_few_finish(B0, B1, B2, B3, cq, 1) : a_lo;
    const int32x4_t b_hi = nch > 1 ? ep_sn_few_finish(B4, B5, B6, B7, cq, 1) : a_hi;
    return ep_neon_narrow16(a_lo, b_lo, a_hi, b_hi, oc->out_off, oc->act_min, oc->act_max);
}

/* The per-call state of the few-channel path. sel[64 * blk + 16 * l ..] are the TBX indices of pixel slot
 * l in output block blk (4 * j + l for live channel j, 255 keeps the constant); xoff_in holds the chunk
 * offsets from a pixel's first tap in the input, xoff_col those in a gathered im2col row. */
typedef struct {
    const ep_sparse_s8_t *w;
    ep_sn_few_q_t cq;
    ep_neon_out_t oc;
    const int32_t *xoff_in, *xoff_col;
    int32_t chunks, stride, out_c;
    const int8_t *consts;
    const uint8_t *sel;
} ep_sn_few_t;

/* The 16-channel output blocks of one pixel: the constants with the live results of slot l put in. */
static inline __attribute__((always_inline)) void ep_sn_few_store(const ep_sn_few_t *f, int8x16_t r, int32_t l,
                                                                  int8_t *dst)
{
    if (f->out_c == 16) { /* the common single block */
        vst1q_s8(dst, vqtbx1q_s8(vld1q_s8(f->consts), r, vld1q_u8(f->sel + 16 * l)));
        return;
    }
    int32_t c = 0;
    for (; c + 16 <= f->out_c; c += 16) {
        vst1q_s8(dst + c, vqtbx1q_s8(vld1q_s8(f->consts + c), r, vld1q_u8(f->sel + 8 * c + 16 * l)));
    }
    if (c < f->out_c) {
        int8_t tail[16];
        vst1q_s8(tail, vqtbx1q_s8(vld1q_s8(f->consts + c), r, vld1q_u8(f->sel + 8 * c + 16 * l)));
        for (int32_t k = c; k < f->out_c; ++k) {
            dst[k] = tail[k - c];
        }
    }
}

/* n (1..4) pixels: inputs p0..p3 (chunk offsets xoff), outputs d0..d<n-1>. */
static inline __attribute__((always_inline)) void
ep_sn_few_run(const ep_sn_few_t *f, const int8_t *p0, const int8_t *p1, const int8_t *p2, const int8_t *p3,
              const int32_t *xoff, int32_t chunks, const int8_t *dense, const ep_sn_few_q_t *cq, int8_t *d0,
              int8_t *d1, int8_t *d2, int8_t *d3, int32_t n, int nch)
{
    const int8x16_t r =
        nch > 0 ? ep_sn_few_group(p0, p1, p2, p3, xoff, chunks, dense, f->stride, cq, &f->oc, nch) : vdupq_n_s8(0);
    ep_sn_few_store(f, r, 0, d0);
    if (n > 1) {
        ep_sn_few_store(f, r, 1, d1);
    }
    if (n > 2) {
        ep_sn_few_store(f, r, 2, d2);
    }
    if (n > 3) {
        ep_sn_few_store(f, r, 3, d3);
    }
}

/* n pixels p + k * sx of one row (outputs d + k * out_c), chunk offsets xoff, weights from dense (live row
 * j at dense + j * stride), biases in cq: 8 at a time with 1 or 2 live channels, then 4 at a time. */
static inline __attribute__((always_inline)) void ep_sn_few_row(const ep_sn_few_t *f, const int8_t *p, int32_t sx,
                                                                const int32_t *xoff, int32_t chunks,
                                                                const int8_t *dense, const ep_sn_few_q_t *cq,
                                                                int8_t *d, int32_t n, int nch)
{
    const int32_t out_c = f->out_c;
    int32_t k = 0;
    if (nch > 0 && nch <= 2) {
        for (; k + 8 <= n; k += 8, p += 8 * sx, d += 8 * out_c) {
            const int8x16_t r = ep_sn_few_group8(p, sx, xoff, chunks, dense, f->stride, cq, &f->oc, nch);
            for (int32_t l = 0; l < 8; ++l) {
                ep_sn_few_store(f, r, l, d + l * out_c);
            }
        }
        if (k < n && k >= 8) {
            /* The row's last 1..7 pixels: one more group of 8 ending at the last pixel, recomputing
             * (and rewriting with the same values) some already done; cheaper than smaller groups. */
            const int32_t back = k + 8 - n;
            p -= back * sx;
            d -= back * out_c;
            const int8x16_t r = ep_sn_few_group8(p, sx, xoff, chunks, dense, f->stride, cq, &f->oc, nch);
            for (int32_t l = 0; l < 8; ++l) {
                ep_sn_few_store(f, r, l, d + l * out_c);
            }
            k = n;
        }
    }
    for (; k + 4 <= n; k += 4, p += 4 * sx, d += 4 * out_c) {
        ep_sn_few_run(f, p, p + sx, p + 2 * sx, p + 3 * sx, xoff, chunks, dense, cq, d, d + out_c, d + 2 * out_c,
                      d + 3 * out_c, 4, nch);
    }
    if (k < n) { /* lanes past the last pixel repeat lane 0 (never stored) */
        const int32_t m = n - k;
        ep_sn_few_run(f, p, m > 1 ? p + sx : p, m > 2 ? p + 2 * sx : p, p, xoff, chunks, dense, cq, d,
                      m > 1 ? d + out_c : d, m > 2 ? d + 2 * out_c : d, d, m, nch);
    }
}

/* Border rows (above or below the interior rectangle) whose columns x_lo..x_hi are read in place too: the
 * kernel rows that fall in the padding are skipped, their dot products with the zero point (a constant per
 * channel) added to the bias instead, which is exact. Kernel rows ky0..ky1-1 are inside the image. */
#define EP_SN_FEW_XO_MAX 64

static inline int ep_sn_few_edge_rows(const ep_conv_params_t *p, const ep_dims_t *in_d, int32_t k_h, int32_t oy,
                                      int32_t *ky0, int32_t *ky1)
{
    const int32_t y0 = oy * p->stride_h - p->pad_h;
    int32_t a = 0, b = k_h;
    while (a < k_h && y0 + p->dilation_h * a < 0) {
        ++a;
    }
    while (b > a && y0 + p->dilation_h * (b - 1) >= in_d->h) {
        --b;
    }
    *ky0 = a;
    *ky1 = b;
    return a < b;
}

/* The im2col row of one border pixel (in_c % 16 == 0), zero points for the padded taps. Not inlined: the
 * pixel loops keep their registers. */
static __attribute__((noinline)) void ep_sn_few_gather(const ep_conv_params_t *p, const ep_dims_t *in_d,
                                                       const int8_t *in, int32_t k_h, int32_t k_w, int32_t oy,
                                                       int32_t ox, int8x16_t zp, int8_t *dst)
{
    const int32_t in_c = in_d->c, y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w;
    const int32_t row = k_w * in_c; /* bytes of one kernel row */
    const int x_in = p->dilation_w == 1 && x0 >= 0 && x0 + k_w <= in_d->w;
    for (int32_t ky = 0; ky < k_h; ++ky, dst += row) {
        const int32_t iy = y0 + p->dilation_h * ky;
        if (iy < 0 || iy >= in_d->h) {
            for (int32_t h = 0; h < row; h += 16) {
                vst1q_s8(dst + h, zp);
            }
        } else if (x_in) { /* the whole kernel row is contiguous in the input */
            const int8_t *src = in + (iy * in_d->w + x0) * in_c;
            for (int32_t h = 0; h < row; h += 16) {
                vst1q_s8(dst + h, vld1q_s8(src + h));
            }
        } else if (p->dilation_w == 1) { /* zero points, the part inside the image, zero points */
            const int32_t lo = (x0 < 0 ? -x0 : 0) * in_c, x1 = in_d->w - x0;
            const int32_t hi = (x1 < k_w ? (x1 > 0 ? x1 : 0) : k_w) * in_c;
            const int32_t src = (iy * in_d->w + x0) * in_c; /* in + src + h is inside for h in [lo, hi) */
            int32_t h = 0;
            for (; h < lo && h < row; h += 16) {
                vst1q_s8(dst + h, zp);
            }
            for (; h < hi; h += 16) {
                vst1q_s8(dst + h, vld1q_s8(in + (src + h)));
            }
            for (; h < row; h += 16) {
                vst1q_s8(dst + h, zp);
            }
        } else {
            for (int32_t kx = 0; kx < k_w; ++kx) {
                const int32_t ix = x0 + p->dilation_w * kx;
                const int inside = ix >= 0 && ix < in_d->w;
                const int8_t *src = in + (iy * in_d->w + (inside ? ix : 0)) * in_c;
                for (int32_t h = 0; h < in_c; h += 16) {
                    vst1q_s8(dst + kx * in_c + h, inside ? vld1q_s8(src + h) : zp);
                }
            }
        }
    }
}

/* All output pixels of one batch with nch live channels: interior pixels, then the columns x_lo..x_hi of
 * the top and bottom border rows, along their row and read in place; then the rest, gathered 4 at a time. */
static inline __attribute__((always_inline)) void
ep_sn_few_batch(const ep_sn_few_t *f, const ep_conv_params_t *params, const ep_dims_t *in_d, const int8_t *in,
                const ep_dims_t *f_d, const ep_dims_t *out_d, int8_t *out, int8_t *cols_buf, int8_t pad, int nch)
{
    const int32_t out_c = out_d->c, out_w = out_d->w, cols = f->w->cols;
    ep_sn_pixels_t it;
    ep_sn_pixels_init(&it, params, in_d, f_d, out_d, 1);
    for (int32_t oy = it.y_lo; oy <= it.y_hi; ++oy) {
        const int8_t *p = in + (it.pad_off + oy * it.step_y + it.x_lo * it.step_x);
        int8_t *d = out + (oy * out_w + it.x_lo) * out_c;
        ep_sn_few_row(f, p, it.step_x, f->xoff_in, f->chunks, f->w->values, &f->cq, d, it.x_hi + 1 - it.x_lo, nch);
    }
    const int8x16_t zp = vdupq_n_s8(pad);
    const int32_t kc = f_d->w * in_d->c / 16; /* chunks per kernel row */
    const int edges = it.x_lo <= it.x_hi && f->chunks <= EP_SN_FEW_XO_MAX;
    for (int32_t oy = 0; edges && oy < out_d->h; ++oy) {
        int32_t ky0, ky1;
        if ((oy >= it.y_lo && oy <= it.y_hi) || !ep_sn_few_edge_rows(params, in_d, f_d->h, oy, &ky0, &ky1)) {
            continue;
        }
        const int32_t c0 = ky0 * kc, c1 = ky1 * kc, dy = ky0 * params->dilation_h;
        int32_t xo[EP_SN_FEW_XO_MAX];
        for (int32_t i = c0; i < c1; ++i) {
            xo[i - c0] = f->xoff_in[i] - dy * it.row_bytes;
        }
        ep_sn_few_q_t cq = f->cq;
        for (int j = 0; j < nch; ++j) {
            const int8_t *w = f->w->values + j * f->stride;
            int32_t s = 0;
            for (int32_t i = 0; i < f->chunks; ++i) {
                s += i < c0 || i >= c1 ? vaddlvq_s8(vld1q_s8(w + 16 * i)) : 0;
            }
            cq.bias[j] = vaddq_s32(cq.bias[j], vdupq_n_s32(s * pad));
        }
        const int8_t *p =
            in + ((oy * params->stride_h - params->pad_h + dy) * in_d->w + it.x_lo * params->stride_w - params->pad_w) *
                     in_d->c;
        ep_sn_few_row(f, p, it.step_x, xo, c1 - c0, f->w->values + 16 * c0, &cq, out + (oy * out_w + it.x_lo) * out_c,
                      it.x_hi + 1 - it.x_lo, nch);
    }
    const int8_t *base[4];
    int8_t *dst[4];
    int32_t n = 0;
    for (int32_t oy = 0; oy < out_d->h; ++oy) {
        int32_t ky0, ky1;
        const int in_rows = (oy >= it.y_lo && oy <= it.y_hi) ||
                            (edges && ep_sn_few_edge_rows(params, in_d, f_d->h, oy, &ky0, &ky1));
        for (int32_t ox = 0; ox < out_w; ++ox) {
            if (in_rows && ox == it.x_lo) {
                ox = it.x_hi; /* skip the interior part of the row */
                continue;
            }
            ep_sn_few_gather(params, in_d, in, f_d->h, f_d->w, oy, ox, zp, cols_buf + n * cols);
            base[n] = cols_buf + n * cols;
            dst[n++] = out + (oy * out_w + ox) * out_c;
            if (n == 4) {
                ep_sn_few_run(f, base[0], base[1], base[2], base[3], f->xoff_col, f->chunks, f->w->values, &f->cq,
                              dst[0], dst[1], dst[2], dst[3], 4, nch);
                n = 0;
            }
        }
    }
    if (n > 0) {
        for (int32_t l = n; l < 4; ++l) {
            base[l] = base[0];
        }
        ep_sn_few_run(f, base[0], base[1], base[2], base[3], f->xoff_col, f->chunks, f->w->values, &f->cq, dst[0],
                      dst[1], dst[2], dst[3], n, nch);
    }
}

/* The few-channel driver; scratch as for ep_sn_conv. */
static inline void ep_sn_conv_few(const ep_conv_params_t *params, const ep_quant_t *quant, const ep_dims_t *input_dims,
                                  const int8_t *input, const ep_dims_t *filter_dims, const ep_sparse_s8_t *filter,
                                  const ep_dims_t *output_dims, int8_t *output, void *scratch)
{
    const int32_t in_c = input_dims->c, k_w = filter_dims->w, out_c = output_dims->c, cols = filter->cols;
    const int32_t rows16 = ep_neon_round_up(out_c, 16), cols16 = ep_neon_round_up(cols, 16);
    const int32_t row_bytes = input_dims->w * in_c, chunks = cols / 16;
    /* The regions of ep_sn_conv: stage -> TBX indices, panel -> gathered rows, im2col columns -> chunk
     * offsets. */
    uint8_t *sel = (uint8_t *)scratch;
    int32_t *acc = (int32_t *)(void *)(sel + 16 * rows16);
    int8_t *consts = (int8_t *)(acc + rows16);
    int8_t *cols_buf = consts + rows16;
    int32_t *xoff_in = (int32_t *)(void *)(cols_buf + 16 * cols16), *xoff_col = xoff_in + chunks;

    memcpy(acc, filter->bias, (size_t)out_c * 4); /* dead channels: requantize(bias) */
    ep_sn_requant_rows(acc, quant, out_c, consts);
    ep_neon_fill(consts + out_c, 0, rows16 - out_c);
    ep_neon_fill((int8_t *)sel, -1, 8 * rows16);
    for (int32_t j = 0; j < filter->n_live; ++j) {
        const int32_t o = filter->live[j];
        for (int32_t l = 0; l < 8; ++l) { /* slots 4..7 only with 8-pixel groups (at most 2 live channels) */
            sel[8 * (o & ~15) + 16 * l + (o & 15)] = (uint8_t)(l < 4 ? 4 * j + l : 8 + 4 * j + l - 4);
        }
    }
    for (int32_t ky = 0, i = 0; ky < filter_dims->h; ++ky) { /* chunk i is columns 16i..16i+15 */
        for (int32_t kx = 0; kx < k_w; ++kx) {
            for (int32_t h = 0; h < in_c; h += 16, ++i) {
                xoff_in[i] = ky * params->dilation_h * row_bytes + kx * params->dilation_w * in_c + h;
                xoff_col[i] = 16 * i;
            }
        }
    }
    ep_sn_few_t f;
    f.w = filter;
    for (int32_t j = 0; j < EP_SN_FEW_MAX; ++j) {
        const int live = j < filter->n_live;
        const int32_t o = live ? filter->live[j] : 0;
        f.cq.bias[j] = vdupq_n_s32(live ? filter->bias[o] : 0);
        f.cq.mult[j] = vdupq_n_s32(live ? quant->multiplier[o] : 0);
        f.cq.shift[j] = vdupq_n_s32(live ? quant->shift[o] : 0);
        f.cq.fast[j] = live && quant->shift[o] < 0;
    }
    f.oc = ep_neon_out_init(quant, 0);
    f.xoff_in = xoff_in;
    f.xoff_col = xoff_col;
    f.chunks = chunks;
    f.stride = ep_sparse_round4(cols);
    f.out_c = out_c;
    f.consts = consts;
    f.sel = sel;
    const int8_t pad = (int8_t)(-filter->input_offset);
    const int32_t in_size = input_dims->h * row_bytes, out_size = output_dims->h * output_dims->w * out_c;
    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *in = input + b * in_size;
        int8_t *out = output + b * out_size;
#define EP_SN_FEW_BATCH(nch) ep_sn_few_batch(&f, params, input_dims, in, filter_dims, output_dims, out, cols_buf, pad, nch)
        switch (filter->n_live) {
        case 0: EP_SN_FEW_BATCH(0); break;
        case 1: EP_SN_FEW_BATCH(1); break;
        case 2: EP_SN_FEW_BATCH(2); break;
        case 3: EP_SN_FEW_BATCH(3); break;
        default: EP_SN_FEW_BATCH(4); break;
        }
#undef EP_SN_FEW_BATCH
    }
}

/* CONV_2D driver of the NEON matrix formats. */
static inline void ep_sn_conv(const ep_conv_params_t *params, const ep_quant_t *quant, const ep_dims_t *input_dims,
                              const int8_t *input, const ep_dims_t *filter_dims, const ep_sparse_s8_t *filter,
                              const ep_dims_t *output_dims, int8_t *output, void *scratch, ep_sn_tile_fn tile)
{
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w, in_c = input_dims->c;
    const int32_t in_h = input_dims->h, in_w = input_dims->w;
    const int32_t out_w = output_dims->w, out_c = output_dims->c, pixels = output_dims->h * out_w;
    const int32_t cols = filter->cols, rows16 = ep_neon_round_up(out_c, 16), cols16 = ep_neon_round_up(cols, 16);
    const int32_t row_len = k_w * in_c;
    const int8_t pad = (int8_t)(-filter->input_offset);
    if (ep_sn_few_ok(filter, in_c, k_h * k_w)) {
        ep_sn_conv_few(params, quant, input_dims, input, filter_dims, filter, output_dims, output, scratch);
        return;
    }

    int8_t *stage = (int8_t *)scratch;
    int32_t *acc = (int32_t *)(void *)(stage + 16 * rows16);
    int8_t *consts = (int8_t *)(acc + rows16);
    int8_t *panel = consts + rows16;
    int8_t *colbuf = panel + 16 * cols16;
    const int32_t row16 = ep_neon_round_up(row_len, 16);
    int8_t *segbuf = colbuf + 4 * cols16;
    int8_t *zp_row = segbuf + 16 * row16;
    int8_t *dense = zp_row + row16;

    ep_sn_conv_t c;
    c.w = filter;
    c.q = quant;
    c.oc = ep_neon_out_init(quant, 0);
    c.panel = panel;
    c.group_stride = 4 * cols16;
    c.nkb = ep_sparse_round4(cols) / 4;
    c.dense = filter->format == EP_SPARSE_NM24 ? dense : filter->values;
    c.stage = stage;
    if (filter->format == EP_SPARSE_NM24) {
        ep_sn_expand_nm24(filter, dense);
    }
    /* Dead channels: requantize(bias) once, kept in the stage for every tile. */
    memcpy(acc, filter->bias, (size_t)out_c * 4);
    ep_sn_requant_rows(acc, quant, out_c, consts);
    for (int32_t o = 0; o < out_c; ++o) {
        ep_neon_fill(stage + 16 * o, consts[o], 16);
    }
    ep_neon_fill(panel, 0, 16 * cols16); /* columns past cols stay zero */
    ep_neon_fill(zp_row, pad, row16);

    /* Interior pixels read whole kernel rows in place when they are contiguous whole words. */
    const int in_place = params->dilation_w == 1 && (row_len & 3) == 0;
    const int32_t full16 = out_c & ~15, row_bytes = in_w * in_c;

    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *in = input + b * in_h * in_w * in_c;
        int8_t *out = output + b * pixels * out_c;
        ep_sn_pixels_t it;
        ep_sn_pixels_init(&it, params, input_dims, filter_dims, output_dims, in_place);
        int32_t pix[EP_SN_TILE], off[EP_SN_TILE];
        int interior;
        for (int32_t np; (np = ep_sn_pixels_next(&it, pix, off, &interior)) > 0;) {
            for (int32_t l = np; l < EP_SN_TILE; ++l) {
                pix[l] = pix[0]; /* lanes past the last pixel repeat lane 0 (computed, never stored) */
                off[l] = off[0];
            }
            if (interior) {
                for (int32_t ky = 0; ky < k_h; ++ky) {
                    const int8_t *row = in + ky * params->dilation_h * row_bytes;
                    int8_t *dst = panel + 4 * ky * row_len;
                    for (int32_t g = 0; g < 16; g += 4, dst += c.group_stride) {
                        ep_sn_transpose4(row + off[g], row + off[g + 1], row + off[g + 2], row + off[g + 3], row_len,
                                         dst);
                    }
                }
            } else if (in_place) {
                /* Border pixels: per kernel row, in place when inside, the zero-point row when above or
                 * below the image, else a copy framed by zero points. */
                for (int32_t ky = 0; ky < k_h; ++ky) {
                    const int8_t *src[EP_SN_TILE];
                    for (int32_t l = 0; l < EP_SN_TILE; ++l) {
                        const int32_t oy = pix[l] / out_w, ox = pix[l] - oy * out_w;
                        const int32_t iy = oy * params->stride_h - params->pad_h + params->dilation_h * ky;
                        const int32_t x0 = ox * params->stride_w - params->pad_w;
                        if (iy < 0 || iy >= in_h) {
                            src[l] = zp_row;
                        } else if (x0 >= 0 && x0 + k_w <= in_w) {
                            src[l] = in + (iy * in_w + x0) * in_c;
                        } else {
                            int8_t *sb = segbuf + l * row16;
                            for (int32_t kx = 0; kx < k_w; ++kx) {
                                const int32_t ix = x0 + kx;
                                if (ix < 0 || ix >= in_w) {
                                    ep_neon_fill(sb + kx * in_c, pad, in_c);
                                } else {
                                    ep_neon_copy(sb + kx * in_c, in + (iy * in_w + ix) * in_c, in_c);
                                }
                            }
                            src[l] = sb;
                        }
                    }
                    int8_t *dst = panel + 4 * ky * row_len;
                    for (int32_t g = 0; g < 16; g += 4, dst += c.group_stride) {
                        ep_sn_transpose4(src[g], src[g + 1], src[g + 2], src[g + 3], row_len, dst);
                    }
                }
            } else {
                for (int32_t g = 0; g < 4; ++g) {
                    for (int32_t i = 0; i < 4; ++i) {
                        const int32_t p = pix[4 * g + i];
                        ep_sparse_im2col(params, input_dims, in, k_h, k_w, p / out_w, p % out_w, pad, cols,
                                         ep_sparse_round4(cols), colbuf + i * cols16);
                    }
                    ep_sn_transpose4(colbuf, colbuf + cols16, colbuf + 2 * cols16, colbuf + 3 * cols16,
                                     ep_sparse_round4(cols), panel + g * c.group_stride);
                }
            }
            tile(&c);
            for (int32_t o = 0; o < full16; o += 16) {
                ep_sn_store16x16(stage + 16 * o, out + o, out_c, pix, np);
            }
            for (int32_t o = full16; o < out_c; ++o) {
                for (int32_t p = 0; p < np; ++p) {
                    out[pix[p] * out_c + o] = stage[16 * o + p];
                }
            }
        }
    }
}

/* FULLY_CONNECTED: one input row at a time; accumulators start at the folded bias for every row
 * (dead rows then requantize to their constant) and are requantized 4 rows per vector. */
static inline int32_t ep_sn_fc_scratch(const ep_sparse_s8_t *w)
{
    return 4 * ep_sparse_round4(w->rows) + ep_neon_round_up(w->cols, 16) + 16;
}

/* block4 row: 4 blocks per dot product, their input words gathered into one vector. */
static inline int32_t ep_sn_fc_row_block4(const int8_t *x, const uint8_t *d, const int8_t *v, int32_t n)
{
    int32x4_t acc = vdupq_n_s32(0);
    int32_t k = 0, e = 0;
    for (; e + 4 <= n; e += 4, v += 16) {
        int32x4_t xv = vdupq_n_s32(0);
        k += 4 * d[e];
        xv = vld1q_lane_s32((const int32_t *)(const void *)(x + k), xv, 0);
        k += 4 * d[e + 1];
        xv = vld1q_lane_s32((const int32_t *)(const void *)(x + k), xv, 1);
        k += 4 * d[e + 2];
        xv = vld1q_lane_s32((const int32_t *)(const void *)(x + k), xv, 2);
        k += 4 * d[e + 3];
        xv = vld1q_lane_s32((const int32_t *)(const void *)(x + k), xv, 3);
        acc = ep_sn_dot(acc, vreinterpretq_s8_s32(xv), vld1q_s8(v));
    }
    int32_t sum = vaddvq_s32(acc);
    for (; e < n; ++e, v += 4) {
        k += 4 * d[e];
        sum += v[0] * x[k] + v[1] * x[k + 1] + v[2] * x[k + 2] + v[3] * x[k + 3];
    }
    return sum;
}

/* Dense row of nkb blocks. */
static inline int32_t ep_sn_fc_row_dense(const int8_t *x, const int8_t *v, int32_t nkb)
{
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0;
    int32_t kb = 0;
    for (; kb + 8 <= nkb; kb += 8) {
        a0 = ep_sn_dot(a0, vld1q_s8(x + 4 * kb), vld1q_s8(v + 4 * kb));
        a1 = ep_sn_dot(a1, vld1q_s8(x + 4 * kb + 16), vld1q_s8(v + 4 * kb + 16));
    }
    for (; kb + 4 <= nkb; kb += 4) {
        a0 = ep_sn_dot(a0, vld1q_s8(x + 4 * kb), vld1q_s8(v + 4 * kb));
    }
    int32_t sum = vaddvq_s32(vaddq_s32(a0, a1));
    for (int32_t k = 4 * kb; k < 4 * nkb; ++k) {
        sum += v[k] * x[k];
    }
    return sum;
}

static inline void ep_sn_fc(const ep_quant_t *quant, int32_t batches, const int8_t *input,
                            const ep_sparse_s8_t *filter, int8_t *output, void *scratch)
{
    const int32_t cols = filter->cols, rows = filter->rows, nkb = ep_sparse_round4(cols) / 4;
    int32_t *acc = (int32_t *)scratch;
    int8_t *xbuf = (int8_t *)(acc + ep_sparse_round4(rows));
    const int copy = (cols & 3) != 0; /* words read up to round4(cols) */
    for (int32_t b = 0; b < batches; ++b) {
        const int8_t *x = input + b * cols;
        if (copy) {
            ep_neon_copy(xbuf, x, cols);
            ep_neon_fill(xbuf + cols, 0, 4 * nkb - cols);
            x = xbuf;
        }
        memcpy(acc, filter->bias, (size_t)rows * 4);
        if (filter->format == EP_SPARSE_BLOCK4) {
            const uint8_t *d = filter->index;
            const int8_t *v = filter->values;
            for (int32_t j = 0; j < filter->n_live; ++j) {
                const int32_t n = filter->count[j];
                acc[filter->live[j]] += ep_sn_fc_row_block4(x, d, v, n);
                d += n;
                v += 4 * n;
            }
        } else { /* EP_SPARSE_DEAD */
            for (int32_t j = 0; j < filter->n_live; ++j) {
                acc[filter->live[j]] += ep_sn_fc_row_dense(x, filter->values + j * 4 * nkb, nkb);
            }
        }
        ep_sn_requant_rows(acc, quant, rows, output + b * rows);
    }
}

#endif /* EP_SPARSE_NEON_H_ */
