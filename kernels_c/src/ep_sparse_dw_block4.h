/* DEPTHWISE_CONV_2D block4 (4 adjacent channels at one tap): the per-lane fallback for a partial last
 * group or a depth multiplier other than 1, shared by the portable and DSP kernels. */
#ifndef EP_SPARSE_DW_BLOCK4_H_
#define EP_SPARSE_DW_BLOCK4_H_

#include "ep_sparse_common.h"

/* Outputs of channels c0..c0+lanes-1 from n (tap, int8x4) entries. */
static inline void ep_sparse_dw_block4_lanes(const ep_sparse_s8_t *w, const ep_quant_t *q, int32_t depth_multiplier,
                                             int32_t c0, int32_t lanes, int32_t n, const uint8_t *t, const int8_t *v,
                                             const int8_t *const *taps, int8_t *out)
{
    int32_t acc[4] = {0, 0, 0, 0};
    for (int32_t e = 0; e < n; ++e, v += 4) {
        const int8_t *x = taps[t[e]];
        for (int32_t l = 0; l < lanes; ++l) {
            acc[l] += v[l] * x[(c0 + l) / depth_multiplier];
        }
    }
    for (int32_t l = 0; l < lanes; ++l) {
        out[c0 + l] = ep_sparse_out(q, c0 + l, acc[l] + w->bias[c0 + l]);
    }
}

#endif /* EP_SPARSE_DW_BLOCK4_H_ */
