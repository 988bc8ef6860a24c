/* DEPTHWISE_CONV_2D, int8, EP_SPARSE_UNSTRUCTURED weights (see ep_sparse_s8.h): portable C.
 * Each live channel lists its non-zero taps; the driver supplies one input pointer per tap. */
#include "ep_sparse_common.h"

static void ep_sparse_dw_unstructured(const ep_sparse_s8_t *w, const ep_quant_t *q, int32_t depth_multiplier,
                                      int32_t in_c, const int8_t *const *taps, int8_t *out)
{
    (void)in_c;
    const uint8_t *t = w->index;
    const int8_t *v = w->values;
    for (int32_t j = 0; j < w->n_live; ++j) {
        const int32_t c = w->live[j], n = w->count[j];
        const int32_t ic = depth_multiplier == 1 ? c : c / depth_multiplier;
        int32_t acc = 0;
        for (int32_t e = 0; e < n; ++e) {
            acc += v[e] * taps[t[e]][ic];
        }
        out[c] = ep_sparse_out(q, c, acc + w->bias[c]);
        t += n;
        v += n;
    }
}

void ep_depthwise_conv2d_s8_unstructured(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS)
{
    ep_sparse_dw(params, depth_multiplier, quant, input_dims, input, filter_dims, filter, output_dims, output, scratch,
                 ep_sparse_dw_unstructured);
}
