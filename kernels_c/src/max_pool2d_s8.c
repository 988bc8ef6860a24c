/* MAX_POOL_2D, int8: TFLite's reference_integer_ops::MaxPool. */
#include "ep_kernels.h"

void ep_max_pool2d_s8(const ep_pool_params_t *params, const ep_dims_t *input_dims, const int8_t *input,
                      const ep_dims_t *output_dims, int8_t *output)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, depth = input_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;

    for (int32_t b = 0; b < input_dims->n; ++b) {
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * params->stride_h - params->pad_h;
            const int32_t ky_start = y0 < 0 ? -y0 : 0; /* padding taps never win */
            const int32_t ky_end = params->filter_h < in_h - y0 ? params->filter_h : in_h - y0;
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * params->stride_w - params->pad_w;
                const int32_t kx_start = x0 < 0 ? -x0 : 0;
                const int32_t kx_end = params->filter_w < in_w - x0 ? params->filter_w : in_w - x0;
                int8_t *out = &output[((b * out_h + oy) * out_w + ox) * depth];
                for (int32_t c = 0; c < depth; ++c) {
                    int32_t max = INT8_MIN;
                    for (int32_t ky = ky_start; ky < ky_end; ++ky) {
                        /* Indices, not pointers: x0 may be negative and a pointer before the array is UB. */
                        const int32_t row = (b * in_h + y0 + ky) * in_w;
                        for (int32_t kx = kx_start; kx < kx_end; ++kx) {
                            const int32_t v = input[(row + x0 + kx) * depth + c];
                            max = v > max ? v : max;
                        }
                    }
                    max = max < params->activation_min ? params->activation_min : max;
                    max = max > params->activation_max ? params->activation_max : max;
                    out[c] = (int8_t)max;
                }
            }
        }
    }
}
