/* DEPTHWISE_CONV_2D, int8, Cortex-M DSP extension.
 *
 * Fast path (depth multiplier 1, dilation 1 along the lines): channels go in blocks of 4. The image
 * is seen as lines, its rows or, when the output is taller than wide, its columns. For each block,
 * the input lines the kernel window needs are widened into channel-planar int16 lines in scratch
 * (input offset added, padding as zeros; a cache of k lines, so each input line is widened once
 * per block), and the weights into (tap, next tap along the line) int16 pairs. Two adjacent taps are
 * then one unaligned word load and one SMLAD; at 3x3 stride 1, four outputs share five word loads
 * per kernel row (one asm block on Arm, see ep_dw_3x3_group4) and are requantized on the spot.
 * Other lines' accumulators are requantized in a second loop, the channel's constants set up once.
 * General path (any multiplier or dilation, channels left over from the blocks): per output pixel
 * the window is clipped to the image once, four channels at a time split by SXTAB16/SXTB16 into
 * pairs (0,2) and (1,3) for SMLABB/SMLATT. */
#include "ep_dsp_im2col.h"

#if defined(EP_DSP_ENABLED)
#include "ep_fixedpoint.h"
#include "ep_kernels.h"

/* Fast-path scratch: k_cross cached lines in 4 planes of line_len int16 each, one block's packed
 * weights, k_cross cache tags and line offsets, and one line of int32 accumulators. A line holds
 * the input positions one output line touches, padding included: (out_len - 1) * stride + k_along
 * of them, which for SAME or VALID padding is below len_in + k_along. */
static int32_t ep_dw_line_len(int32_t len_in, int32_t k_along)
{
    return (len_in + k_along + 2) & ~1;
}

static int32_t ep_dw_fast_bytes(int32_t len_in, int32_t k_along, int32_t k_cross)
{
    return k_cross * 4 * ep_dw_line_len(len_in, k_along) * 2 + 4 * k_cross * ((k_along + 1) / 2) * 4 + 8 * k_cross +
           4 * ep_dw_line_len(len_in, k_along);
}

int32_t ep_depthwise_conv2d_s8_scratch_size_dsp(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                                const ep_dims_t *output_dims)
{
    (void)output_dims;
    const int32_t rows = ep_dw_fast_bytes(input_dims->w, filter_dims->w, filter_dims->h);
    const int32_t cols = ep_dw_fast_bytes(input_dims->h, filter_dims->h, filter_dims->w);
    return rows > cols ? rows : cols; /* the orientation depends on the dilation, not passed here */
}

/* First and one-past-last kernel index whose input coordinate start + dilation * k is inside [0, size). */
static void ep_dw_clip(int32_t start, int32_t dilation, int32_t k_size, int32_t size, int32_t *k0, int32_t *k1)
{
    int32_t lo = 0, hi = k_size;
    while (lo < hi && start + dilation * lo < 0) {
        ++lo;
    }
    while (hi > lo && start + dilation * (hi - 1) >= size) {
        --hi;
    }
    *k0 = lo;
    *k1 = hi;
}

static inline int8_t ep_dw_rq(const ep_quant_t *quant, int32_t acc, int32_t oc)
{
    return ep_requantize_fast(acc, quant->multiplier[oc], quant->shift[oc], quant->output_offset,
                              quant->activation_min, quant->activation_max);
}

