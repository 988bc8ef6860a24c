/* CONV_2D, int8, arm64 with the Armv8.2 dot product.
 *
 * A GEMM over output pixels and output channels. The microkernel computes 4 pixels x 16
 * channels with SDOT by lane: each weight vector holds 4 channels x 4 consecutive k, each lane
 * of an input vector 4 k of one pixel. The reduction runs kernel row by kernel row: row ky of a
 * pixel's receptive field is k_w * in_c contiguous input bytes (when dilation_w is 1), so it is
 * read in place, from the input or, when the layer pads left or right, from a copy of the input
 * with zero-point columns added once per call. Rows above or below the image point to a row of
 * zero points; dilated rows (and rows the padded copy cannot hold) are gathered into scratch.
 * Each row is padded to Sp = a multiple of 16 bytes with zero weights (the bytes read past a
 * row's end meet zero weights). Three loops: pointwise layers walk the pixels in order; layers
 * whose output width is a multiple of 4 take 4 pixels of one output row per tile; any other
 * shape looks its rows up pixel by pixel.
 *
 * The weights (TFLite's O,H,W,I) are repacked into that order in scratch at each call, with
 * their per-channel sums, so the input offset folds into a per-channel constant
 * bias + offset * sum(w) and the inner loop is pure SDOT on raw int8; an input zero point then
 * contributes exactly 0 (see ep_neon_helpers.h).
 *
 * Scratch (bytes, 16-aligned offsets; OCp = out_c rounded up to 16, S = k_w * in_c,
 * Sp = S rounded up to 16, Kp = k_h * Sp): multipliers, shifts, folded constants 3 x OCp int32;
 * packed weights OCp x Kp; gathered rows 4 x Kp; one row of zero points Sp; then, 8-byte aligned,
 * the tile's row pointers, 4 x k_h; the zero-point padded input, n x in_h x (in_w + 2 k_w) x in_c
 * plus 16 (none when k_w is 1).
 * Packed order: [OCp / 16][k_h][Sp / 16][quad q: channels 4q..4q+3][k group g of 4][channel][k].
 */
#include "ep_backend.h"
#include "ep_kernels.h"

#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#include "ep_neon_helpers.h"

static int32_t row_bytes(const ep_dims_t *filter_dims)
{
    return ep_neon_round_up(filter_dims->w * filter_dims->c, 16);
}

/* The zero-point padded copy of the input: up to 2 * k_w extra columns, 16 bytes of slack. Kernels
 * one column wide never need one (SAME padding adds no columns). */
static int32_t padded_bytes(const ep_dims_t *input_dims, const ep_dims_t *filter_dims)
{
    if (filter_dims->w == 1) {
        return 0;
    }
    return input_dims->n * input_dims->h * (input_dims->w + 2 * filter_dims->w) * input_dims->c + 16;
}

int32_t ep_conv2d_s8_scratch_size_neon_dot(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                           const ep_dims_t *output_dims)
{
    const int32_t ocp = ep_neon_round_up(output_dims->c, 16);
    const int32_t kp = filter_dims->h * row_bytes(filter_dims);
    return 3 * ocp * 4 + ocp * kp + 4 * kp + row_bytes(filter_dims) + 8 + 4 * filter_dims->h * (int32_t)sizeof(void *) +
           padded_bytes(input_dims, filter_dims);
}

/* Packs 16 output channels (filter rows of k bytes at `rows`, `valid` of them real) and returns
 * their weight sums in 4 vectors. */
