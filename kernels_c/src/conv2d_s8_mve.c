/* CONV_2D, int8, Helium (MVE): four output pixels at a time, each as one contiguous int8 column
 * (the input itself when the window is one run of memory, e.g. 1x1 convs, else an im2col copy with
 * padded taps set to -input_offset); each weight row is loaded once for the four columns, 16
 * products per VMLADAVA. The input offset is folded into the bias once per call; the accumulators
 * go through a small buffer, so requantization runs on four channels per vector. */
#include "ep_mve_helpers.h"
#include "ep_kernels.h"

/* Column length rounded up to a multiple of 16: im2col columns are zero past the window, so whole
 * vectors can be read from them without predication. */
static int32_t ep_conv_mve_k16(const ep_dims_t *filter_dims)
{
    return (filter_dims->h * filter_dims->w * filter_dims->c + 15) & ~15;
}

/* Built on every target (plain arithmetic), so the compiler can size the M55's scratch on the host. */
int32_t ep_conv2d_s8_scratch_size_mve(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                      const ep_dims_t *output_dims)
{
    (void)input_dims;
    (void)output_dims;
    /* The folded biases, the accumulators of four pixels (channels rounded up to a multiple of 4 for
     * whole VLD4 blocks), then four columns. */
    return 4 * filter_dims->n + 16 * ((filter_dims->n + 3) & ~3) + 4 * ep_conv_mve_k16(filter_dims);
}

#if defined(EP_MVE_ENABLED)

/* a_j += (16 n weights at *w) . (16 n values at *c_j), advancing the pointers. GCC 12 keeps this
 * loop tight but spills the pointers and accumulators around it (about a third more instructions per
 * row), so on GCC it is written out; VMLADAV needs even registers (constraint "Te"). */
#if defined(__GNUC__) && !defined(__clang__)
#define EP_CONV_MVE_DOT4(n)                                                                                 \
    __asm__ volatile("   wls     lr, %[cnt], 2f\n"                                                          \
                     "1: vldrb.8 q0, [%[pw]], #16\n"                                                        \
                     "   vldrb.8 q1, [%[p0]], #16\n"                                                        \
                     "   vmlava.s8 %[a0], q0, q1\n"                                                         \
                     "   vldrb.8 q1, [%[p1]], #16\n"                                                        \
                     "   vmlava.s8 %[a1], q0, q1\n"                                                         \
                     "   vldrb.8 q1, [%[p2]], #16\n"                                                        \
                     "   vmlava.s8 %[a2], q0, q1\n"                                                         \
                     "   vldrb.8 q1, [%[p3]], #16\n"                                                        \
                     "   vmlava.s8 %[a3], q0, q1\n"                                                         \
                     "   le      lr, 1b\n"                                                                  \
                     "2:\n"                                                                                 \
                     : [a0] "+Te"(a0), [a1] "+Te"(a1), [a2] "+Te"(a2), [a3] "+Te"(a3), [pw] "+r"(w),      \
                       [p0] "+r"(c0), [p1] "+r"(c1), [p2] "+r"(c2), [p3] "+r"(c3)                          \
                     : [cnt] "r"(n)                                                                        \
                     : "q0", "q1", "lr", "memory")
#else
#define EP_CONV_MVE_DOT4(n)                                       \
    for (int32_t left = (n); left > 0; --left) {                  \
        const int8x16_t wv = vldrbq_s8(w);                        \
        a0 = vmladavaq_s8(a0, wv, vldrbq_s8(c0));                 \
        a1 = vmladavaq_s8(a1, wv, vldrbq_s8(c1));                 \
        a2 = vmladavaq_s8(a2, wv, vldrbq_s8(c2));                 \
        a3 = vmladavaq_s8(a3, wv, vldrbq_s8(c3));                 \
        w += 16;                                                  \
        c0 += 16;                                                 \
        c1 += 16;                                                 \
        c2 += 16;                                                 \
        c3 += 16;                                                 \
    }
#endif

/* Rows of weights without a tail (each a whole number n of vectors, then `over` bytes back to the
 * next row's start) against the four columns col[0..3], rows times from *wp, results to
 * (*accp)[4 * row + j], advancing both. Written out on GCC for the same reason as the loop above,
 * with the row loop too: the accumulators start at zero (the bias is added when requantizing) and
 * the row count, n and over stay in memory, so eleven core registers suffice. */