/* General path, for output channels from first_channel on. */
static void ep_dw_general(const ep_conv_params_t *params, int32_t depth_multiplier, const ep_quant_t *quant,
                          const ep_dims_t *input_dims, const int8_t *input, const ep_dims_t *filter_dims,
                          const int8_t *filter, const int32_t *bias, const ep_dims_t *output_dims, int8_t *output,
                          int32_t first_channel)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int32_t dil_h = params->dilation_h, dil_w = params->dilation_w;
    const int32_t offset = quant->input_offset, offset2 = ep_dsp_pair16(offset);
    const int32_t x_step = dil_w * in_c;
    const int32_t quads = depth_multiplier == 1 ? in_c / 4 * 4 : 0; /* channels done 4 at a time */
    const int32_t first_single = quads > first_channel ? quads : first_channel;
    int8_t *out = output;

    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *image = &input[b * in_h * in_w * in_c];
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t in_y0 = oy * params->stride_h - params->pad_h;
            int32_t ky0, ky1;
            ep_dw_clip(in_y0, dil_h, k_h, in_h, &ky0, &ky1);
            for (int32_t ox = 0; ox < out_w; ++ox, out += out_c) {
                const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                int32_t kx0, kx1;
                ep_dw_clip(in_x0, dil_w, k_w, in_w, &kx0, &kx1);
                const int32_t in_base = (in_y0 * in_w + in_x0) * in_c;
                for (int32_t c = first_channel; c < quads; c += 4) {
                    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                    if (bias) {
                        a0 = bias[c], a1 = bias[c + 1], a2 = bias[c + 2], a3 = bias[c + 3];
                    }
                    for (int32_t ky = ky0; ky < ky1; ++ky) {
                        int32_t xi = in_base + (dil_h * ky * in_w + dil_w * kx0) * in_c + c;
                        int32_t wi = (ky * k_w + kx0) * out_c + c;
                        for (int32_t kx = kx0; kx < kx1; ++kx, xi += x_step, wi += out_c) {
                            const int32_t xv = ep_dsp_read32(&image[xi]), wv = ep_dsp_read32(&filter[wi]);
                            const int32_t x02 = __sxtab16(offset2, xv), x13 = ep_dsp_sxtab16_ror8(offset2, xv);
                            const int32_t w02 = __sxtb16(wv), w13 = ep_dsp_sxtb16_ror8(wv);
                            a0 = __smlabb(x02, w02, a0);
                            a2 = __smlatt(x02, w02, a2);
                            a1 = __smlabb(x13, w13, a1);
                            a3 = __smlatt(x13, w13, a3);
                        }
                    }
                    out[c] = ep_dw_rq(quant, a0, c);
                    out[c + 1] = ep_dw_rq(quant, a1, c + 1);
                    out[c + 2] = ep_dw_rq(quant, a2, c + 2);
                    out[c + 3] = ep_dw_rq(quant, a3, c + 3);
                }
                /* Leftover channels, and every channel when depth_multiplier > 1. */
                for (int32_t oc = first_single; oc < out_c; ++oc) {
                    const int32_t ic = oc / depth_multiplier;
                    int32_t acc = bias ? bias[oc] : 0;
                    for (int32_t ky = ky0; ky < ky1; ++ky) {
                        int32_t xi = in_base + (dil_h * ky * in_w + dil_w * kx0) * in_c + ic;
                        int32_t wi = (ky * k_w + kx0) * out_c + oc;
                        for (int32_t kx = kx0; kx < kx1; ++kx, xi += x_step, wi += out_c) {
                            acc += filter[wi] * (image[xi] + offset);
                        }
                    }
                    out[oc] = ep_dw_rq(quant, acc, oc);
                }
            }
        }
    }
}

/* The fast path's view of the image: lines (input rows, or columns) of positions along them. */
typedef struct {
    int32_t lines_in, len_in;          /* input lines and positions per line */
    int32_t elem_step, line_step;      /* input index step between positions, between lines */
    int32_t stride, pad;               /* along a line (dilation 1 there) */
    int32_t cross_stride, cross_dilation, cross_pad;
    int32_t k_along, k_cross;          /* kernel taps along / across lines */
    int32_t tap_along, tap_cross;      /* filter tap index steps */
    int32_t out_lines, out_len;
    int32_t out_elem_step, out_line_step;
} ep_dw_geom_t;

/* Widens input line `line`, channels c..c+3, into 4 planes of line_len int16 starting at position
 * -pad. Only the positions inside the image are written (the others stay zero from the block's
 * start); a line outside the image zeroes those positions instead. */
