/* AVERAGE_POOL_2D, int8: TFLite's reference_integer_ops::AveragePool. */
#include "ep_kernels.h"

void ep_average_pool2d_s8(const ep_pool_params_t *params, const ep_dims_t *input_dims, const int8_t *input,
                          const ep_dims_t *output_dims, int8_t *output)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, depth = input_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;

    for (int32_t b = 0; b < input_dims->n; ++b) {
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * params->stride_h - params->pad_h;
            /* The window clipped to the input: padding taps are not counted. */
            const int32_t ky_start = y0 < 0 ? -y0 : 0;
            const int32_t ky_end = params->filter_h < in_h - y0 ? params->filter_h : in_h - y0;
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * params->stride_w - params->pad_w;
                const int32_t kx_start = x0 < 0 ? -x0 : 0;
                const int32_t kx_end = params->filter_w < in_w - x0 ? params->filter_w : in_w - x0;
                const int32_t rows = ky_end - ky_start, cols = kx_end - kx_start;
                const int32_t count = rows > 0 && cols > 0 ? rows * cols : 0;
                int8_t *out = &output[((b * out_h + oy) * out_w + ox) * depth];
                for (int32_t c = 0; c < depth; ++c) {
                    int32_t acc = 0;
                    for (int32_t ky = ky_start; ky < ky_end; ++ky) {
                        /* Indices, not pointers: x0 may be negative and a pointer before the array is UB. */
                        const int32_t row = (b * in_h + y0 + ky) * in_w;
                        for (int32_t kx = kx_start; kx < kx_end; ++kx) {
                            acc += input[(row + x0 + kx) * depth + c];
                        }
                    }
                    if (count == 0) {
                        acc = 0; /* an empty window (TFLM fails the op); keep the output defined */
                    } else {
                        /* Round half away from zero, with C's truncating division, as TFLM does. */
                        acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    }
                    acc = acc < params->activation_min ? params->activation_min : acc;
                    acc = acc > params->activation_max ? params->activation_max : acc;
                    out[c] = (int8_t)acc;
                }
            }
        }
    }
}
