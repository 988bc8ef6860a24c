/* Helpers shared by the float32 training kernels of the convolutions (train_*conv2d_f32*.c). */
#ifndef EP_TRAIN_COMMON_H_
#define EP_TRAIN_COMMON_H_

#include <stdint.h>

#include "ep_types.h"

/* start + the sum of output channel oc of grad_output over `positions` pixels of out_c channels:
 * a bias gradient. Kahan-compensated: dL/dy is near zero-mean, so the plain float sum of a
 * channel's many positions loses most of its digits to cancellation. Costs 4 flops per position;
 * -ffast-math would drop the compensation. */
static inline float ep_train_channel_sum(const float *grad_output, int32_t positions, int32_t out_c, int32_t oc,
                                         float start)
{
    float sum = start, err = 0.0f;
    for (int32_t i = 0; i < positions; ++i) {
        const float term = grad_output[i * out_c + oc] - err, next = sum + term;
        err = (next - sum) - term;
        sum = next;
    }
    return sum;
}

/* Output positions o in [lo, hi) whose input coordinate o * stride + offset lies in [0, in_size). */
static inline void ep_train_valid_range(int32_t offset, int32_t stride, int32_t in_size, int32_t out_size, int32_t *lo, int32_t *hi)
{
    *lo = offset >= 0 ? 0 : (stride - 1 - offset) / stride; /* ceil(-offset / stride), both positive */
    *hi = offset >= in_size ? 0 : (in_size - 1 - offset) / stride + 1;
    if (*hi > out_size) {
        *hi = out_size;
    }
    if (*lo > *hi) {
        *lo = *hi;
    }
}

/* d loss / d weight of depthwise output channel oc at tap (ky, kx), summed over the batch: only the
 * output positions whose tap lands inside the input, so the inner loop has no bounds checks and sums
 * in a register. Input channel ic = oc / depth_multiplier. Shared by the dense and sparse kernels. */
static inline float ep_train_depthwise_tap_gradient(const ep_conv_params_t *params, const ep_dims_t *input_dims,
                                                    const float *input, const ep_dims_t *output_dims,
                                                    const float *grad_output, int32_t oc, int32_t ic, int32_t ky,
                                                    int32_t kx)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    int32_t y_lo, y_hi, x_lo, x_hi;
    ep_train_valid_range(params->dilation_h * ky - params->pad_h, params->stride_h, in_h, out_h, &y_lo, &y_hi);
    ep_train_valid_range(params->dilation_w * kx - params->pad_w, params->stride_w, in_w, out_w, &x_lo, &x_hi);
    float acc = 0.0f;
    for (int32_t b = 0; b < input_dims->n; ++b) {
        for (int32_t oy = y_lo; oy < y_hi; ++oy) {
            const int32_t iy = oy * params->stride_h - params->pad_h + params->dilation_h * ky;
            const float *dy = &grad_output[((b * out_h + oy) * out_w) * out_c + oc];
            const float *in = &input[((b * in_h + iy) * in_w) * in_c + ic];
            for (int32_t ox = x_lo; ox < x_hi; ++ox) {
                const int32_t ix = ox * params->stride_w - params->pad_w + params->dilation_w * kx;
                acc += dy[ox * out_c] * in[ix * in_c];
            }
        }
    }
    return acc;
}

#endif /* EP_TRAIN_COMMON_H_ */
