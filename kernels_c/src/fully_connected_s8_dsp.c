/* FULLY_CONNECTED, int8, Cortex-M DSP extension: the input row is widened to int16 once per batch
 * (input offset added), then four output rows at a time share it in a SMLAD loop. */
#include "ep_dsp_im2col.h"

#if defined(EP_DSP_ENABLED)
#include "ep_fixedpoint.h"
#include "ep_kernels.h"

int32_t ep_fully_connected_s8_scratch_size_dsp(int32_t batches, int32_t in_features, int32_t out_features)
{
    (void)batches;
    (void)out_features;
    return 2 * ((in_features + 3) & ~3); /* one widened input row */
}

/* Four weights of row w against the widened input at i: SXTB16 splits them into the (x0, x2) and
 * (x1, x3) order the widened input was stored in. */
#define EP_FC_ROW4(acc, w, i, xlo, xhi)                                    \
    do {                                                                  \
        const int32_t v_ = ep_dsp_read32((w) + (i));                      \
        (acc) = __smlad(__sxtb16(v_), (xlo), (acc));                      \
        (acc) = __smlad(ep_dsp_sxtb16_ror8(v_), (xhi), (acc));            \
    } while (0)

void ep_fully_connected_s8_dsp(const ep_quant_t *quant, int32_t batches, int32_t in_features, int32_t out_features,
                               const int8_t *input, const int8_t *filter, const int32_t *bias, int8_t *output,
                               void *scratch)
{
    if (!ep_dsp_offset_ok(quant->input_offset) || scratch == NULL) {
        ep_fully_connected_s8_portable(quant, batches, in_features, out_features, input, filter, bias, output, NULL);
        return;
    }
    const int32_t n = in_features, n4 = n & ~3;
    const ep_dsp_rq_t rq = ep_dsp_rq_init(quant);
    int16_t *x = (int16_t *)scratch;
    for (int32_t b = 0; b < batches; ++b) {
        ep_dsp_widen_reordered(&input[b * n], x, n, quant->input_offset);
        int8_t *out = &output[b * out_features];
        int32_t o = 0;
        /* Four output rows at a time share each widened input word. */
        for (; o + 4 <= out_features; o += 4) {
            const int8_t *w0 = &filter[o * n], *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
            int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            if (bias) {
                a0 = bias[o], a1 = bias[o + 1], a2 = bias[o + 2], a3 = bias[o + 3];
            }
            for (int32_t i = 0; i < n4; i += 4) {
                const int32_t xlo = ep_dsp_read32(x + i), xhi = ep_dsp_read32(x + i + 2);
                EP_FC_ROW4(a0, w0, i, xlo, xhi);
                EP_FC_ROW4(a1, w1, i, xlo, xhi);
                EP_FC_ROW4(a2, w2, i, xlo, xhi);
                EP_FC_ROW4(a3, w3, i, xlo, xhi);
            }
            for (int32_t i = n4; i < n; ++i) {
                a0 += w0[i] * x[i];
                a1 += w1[i] * x[i];
                a2 += w2[i] * x[i];
                a3 += w3[i] * x[i];
            }
            const int8_t r0 = ep_dsp_rq(rq, a0, rq.multiplier[o], rq.shift[o]);
            const int8_t r1 = ep_dsp_rq(rq, a1, rq.multiplier[o + 1], rq.shift[o + 1]);
            const int8_t r2 = ep_dsp_rq(rq, a2, rq.multiplier[o + 2], rq.shift[o + 2]);
            const int8_t r3 = ep_dsp_rq(rq, a3, rq.multiplier[o + 3], rq.shift[o + 3]);
            out[o] = r0;
            out[o + 1] = r1;
            out[o + 2] = r2;
            out[o + 3] = r3;
        }
        for (; o < out_features; ++o) {
            const int8_t *w0 = &filter[o * n];
            int32_t a0 = bias ? bias[o] : 0;
            for (int32_t i = 0; i < n4; i += 4) {
                EP_FC_ROW4(a0, w0, i, ep_dsp_read32(x + i), ep_dsp_read32(x + i + 2));
            }
            for (int32_t i = n4; i < n; ++i) {
                a0 += w0[i] * x[i];
            }
            out[o] = ep_dsp_rq(rq, a0, rq.multiplier[o], rq.shift[o]);
        }
    }
}

#endif /* EP_DSP_ENABLED */
