/* DEPTHWISE_CONV_2D, int8, arm64 with the Armv8.2 dot product.
 *
 * SDOT sums 4 adjacent bytes, so each 32-bit lane holds 4 horizontal taps of one channel: for an
 * input row, an output column ox and a group of 4 taps, an "interleaved entry" of 64 bytes per
 * 16 channels c holds the inputs x[ix + j * dilation_w][c] of taps j = 0..3, built with one ST4
 * from 4 loads. A kernel row of k_w taps is ceil(k_w / 4) groups, so a 3x3 kernel costs
 * 3 x (1 load + 4 SDOT) per pixel and 16 channels. Interleaved input rows (all channels) are kept
 * in a cache of k_h rows and reused by every output row that reads them. Kernels of 3 tap groups
 * (3x3 and kin) keep their weights in registers; their usual case (16 channels, negative shifts)
 * is a short assembly loop, since GCC's register allocation spills a third of it.
 *
 * Kernels 3 wide and at most 4 tall (3x3 and kin) with dilation_w 1, channels a multiple of 16
 * and negative shifts take the column path instead when the output is at least as tall as wide:
 * vertical taps interleaved, the same assembly loop walking down output columns, so per-line
 * costs (edges, setup) are paid out_w times instead of out_h times (depthwise_columns). With an
 * assembly interleave loop and two pixels per loop iteration, MACs per instruction under
 * qemu-aarch64 -cpu cortex-a76 go from 1.80 to 2.63 on 25x5x64 3x3 s1, 2.25 to 2.73 on
 * 48x48x32 s1 and 1.32 to 1.98 on 96x96x16 s2.
 *
 * The input offset is folded into a per-channel constant bias + offset * sum(w); taps outside
 * the image read the input zero point, which then contributes 0 (see ep_neon_helpers.h), and
 * taps past k_w have zero weights. Depth multipliers above 1 use the plain NEON variant.
 *
 * Scratch (bytes; Cp = channels rounded up to 16, G = ceil(k_w / 4), E = out_w * G * Cp * 4,
 * the size of one interleaved row): multipliers, shifts, folded constants 3 x Cp int32; packed
 * weights Cp / 16 x k_h x G x 64 ([channel][tap j] per group); zero points Cp; a row of zero
 * points E; the row cache k_h x E and its tags k_h int32; an input row with channels padded to
 * Cp, in_w x Cp (only when channels are not a multiple of 16); then, 8-byte aligned, k_h row
 * pointers. At least the plain NEON variant's scratch, and the column path's (columns_scratch)
 * when it may apply.
 *
 * Entry order in an interleaved row: [ox][tap group][channel block][channel][tap j].
 */
#include "ep_backend.h"
#include "ep_kernels.h"

#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#include <stddef.h>

#include "ep_neon_helpers.h"

static int32_t groups(const ep_dims_t *filter_dims)
{
    return (filter_dims->w + 3) / 4;
}

/* Whether the column path (see depthwise_columns) may apply: the rest depends on the parameters
 * (dilation_w 1) and the quantization (negative shifts). */
static int columns_fit(const ep_dims_t *filter_dims, const ep_dims_t *output_dims)
{
#if defined(__GNUC__)
    return filter_dims->w == 3 && filter_dims->h <= 4 && output_dims->c % 16 == 0 && output_dims->c > 0 &&
           output_dims->w > 0 && output_dims->h >= output_dims->w; /* the assembly loops run at least once */
#else
    (void)filter_dims, (void)output_dims;
    return 0;
#endif
}

/* Multipliers, shifts, folded constants 3 x C int32; packed weights 3 x 4 x C; a zero-point entry
 * 4 x C; the column cache 3 x out_h x 4 x C. */
static int32_t columns_scratch(const ep_dims_t *output_dims)
{
    return output_dims->c * (12 + 12 + 4 + 12 * output_dims->h);
}

int32_t ep_depthwise_conv2d_s8_scratch_size_neon_dot(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                                     const ep_dims_t *output_dims)
{
    const int32_t cp = ep_neon_round_up(output_dims->c, 16), k_h = filter_dims->h;
    const int32_t entry_row = output_dims->w * groups(filter_dims) * cp * 4;
    const int32_t size = 3 * cp * 4 + cp * k_h * groups(filter_dims) * 4 + cp + entry_row * (k_h + 1) + k_h * 4 +
                         (cp != output_dims->c ? input_dims->w * cp : 0) + 8 + k_h * (int32_t)sizeof(void *);
    const int32_t plain = ep_depthwise_conv2d_s8_scratch_size_neon(input_dims, filter_dims, output_dims);
    const int32_t most = size > plain ? size : plain;
    const int32_t cols = columns_fit(filter_dims, output_dims) ? columns_scratch(output_dims) : 0;
    return cols > most ? cols : most;
}

