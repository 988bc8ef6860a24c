/* Helpers shared by the float32 training kernels of the convolutions (train_*conv2d_f32*.c). */
#ifndef EP_TRAIN_COMMON_H_
#define EP_TRAIN_COMMON_H_

#include <stdint.h>

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

#endif /* EP_TRAIN_COMMON_H_ */