static void pack_block(const int8_t *rows, int32_t k, int32_t k_h, int32_t seg, int32_t segp, int32_t valid,
                       int8_t *dst, int32x4_t sums[4])
{
    const int8x16_t ones = vdupq_n_s8(1);
    int32x4_t s[16];
    for (int r = 0; r < 16; ++r) {
        s[r] = vdupq_n_s32(0);
    }
    for (int32_t ky = 0; ky < k_h; ++ky) {
        int32_t c = 0;
        if (valid == 16) { /* whole chunks of 16 real channels: straight loads */
            for (; c + 16 <= seg; c += 16) {
                const int8_t *src = &rows[ky * seg + c];
#pragma GCC unroll 4
                for (int q = 0; q < 4; ++q, dst += 64) {
                    int32x4x4_t quad;
#pragma GCC unroll 4
                    for (int i = 0; i < 4; ++i) {
                        const int8x16_t v = vld1q_s8(&src[(4 * q + i) * k]);
                        s[4 * q + i] = vdotq_s32(s[4 * q + i], v, ones);
                        quad.val[i] = vreinterpretq_s32_s8(v);
                    }
                    vst4q_s32((int32_t *)(void *)dst, quad);
                }
            }
        }
        for (; c < segp; c += 16) {
            for (int q = 0; q < 4; ++q) {
                int32x4x4_t quad;
                for (int i = 0; i < 4; ++i) {
                    const int r = 4 * q + i;
                    int8x16_t v = vdupq_n_s8(0);
                    if (r < valid) {
                        const int8_t *src = &rows[r * k + ky * seg + c];
                        if (c + 16 <= seg) {
                            v = vld1q_s8(src);
                        } else { /* the end of a kernel row: zero-padded */
                            int8_t tmp[16] = {0};
                            ep_neon_copy(tmp, src, seg - c);
                            v = vld1q_s8(tmp);
                        }
                    }
                    s[r] = vdotq_s32(s[r], v, ones);
                    quad.val[i] = vreinterpretq_s32_s8(v);
                }
                /* Interleaving 4 rows by int32 gives, per k group of 4, the 4 channels' 4 bytes each. */
                vst4q_s32((int32_t *)(void *)dst, quad);
                dst += 64;
            }
        }
    }
    for (int q = 0; q < 4; ++q) {
        sums[q] = vpaddq_s32(vpaddq_s32(s[4 * q], s[4 * q + 1]), vpaddq_s32(s[4 * q + 2], s[4 * q + 3]));
    }
}

/* One tile: 4 pixels x 16 channels over all k_h kernel rows (a[r][p] = row r of pixel p, segp
 * bytes; wp = the block's packed weights), from the folded constants to the stored int8 outputs.
 * acc[4 * p + q] = pixel p, channels 4q..4q+3. */
static inline __attribute__((always_inline)) void tile(const int8_t *const (*a)[4], int32_t k_h, int32_t segp,
                                                       const int8_t *wp, const int32_t *fold, const int32_t *mult,
                                                       const int32_t *shift, const ep_neon_out_t *o, int8_t *dst,
                                                       int32_t stride, int32_t pixels, int32_t channels)
{
    int32x4_t acc[16];
    const int32x4x4_t f = vld1q_s32_x4(fold);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
        acc[i] = f.val[i & 3];
    }
    for (int32_t r = 0; r < k_h; ++r) {
        const int8_t *a0 = a[r][0], *a1 = a[r][1], *a2 = a[r][2], *a3 = a[r][3];
        for (int32_t c = 0; c < segp; c += 16) {
            const int8x16_t x0 = vld1q_s8(a0 + c), x1 = vld1q_s8(a1 + c), x2 = vld1q_s8(a2 + c),
                            x3 = vld1q_s8(a3 + c);
#pragma GCC unroll 4
            for (int q = 0; q < 4; ++q, wp += 64) {
                const int8x16x4_t w = vld1q_s8_x4(wp);
                /* w.val[g] = channels 4q..4q+3 x k group g; lane g of x_p = the same 4 k of pixel p */
                acc[q] = vdotq_laneq_s32(acc[q], w.val[0], x0, 0);
                acc[4 + q] = vdotq_laneq_s32(acc[4 + q], w.val[0], x1, 0);
                acc[8 + q] = vdotq_laneq_s32(acc[8 + q], w.val[0], x2, 0);
                acc[12 + q] = vdotq_laneq_s32(acc[12 + q], w.val[0], x3, 0);
                acc[q] = vdotq_laneq_s32(acc[q], w.val[1], x0, 1);
                acc[4 + q] = vdotq_laneq_s32(acc[4 + q], w.val[1], x1, 1);
                acc[8 + q] = vdotq_laneq_s32(acc[8 + q], w.val[1], x2, 1);
                acc[12 + q] = vdotq_laneq_s32(acc[12 + q], w.val[1], x3, 1);
                acc[q] = vdotq_laneq_s32(acc[q], w.val[2], x0, 2);
                acc[4 + q] = vdotq_laneq_s32(acc[4 + q], w.val[2], x1, 2);
                acc[8 + q] = vdotq_laneq_s32(acc[8 + q], w.val[2], x2, 2);
                acc[12 + q] = vdotq_laneq_s32(acc[12 + q], w.val[2], x3, 2);
                acc[q] = vdotq_laneq_s32(acc[q], w.val[3], x0, 3);
                acc[4 + q] = vdotq_laneq_s32(acc[4 + q], w.val[3], x1, 3);
                acc[8 + q] = vdotq_laneq_s32(acc[8 + q], w.val[3], x2, 3);
                acc[12 + q] = vdotq_laneq_s32(acc[12 + q], w.val[3], x3, 3);
            }
        }
    }
    ep_neon_store_tile(acc, mult, shift, o, dst, stride, pixels, channels);
}