/* 16 channels of one input pixel (the last block may be partial: padded with the zero point). */
static inline int8x16_t load_channels(const int8_t *px, int32_t valid, int8_t zero_point)
{
    if (valid == 16) {
        return vld1q_s8(px);
    }
    int8_t tmp[16];
    ep_neon_fill(tmp, zero_point, 16);
    ep_neon_copy(tmp, px, valid);
    return vld1q_s8(tmp);
}

/* The interleaved row of input row `in_row` (all channels) for every output column and tap
 * group. Taps outside the image read `zp` (Cp zero points); taps past k_w repeat the last real
 * tap (any in-bounds value: their weights are 0). Channels that are not a multiple of 16 are
 * first copied to `line` (in_w x Cp bytes, zero-point padded). */
static void interleave_row(const ep_conv_params_t *params, const int8_t *in_row, int32_t in_w, int32_t in_c,
                           int32_t cp, int32_t k_w, int32_t out_w, int32_t n_groups, const int8_t *zp, int8_t *line,
                           int8_t *dst)
{
    if (in_c != cp) {
        for (int32_t x = 0; x < in_w; ++x) {
            ep_neon_copy(&line[x * cp], &in_row[x * in_c], in_c);
            ep_neon_copy(&line[x * cp + in_c], zp, cp - in_c);
        }
        in_row = line, in_c = cp;
    }
    const int32_t dw = params->dilation_w, sw = params->stride_w, entry = n_groups * cp * 4;
    for (int32_t g = 0; g < n_groups; ++g) {
        const int32_t taps = k_w - 4 * g < 4 ? k_w - 4 * g : 4;
        const int32_t ix0 = 4 * g * dw - params->pad_w; /* first tap's column at ox = 0 */
        /* Output columns whose taps are all inside: ox_lo <= ox < ox_hi. */
        int32_t ox_lo = ix0 >= 0 ? 0 : (-ix0 + sw - 1) / sw;
        const int32_t last = in_w - 1 - (taps - 1) * dw - ix0; /* ox * sw <= last */
        int32_t ox_hi = last < 0 ? 0 : last / sw + 1;
        ox_hi = ox_hi < out_w ? ox_hi : out_w;
        ox_lo = ox_lo < ox_hi ? ox_lo : ox_hi;
        /* Taps past k_w repeat the last real tap (any in-bounds value: their weights are 0). */
        const int32_t o1 = (taps > 1 ? 1 : 0) * dw * in_c, o2 = (taps > 2 ? 2 : taps - 1) * dw * in_c;
        const int32_t o3 = (taps > 3 ? 3 : taps - 1) * dw * in_c;
        for (int32_t ox = 0; ox < out_w; ++ox) {
            int8_t *d = dst + ox * entry + g * cp * 4;
            const int32_t ix = ix0 + ox * sw;
            if (ox >= ox_lo && ox < ox_hi) {
                const int8_t *p = &in_row[ix * in_c];
                for (int32_t c0 = 0; c0 < cp; c0 += 16, d += 64) {
                    int8x16x4_t v;
                    v.val[0] = vld1q_s8(p + c0);
                    v.val[1] = vld1q_s8(p + o1 + c0);
                    v.val[2] = vld1q_s8(p + o2 + c0);
                    v.val[3] = vld1q_s8(p + o3 + c0);
                    vst4q_s8(d, v); /* byte 4c + j = tap j of channel c */
                }
                continue;
            }
            const int8_t *src[4]; /* at the left or right edge */
#pragma GCC unroll 4
            for (int j = 0; j < 4; ++j) {
                const int32_t x = ix + j * dw;
                src[j] = j < taps && x >= 0 && x < in_w ? &in_row[x * in_c] : zp;
            }
            for (int32_t c0 = 0; c0 < cp; c0 += 16, d += 64) {
                int8x16x4_t v;
                v.val[0] = vld1q_s8(src[0] + c0);
                v.val[1] = vld1q_s8(src[1] + c0);
                v.val[2] = vld1q_s8(src[2] + c0);
                v.val[3] = vld1q_s8(src[3] + c0);
                vst4q_s8(d, v);
            }
        }
    }
}

/* One output row of a kernel with 3 tap groups (3x3, 3x1, 1x9...) for 16 channels: entries at
 * e0, e1, e2 (+ ox * stride bytes), weights w (3 x 64 bytes) and constants in registers. `fast`
 * and `full` (16 valid channels) are constants after inlining, so each case gets its own loop. */
