/* DEPTHWISE_CONV_2D, float32, channel-sparse weights (ep_sparse_f32_t): forward and backward for
 * selected output channels, in train_depthwise_conv2d_f32.c's order. A channel's weights are its
 * taps, k = ky * k_w + kx; output channel oc reads input channel oc / depth_multiplier.
 * Conventions in ep_train_f32.h. */
#include "ep_kernels.h"
#include "ep_train_common.h"

void ep_depthwise_conv2d_f32_sparse(const ep_conv_params_t *params, int32_t depth_multiplier,
                                    const ep_dims_t *input_dims, const float *input, const ep_dims_t *filter_dims,
                                    const ep_sparse_f32_t *filter, const float *bias, const ep_dims_t *output_dims,
                                    float *output)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;

    for (int32_t b = 0; b < input_dims->n; ++b) {
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t in_y0 = oy * params->stride_h - params->pad_h;
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                float *out = &output[((b * out_h + oy) * out_w + ox) * out_c];
                for (int32_t oc = 0; oc < out_c; ++oc) {
                    const int32_t ic = oc / depth_multiplier;
                    float acc = bias ? bias[oc] : 0.0f; /* the dense kernel starts from the bias too */
                    for (int32_t e = filter->row_start[oc]; e < filter->row_start[oc + 1]; ++e) {
                        const int32_t iy = in_y0 + params->dilation_h * (filter->index[e] / k_w);
                        const int32_t ix = in_x0 + params->dilation_w * (filter->index[e] % k_w);
                        if (iy >= 0 && iy < in_h && ix >= 0 && ix < in_w) {
                            acc += filter->values[e] * input[((b * in_h + iy) * in_w + ix) * in_c + ic];
                        }
                    }
                    out[oc] = acc;
                }
            }
        }
    }
}

void ep_depthwise_conv2d_f32_sparse_backward(const ep_conv_params_t *params, int32_t depth_multiplier,
                                             const ep_dims_t *input_dims, const float *input,
                                             const ep_dims_t *filter_dims, const ep_sparse_f32_t *filter,
                                             const ep_dims_t *output_dims, const float *grad_output,
                                             float *grad_input, const int32_t *channels, int32_t n_channels,
                                             float *grad_values, float *grad_bias, int32_t accumulate)
{
    const int32_t batches = input_dims->n, in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;

    if (grad_input) {
        for (int32_t i = 0; i < batches * in_h * in_w * in_c; ++i) {
            grad_input[i] = 0.0f;
        }
        for (int32_t b = 0; b < batches; ++b) {
            for (int32_t oy = 0; oy < out_h; ++oy) {
                const int32_t in_y0 = oy * params->stride_h - params->pad_h;
                for (int32_t ox = 0; ox < out_w; ++ox) {
                    const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                    const float *dy = &grad_output[((b * out_h + oy) * out_w + ox) * out_c];
                    for (int32_t oc = 0; oc < out_c; ++oc) {
                        const int32_t ic = oc / depth_multiplier;
                        for (int32_t e = filter->row_start[oc]; e < filter->row_start[oc + 1]; ++e) {
                            const int32_t iy = in_y0 + params->dilation_h * (filter->index[e] / k_w);
                            const int32_t ix = in_x0 + params->dilation_w * (filter->index[e] % k_w);
                            if (iy >= 0 && iy < in_h && ix >= 0 && ix < in_w) {
                                grad_input[((b * in_h + iy) * in_w + ix) * in_c + ic] += filter->values[e] * dy[oc];
                            }
                        }
                    }
                }
            }
        }
    }

    if (!channels) {
        n_channels = out_c;
    }
    float *dw = grad_values;
    for (int32_t j = 0; j < n_channels; ++j) {
        const int32_t oc = channels ? channels[j] : j;
        const int32_t ic = oc / depth_multiplier;
        const int32_t first = filter->row_start[oc], count = filter->row_start[oc + 1] - first;
        if (grad_values) {
            for (int32_t e = 0; e < count; ++e) {
                const int32_t k = filter->index[first + e];
                const float acc = ep_train_depthwise_tap_gradient(params, input_dims, input, output_dims, grad_output,
                                                                  oc, ic, k / k_w, k % k_w);
                dw[e] = accumulate ? dw[e] + acc : acc;
            }
            dw += count;
        }
        if (grad_bias) {
            grad_bias[j] = ep_train_channel_sum(grad_output, batches * out_h * out_w, out_c, oc,
                                                accumulate ? grad_bias[j] : 0.0f);
        }
    }
}