/* Geometry shared by the row lookups of one call. */
typedef struct {
    const ep_conv_params_t *params;
    const ep_dims_t *input_dims;
    const int8_t *input;
    int32_t k_w, seg, segp;
    const int8_t *zero_row;
    int8_t zero_point;
    /* Where rows are read in place: the input, or its copy with zero-point columns on both sides. */
    const int8_t *src;
    int32_t src_w, src_left, src_bytes;
} geometry_t;

/* Kernel row ky of output pixel (b, oy, ox) gathered into `gather`: out-of-image taps get the
 * zero point. For rows crossing the left or right edge, dilated rows, and the input's last bytes. */
static const int8_t *gather_row(const geometry_t *g, int32_t b, int32_t iy, int32_t ox, int8_t *gather)
{
    const ep_conv_params_t *p = g->params;
    const int32_t in_h = g->input_dims->h, in_w = g->input_dims->w, in_c = g->input_dims->c;
    const int32_t ix0 = ox * p->stride_w - p->pad_w;
    for (int32_t kx = 0; kx < g->k_w; ++kx) {
        const int32_t ix = ix0 + kx * p->dilation_w;
        if (ix < 0 || ix >= in_w) {
            ep_neon_fill(&gather[kx * in_c], g->zero_point, in_c);
        } else {
            ep_neon_copy(&gather[kx * in_c], &g->input[((b * in_h + iy) * in_w + ix) * in_c], in_c);
        }
    }
    return gather;
}

/* Where the tile's pixels start: batch, first input row, and the input offset of their first
 * kernel column when each kernel row can be read in place (-1 otherwise). */
typedef struct {
    int32_t b[4], iy0[4], ox[4], x_offset[4];
} tile_t;

/* Row pointers of all kernel rows for the tile's n pixels (a short tile repeats its
 * last pixel): in place, the row of zero points above or below the image, or gathered. */
static void lookup_rows(const geometry_t *g, const tile_t *t, int32_t n, int32_t rows, int8_t *gathered,
                        int32_t kp, const int8_t *(*a)[4])
{
    const int32_t in_h = g->input_dims->h, row_stride = g->src_w * g->input_dims->c;
    const int32_t dh = g->params->dilation_h;
    if (n == 4 && t->b[3] == t->b[0] && t->iy0[3] == t->iy0[0] && t->x_offset[0] >= 0 && t->x_offset[3] >= 0) {
        /* The usual tile: 4 pixels of one output row, all inside horizontally. */
        const int32_t step = t->x_offset[1] - t->x_offset[0];
        for (int32_t r = 0; r < rows; ++r) {
            const int32_t iy = t->iy0[0] + r * dh;
            const int32_t start = (t->b[0] * in_h + iy) * row_stride + t->x_offset[0];
            if (iy < 0 || iy >= in_h) {
                a[r][0] = a[r][1] = a[r][2] = a[r][3] = g->zero_row;
            } else if (start + 3 * step + g->segp <= g->src_bytes) {
                const int8_t *row = &g->src[start];
                a[r][0] = row, a[r][1] = row + step, a[r][2] = row + 2 * step, a[r][3] = row + 3 * step;
            } else {
                break;
            }
            if (r == rows - 1) {
                return;
            }
        }
    }
    for (int32_t p = 0; p < 4; ++p) {
        const int32_t q = p < n ? p : n - 1;
        for (int32_t r = 0; r < rows; ++r) {
            const int32_t iy = t->iy0[q] + r * dh;
            const int8_t *row;
            if (iy < 0 || iy >= in_h) {
                row = g->zero_row;
            } else {
                const int32_t start = (t->b[q] * in_h + iy) * row_stride + t->x_offset[q];
                row = t->x_offset[q] >= 0 && start + g->segp <= g->src_bytes
                          ? &g->src[start]
                          : gather_row(g, t->b[q], iy, t->ox[q], &gathered[q * kp + r * g->segp]);
            }
            a[r][p] = row;
        }
    }
}