static inline __attribute__((always_inline)) void row3_loop(const int8_t *e0, const int8_t *e1, const int8_t *e2,
                                                            int32_t stride, const int8_t *w, const int32_t *fold,
                                                            const int32_t *mult, const int32_t *shift,
                                                            const ep_neon_out_t *o, int8_t *out, int32_t out_stride,
                                                            int32_t out_w, int32_t valid, int fast, int full)
{
    /* Weights, multipliers, shifts and output constants stay in registers (27); inputs and the
     * folded constants are loaded vector by vector (GCC spills more when they come by 4). */
    const int8x16x4_t w0 = vld1q_s8_x4(w), w1 = vld1q_s8_x4(w + 64), w2 = vld1q_s8_x4(w + 128);
    const int32x4x4_t m = vld1q_s32_x4(mult), sh = vld1q_s32_x4(shift);
    const int16x8_t out_off = o->out_off;
    const int8x16_t act_min = o->act_min, act_max = o->act_max;
    for (int32_t ox = 0; ox < out_w; ++ox, e0 += stride, e1 += stride, e2 += stride, out += out_stride) {
        int32x4_t acc[4];
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) {
            acc[q] = vdotq_s32(vld1q_s32(fold + 4 * q), vld1q_s8(e0 + 16 * q), w0.val[q]);
            acc[q] = vdotq_s32(acc[q], vld1q_s8(e1 + 16 * q), w1.val[q]);
            acc[q] = vdotq_s32(acc[q], vld1q_s8(e2 + 16 * q), w2.val[q]);
            acc[q] = ep_neon_requant_s32(acc[q], m.val[q], sh.val[q], fast);
        }
        const int8x16_t v = ep_neon_narrow16(acc[0], acc[1], acc[2], acc[3], out_off, act_min, act_max);
        if (full) {
            vst1q_s8(out, v);
        } else {
            int8_t tmp[16];
            vst1q_s8(tmp, v);
            memcpy(out, tmp, (size_t)valid);
        }
    }
}

#if defined(__GNUC__)
/* row3_loop for the usual case (channels a multiple of 16, every shift negative) in assembly, for
 * all `blocks` channel blocks of one output row: GCC spills a third of the loop's constants, the
 * register file holds them all. Per pixel and 16 channels: the folded constants, 3 x (1 load +
 * 4 SDOT), 12 requantization and 10 narrowing instructions, 1 store. Registers: weights v16-v27,
 * multipliers v28-v31, shifts v8-v11, output offset v12, activation range v13-v14; v0-v7 for
 * the accumulators and inputs. Per pixel, entry stream k advances s_k bytes (0 repeats one
 * entry) and out out_stride bytes. Per block, w advances 192 bytes, fold, mult and shift 16 lanes,
 * the entries 64 bytes and out 16 bytes. */
/* One pixel of row3_fast_full (see there), written twice in its loop. */
#define EP_DW3_PIXEL \
    "ld1 {v0.4s-v3.4s}, [%[fold]]\n\t" \
    "ld1 {v4.16b-v7.16b}, [%[p0]], %[s0]\n\t" \
    "sdot v0.4s, v4.16b, v16.16b\n\t" \
    "sdot v1.4s, v5.16b, v17.16b\n\t" \
    "sdot v2.4s, v6.16b, v18.16b\n\t" \
    "sdot v3.4s, v7.16b, v19.16b\n\t" \
    "ld1 {v4.16b-v7.16b}, [%[p1]], %[s1]\n\t" \
    "sdot v0.4s, v4.16b, v20.16b\n\t" \
    "sdot v1.4s, v5.16b, v21.16b\n\t" \
    "sdot v2.4s, v6.16b, v22.16b\n\t" \
    "sdot v3.4s, v7.16b, v23.16b\n\t" \
    "ld1 {v4.16b-v7.16b}, [%[p2]], %[s2]\n\t" \
    "sdot v0.4s, v4.16b, v24.16b\n\t" \
    "sdot v1.4s, v5.16b, v25.16b\n\t" \
    "sdot v2.4s, v6.16b, v26.16b\n\t" \
    "sdot v3.4s, v7.16b, v27.16b\n\t" \
    /* ep_neon_requant_s32, fast form */ \
    "sqrdmulh v0.4s, v0.4s, v28.4s\n\t" \
    "sqrdmulh v1.4s, v1.4s, v29.4s\n\t" \
    "sqrdmulh v2.4s, v2.4s, v30.4s\n\t" \
    "sqrdmulh v3.4s, v3.4s, v31.4s\n\t" \
    "ssra v0.4s, v0.4s, #31\n\t" \
    "ssra v1.4s, v1.4s, #31\n\t" \
    "ssra v2.4s, v2.4s, #31\n\t" \
    "ssra v3.4s, v3.4s, #31\n\t" \
    "srshl v0.4s, v0.4s, v8.4s\n\t" \
    "srshl v1.4s, v1.4s, v9.4s\n\t" \
    "srshl v2.4s, v2.4s, v10.4s\n\t" \
    "srshl v3.4s, v3.4s, v11.4s\n\t" \
    /* ep_neon_narrow16 */ \
    "sqxtn v0.4h, v0.4s\n\t" \
    "sqxtn2 v0.8h, v1.4s\n\t" \
    "sqxtn v2.4h, v2.4s\n\t" \
    "sqxtn2 v2.8h, v3.4s\n\t" \
    "sqadd v0.8h, v0.8h, v12.8h\n\t" \
    "sqadd v2.8h, v2.8h, v12.8h\n\t" \
    "sqxtn v0.8b, v0.8h\n\t" \
    "sqxtn2 v0.16b, v2.8h\n\t" \
    "smax v0.16b, v0.16b, v13.16b\n\t" \
    "smin v0.16b, v0.16b, v14.16b\n\t" \
    "st1 {v0.16b}, [%[dst]], %[ostride]\n\t"