EP_DSP_NOINLINE static void ep_dw_fill_line(const int8_t *image, const ep_dw_geom_t *g, int32_t line, int32_t c,
                                            int32_t line_len, int32_t offset2, int16_t *planes)
{
    int16_t *p0 = planes, *p1 = p0 + line_len, *p2 = p1 + line_len, *p3 = p2 + line_len;
    const int32_t x0 = g->pad > 0 ? g->pad : 0;                                  /* first inside */
    int32_t x1 = g->len_in + g->pad < line_len ? g->len_in + g->pad : line_len; /* last inside + 1 */
    x1 = x1 > x0 ? x1 : x0;
    if (line < 0 || line >= g->lines_in) {
        for (int32_t x = x0; x < x1; ++x) {
            p0[x] = 0;
            p1[x] = 0;
            p2[x] = 0;
            p3[x] = 0;
        }
        return;
    }
    const int32_t step = g->elem_step; /* a local: the stores below could alias *g */
    const int8_t *src = &image[line * g->line_step + (x0 - g->pad) * step + c];
    int32_t x = x0;
    /* Two positions at a time: each plane gets one (unaligned) word store. */
    for (; x + 2 <= x1; x += 2, src += 2 * step) {
        const int32_t va = ep_dsp_read32(src), vb = ep_dsp_read32(src + step);
        const int32_t ea = __sxtab16(offset2, va), oa = ep_dsp_sxtab16_ror8(offset2, va);
        const int32_t eb = __sxtab16(offset2, vb), ob = ep_dsp_sxtab16_ror8(offset2, vb);
        ep_dsp_write32(p0 + x, ep_dsp_pack_lo(ea, eb));
        ep_dsp_write32(p1 + x, ep_dsp_pack_lo(oa, ob));
        ep_dsp_write32(p2 + x, ep_dsp_pack_hi(ea, eb));
        ep_dsp_write32(p3 + x, ep_dsp_pack_hi(oa, ob));
    }
    for (; x < x1; ++x, src += step) {
        const int32_t v = ep_dsp_read32(src);
        const int32_t even = __sxtab16(offset2, v), odd = ep_dsp_sxtab16_ror8(offset2, v);
        p0[x] = (int16_t)even;
        p2[x] = (int16_t)((uint32_t)even >> 16);
        p1[x] = (int16_t)odd;
        p3[x] = (int16_t)((uint32_t)odd >> 16);
    }
}

/* Requantizes one output line of one channel from its accumulators. Kept apart from the dot
 * products so each loop has the registers it needs; the common case (multiplier > 0, shift in
 * [-31, -2]) takes the one-shift form (ep_multiply_by_quantized_multiplier_rshift). */
static inline void ep_dw_requant_line(const int32_t *acc, int32_t n, int32_t multiplier, int32_t shift,
                                      ep_dsp_rq_t rq, int8_t *out, int32_t out_step)
{
    if (ep_rshift_form_applies(multiplier, shift)) {
        const int32_t lo = rq.activation_min, hi = rq.activation_max, zp = rq.output_offset;
        if (lo == -128 && hi == 127) { /* no fused activation: one saturating instruction clamps */
            for (int32_t i = 0; i < n; ++i) {
                const int32_t v = ep_multiply_by_quantized_multiplier_rshift(acc[i], multiplier, -shift) + zp;
                out[i * out_step] = (int8_t)ep_dsp_ssat8(v);
            }
            return;
        }
        for (int32_t i = 0; i < n; ++i) {
            int32_t v = ep_multiply_by_quantized_multiplier_rshift(acc[i], multiplier, -shift) + zp;
            v = v < lo ? lo : v;
            v = v > hi ? hi : v;
            out[i * out_step] = (int8_t)v;
        }
    } else {
        for (int32_t i = 0; i < n; ++i) {
            out[i * out_step] = ep_dsp_rq(rq, acc[i], multiplier, shift);
        }
    }
}

/* Accumulators of one output line of one channel from its k_cross planar lines, any k_along and
 * stride: taps in pairs, one unaligned word load and one SMLAD each. */
static inline void ep_dw_line_generic(const int16_t *plane, const int32_t *line_off, const int32_t *wpack,
                                      const ep_dw_geom_t *g, int32_t acc0, int32_t *acc)
{
    const int32_t k_along = g->k_along, k_cross = g->k_cross, pairs = (k_along + 1) / 2, whole = k_along / 2;
    for (int32_t o = 0; o < g->out_len; ++o) {
        int32_t a = acc0;
        const int32_t x = o * g->stride;
        for (int32_t kc = 0; kc < k_cross; ++kc) {
            const int16_t *r = plane + line_off[kc] + x;
            const int32_t *w = wpack + kc * pairs;
            for (int32_t p = 0; p < whole; ++p) {
                a = __smlad(ep_dsp_read32(r + 2 * p), w[p], a);
            }
            if (k_along & 1) {
                a = __smlabb(r[k_along - 1], w[whole], a);
            }
        }
        acc[o] = a;
    }
}

/* The same for 3x3 kernels, weights held in registers. Each row's third tap is kept in a top half,
 * so it multiplies the top of the word (x1, x2) loaded one position on; at stride 1 four outputs
 * share five word loads per row: (x0,x1) (x1,x2) (x2,x3) (x3,x4) (x4,x5). */