void ep_conv2d_s8_neon_dot(const ep_conv_params_t *params, const ep_quant_t *quant, const ep_dims_t *input_dims,
                           const int8_t *input, const ep_dims_t *filter_dims, const int8_t *filter, const int32_t *bias,
                           const ep_dims_t *output_dims, int8_t *output, void *scratch)
{
    const int32_t out_c = output_dims->c, k_h = filter_dims->h;
    const int32_t seg = filter_dims->w * filter_dims->c, segp = row_bytes(filter_dims);
    const int32_t ocp = ep_neon_round_up(out_c, 16), kp = k_h * segp;
    int32_t *mult = (int32_t *)scratch;
    int32_t *shift = mult + ocp;
    int32_t *fold = shift + ocp;
    int8_t *packed = (int8_t *)(fold + ocp);
    int8_t *gathered = packed + ocp * kp;
    int8_t *zero_row = gathered + 4 * kp;
    /* The row pointer table, 8-byte aligned (scratch is only 4-byte aligned). */
    const int8_t *(*a)[4] = (const int8_t *(*)[4])(((uintptr_t)(zero_row + segp) + 7) & ~(uintptr_t)7);
    int8_t *padded = (int8_t *)(a + k_h);

    ep_neon_pad_quant(quant, out_c, ocp, mult, shift);
    for (int32_t ob = 0; ob < ocp; ob += 16) {
        const int32_t valid = out_c - ob < 16 ? out_c - ob : 16;
        int32x4_t sums[4];
        pack_block(&filter[ob * k_h * seg], k_h * seg, k_h, seg, segp, valid, &packed[ob * kp], sums);
        int32_t b16[16] = {0};
        for (int32_t i = 0; bias && i < valid; ++i) {
            b16[i] = bias[ob + i];
        }
        for (int q = 0; q < 4; ++q) {
            vst1q_s32(&fold[ob + 4 * q], vmlaq_n_s32(vld1q_s32(&b16[4 * q]), sums[q], quant->input_offset));
        }
    }
    const ep_neon_out_t o = ep_neon_out_init(quant, out_c);
    geometry_t g;
    g.params = params, g.input_dims = input_dims, g.input = input;
    g.k_w = filter_dims->w, g.seg = seg, g.segp = segp;
    g.zero_point = (int8_t)(-quant->input_offset);
    g.zero_row = zero_row;
    ep_neon_fill(zero_row, g.zero_point, segp);
    ep_neon_fill(gathered, 0, 4 * kp); /* bytes past S stay 0 (their weights are 0 too) */

    /* Rows crossing the left or right edge: with the zero-point columns added once to a copy of
     * the input, every undilated kernel row reads in place. */
    const int32_t in_w = input_dims->w, in_c = input_dims->c, rows_in = input_dims->n * input_dims->h;
    const int32_t right = (output_dims->w - 1) * params->stride_w - params->pad_w +
                          (filter_dims->w - 1) * params->dilation_w + 1 - in_w;
    const int32_t pad_r = right > 0 ? right : 0;
    g.src = input, g.src_w = in_w, g.src_left = 0, g.src_bytes = rows_in * in_w * in_c;
    if (padded_bytes(input_dims, filter_dims) > 0 && params->dilation_w == 1 && (params->pad_w > 0 || pad_r > 0) &&
        params->pad_w + pad_r <= 2 * filter_dims->w) {
        g.src = padded, g.src_w = in_w + params->pad_w + pad_r, g.src_left = params->pad_w;
        g.src_bytes = rows_in * g.src_w * in_c;
        int8_t *dst = padded;
        for (int32_t r = 0; r < rows_in; ++r) {
            ep_neon_fill(dst, g.zero_point, params->pad_w * in_c);
            dst += params->pad_w * in_c;
            ep_neon_copy(dst, &input[r * in_w * in_c], in_w * in_c);
            dst += in_w * in_c;
            ep_neon_fill(dst, g.zero_point, pad_r * in_c);
            dst += pad_r * in_c;
        }
        ep_neon_fill(dst, 0, 16);
    }

    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const int32_t pixels = output_dims->n * out_h * out_w;
    if (ep_neon_conv_is_pointwise(params, input_dims, filter_dims, output_dims) && seg == segp) {
        /* Pointwise: the im2col rows are the input pixels, one after the other. */
        for (int32_t px = 0; px < pixels; px += 4) {
            const int32_t n = pixels - px < 4 ? pixels - px : 4;
            for (int32_t p = 0; p < 4; ++p) {
                a[0][p] = &input[(px + (p < n ? p : n - 1)) * in_c];
            }
            for (int32_t ob = 0; ob < ocp; ob += 16) {
                tile((const int8_t *const(*)[4])a, 1, segp, &packed[ob * kp], &fold[ob], &mult[ob], &shift[ob], &o,
                     &output[px * out_c + ob], out_c, n, out_c - ob < 16 ? out_c - ob : 16);
            }
        }
        return;
    }
    const int32_t sx0 = g.src_left - params->pad_w, sx_last = (out_w - 1) * params->stride_w + sx0;
    if (params->dilation_w == 1 && out_w % 4 == 0 && sx0 >= 0 && sx_last + g.k_w <= g.src_w &&
        ((rows_in - 1) * g.src_w + sx_last) * in_c + segp <= g.src_bytes) {
        /* Every tile is 4 pixels of one output row whose kernel rows all read in place. */
        const int32_t step = params->stride_w * in_c, row_stride = g.src_w * in_c;
        int8_t *out = output;
        for (int32_t b = 0; b < output_dims->n; ++b) {
            for (int32_t oy = 0; oy < out_h; ++oy) {
                const int32_t iy0 = oy * params->stride_h - params->pad_h;
                for (int32_t ox = 0; ox < out_w; ox += 4, out += 4 * out_c) {
                    for (int32_t r = 0; r < k_h; ++r) {
                        const int32_t iy = iy0 + r * params->dilation_h;
                        if (iy < 0 || iy >= input_dims->h) {
                            a[r][0] = a[r][1] = a[r][2] = a[r][3] = zero_row;
                        } else {
                            const int8_t *row = &g.src[(b * input_dims->h + iy) * row_stride + sx0 * in_c + ox * step];
                            a[r][0] = row, a[r][1] = row + step, a[r][2] = row + 2 * step, a[r][3] = row + 3 * step;
                        }
                    }
                    for (int32_t ob = 0; ob < ocp; ob += 16) {
                        tile((const int8_t *const(*)[4])a, k_h, segp, &packed[ob * kp], &fold[ob], &mult[ob],
                             &shift[ob], &o, &out[ob], out_c, 4, out_c - ob < 16 ? out_c - ob : 16);
                    }
                }
            }
        }
        return;
    }
    /* Any other shape: tiles may span output rows, kernel rows may need gathering. */
    int32_t b = 0, oy = 0, ox = 0; /* the tile's first pixel */
    for (int32_t px = 0; px < pixels; px += 4) {
        const int32_t n = pixels - px < 4 ? pixels - px : 4;
        tile_t t;
        for (int32_t p = 0; p < 4; ++p) {
            const int32_t sx = ox * params->stride_w - params->pad_w + g.src_left; /* column in src */
            t.b[p] = b, t.ox[p] = ox;
            t.iy0[p] = oy * params->stride_h - params->pad_h;
            t.x_offset[p] = params->dilation_w == 1 && sx >= 0 && sx + g.k_w <= g.src_w ? sx * in_c : -1;
            if (p + 1 < n && ++ox == out_w) {
                ox = 0;
                if (++oy == out_h) {
                    oy = 0, ++b;
                }
            }
        }
        if (++ox == out_w) { /* the next tile's first pixel */
            ox = 0;
            if (++oy == out_h) {
                oy = 0, ++b;
            }
        }
        lookup_rows(&g, &t, n, k_h, gathered, kp, a);
        for (int32_t ob = 0; ob < ocp; ob += 16) {
            tile((const int8_t *const(*)[4])a, k_h, segp, &packed[ob * kp], &fold[ob], &mult[ob], &shift[ob], &o,
                 &output[px * out_c + ob], out_c, n, out_c - ob < 16 ? out_c - ob : 16);
        }
    }
}
#else
typedef int ep_conv2d_s8_neon_dot_unused; /* ISO C wants a non-empty file */
#endif