/* row3_fast_full loads the output constants of ep_neon_out_t with one LD1 of 3 registers. */
typedef char ep_out_layout_check[offsetof(ep_neon_out_t, act_min) == 16 && offsetof(ep_neon_out_t, act_max) == 32
                                     ? 1
                                     : -1];

static inline __attribute__((always_inline)) void row3_fast_full(const int8_t *e0, const int8_t *e1, const int8_t *e2,
                                                                  int64_t s0, int64_t s1, int64_t s2, const int8_t *w,
                                                                  const int32_t *fold, const int32_t *mult,
                                                                  const int32_t *shift, const ep_neon_out_t *o,
                                                                  int8_t *out, int64_t out_stride, int64_t pixels,
                                                                  int64_t blocks)
{
    const int8_t *p0, *p1, *p2;
    int8_t *dst;
    int64_t n;
    __asm__ volatile("ld1 {v12.16b-v14.16b}, [%[o]]\n" /* out_off, act_min, act_max */
                     "2:\n\t"
                     "ld1 {v16.16b-v19.16b}, [%[w]], #64\n\t"
                     "ld1 {v20.16b-v23.16b}, [%[w]], #64\n\t"
                     "ld1 {v24.16b-v27.16b}, [%[w]], #64\n\t"
                     "ld1 {v28.4s-v31.4s}, [%[mult]], #64\n\t"
                     "ld1 {v8.4s-v11.4s}, [%[shift]], #64\n\t"
                     "mov %[p0], %[e0]\n\t"
                     "mov %[p1], %[e1]\n\t"
                     "mov %[p2], %[e2]\n\t"
                     "mov %[dst], %[out]\n\t"
                     "mov %[n], %[pixels]\n\t"
                     /* two pixels per iteration; an odd count enters at the second */
                     "tbz %[n], #0, 1f\n\t"
                     "add %[n], %[n], #1\n\t"
                     "b 3f\n"
                     "1:\n\t"
                     EP_DW3_PIXEL
                     "3:\n\t"
                     EP_DW3_PIXEL
                     "subs %[n], %[n], #2\n\t"
                     "b.ne 1b\n\t"
                     /* the next channel block */
                     "add %[fold], %[fold], #64\n\t"
                     "add %[e0], %[e0], #64\n\t"
                     "add %[e1], %[e1], #64\n\t"
                     "add %[e2], %[e2], #64\n\t"
                     "add %[out], %[out], #16\n\t"
                     "subs %[blocks], %[blocks], #1\n\t"
                     "b.ne 2b\n"
                     : [e0] "+r"(e0), [e1] "+r"(e1), [e2] "+r"(e2), [w] "+r"(w), [out] "+r"(out), [fold] "+r"(fold),
                       [mult] "+r"(mult), [shift] "+r"(shift), [blocks] "+r"(blocks), [p0] "=&r"(p0),
                       [p1] "=&r"(p1), [p2] "=&r"(p2), [dst] "=&r"(dst), [n] "=&r"(n)
                     : [pixels] "r"(pixels), [s0] "r"(s0), [s1] "r"(s1), [s2] "r"(s2), [ostride] "r"(out_stride),
                       [o] "r"(o)
                     : "cc", "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11", "v12",
                       "v13", "v14", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25", "v26",
                       "v27", "v28", "v29", "v30", "v31");
}
#endif

static void row3(const int8_t *e0, const int8_t *e1, const int8_t *e2, int32_t stride, const int8_t *w,
                 const int32_t *fold, const int32_t *mult, const int32_t *shift, const ep_neon_out_t *o, int8_t *out,
                 int32_t out_stride, int32_t out_w, int32_t valid)
{
    if (o->fast && valid == 16) {
        row3_loop(e0, e1, e2, stride, w, fold, mult, shift, o, out, out_stride, out_w, valid, 1, 1);
    } else if (valid == 16) {
        row3_loop(e0, e1, e2, stride, w, fold, mult, shift, o, out, out_stride, out_w, valid, 0, 1);
    } else {
        row3_loop(e0, e1, e2, stride, w, fold, mult, shift, o, out, out_stride, out_w, valid, 0, 0);
    }
}

/* The interleaved rows of one output row for dilated kernels: cached ones first, then the
 * missing ones into slots that no kernel row of this output row needs (there are k_h slots). */
