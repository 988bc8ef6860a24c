/* RELU forward and backward, float32, for on-device training. Conventions in ep_train_f32.h. */
#include "ep_kernels.h"

void ep_relu_f32(int32_t size, const float *input, float *output)
{
    for (int32_t i = 0; i < size; ++i) {
        output[i] = input[i] > 0.0f ? input[i] : 0.0f;
    }
}

void ep_relu_f32_backward(int32_t size, const float *forward_input, const float *grad_output, float *grad_input)
{
    for (int32_t i = 0; i < size; ++i) {
        grad_input[i] = forward_input[i] > 0.0f ? grad_output[i] : 0.0f;
    }
}