static inline void ep_conv_mve_rows(const int8_t **wp, const int8_t *const col[4], int32_t rows, int32_t n,
                                    int32_t over, int32_t **accp)
{
    const int8_t *w = *wp;
    int32_t *acc = *accp;
#if defined(__GNUC__) && !defined(__clang__)
    int32_t a0, a1, a2, a3;
    const int8_t *c0, *c1, *c2, *c3;
    __asm__ volatile("3: ldrd    %[c0], %[c1], [%[colp]]\n"
                     "   ldrd    %[c2], %[c3], [%[colp], #8]\n"
                     "   mov     %[a0], #0\n"
                     "   mov     %[a1], #0\n"
                     "   mov     %[a2], #0\n"
                     "   mov     %[a3], #0\n"
                     "   ldr     lr, %[n]\n"
                     "   wls     lr, lr, 2f\n"
                     "1: vldrb.8 q0, [%[w]], #16\n"
                     "   vldrb.8 q1, [%[c0]], #16\n"
                     "   vmlava.s8 %[a0], q0, q1\n"
                     "   vldrb.8 q1, [%[c1]], #16\n"
                     "   vmlava.s8 %[a1], q0, q1\n"
                     "   vldrb.8 q1, [%[c2]], #16\n"
                     "   vmlava.s8 %[a2], q0, q1\n"
                     "   vldrb.8 q1, [%[c3]], #16\n"
                     "   vmlava.s8 %[a3], q0, q1\n"
                     "   le      lr, 1b\n"
                     "2: strd    %[a0], %[a1], [%[acc]], #8\n"
                     "   strd    %[a2], %[a3], [%[acc]], #8\n"
                     "   ldr     lr, %[over]\n"
                     "   sub     %[w], %[w], lr\n"
                     "   ldr     lr, %[rows]\n"
                     "   subs    lr, lr, #1\n"
                     "   str     lr, %[rows]\n"
                     "   bne     3b\n"
                     : [a0] "=&Te"(a0), [a1] "=&Te"(a1), [a2] "=&Te"(a2), [a3] "=&Te"(a3), [c0] "=&r"(c0),
                       [c1] "=&r"(c1), [c2] "=&r"(c2), [c3] "=&r"(c3), [w] "+r"(w), [acc] "+r"(acc),
                       [rows] "+m"(rows)
                     : [colp] "r"(col), [n] "m"(n), [over] "m"(over)
                     : "q0", "q1", "lr", "memory", "cc");
#else
    for (; rows > 0; --rows, acc += 4) {
        const int8_t *c0 = col[0], *c1 = col[1], *c2 = col[2], *c3 = col[3];
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        EP_CONV_MVE_DOT4(n);
        w -= over;
        acc[0] = a0;
        acc[1] = a1;
        acc[2] = a2;
        acc[3] = a3;
    }
#endif
    *wp = w;
    *accp = acc;
}

/* Dot products of every weight row with four columns, stored to acc[4 * oc + j]. With `padded` (a
 * constant at each call) all four columns are im2col buffers, zero from k up to a multiple of 16:
 * then whole vectors are read everywhere (a row's last vector may reach into the next row: the zero
 * columns cancel it) except for the last row's weights, which must not be read past the filter
 * (k >= 8 keeps the row before it inside too); otherwise the tail of every row is predicated. */
EP_MVE_INLINE void ep_conv_mve_dots_body(const int8_t *filter, int32_t out_c, int32_t k, const int8_t *const col[4],
                                         int32_t *acc, int padded)
{
    const int32_t rem = k & 15;
    const mve_pred16_t tail = vctp8q((uint32_t)rem);
    const int32_t n = padded ? (k + 15) >> 4 : k >> 4;
    /* Rows read as whole vectors only: all of them, or all but the last when padded. */
    const int32_t whole_rows = rem == 0 ? out_c : padded ? out_c - 1 : 0;
    const int8_t *w = filter;
    if (whole_rows > 0) {
        ep_conv_mve_rows(&w, col, whole_rows, n, padded ? 16 * n - k : 0, &acc);
    }
    for (int32_t oc = whole_rows; oc < out_c; ++oc, acc += 4) {
        const int8_t *c0 = col[0], *c1 = col[1], *c2 = col[2], *c3 = col[3];
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        EP_CONV_MVE_DOT4(padded ? n - 1 : n);
        const int8x16_t wv = vldrbq_z_s8(w, tail);
        a0 = vmladavaq_s8(a0, wv, padded ? vldrbq_s8(c0) : vldrbq_z_s8(c0, tail));
        a1 = vmladavaq_s8(a1, wv, padded ? vldrbq_s8(c1) : vldrbq_z_s8(c1, tail));
        a2 = vmladavaq_s8(a2, wv, padded ? vldrbq_s8(c2) : vldrbq_z_s8(c2, tail));
        a3 = vmladavaq_s8(a3, wv, padded ? vldrbq_s8(c3) : vldrbq_z_s8(c3, tail));
        w += rem;
        acc[0] = a0;
        acc[1] = a1;
        acc[2] = a2;
        acc[3] = a3;
    }
}