static void lookup_rows(const ep_conv_params_t *params, const int8_t *image, const ep_dims_t *input_dims, int32_t iy0,
                        int32_t k_h, int32_t k_w, int32_t out_w, int32_t n_groups, int32_t entry_row, const int8_t *zp,
                        const int8_t *zero_row, int8_t *cache, int32_t *tags, int8_t *line, const int8_t **rows)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, c = input_dims->c, dh = params->dilation_h;
    const int32_t cp = ep_neon_round_up(c, 16);
    for (int32_t ky = 0; ky < k_h; ++ky) {
        const int32_t iy = iy0 + ky * dh;
        rows[ky] = iy < 0 || iy >= in_h ? zero_row : NULL;
        for (int32_t s = 0; s < k_h && !rows[ky]; ++s) {
            rows[ky] = tags[s] == iy ? &cache[s * entry_row] : NULL;
        }
    }
    for (int32_t ky = 0; ky < k_h; ++ky) {
        if (rows[ky]) {
            continue;
        }
        const int32_t iy = iy0 + ky * dh;
        int32_t s = 0;
        for (;; ++s) { /* a slot whose row is not needed */
            int needed = 0;
            for (int32_t k = 0; k < k_h; ++k) {
                needed |= tags[s] == iy0 + k * dh;
            }
            if (!needed) {
                break;
            }
        }
        tags[s] = iy;
        interleave_row(params, &image[iy * in_w * c], in_w, c, cp, k_w, out_w, n_groups, zp, line,
                       &cache[s * entry_row]);
        rows[ky] = &cache[s * entry_row];
    }
}

#if defined(__GNUC__)
/* `count` entries of nb x 64 bytes at d: 16 channels of rows p, p + o1, p + o2 (and p + o3 when
 * `four`; otherwise byte 3 of each lane is left unspecified: a tap past k_h, weight 0), p
 * advancing `step` bytes per entry. In assembly: GCC's loop takes half as many instructions
 * again (counters, and zeroing the fourth register every time). */
static void interleave_run(const int8_t *p, int64_t step, int64_t o1, int64_t o2, int64_t o3, int64_t nb,
                           int64_t count, int8_t *d, int four)
{
    const int8_t *p1 = p + o1, *p2 = p + o2, *p3 = p + o3;
    const int64_t adv = step - nb * 16;
    int64_t n;
    if (four) {
        __asm__ volatile("2:\n\t"
                         "mov %[n], %[nb]\n"
                         "1:\n\t"
                         "ld1 {v4.16b}, [%[p0]], #16\n\t"
                         "ld1 {v5.16b}, [%[p1]], #16\n\t"
                         "ld1 {v6.16b}, [%[p2]], #16\n\t"
                         "ld1 {v7.16b}, [%[p3]], #16\n\t"
                         "st4 {v4.16b-v7.16b}, [%[d]], #64\n\t"
                         "subs %[n], %[n], #1\n\t"
                         "b.ne 1b\n\t"
                         "add %[p0], %[p0], %[adv]\n\t"
                         "add %[p1], %[p1], %[adv]\n\t"
                         "add %[p2], %[p2], %[adv]\n\t"
                         "add %[p3], %[p3], %[adv]\n\t"
                         "subs %[count], %[count], #1\n\t"
                         "b.ne 2b\n"
                         : [p0] "+r"(p), [p1] "+r"(p1), [p2] "+r"(p2), [p3] "+r"(p3), [d] "+r"(d),
                           [count] "+r"(count), [n] "=&r"(n)
                         : [nb] "r"(nb), [adv] "r"(adv)
                         : "cc", "memory", "v4", "v5", "v6", "v7");
    } else {
        __asm__ volatile("2:\n\t"
                         "mov %[n], %[nb]\n"
                         "1:\n\t"
                         "ld1 {v4.16b}, [%[p0]], #16\n\t"
                         "ld1 {v5.16b}, [%[p1]], #16\n\t"
                         "ld1 {v6.16b}, [%[p2]], #16\n\t"
                         "st4 {v4.16b-v7.16b}, [%[d]], #64\n\t"
                         "subs %[n], %[n], #1\n\t"
                         "b.ne 1b\n\t"
                         "add %[p0], %[p0], %[adv]\n\t"
                         "add %[p1], %[p1], %[adv]\n\t"
                         "add %[p2], %[p2], %[adv]\n\t"
                         "subs %[count], %[count], #1\n\t"
                         "b.ne 2b\n"
                         : [p0] "+r"(p), [p1] "+r"(p1), [p2] "+r"(p2), [d] "+r"(d), [count] "+r"(count),
                           [n] "=&r"(n)
                         : [nb] "r"(nb), [adv] "r"(adv)
                         : "cc", "memory", "v4", "v5", "v6", "v7");
    }
}

