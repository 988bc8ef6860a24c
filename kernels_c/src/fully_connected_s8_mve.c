/* FULLY_CONNECTED, int8, Helium (MVE): four weight rows against one input row per pass (each input
 * vector loaded once for the four), 16 products per VMLADAVA, tail by predication; the four results
 * requantized together. No scratch. */
#include "ep_mve_helpers.h"
#include "ep_kernels.h"

/* Built on every target, like the other MVE size functions, so the compiler can call it on the host. */
int32_t ep_fully_connected_s8_scratch_size_mve(int32_t batches, int32_t in_features, int32_t out_features)
{
    (void)batches;
    (void)in_features;
    (void)out_features;
    return 0;
}

#if defined(EP_MVE_ENABLED)

/* sum(w_r * (x + offset)) for four rows. The offset enters through the same accumulators as a second
 * VMLADAVA against a vector of offsets, which needs an int8 offset. The one offset outside int8,
 * 128 (input zero point -128, common after ReLU), uses ~x == -x - 1:
 * sum(w * (x + 128)) == -(sum(w * ~x) + sum(w * -127)). `invert` is a constant at each call. */
EP_MVE_INLINE int32x4_t ep_fc_4rows(const int8_t *w0, const int8_t *w1, const int8_t *w2, const int8_t *w3,
                                    const int8_t *x, int32_t k, int8x16_t offv, int invert)
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int32_t i = 0;
    for (; i + 16 <= k; i += 16) {
        int8x16_t xv = vldrbq_s8(x + i);
        if (invert) {
            xv = vmvnq_s8(xv);
        }
        int8x16_t v = vldrbq_s8(w0 + i);
        a0 = vmladavaq_s8(vmladavaq_s8(a0, v, xv), v, offv);
        v = vldrbq_s8(w1 + i);
        a1 = vmladavaq_s8(vmladavaq_s8(a1, v, xv), v, offv);
        v = vldrbq_s8(w2 + i);
        a2 = vmladavaq_s8(vmladavaq_s8(a2, v, xv), v, offv);
        v = vldrbq_s8(w3 + i);
        a3 = vmladavaq_s8(vmladavaq_s8(a3, v, xv), v, offv);
    }
    if (i < k) {
        /* Inactive lanes load no memory and hold zero weights, so they add nothing. */
        const mve_pred16_t p = vctp8q((uint32_t)(k - i));
        int8x16_t xv = vldrbq_z_s8(x + i, p);
        if (invert) {
            xv = vmvnq_s8(xv);
        }
        int8x16_t v = vldrbq_z_s8(w0 + i, p);
        a0 = vmladavaq_s8(vmladavaq_s8(a0, v, xv), v, offv);
        v = vldrbq_z_s8(w1 + i, p);
        a1 = vmladavaq_s8(vmladavaq_s8(a1, v, xv), v, offv);
        v = vldrbq_z_s8(w2 + i, p);
        a2 = vmladavaq_s8(vmladavaq_s8(a2, v, xv), v, offv);
        v = vldrbq_z_s8(w3 + i, p);
        a3 = vmladavaq_s8(vmladavaq_s8(a3, v, xv), v, offv);
    }
    int32x4_t acc = vdupq_n_s32(a0);
    acc = vsetq_lane_s32(a1, acc, 1);
    acc = vsetq_lane_s32(a2, acc, 2);
    acc = vsetq_lane_s32(a3, acc, 3);
    return invert ? vnegq_s32(acc) : acc;
}

static EP_MVE_NOINLINE void ep_fc_mve(const ep_quant_t *quant, int32_t batches, int32_t in_features,
                                     int32_t out_features, const int8_t *input, const int8_t *filter,
                                     const int32_t *bias, int8_t *output, int invert)
{
    const int32_t out_offset = quant->output_offset, act_min = quant->activation_min;
    const int32_t act_max = quant->activation_max;
    const int32_t *multiplier = quant->multiplier, *shift = quant->shift;
    const int8x16_t offv = vdupq_n_s8((int8_t)(invert ? -127 : quant->input_offset));
    for (int32_t b = 0; b < batches; ++b) {
        const int8_t *x = input + b * in_features;
        int8_t *out = output + b * out_features;
        for (int32_t o = 0; o < out_features; o += 4) {
            const int32_t rows = out_features - o;
            const mve_pred16_t p = vctp32q((uint32_t)rows);
            /* Fewer than four rows left: repeat the last one; its extra results are not stored. */
            const int8_t *w0 = filter + o * in_features;
            const int8_t *w1 = rows > 1 ? w0 + in_features : w0;
            const int8_t *w2 = rows > 2 ? w1 + in_features : w1;
            const int8_t *w3 = rows > 3 ? w2 + in_features : w2;
            int32x4_t acc = invert ? ep_fc_4rows(w0, w1, w2, w3, x, in_features, offv, 1)
                                   : ep_fc_4rows(w0, w1, w2, w3, x, in_features, offv, 0);
            if (bias) {
                acc = vaddq_s32(acc, vldrwq_z_s32(bias + o, p));
            }
            acc = ep_mve_mbqm(acc, vldrwq_z_s32(multiplier + o, p), vldrwq_z_s32(shift + o, p));
            vstrbq_p_s32(out + o, ep_mve_clamp(acc, out_offset, act_min, act_max), p);
        }
    }
}

void ep_fully_connected_s8_mve(const ep_quant_t *quant, int32_t batches, int32_t in_features, int32_t out_features,
                               const int8_t *input, const int8_t *filter, const int32_t *bias, int8_t *output,
                               void *scratch)
{
    (void)scratch;
    if (!ep_mve_offset_ok(quant->input_offset)) {
        ep_fully_connected_s8_portable(quant, batches, in_features, out_features, input, filter, bias, output, NULL);
        return;
    }
    ep_fc_mve(quant, batches, in_features, out_features, input, filter, bias, output, quant->input_offset == 128);
}

#endif /* EP_MVE_ENABLED */