static EP_MVE_NOINLINE void ep_conv_mve_dots(const int8_t *filter, int32_t out_c, int32_t k,
                                             const int8_t *const col[4], int32_t *acc)
{
    ep_conv_mve_dots_body(filter, out_c, k, col, acc, 0);
}

static EP_MVE_NOINLINE void ep_conv_mve_dots_padded(const int8_t *filter, int32_t out_c, int32_t k,
                                                    const int8_t *const col[4], int32_t *acc)
{
    ep_conv_mve_dots_body(filter, out_c, k, col, acc, 1);
}

/* Requantizes the block of four channels at acc = &acc[4 * oc] (channel oc + i of pixel j at
 * acc[4 * i + j]) for pixels j < n_px: VLD4 de-interleaves it into one vector of channels per pixel,
 * which share the channels' multipliers and shifts. `tail` (a partial block) is a constant. */
EP_MVE_INLINE void ep_conv_mve_requantize_block(const ep_quant_t *quant, const int32_t *bias_eff, const int32_t *acc,
                                                int32_t oc, int32_t out_c, int32_t n_px, int8_t *out, int tail)
{
    const mve_pred16_t p = vctp32q((uint32_t)(out_c - oc));
    const int32_t out_offset = quant->output_offset, act_min = quant->activation_min;
    const int32_t act_max = quant->activation_max;
    const int32x4x4_t px = vld4q_s32(acc);
    const int32x4_t mult = tail ? vldrwq_z_s32(quant->multiplier + oc, p) : vldrwq_s32(quant->multiplier + oc);
    const int32x4_t shift = tail ? vldrwq_z_s32(quant->shift + oc, p) : vldrwq_s32(quant->shift + oc);
    const int32x4_t bias = tail ? vldrwq_z_s32(bias_eff + oc, p) : vldrwq_s32(bias_eff + oc);
    /* Unrolled: indexing px.val with a loop variable would send the four vectors through the stack. */
#define EP_CONV_MVE_STORE(j)                                                                                  \
    do {                                                                                                      \
        const int32x4_t v =                                                                                   \
            ep_mve_clamp(ep_mve_mbqm(vaddq_s32(px.val[j], bias), mult, shift), out_offset, act_min, act_max); \
        if (tail) {                                                                                           \
            vstrbq_p_s32(out + (j) * out_c + oc, v, p);                                                       \
        } else {                                                                                              \
            vstrbq_s32(out + (j) * out_c + oc, v);                                                            \
        }                                                                                                     \
    } while (0)
    EP_CONV_MVE_STORE(0);
    if (n_px > 1) {
        EP_CONV_MVE_STORE(1);
    }
    if (n_px > 2) {
        EP_CONV_MVE_STORE(2);
    }
    if (n_px > 3) {
        EP_CONV_MVE_STORE(3);
    }
#undef EP_CONV_MVE_STORE
}

/* Requantizes acc[4 * oc + j] + bias_eff[oc] (channel oc of pixel j < n_px <= 4) into out[j * out_c + oc]. */
static EP_MVE_NOINLINE void ep_conv_mve_requantize(const ep_quant_t *quant, const int32_t *bias_eff, int32_t out_c,
                                                   const int32_t *acc, int32_t n_px, int8_t *out)
{
    const int32_t full = out_c & ~3;
    int32_t oc = 0;
    for (; oc < full; oc += 4) {
        ep_conv_mve_requantize_block(quant, bias_eff, acc + 4 * oc, oc, out_c, n_px, out, 0);
    }
    if (oc < out_c) {
        ep_conv_mve_requantize_block(quant, bias_eff, acc + 4 * oc, oc, out_c, n_px, out, 1);
    }
}

/* The window of a pixel whose taps are all inside the image with adjacent taps in a row: k_h runs
 * of row_len = 16 * full + (bytes in `tail`) bytes, row_stride apart. Short rows (small input
 * depth) take one predicated vector each. */
EP_MVE_INLINE void ep_conv_mve_copy_rows(int8_t *dst, const int8_t *src, int32_t k_h, int32_t row_len,
                                         int32_t row_stride, int32_t full, mve_pred16_t tail)
{
    if (full == 0) {
        for (int32_t ky = k_h; ky > 0; --ky, dst += row_len, src += row_stride) {
            vstrbq_p_s8(dst, vldrbq_z_s8(src, tail), tail);
        }
        return;
    }
    const int has_tail = (row_len & 15) != 0;
    for (int32_t ky = k_h; ky > 0; --ky, dst += row_len, src += row_stride) {
        const int8_t *s = src;
        int8_t *d = dst;
        for (int32_t n = full; n > 0; --n, s += 16, d += 16) {
            vstrbq_s8(d, vldrbq_s8(s));
        }
        if (has_tail) {
            vstrbq_p_s8(d, vldrbq_z_s8(s, tail), tail);
        }
    }
}