/* The interleaved column of input column ix (channels a multiple of 16): for every output row oy
 * an entry [block][channel][tap ky] holding the k_h (<= 4) vertical taps of output row oy, taps
 * outside the image reading `zp`. Not inlined: inside the kernel, GCC spills its loop. */
static __attribute__((noinline)) void interleave_column(const ep_conv_params_t *params, const int8_t *image,
                                                        int32_t in_h, int32_t in_w, int32_t c, int32_t k_h,
                                                        int32_t out_h, int32_t ix, const int8_t *zp, int8_t *dst)
{
    const int32_t nb = c / 16, dh = params->dilation_h, sh = params->stride_h, row = in_w * c, entry = nb * 64;
    const int32_t iy0 = -params->pad_h; /* first tap's row at oy = 0 */
    /* Output rows whose taps are all inside: oy_lo <= oy < oy_hi. */
    int32_t oy_lo = iy0 >= 0 ? 0 : (-iy0 + sh - 1) / sh;
    const int32_t last = in_h - 1 - (k_h - 1) * dh - iy0; /* oy * sh <= last */
    int32_t oy_hi = last < 0 ? 0 : last / sh + 1;
    oy_hi = oy_hi < out_h ? oy_hi : out_h;
    oy_lo = oy_lo < oy_hi ? oy_lo : oy_hi;
    const int8_t *col = image + ix * c;
    if (oy_hi > oy_lo) {
        const int32_t o1 = (k_h > 1 ? 1 : 0) * dh * row, o2 = (k_h > 2 ? 2 : k_h - 1) * dh * row;
        const int8_t *p = col + (iy0 + oy_lo * sh) * row;
        if (k_h == 4) {
            interleave_run(p, sh * row, o1, o2, 3 * dh * row, nb, oy_hi - oy_lo, dst + oy_lo * entry, 1);
        } else {
            interleave_run(p, sh * row, o1, o2, 0, nb, oy_hi - oy_lo, dst + oy_lo * entry, 0);
        }
    }
    for (int32_t oy = 0; oy < out_h; ++oy) { /* the top and bottom edges */
        if (oy == oy_lo && oy_hi > oy_lo) {
            oy = oy_hi - 1;
            continue;
        }
        const int8_t *src[4];
        for (int j = 0; j < 4; ++j) {
            const int32_t y = iy0 + oy * sh + (j < k_h ? j : k_h - 1) * dh;
            src[j] = y >= 0 && y < in_h ? col + y * row : zp;
        }
        int8_t *d = dst + oy * entry;
        for (int32_t b = 0; b < nb; ++b, d += 64) {
            int8x16x4_t v;
            v.val[0] = vld1q_s8(src[0] + 16 * b);
            v.val[1] = vld1q_s8(src[1] + 16 * b);
            v.val[2] = vld1q_s8(src[2] + 16 * b);
            v.val[3] = vld1q_s8(src[3] + 16 * b);
            vst4q_s8(d, v);
        }
    }
}

/* The column path, for kernels 3 wide and at most 4 tall, dilation_w 1, channels a multiple of
 * 16 and every shift negative, chosen when the output is at least as tall as wide: the same SDOT
 * loop as the row path (row3_fast_full) but with vertical taps interleaved, walking down output
 * columns. Per-column costs are then paid out_w times instead of per-row costs out_h times, only
 * the top and bottom entries of a column need the zero point, and a column outside the image is
 * one zero-point entry read with stride 0. Interleaved input columns (out_h entries each) are
 * kept in a cache of 3, column ix in slot ix mod 3 (the 3 columns an output column reads are
 * consecutive). Wider outputs keep the row path, which is then the cheaper one. Scratch: see
 * columns_scratch. */
