/* CONV_2D, int8, plain Armv8.0 NEON (cores without SDOT, e.g. Cortex-A53).
 *
 * A GEMM over output pixels (rows: their im2col receptive fields, K = k_h * k_w * in_c) and
 * output channels, 4 pixels x 4 channels at a time: widening multiplies (vmull_s8, exact since
 * int8 products fit int16) accumulated pairwise into int32 (vpadalq_s16). The input offset is
 * folded into a per-channel constant bias + offset * sum(w), out-of-image taps are filled with the
 * input zero point (see ep_neon_helpers.h).
 *
 * Scratch (bytes; OCp = out_c rounded up to 4, Kp = K rounded up to 16): multipliers, shifts,
 * folded constants: 3 x OCp int32; weights copied with zero padding: OCp x Kp; im2col: 4 x Kp.
 */
#include "ep_backend.h"
#include "ep_kernels.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#include "ep_neon_helpers.h"

static int32_t kernel_k(const ep_dims_t *filter_dims)
{
    return filter_dims->h * filter_dims->w * filter_dims->c;
}

int32_t ep_conv2d_s8_scratch_size_neon(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                       const ep_dims_t *output_dims)
{
    (void)input_dims;
    const int32_t ocp = ep_neon_round_up(output_dims->c, 4);
    const int32_t kp = ep_neon_round_up(kernel_k(filter_dims), 16);
    return 3 * ocp * 4 + ocp * kp + 4 * kp;
}

/* acc[4 * p + r] += products of pixel row p and weight row r over kp bytes. */
static inline __attribute__((always_inline)) void microkernel(const int8_t *const a[4], const int8_t *w, int32_t kp,
                                                              int32x4_t acc[16])
{
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
        acc[i] = vdupq_n_s32(0);
    }
    for (int32_t c = 0; c < kp; c += 16) {
        int8x16_t x[4], v[4];
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
            x[i] = vld1q_s8(a[i] + c);
            v[i] = vld1q_s8(w + i * kp + c);
        }
#pragma GCC unroll 4
        for (int p = 0; p < 4; ++p) {
#pragma GCC unroll 4
            for (int r = 0; r < 4; ++r) {
                acc[4 * p + r] = ep_neon_dot16(acc[4 * p + r], v[r], x[p], 0);
            }
        }
    }
}

void ep_conv2d_s8_neon(const ep_conv_params_t *params, const ep_quant_t *quant, const ep_dims_t *input_dims,
                       const int8_t *input, const ep_dims_t *filter_dims, const int8_t *filter, const int32_t *bias,
                       const ep_dims_t *output_dims, int8_t *output, void *scratch)
{
    const int32_t out_c = output_dims->c, k = kernel_k(filter_dims);
    const int32_t ocp = ep_neon_round_up(out_c, 4), kp = ep_neon_round_up(k, 16);
    int32_t *mult = (int32_t *)scratch;
    int32_t *shift = mult + ocp;
    int32_t *fold = shift + ocp;
    int8_t *weights = (int8_t *)(fold + ocp);
    int8_t *im2col = weights + ocp * kp;

    ep_neon_pad_quant(quant, out_c, ocp, mult, shift);
    for (int32_t oc = 0; oc < ocp; ++oc) {
        int8_t *row = &weights[oc * kp];
        if (oc < out_c) {
            ep_neon_copy(row, &filter[oc * k], k);
            ep_neon_fill(row + k, 0, kp - k);
        } else {
            ep_neon_fill(row, 0, kp);
        }
        int32x4_t s = vdupq_n_s32(0);
        for (int32_t c = 0; c < kp; c += 16) {
            s = ep_neon_sum16(s, vld1q_s8(row + c), 0);
        }
        fold[oc] = (int32_t)((uint32_t)(bias && oc < out_c ? bias[oc] : 0) +
                             (uint32_t)vaddvq_s32(s) * (uint32_t)quant->input_offset);
    }
    const ep_neon_out_t o = ep_neon_out_init(quant, out_c);

    const int direct = ep_neon_conv_is_pointwise(params, input_dims, filter_dims, output_dims) && k == kp;
    const int8_t zero_point = (int8_t)(-quant->input_offset);
    if (!direct) {
        for (int p = 0; p < 4; ++p) {
            ep_neon_fill(&im2col[p * kp + k], 0, kp - k);
        }
    }
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const int32_t pixels = output_dims->n * out_h * out_w;
    for (int32_t px = 0; px < pixels; px += 4) {
        const int32_t n = pixels - px < 4 ? pixels - px : 4;
        const int8_t *a[4];
        for (int32_t p = 0; p < 4; ++p) {
            const int32_t i = px + (p < n ? p : n - 1); /* a short last tile repeats its last pixel */
            if (direct) {
                a[p] = &input[i * k];
            } else if (p < n) {
                const int32_t b = i / (out_h * out_w), r = i % (out_h * out_w);
                ep_neon_im2col_row(params, input_dims, input, filter_dims->h, filter_dims->w, b, r / out_w,
                                   r % out_w, zero_point, &im2col[p * kp]);
                a[p] = &im2col[p * kp];
            } else {
                a[p] = a[n - 1];
            }
        }
        for (int32_t oc = 0; oc < ocp; oc += 4) {
            int32x4_t acc[16];
            microkernel(a, &weights[oc * kp], kp, acc);
            const int32x4_t f = vld1q_s32(&fold[oc]), m = vld1q_s32(&mult[oc]), s = vld1q_s32(&shift[oc]);
            const int32_t valid = out_c - oc < 4 ? out_c - oc : 4;
#pragma GCC unroll 4
            for (int32_t p = 0; p < 4; ++p) {
                if (p >= n) {
                    break;
                }
                const int32x4_t sum = vpaddq_s32(vpaddq_s32(acc[4 * p], acc[4 * p + 1]),
                                                 vpaddq_s32(acc[4 * p + 2], acc[4 * p + 3]));
                const int8x8_t v = ep_neon_narrow4(ep_neon_requant_s32(vaddq_s32(sum, f), m, s, o.fast), o.out_off,
                                                   o.act_min, o.act_max);
                int8_t *dst = &output[(px + p) * out_c + oc];
                if (valid == 4) {
                    const int32_t four = vget_lane_s32(vreinterpret_s32_s8(v), 0);
                    memcpy(dst, &four, 4);
                } else {
                    int8_t tmp[8];
                    vst1_s8(tmp, v);
                    memcpy(dst, tmp, (size_t)valid);
                }
            }
        }
    }
}
#else
typedef int ep_conv2d_s8_neon_unused; /* ISO C wants a non-empty file */
#endif
