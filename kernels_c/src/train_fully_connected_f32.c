/* FULLY_CONNECTED, float32, for on-device training: forward, backward for selected output
 * channels, and the layer's budget costs. Conventions in ep_train_f32.h. */
#include "ep_kernels.h"

void ep_fully_connected_f32(int32_t batches, int32_t in_features, int32_t out_features, const float *input,
                            const float *filter, const float *bias, float *output)
{
    for (int32_t b = 0; b < batches; ++b) {
        const float *x = &input[b * in_features];
        for (int32_t o = 0; o < out_features; ++o) {
            const float *w = &filter[o * in_features];
            float acc = 0.0f;
            for (int32_t i = 0; i < in_features; ++i) {
                acc += w[i] * x[i];
            }
            output[b * out_features + o] = bias ? acc + bias[o] : acc;
        }
    }
}

void ep_fully_connected_f32_backward(int32_t batches, int32_t in_features, int32_t out_features, const float *input,
                                     const float *filter, const float *grad_output, float *grad_input,
                                     const int32_t *channels, int32_t n_channels, float *grad_filter,
                                     float *grad_bias, int32_t accumulate)
{
    if (grad_input) {
        /* dx[b] = sum_o dy[b][o] * W[o]: row-wise, so the weight rows are read contiguously. */
        for (int32_t b = 0; b < batches; ++b) {
            float *dx = &grad_input[b * in_features];
            for (int32_t i = 0; i < in_features; ++i) {
                dx[i] = 0.0f;
            }
            for (int32_t o = 0; o < out_features; ++o) {
                const float g = grad_output[b * out_features + o];
                if (g == 0.0f) {
                    continue; /* common after a ReLU; skipping changes nothing */
                }
                const float *w = &filter[o * in_features];
                for (int32_t i = 0; i < in_features; ++i) {
                    dx[i] += g * w[i];
                }
            }
        }
    }
    if (!channels) {
        n_channels = out_features;
    }
    for (int32_t j = 0; j < n_channels; ++j) {
        const int32_t o = channels ? channels[j] : j;
        if (grad_filter) {
            float *dw = &grad_filter[j * in_features];
            if (!accumulate) {
                for (int32_t i = 0; i < in_features; ++i) {
                    dw[i] = 0.0f;
                }
            }
            for (int32_t b = 0; b < batches; ++b) {
                const float g = grad_output[b * out_features + o];
                const float *x = &input[b * in_features];
                for (int32_t i = 0; i < in_features; ++i) {
                    dw[i] += g * x[i];
                }
            }
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

int64_t ep_fully_connected_f32_grad_bytes(int32_t in_features, int32_t n_channels, int32_t has_bias,
                                          int32_t with_momentum)
{
    const int64_t floats = (int64_t)n_channels * ((int64_t)in_features + (has_bias ? 1 : 0));
    return floats * (int64_t)sizeof(float) * (with_momentum ? 2 : 1);
}

int64_t ep_fully_connected_f32_macs(int32_t batches, int32_t in_features, int32_t n_channels)
{
    return (int64_t)batches * in_features * n_channels;
}

int64_t ep_fully_connected_f32_backward_macs(int32_t batches, int32_t in_features, int32_t out_features,
                                             int32_t n_channels, int32_t with_input_grad)
{
    return ep_fully_connected_f32_macs(batches, in_features, n_channels) +
           (with_input_grad ? ep_fully_connected_f32_macs(batches, in_features, out_features) : 0);
}

ep_param_layout_t ep_fully_connected_f32_layout(int32_t in_features, int32_t out_features)
{
    ep_param_layout_t layout = {out_features, in_features, in_features, 1};
    return layout;
}