static void depthwise_columns(const ep_conv_params_t *params, const ep_quant_t *quant, const ep_neon_out_t *o,
                              const ep_dims_t *input_dims, const int8_t *input, const ep_dims_t *filter_dims,
                              const int8_t *filter, const int32_t *bias, const ep_dims_t *output_dims,
                              int8_t *output, void *scratch)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, c = input_dims->c, k_h = filter_dims->h;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, nb = c / 16, entry = nb * 64;
    const int32_t column = out_h * entry;
    int32_t *mult = (int32_t *)scratch;
    int32_t *shift = mult + c;
    int32_t *fold = shift + c;
    int8_t *packed = (int8_t *)(fold + c);
    int8_t *zp = packed + 12 * c;
    int8_t *cache = zp + 4 * c;
    ep_neon_pad_quant(quant, c, c, mult, shift);
    /* Weights: per block of 16 channels and kernel column kx, [channel][tap ky]; their sums. */
    for (int32_t c0 = 0; c0 < c; c0 += 16) {
        int32x4_t sums[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
        int8_t *dst = &packed[c0 * 12];
        for (int32_t kx = 0; kx < 3; ++kx, dst += 64) {
            int8x16x4_t v;
            for (int j = 0; j < 4; ++j) {
                v.val[j] = j < k_h ? vld1q_s8(&filter[(j * 3 + kx) * c + c0]) : vdupq_n_s8(0);
            }
            vst4q_s8(dst, v);
            const int8x16x4_t w = vld1q_s8_x4(dst);
            for (int q = 0; q < 4; ++q) {
                sums[q] = vdotq_s32(sums[q], w.val[q], vdupq_n_s8(1));
            }
        }
        for (int q = 0; q < 4; ++q) {
            const int32x4_t b4 = bias ? vld1q_s32(&bias[c0 + 4 * q]) : vdupq_n_s32(0);
            vst1q_s32(&fold[c0 + 4 * q], vmlaq_n_s32(b4, sums[q], quant->input_offset));
        }
    }
    ep_neon_fill(zp, (int8_t)(-quant->input_offset), 4 * c);
    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *image = &input[b * in_h * in_w * c];
        int32_t tags[3] = {-1, -1, -1}; /* empty: no column index */
        for (int32_t ox = 0; ox < out_w; ++ox) {
            const int8_t *e[3];
            int64_t step[3];
            for (int32_t kx = 0; kx < 3; ++kx) {
                const int32_t ix = ox * params->stride_w - params->pad_w + kx;
                if (ix < 0 || ix >= in_w) {
                    e[kx] = zp, step[kx] = 0; /* one zero-point entry for every pixel */
                    continue;
                }
                const int32_t slot = ix % 3;
                if (tags[slot] != ix) {
                    tags[slot] = ix;
                    interleave_column(params, image, in_h, in_w, c, k_h, out_h, ix, zp, &cache[slot * column]);
                }
                e[kx] = &cache[slot * column], step[kx] = entry;
            }
            row3_fast_full(e[0], e[1], e[2], step[0], step[1], step[2], packed, fold, mult, shift, o,
                           &output[(b * out_h * out_w + ox) * c], (int64_t)out_w * c, out_h, nb);
        }
    }
}
#endif

