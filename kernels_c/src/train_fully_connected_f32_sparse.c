/* FULLY_CONNECTED, float32, channel-sparse weights (ep_sparse_f32_t): forward and backward for
 * selected output channels, in train_fully_connected_f32.c's order. Conventions in ep_train_f32.h. */
#include "ep_kernels.h"

void ep_fully_connected_f32_sparse(int32_t batches, int32_t in_features, int32_t out_features, const float *input,
                                   const ep_sparse_f32_t *filter, const float *bias, float *output)
{
    for (int32_t b = 0; b < batches; ++b) {
        const float *x = &input[b * in_features];
        for (int32_t o = 0; o < out_features; ++o) {
            float acc = 0.0f;
            for (int32_t e = filter->row_start[o]; e < filter->row_start[o + 1]; ++e) {
                acc += filter->values[e] * x[filter->index[e]];
            }
            output[b * out_features + o] = bias ? acc + bias[o] : acc;
        }
    }
}

void ep_fully_connected_f32_sparse_backward(int32_t batches, int32_t in_features, int32_t out_features,
                                            const float *input, const ep_sparse_f32_t *filter,
                                            const float *grad_output, float *grad_input, const int32_t *channels,
                                            int32_t n_channels, float *grad_values, float *grad_bias,
                                            int32_t accumulate)
{
    if (grad_input) {
        for (int32_t b = 0; b < batches; ++b) {
            float *dx = &grad_input[b * in_features];
            for (int32_t i = 0; i < in_features; ++i) {
                dx[i] = 0.0f;
            }
            for (int32_t o = 0; o < out_features; ++o) {
                const float g = grad_output[b * out_features + o];
                if (g == 0.0f) {
                    continue;
                }
                for (int32_t e = filter->row_start[o]; e < filter->row_start[o + 1]; ++e) {
                    dx[filter->index[e]] += g * filter->values[e];
                }
            }
        }
    }
    if (!channels) {
        n_channels = out_features;
    }
    float *dw = grad_values;
    for (int32_t j = 0; j < n_channels; ++j) {
        const int32_t o = channels ? channels[j] : j;
        const int32_t first = filter->row_start[o], count = filter->row_start[o + 1] - first;
        if (grad_values) {
            if (!accumulate) {
                for (int32_t e = 0; e < count; ++e) {
                    dw[e] = 0.0f;
                }
            }
            for (int32_t b = 0; b < batches; ++b) {
                const float g = grad_output[b * out_features + o];
                const float *x = &input[b * in_features];
                for (int32_t e = 0; e < count; ++e) {
                    dw[e] += g * x[filter->index[first + e]];
                }
            }
            dw += count;
        }
        if (grad_bias) {
            float acc = accumulate ? grad_bias[j] : 0.0f;
            for (int32_t b = 0; b < batches; ++b) {
                acc += grad_output[b * out_features + o];
            }
            grad_bias[j] = acc;
        }
    }
}