#define EP_DW_3X3_ROW(r, w01, w2)                                                                             \
    do {                                                                                                      \
        const int32_t x01 = ep_dsp_read32((r) + o), x12 = ep_dsp_read32((r) + o + 1);                         \
        const int32_t x23 = ep_dsp_read32((r) + o + 2), x34 = ep_dsp_read32((r) + o + 3);                     \
        const int32_t x45 = ep_dsp_read32((r) + o + 4);                                                       \
        a0 = __smlatt(x12, (w2), __smlad(x01, (w01), a0));                                                    \
        a1 = __smlatt(x23, (w2), __smlad(x12, (w01), a1));                                                    \
        a2 = __smlatt(x34, (w2), __smlad(x23, (w01), a2));                                                    \
        a3 = __smlatt(x45, (w2), __smlad(x34, (w01), a3));                                                    \
    } while (0)

static inline void ep_dw_line_3x3(const int16_t *plane, const int32_t *line_off, const int32_t *wpack,
                                  int32_t stride, int32_t out_len, int32_t acc0, int32_t *acc)
{
    const int16_t *r0 = plane + line_off[0], *r1 = plane + line_off[1], *r2 = plane + line_off[2];
    const int32_t w01a = wpack[0], w01b = wpack[2], w01c = wpack[4];
    const int32_t w2a = (int32_t)((uint32_t)wpack[1] << 16), w2b = (int32_t)((uint32_t)wpack[3] << 16);
    const int32_t w2c = (int32_t)((uint32_t)wpack[5] << 16);
    int32_t o = 0;
    if (stride == 1) {
        for (; o + 4 <= out_len; o += 4) {
            int32_t a0 = acc0, a1 = acc0, a2 = acc0, a3 = acc0;
            EP_DW_3X3_ROW(r0, w01a, w2a);
            EP_DW_3X3_ROW(r1, w01b, w2b);
            EP_DW_3X3_ROW(r2, w01c, w2c);
            acc[o] = a0;
            acc[o + 1] = a1;
            acc[o + 2] = a2;
            acc[o + 3] = a3;
        }
    }
    for (; o < out_len; ++o) {
        const int32_t x = o * stride;
        int32_t a = acc0;
        a = __smlatt(ep_dsp_read32(r0 + x + 1), w2a, __smlad(ep_dsp_read32(r0 + x), w01a, a));
        a = __smlatt(ep_dsp_read32(r1 + x + 1), w2b, __smlad(ep_dsp_read32(r1 + x), w01b, a));
        a = __smlatt(ep_dsp_read32(r2 + x + 1), w2c, __smlad(ep_dsp_read32(r2 + x), w01c, a));
        acc[o] = a;
    }
}

/* Four outputs of the 3x3 stride-1 loop: the dot products of EP_DW_3X3_ROW over the three rows.
 * prm holds w01a, w2a, w01b, w2b, w01c, w2c (third taps in top halves), acc0, and the byte offsets
 * of rows 1 and 2 from row 0; p points at row 0, output position o. On Arm this is one asm block:
 * written in C, the loop around it needs more registers than there are and GCC spills about a
 * quarter of its instructions; here the weights come in pairs by LDRD when a row needs them. */
#if defined(EP_HAS_DSP_EXTENSION) && defined(__GNUC__)
#define EP_DW_ASM_ROW(w_off)                                                                                          \
    "ldrd %[w0], %[w1], [%[prm], #" #w_off "]\n\t"                                                                    \
    "ldr %[x], [%[q]]\n\t"                                                                                            \
    "ldr %[y], [%[q], #2]\n\t"                                                                                        \
    "smlad %[a0], %[x], %[w0], %[a0]\n\t"                                                                             \
    "smlatt %[a0], %[y], %[w1], %[a0]\n\t"                                                                            \
    "smlad %[a1], %[y], %[w0], %[a1]\n\t"                                                                             \
    "ldr %[x], [%[q], #4]\n\t"                                                                                        \
    "smlatt %[a1], %[x], %[w1], %[a1]\n\t"                                                                            \
    "smlad %[a2], %[x], %[w0], %[a2]\n\t"                                                                             \
    "ldr %[y], [%[q], #6]\n\t"                                                                                        \
    "smlatt %[a2], %[y], %[w1], %[a2]\n\t"                                                                            \
    "smlad %[a3], %[y], %[w0], %[a3]\n\t"                                                                             \
    "ldr %[x], [%[q], #8]\n\t"                                                                                        \
    "smlatt %[a3], %[x], %[w1], %[a3]\n\t"

