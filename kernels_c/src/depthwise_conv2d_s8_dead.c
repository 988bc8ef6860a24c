/* DEPTHWISE_CONV_2D, int8, EP_SPARSE_DEAD weights (see ep_sparse_s8.h): portable C, dense taps of live channels. */
#include "ep_sparse_common.h"

static void ep_sparse_dw_dead(const ep_sparse_s8_t *w, const ep_quant_t *q, int32_t depth_multiplier, int32_t in_c,
                              const int8_t *const *taps, int8_t *out)
{
    (void)in_c;
    const int32_t n_taps = w->cols, stride = ep_sparse_round4(n_taps);
    for (int32_t j = 0; j < w->n_live; ++j) {
        const int32_t c = w->live[j];
        const int32_t ic = depth_multiplier == 1 ? c : c / depth_multiplier;
        const int8_t *v = w->values + j * stride;
        int32_t acc = 0;
        for (int32_t t = 0; t < n_taps; ++t) {
            acc += v[t] * taps[t][ic];
        }
        out[c] = ep_sparse_out(q, c, acc + w->bias[c]);
    }
}

void ep_depthwise_conv2d_s8_dead(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS)
{
    ep_sparse_dw(params, depth_multiplier, quant, input_dims, input, filter_dims, filter, output_dims, output, scratch,
                 ep_sparse_dw_dead);
}
