/* DEPTHWISE_CONV_2D, int8, EP_SPARSE_BLOCK4 weights (see ep_sparse_s8.h): Cortex-M DSP.
 * One word of 4 weights and one word of 4 inputs per entry: SXTB16 splits both into even and odd
 * channels, SMLABB/SMLATT accumulate each channel's product separately. */
#include "ep_dsp_im2col.h"
#include "ep_sparse_dw_block4.h"

#if defined(EP_DSP_ENABLED)
static void ep_sparse_dw_block4_dsp(const ep_sparse_s8_t *w, const ep_quant_t *q, int32_t depth_multiplier,
                                    int32_t in_c, const int8_t *const *taps, int8_t *out)
{
    (void)in_c;
    const uint8_t *t = w->index;
    const int8_t *v = w->values;
    for (int32_t j = 0; j < w->n_live; ++j) {
        const int32_t c0 = 4 * w->live[j], n = w->count[j];
        const int32_t lanes = w->rows - c0 < 4 ? w->rows - c0 : 4;
        if (lanes == 4 && depth_multiplier == 1) {
            int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            for (int32_t e = 0; e < n; ++e) {
                const int32_t xv = ep_dsp_read32(taps[t[e]] + c0), wv = ep_dsp_read32(v + 4 * e);
                const int32_t w02 = __sxtb16(wv), w13 = ep_dsp_sxtb16_ror8(wv);
                const int32_t x02 = __sxtb16(xv), x13 = ep_dsp_sxtb16_ror8(xv);
                a0 = __smlabb(w02, x02, a0);
                a2 = __smlatt(w02, x02, a2);
                a1 = __smlabb(w13, x13, a1);
                a3 = __smlatt(w13, x13, a3);
            }
            out[c0] = ep_sparse_out(q, c0, a0 + w->bias[c0]);
            out[c0 + 1] = ep_sparse_out(q, c0 + 1, a1 + w->bias[c0 + 1]);
            out[c0 + 2] = ep_sparse_out(q, c0 + 2, a2 + w->bias[c0 + 2]);
            out[c0 + 3] = ep_sparse_out(q, c0 + 3, a3 + w->bias[c0 + 3]);
        } else {
            ep_sparse_dw_block4_lanes(w, q, depth_multiplier, c0, lanes, n, t, v, taps, out);
        }
        t += n;
        v += 4 * n;
    }
}

void ep_depthwise_conv2d_s8_block4_dsp(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS)
{
    ep_sparse_dw(params, depth_multiplier, quant, input_dims, input, filter_dims, filter, output_dims, output, scratch,
                 ep_sparse_dw_block4_dsp);
}
#endif /* EP_DSP_ENABLED */