static inline void ep_dw_3x3_group4(const int16_t *p, const int32_t *prm, int32_t *acc)
{
    int32_t a0, a1, a2, a3, x, y, w0, w1;
    const int16_t *q;
    __asm__("ldr %[a3], [%[prm], #24]\n\t" /* acc0, the start of every accumulator */
            "ldrd %[w0], %[w1], [%[prm]]\n\t"
            "ldr %[x], [%[p]]\n\t"
            "ldr %[y], [%[p], #2]\n\t"
            "smlad %[a0], %[x], %[w0], %[a3]\n\t"
            "smlatt %[a0], %[y], %[w1], %[a0]\n\t"
            "smlad %[a1], %[y], %[w0], %[a3]\n\t"
            "ldr %[x], [%[p], #4]\n\t"
            "smlatt %[a1], %[x], %[w1], %[a1]\n\t"
            "smlad %[a2], %[x], %[w0], %[a3]\n\t"
            "ldr %[y], [%[p], #6]\n\t"
            "smlatt %[a2], %[y], %[w1], %[a2]\n\t"
            "smlad %[a3], %[y], %[w0], %[a3]\n\t"
            "ldr %[x], [%[p], #8]\n\t"
            "smlatt %[a3], %[x], %[w1], %[a3]\n\t"
            "ldr %[q], [%[prm], #28]\n\t"
            "add %[q], %[q], %[p]\n\t"
            EP_DW_ASM_ROW(8)
            "ldr %[q], [%[prm], #32]\n\t"
            "add %[q], %[q], %[p]\n\t"
            EP_DW_ASM_ROW(16)
            : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [x] "=&r"(x), [y] "=&r"(y),
              [w0] "=&r"(w0), [w1] "=&r"(w1), [q] "=&r"(q)
            : [p] "r"(p), [prm] "r"(prm), "m"(*(const int32_t(*)[9])prm));
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}
#endif

/* 3x3, stride 1, requantization fused in (channels in the one-shift range): four outputs at a time
 * (then two, then one) sharing each row's words, straight to int8 without a round trip through the
 * accumulator line. */
