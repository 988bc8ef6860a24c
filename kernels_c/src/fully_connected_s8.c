/* FULLY_CONNECTED, int8, portable reference: TFLite's FullyConnectedPerChannel. */
#include "ep_fixedpoint.h"
#include "ep_kernels.h"

void ep_fully_connected_s8_portable(const ep_quant_t *quant, int32_t batches, int32_t in_features,
                                    int32_t out_features, const int8_t *input, const int8_t *filter,
                                    const int32_t *bias, int8_t *output, void *scratch)
{
    (void)scratch;
    for (int32_t b = 0; b < batches; ++b) {
        const int8_t *in = &input[b * in_features];
        for (int32_t o = 0; o < out_features; ++o) {
            const int8_t *w = &filter[o * in_features];
            int32_t acc = 0;
            for (int32_t i = 0; i < in_features; ++i) {
                acc += (int32_t)w[i] * ((int32_t)in[i] + quant->input_offset);
            }
            if (bias) {
                acc += bias[o];
            }
            output[b * out_features + o] = ep_requantize(acc, quant->multiplier[o], quant->shift[o],
                                                         quant->output_offset, quant->activation_min,
                                                         quant->activation_max);
        }
    }
}