void ep_depthwise_conv2d_s8_neon_dot(const ep_conv_params_t *params, int32_t depth_multiplier, const ep_quant_t *quant,
                                     const ep_dims_t *input_dims, const int8_t *input, const ep_dims_t *filter_dims,
                                     const int8_t *filter, const int32_t *bias, const ep_dims_t *output_dims,
                                     int8_t *output, void *scratch)
{
    if (depth_multiplier != 1) {
        ep_depthwise_conv2d_s8_neon(params, depth_multiplier, quant, input_dims, input, filter_dims, filter, bias,
                                    output_dims, output, scratch);
        return;
    }
#if defined(__GNUC__)
    if (columns_fit(filter_dims, output_dims) && params->dilation_w == 1) {
        const ep_neon_out_t o = ep_neon_out_init(quant, output_dims->c);
        if (o.fast) {
            depthwise_columns(params, quant, &o, input_dims, input, filter_dims, filter, bias, output_dims, output,
                              scratch);
            return;
        }
    }
#endif
    const int32_t in_h = input_dims->h, in_w = input_dims->w, c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w, n_groups = groups(filter_dims);
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const int32_t cp = ep_neon_round_up(c, 16), nb = cp / 16, entry_row = out_w * n_groups * cp * 4;
    const int8_t zero_point = (int8_t)(-quant->input_offset);
    int32_t *mult = (int32_t *)scratch;
    int32_t *shift = mult + cp;
    int32_t *fold = shift + cp;
    int8_t *packed = (int8_t *)(fold + cp);
    int8_t *zp = packed + cp * k_h * n_groups * 4;
    int8_t *zero_row = zp + cp;
    int8_t *cache = zero_row + entry_row;
    int32_t *tags = (int32_t *)(void *)(cache + k_h * entry_row);
    int8_t *line = (int8_t *)(tags + k_h);
    const int8_t **rows = (const int8_t **)(((uintptr_t)(line + (cp != c ? in_w * cp : 0)) + 7) & ~(uintptr_t)7);

    /* Weights: per block of 16 channels, kernel row and tap group, [channel][tap j]; their sums. */
    ep_neon_pad_quant(quant, c, cp, mult, shift);
    for (int32_t c0 = 0; c0 < cp; c0 += 16) {
        const int32_t valid = c - c0 < 16 ? c - c0 : 16;
        int32x4_t sums[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
        int8_t *dst = &packed[c0 * k_h * n_groups * 4];
        for (int32_t ky = 0; ky < k_h; ++ky) {
            for (int32_t g = 0; g < n_groups; ++g, dst += 64) {
                int8x16x4_t v;
                for (int j = 0; j < 4; ++j) {
                    const int32_t kx = 4 * g + j;
                    v.val[j] = kx < k_w ? load_channels(&filter[(ky * k_w + kx) * c + c0], valid, 0) : vdupq_n_s8(0);
                }
                vst4q_s8(dst, v);
                const int8x16x4_t w = vld1q_s8_x4(dst);
                for (int q = 0; q < 4; ++q) {
                    sums[q] = vdotq_s32(sums[q], w.val[q], vdupq_n_s8(1));
                }
            }
        }
        int32_t b16[16] = {0};
        for (int32_t i = 0; bias && i < valid; ++i) {
            b16[i] = bias[c0 + i];
        }
        for (int q = 0; q < 4; ++q) {
            vst1q_s32(&fold[c0 + 4 * q], vmlaq_n_s32(vld1q_s32(&b16[4 * q]), sums[q], quant->input_offset));
        }
    }
    const ep_neon_out_t o = ep_neon_out_init(quant, c);
    ep_neon_fill(zp, zero_point, cp);
    ep_neon_fill(zero_row, zero_point, entry_row);

    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *image = &input[b * in_h * in_w * c];
        for (int32_t s = 0; s < k_h; ++s) {
            tags[s] = INT32_MIN; /* empty: no row index */
        }
        for (int32_t oy = 0; oy < out_h; ++oy) {
            /* The interleaved rows of this output row, from the cache or built into it. */
            const int32_t iy0 = oy * params->stride_h - params->pad_h;
            if (params->dilation_h == 1) {
                /* k_h consecutive rows: slot iy mod k_h never collides. */
                for (int32_t ky = 0; ky < k_h; ++ky) {
                    const int32_t iy = iy0 + ky;
                    if (iy < 0 || iy >= in_h) {
                        rows[ky] = zero_row;
                        continue;
                    }
                    const int32_t slot = iy % k_h;
                    if (tags[slot] != iy) {
                        tags[slot] = iy;
                        interleave_row(params, &image[iy * in_w * c], in_w, c, cp, k_w, out_w, n_groups, zp, line,
                                       &cache[slot * entry_row]);
                    }
                    rows[ky] = &cache[slot * entry_row];
                }
            } else {
                lookup_rows(params, image, input_dims, iy0, k_h, k_w, out_w, n_groups, entry_row, zp, zero_row, cache,
                            tags, line, rows);
            }
            const int32_t stride = n_groups * cp * 4; /* between output columns in a row */
#if defined(__GNUC__)
            if (k_h * n_groups == 3 && o.fast && c == cp) {
                const int8_t *r1 = n_groups == 3 ? rows[0] + 64 * nb : rows[1];
                const int8_t *r2 = n_groups == 3 ? rows[0] + 128 * nb : rows[2];
                row3_fast_full(rows[0], r1, r2, stride, stride, stride, packed, fold, mult, shift, &o,
                               &output[((b * out_h + oy) * out_w) * c], c, out_w, nb);
                continue;
            }
#endif
            for (int32_t c0 = 0; c0 < cp; c0 += 16) {
                const int32_t valid = c - c0 < 16 ? c - c0 : 16, e = c0 * 4;
                const int8_t *w = &packed[c0 * k_h * n_groups * 4];
                int8_t *out = &output[((b * out_h + oy) * out_w) * c + c0];
                if (k_h * n_groups == 3) { /* 3x3 and its kin: the weights stay in registers */
                    const int8_t *r1 = n_groups == 3 ? rows[0] + 64 * nb : rows[1];
                    const int8_t *r2 = n_groups == 3 ? rows[0] + 128 * nb : rows[2];
                    row3(rows[0] + e, r1 + e, r2 + e, stride, w, &fold[c0], &mult[c0], &shift[c0], &o, out, c, out_w,
                         valid);
                    continue;
                }
                const int32x4x4_t f = vld1q_s32_x4(&fold[c0]);
                for (int32_t ox = 0; ox < out_w; ++ox, out += c) {
                    int32x4_t acc0 = f.val[0], acc1 = f.val[1], acc2 = f.val[2], acc3 = f.val[3];
                    const int8_t *wp = w;
                    for (int32_t ky = 0; ky < k_h; ++ky) {
                        const int8_t *x_row = &rows[ky][ox * stride + e];
                        for (int32_t g = 0; g < n_groups; ++g, wp += 64) {
                            const int8x16x4_t x = vld1q_s8_x4(x_row + g * 64 * nb);
                            const int8x16x4_t wv = vld1q_s8_x4(wp);
                            acc0 = vdotq_s32(acc0, x.val[0], wv.val[0]);
                            acc1 = vdotq_s32(acc1, x.val[1], wv.val[1]);
                            acc2 = vdotq_s32(acc2, x.val[2], wv.val[2]);
                            acc3 = vdotq_s32(acc3, x.val[3], wv.val[3]);
                        }
                    }
                    ep_neon_store16(acc0, acc1, acc2, acc3, &mult[c0], &shift[c0], &o, out, valid);
                }
            }
        }
    }
}
#else
typedef int ep_depthwise_conv2d_s8_neon_dot_unused; /* ISO C wants a non-empty file */
#endif