static EP_DSP_ALWAYS_INLINE void ep_dw_line_3x3_fused(int full, const int16_t *plane, const int32_t *line_off,
                                                      const int32_t *wpack, int32_t out_len, int32_t acc0,
                                                      int32_t multiplier, int32_t right_shift, ep_dsp_rq_t rq,
                                                      int8_t *out, int32_t out_step)
{
    const int16_t *r0 = plane + line_off[0], *r1 = plane + line_off[1], *r2 = plane + line_off[2];
    const int32_t w01a = wpack[0], w01b = wpack[2], w01c = wpack[4];
    const int32_t w2a = (int32_t)((uint32_t)wpack[1] << 16), w2b = (int32_t)((uint32_t)wpack[3] << 16);
    const int32_t w2c = (int32_t)((uint32_t)wpack[5] << 16);
    /* The output offset goes into the final halving: ((f + 1) >> 1) + zp == (f + 1 + 2 zp) >> 1. */
    const int32_t zp2 = 2 * rq.output_offset + 1, lo = rq.activation_min, hi = rq.activation_max;
    int32_t o = 0;
#if defined(EP_HAS_DSP_EXTENSION) && defined(__GNUC__)
    const int32_t prm[9] = {w01a, w2a, w01b, w2b, w01c, w2c, acc0, (int32_t)((r1 - r0) * 2),
                            (int32_t)((r2 - r0) * 2)};
#endif
    for (; o + 4 <= out_len; o += 4) {
#if defined(EP_HAS_DSP_EXTENSION) && defined(__GNUC__)
        int32_t acc[4];
        ep_dw_3x3_group4(r0 + o, prm, acc);
        const int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
#else
        int32_t a0 = acc0, a1 = acc0, a2 = acc0, a3 = acc0;
        EP_DW_3X3_ROW(r0, w01a, w2a);
        EP_DW_3X3_ROW(r1, w01b, w2b);
        EP_DW_3X3_ROW(r2, w01c, w2c);
#endif
        const int32_t v0 = (ep_multiply_by_quantized_multiplier_rshift_floor(a0, multiplier, right_shift) + zp2) >> 1;
        const int32_t v1 = (ep_multiply_by_quantized_multiplier_rshift_floor(a1, multiplier, right_shift) + zp2) >> 1;
        const int32_t v2 = (ep_multiply_by_quantized_multiplier_rshift_floor(a2, multiplier, right_shift) + zp2) >> 1;
        const int32_t v3 = (ep_multiply_by_quantized_multiplier_rshift_floor(a3, multiplier, right_shift) + zp2) >> 1;
        out[o * out_step] = (int8_t)ep_dsp_clamp(full, v0, lo, hi);
        out[(o + 1) * out_step] = (int8_t)ep_dsp_clamp(full, v1, lo, hi);
        out[(o + 2) * out_step] = (int8_t)ep_dsp_clamp(full, v2, lo, hi);
        out[(o + 3) * out_step] = (int8_t)ep_dsp_clamp(full, v3, lo, hi);
    }
    for (; o + 2 <= out_len; o += 2) {
        int32_t a = acc0, b = acc0;
        int32_t x01 = ep_dsp_read32(r0 + o), x12 = ep_dsp_read32(r0 + o + 1), x23 = ep_dsp_read32(r0 + o + 2);
        a = __smlatt(x12, w2a, __smlad(x01, w01a, a));
        b = __smlatt(x23, w2a, __smlad(x12, w01a, b));
        x01 = ep_dsp_read32(r1 + o), x12 = ep_dsp_read32(r1 + o + 1), x23 = ep_dsp_read32(r1 + o + 2);
        a = __smlatt(x12, w2b, __smlad(x01, w01b, a));
        b = __smlatt(x23, w2b, __smlad(x12, w01b, b));
        x01 = ep_dsp_read32(r2 + o), x12 = ep_dsp_read32(r2 + o + 1), x23 = ep_dsp_read32(r2 + o + 2);
        a = __smlatt(x12, w2c, __smlad(x01, w01c, a));
        b = __smlatt(x23, w2c, __smlad(x12, w01c, b));
        const int32_t va = (ep_multiply_by_quantized_multiplier_rshift_floor(a, multiplier, right_shift) + zp2) >> 1;
        const int32_t vb = (ep_multiply_by_quantized_multiplier_rshift_floor(b, multiplier, right_shift) + zp2) >> 1;
        out[o * out_step] = (int8_t)ep_dsp_clamp(full, va, lo, hi);
        out[(o + 1) * out_step] = (int8_t)ep_dsp_clamp(full, vb, lo, hi);
    }
    if (o < out_len) {
        int32_t a = acc0;
        a = __smlatt(ep_dsp_read32(r0 + o + 1), w2a, __smlad(ep_dsp_read32(r0 + o), w01a, a));
        a = __smlatt(ep_dsp_read32(r1 + o + 1), w2b, __smlad(ep_dsp_read32(r1 + o), w01b, a));
        a = __smlatt(ep_dsp_read32(r2 + o + 1), w2c, __smlad(ep_dsp_read32(r2 + o), w01c, a));
        const int32_t va = (ep_multiply_by_quantized_multiplier_rshift_floor(a, multiplier, right_shift) + zp2) >> 1;
        out[o * out_step] = (int8_t)ep_dsp_clamp(full, va, lo, hi);
    }
}

/* One output line of the 4 channels of a block: the dot products of each channel into accs, then
 * their requantization (one call per line and block keeps the call overhead off short lines). */
