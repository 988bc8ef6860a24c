/* Helpers shared by the float32 training kernels of the convolutions (train_*conv2d_f32.c). */
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

#endif /* EP_TRAIN_COMMON_H_ */