/* Edge windows are rare: kept out of line so the pixel loop keeps its registers. */
static EP_MVE_NOINLINE void ep_conv_mve_im2col(const ep_conv_params_t *params, const ep_dims_t *input_dims,
                                               const int8_t *image, int32_t k_h, int32_t k_w, int32_t in_y0,
                                               int32_t in_x0, int8_t pad, int8_t *buf)
{
    ep_mve_im2col(params, input_dims, image, k_h, k_w, in_y0, in_x0, pad, buf);
}

void ep_conv2d_s8_mve(const ep_conv_params_t *params, const ep_quant_t *quant, const ep_dims_t *input_dims,
                      const int8_t *input, const ep_dims_t *filter_dims, const int8_t *filter, const int32_t *bias,
                      const ep_dims_t *output_dims, int8_t *output, void *scratch)
{
    if (!ep_mve_offset_ok(quant->input_offset) || scratch == NULL) {
        ep_conv2d_s8_portable(params, quant, input_dims, input, filter_dims, filter, bias, output_dims, output, NULL);
        return;
    }
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int32_t k = k_h * k_w * in_c, k16 = ep_conv_mve_k16(filter_dims);
    int32_t *bias_eff = (int32_t *)scratch, *acc = bias_eff + out_c;
    int8_t *cols = (int8_t *)(acc + 4 * ((out_c + 3) & ~3));
    const int8_t pad = (int8_t)(-quant->input_offset);
    /* Taps of a window row are adjacent in memory unless dilated: then inside windows copy as rows,
     * and a 1xN window inside the image is its own column. */
    const int rows_contiguous = k_w == 1 || params->dilation_w == 1;
    const int32_t span_h = params->dilation_h * (k_h - 1), span_w = params->dilation_w * (k_w - 1);
    const int32_t row_len = k_w * in_c, row_stride = params->dilation_h * in_w * in_c;
    const int32_t row_full = row_len >> 4;
    const mve_pred16_t row_tail = vctp8q((uint32_t)(row_len & 15));
    const int8_t *col[4];
    int32_t n_px = 0, n_direct = 0;
    int8_t *out = output;

    ep_mve_offset_bias(filter, out_c, k, k, bias, quant->input_offset, bias_eff);
    for (int32_t j = 0; j < 4; ++j) {
        ep_mve_fill(cols + j * k16 + k, 0, k16 - k);
    }
    /* Geometry in locals: the stores through int8 pointers could alias *params for the compiler. */
    const int32_t stride_h = params->stride_h, stride_w = params->stride_w;
    const int32_t pad_h = params->pad_h, pad_w = params->pad_w, batches = input_dims->n;
    for (int32_t b = 0; b < batches; ++b) {
        const int8_t *image = &input[b * in_h * in_w * in_c];
        for (int32_t oy = 0, in_y0 = -pad_h; oy < out_h; ++oy, in_y0 += stride_h) {
            const int y_inside = in_y0 >= 0 && in_y0 + span_h < in_h;
            for (int32_t ox = 0, in_x0 = -pad_w; ox < out_w; ++ox, in_x0 += stride_w) {
                int8_t *buf = cols + n_px * k16;
                if (y_inside && rows_contiguous && in_x0 >= 0 && in_x0 + span_w < in_w) {
                    const int8_t *src = &image[(in_y0 * in_w + in_x0) * in_c];
                    if (k_h == 1) {
                        col[n_px] = src;
                        ++n_direct;
                    } else {
                        ep_conv_mve_copy_rows(buf, src, k_h, row_len, row_stride, row_full, row_tail);
                        col[n_px] = buf;
                    }
                } else {
                    ep_conv_mve_im2col(params, input_dims, image, k_h, k_w, in_y0, in_x0, pad, buf);
                    col[n_px] = buf;
                }
                if (++n_px == 4) {
                    if (n_direct == 0 && k >= 8) {
                        ep_conv_mve_dots_padded(filter, out_c, k, col, acc);
                    } else {
                        ep_conv_mve_dots(filter, out_c, k, col, acc);
                    }
                    ep_conv_mve_requantize(quant, bias_eff, out_c, acc, 4, out);
                    out += 4 * out_c;
                    n_px = 0;
                    n_direct = 0;
                }
            }
        }
    }
    if (n_px > 0) {
        for (int32_t j = n_px; j < 4; ++j) {
            col[j] = col[0];
        }
        ep_conv_mve_dots(filter, out_c, k, col, acc);
        ep_conv_mve_requantize(quant, bias_eff, out_c, acc, n_px, out);
    }
}

#endif /* EP_MVE_ENABLED */