EP_DSP_NOINLINE static void ep_dw_block_line(const ep_dw_geom_t *g, const int16_t *cache, const int32_t *line_off,
                                             const int32_t *wpack, const int32_t *bias, const int32_t *multiplier,
                                             const int32_t *shift, ep_dsp_rq_t rq, int8_t *out, int32_t *accs)
{
    const int32_t line_len = ep_dw_line_len(g->len_in, g->k_along);
    const int32_t per_channel = g->k_cross * ((g->k_along + 1) / 2); /* packed weight words */
    /* Locals: the int8 stores below may alias *g, which would be reloaded for every channel. */
    const int32_t out_len = g->out_len, out_step = g->out_elem_step;
    const int fused = g->k_cross == 3 && g->k_along == 3 && g->stride == 1;
    const int full = rq.activation_min == -128 && rq.activation_max == 127;
    for (int32_t j = 0; j < 4; ++j) {
        const int16_t *plane = cache + j * line_len;
        const int32_t *w = wpack + j * per_channel;
        const int32_t acc0 = bias ? bias[j] : 0;
        if (fused && ep_rshift_form_applies(multiplier[j], shift[j])) {
            if (full) {
                ep_dw_line_3x3_fused(1, plane, line_off, w, out_len, acc0, multiplier[j], -shift[j], rq, out + j,
                                     out_step);
            } else {
                ep_dw_line_3x3_fused(0, plane, line_off, w, out_len, acc0, multiplier[j], -shift[j], rq, out + j,
                                     out_step);
            }
            continue;
        }
        if (g->k_cross == 3 && g->k_along == 3) {
            ep_dw_line_3x3(plane, line_off, w, g->stride, g->out_len, acc0, accs);
        } else {
            ep_dw_line_generic(plane, line_off, w, g, acc0, accs);
        }
        ep_dw_requant_line(accs, g->out_len, multiplier[j], shift[j], rq, out + j, g->out_elem_step);
    }
}

/* Fast path over the channel blocks [0, blocks * 4). */
static void ep_dw_fast(const ep_dw_geom_t *g, const ep_quant_t *quant, const ep_dims_t *input_dims,
                       const int8_t *input, const int8_t *filter, const int32_t *bias, const ep_dims_t *output_dims,
                       int8_t *output, void *scratch, int32_t blocks)
{
    const int32_t k_cross = g->k_cross, k_along = g->k_along, pairs = (k_along + 1) / 2;
    const int32_t out_c = output_dims->c;
    const int32_t line_len = ep_dw_line_len(g->len_in, k_along);
    const int32_t offset2 = ep_dsp_pair16(quant->input_offset);
    const ep_dsp_rq_t rq = ep_dsp_rq_init(quant);
    const int32_t image_size = input_dims->h * input_dims->w * input_dims->c;
    const int32_t out_image_size = output_dims->h * output_dims->w * out_c;
    int16_t *cache = (int16_t *)scratch;
    int32_t *wpack = (int32_t *)(cache + k_cross * 4 * line_len);
    int32_t *tags = wpack + 4 * k_cross * pairs;
    int32_t *line_off = tags + k_cross;
    int32_t *accs = line_off + k_cross; /* one output line's accumulators */
    const int32_t per_channel = k_cross * pairs; /* packed weight words */
    const int32_t cross_step = g->cross_stride % k_cross;

    /* Padding positions are never written by ep_dw_fill_line: zero them once for all blocks. */
    memset(cache, 0, (size_t)(k_cross * 4 * line_len) * sizeof(int16_t));

    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *image = &input[b * image_size];
        for (int32_t blk = 0; blk < blocks; ++blk) {
            const int32_t c = blk * 4;
            /* Weights as (tap, next tap along the line) int16 pairs, an odd last tap alone: the 4
             * channels' bytes of two taps are split into (c, c+2) and (c+1, c+3) halfword pairs, then
             * repacked per channel. */
            for (int32_t kc = 0; kc < k_cross; ++kc) {
                for (int32_t p = 0; p < pairs; ++p) {
                    const int32_t tap = kc * g->tap_cross + 2 * p * g->tap_along;
                    const int32_t v0 = ep_dsp_read32(&filter[tap * out_c + c]);
                    const int32_t next = (tap + g->tap_along) * out_c + c;
                    const int32_t v1 = 2 * p + 1 < k_along ? ep_dsp_read32(&filter[next]) : 0;
                    const int32_t e0 = __sxtb16(v0), o0 = ep_dsp_sxtb16_ror8(v0);
                    const int32_t e1 = __sxtb16(v1), o1 = ep_dsp_sxtb16_ror8(v1);
                    int32_t *w = wpack + kc * pairs + p;
                    w[0] = ep_dsp_pack_lo(e0, e1);
                    w[per_channel] = ep_dsp_pack_lo(o0, o1);
                    w[2 * per_channel] = ep_dsp_pack_hi(e0, e1);
                    w[3 * per_channel] = ep_dsp_pack_hi(o0, o1);
                }
            }
            for (int32_t kc = 0; kc < k_cross; ++kc) {
                tags[kc] = INT32_MIN; /* nothing cached (no line index is INT32_MIN) */
            }
            /* Slot of line0 modulo k_cross, kept up to date without divisions (dilation 1). */
            int32_t slot0 = ((-g->cross_pad) % k_cross + k_cross) % k_cross;
            for (int32_t ol = 0; ol < g->out_lines; ++ol) {
                const int32_t line0 = ol * g->cross_stride - g->cross_pad;
                for (int32_t kc = 0; kc < k_cross; ++kc) {
                    const int32_t line = line0 + g->cross_dilation * kc;
                    /* Consecutive lines never share a slot (dilation 1); otherwise one slot per tap line. */
                    int32_t slot = kc;
                    if (g->cross_dilation == 1) {
                        slot = slot0 + kc < k_cross ? slot0 + kc : slot0 + kc - k_cross;
                    }
                    if (tags[slot] != line) {
                        ep_dw_fill_line(image, g, line, c, line_len, offset2, cache + slot * 4 * line_len);
                        tags[slot] = line;
                    }
                    line_off[kc] = slot * 4 * line_len;
                }
                ep_dw_block_line(g, cache, line_off, wpack, bias ? bias + c : NULL, rq.multiplier + c,
                                 rq.shift + c, rq, &output[b * out_image_size + ol * g->out_line_step + c], accs);
                slot0 += cross_step;
                slot0 = slot0 < k_cross ? slot0 : slot0 - k_cross;
            }
        }
    }
}

void ep_depthwise_conv2d_s8_dsp(const ep_conv_params_t *params, int32_t depth_multiplier, const ep_quant_t *quant,
                                const ep_dims_t *input_dims, const int8_t *input, const ep_dims_t *filter_dims,
                                const int8_t *filter, const int32_t *bias, const ep_dims_t *output_dims, int8_t *output,
                                void *scratch)
{
    if (!ep_dsp_offset_ok(quant->input_offset)) {
        ep_depthwise_conv2d_s8_portable(params, depth_multiplier, quant, input_dims, input, filter_dims, filter, bias,
                                        output_dims, output, NULL);
        return;
    }
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w, out_h = output_dims->h, out_w = output_dims->w;
    const int32_t out_c = output_dims->c, blocks = in_c / 4;
    /* Lines along x (rows) or along y (columns): the longer output lines amortize more per-line
     * setup; pairs of taps along a line need dilation 1 there. */
    const int rows_ok = params->dilation_w == 1, cols_ok = params->dilation_h == 1;
    int32_t first_channel = 0;
    if (depth_multiplier == 1 && blocks > 0 && scratch != NULL && (rows_ok || cols_ok)) {
        ep_dw_geom_t g;
        if (rows_ok && (!cols_ok || out_w >= out_h)) {
            g.lines_in = in_h, g.len_in = in_w, g.elem_step = in_c, g.line_step = in_w * in_c;
            g.stride = params->stride_w, g.pad = params->pad_w;
            g.cross_stride = params->stride_h, g.cross_dilation = params->dilation_h, g.cross_pad = params->pad_h;
            g.k_along = k_w, g.k_cross = k_h, g.tap_along = 1, g.tap_cross = k_w;
            g.out_lines = out_h, g.out_len = out_w, g.out_elem_step = out_c, g.out_line_step = out_w * out_c;
        } else {
            g.lines_in = in_w, g.len_in = in_h, g.elem_step = in_w * in_c, g.line_step = in_c;
            g.stride = params->stride_h, g.pad = params->pad_h;
            g.cross_stride = params->stride_w, g.cross_dilation = params->dilation_w, g.cross_pad = params->pad_w;
            g.k_along = k_h, g.k_cross = k_w, g.tap_along = k_w, g.tap_cross = 1;
            g.out_lines = out_w, g.out_len = out_h, g.out_elem_step = out_w * out_c, g.out_line_step = out_c;
        }
        /* Input positions an output line touches must fit a cached line (always for SAME/VALID). */
        const int32_t span = (g.out_len - 1) * g.stride + g.k_along;
        if (span < ep_dw_line_len(g.len_in, g.k_along) && g.pad < ep_dw_line_len(g.len_in, g.k_along)) {
            ep_dw_fast(&g, quant, input_dims, input, filter, bias, output_dims, output, scratch, blocks);
            first_channel = blocks * 4;
        }
    }
    if (first_channel < out_c) {
        ep_dw_general(params, depth_multiplier, quant, input_dims, input, filter_dims, filter, bias, output_dims,
                      output, first_channel);
    }
}

#endif /* EP_DSP_ENABLED */
