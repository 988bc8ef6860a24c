/* DEPTHWISE_CONV_2D, float32, for on-device training: forward, backward for selected output
 * channels, and the layer's budget costs. Output channel oc = ic * depth_multiplier + m reads
 * input channel ic only. Conventions in ep_train_f32.h. */
#include "ep_kernels.h"
#include "ep_train_common.h"

void ep_depthwise_conv2d_f32(const ep_conv_params_t *params, int32_t depth_multiplier, const ep_dims_t *input_dims,
                             const float *input, const ep_dims_t *filter_dims, const float *filter, const float *bias,
                             const ep_dims_t *output_dims, float *output)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;

    for (int32_t b = 0; b < input_dims->n; ++b) {
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t in_y0 = oy * params->stride_h - params->pad_h;
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                float *out = &output[((b * out_h + oy) * out_w + ox) * out_c];
                for (int32_t oc = 0; oc < out_c; ++oc) {
                    out[oc] = bias ? bias[oc] : 0.0f;
                }
                /* Tap-outer order keeps the inner loop over contiguous channels of one pixel. */
                for (int32_t ky = 0; ky < k_h; ++ky) {
                    const int32_t iy = in_y0 + params->dilation_h * ky;
                    if (iy < 0 || iy >= in_h) {
                        continue; /* zero padding */
                    }
                    for (int32_t kx = 0; kx < k_w; ++kx) {
                        const int32_t ix = in_x0 + params->dilation_w * kx;
                        if (ix < 0 || ix >= in_w) {
                            continue;
                        }
                        const float *in = &input[((b * in_h + iy) * in_w + ix) * in_c];
                        const float *w = &filter[(ky * k_w + kx) * out_c];
                        if (depth_multiplier == 1) { /* the common case, as one flat loop */
                            for (int32_t ic = 0; ic < in_c; ++ic) {
                                out[ic] += w[ic] * in[ic];
                            }
                            continue;
                        }
                        for (int32_t ic = 0; ic < in_c; ++ic) {
                            const float v = in[ic];
                            for (int32_t m = 0; m < depth_multiplier; ++m) {
                                const int32_t oc = ic * depth_multiplier + m;
                                out[oc] += w[oc] * v;
                            }
                        }
                    }
                }
            }
        }
    }
}

void ep_depthwise_conv2d_f32_backward(const ep_conv_params_t *params, int32_t depth_multiplier,
                                      const ep_dims_t *input_dims, const float *input, const ep_dims_t *filter_dims,
                                      const float *filter, const ep_dims_t *output_dims, const float *grad_output,
                                      float *grad_input, const int32_t *channels, int32_t n_channels,
                                      float *grad_filter, float *grad_bias, int32_t accumulate)
{
    const int32_t batches = input_dims->n, in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int32_t taps = k_h * k_w;

    if (grad_input) {
        const int32_t in_size = batches * in_h * in_w * in_c;
        for (int32_t i = 0; i < in_size; ++i) {
            grad_input[i] = 0.0f;
        }
        for (int32_t b = 0; b < batches; ++b) {
            for (int32_t oy = 0; oy < out_h; ++oy) {
                const int32_t in_y0 = oy * params->stride_h - params->pad_h;
                for (int32_t ox = 0; ox < out_w; ++ox) {
                    const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                    const float *dy = &grad_output[((b * out_h + oy) * out_w + ox) * out_c];
                    for (int32_t ky = 0; ky < k_h; ++ky) {
                        const int32_t iy = in_y0 + params->dilation_h * ky;
                        if (iy < 0 || iy >= in_h) {
                            continue;
                        }
                        for (int32_t kx = 0; kx < k_w; ++kx) {
                            const int32_t ix = in_x0 + params->dilation_w * kx;
                            if (ix < 0 || ix >= in_w) {
                                continue;
                            }
                            float *dx = &grad_input[((b * in_h + iy) * in_w + ix) * in_c];
                            const float *w = &filter[(ky * k_w + kx) * out_c];
                            if (depth_multiplier == 1) {
                                for (int32_t ic = 0; ic < in_c; ++ic) {
                                    dx[ic] += w[ic] * dy[ic];
                                }
                                continue;
                            }
                            for (int32_t ic = 0; ic < in_c; ++ic) {
                                float acc = 0.0f;
                                for (int32_t m = 0; m < depth_multiplier; ++m) {
                                    const int32_t oc = ic * depth_multiplier + m;
                                    acc += w[oc] * dy[oc];
                                }
                                dx[ic] += acc;
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
    for (int32_t j = 0; j < n_channels; ++j) {
        const int32_t oc = channels ? channels[j] : j;
        const int32_t ic = oc / depth_multiplier;
        if (grad_filter) {
            for (int32_t ky = 0; ky < k_h; ++ky) {
                for (int32_t kx = 0; kx < k_w; ++kx) {
                    const float acc = ep_train_depthwise_tap_gradient(params, input_dims, input, output_dims,
                                                                      grad_output, oc, ic, ky, kx);
                    float *dw = &grad_filter[j * taps + ky * k_w + kx];
                    *dw = accumulate ? *dw + acc : acc;
                }
            }
        }
        if (grad_bias) {
            grad_bias[j] = ep_train_channel_sum(grad_output, batches * out_h * out_w, out_c, oc,
                                                accumulate ? grad_bias[j] : 0.0f);
        }
    }
}

int64_t ep_depthwise_conv2d_f32_grad_bytes(const ep_dims_t *filter_dims, int32_t n_channels, int32_t has_bias,
                                           int32_t with_momentum)
{
    const int64_t per_channel = (int64_t)filter_dims->h * filter_dims->w + (has_bias ? 1 : 0);
    return (int64_t)n_channels * per_channel * (int64_t)sizeof(float) * (with_momentum ? 2 : 1);
}

int64_t ep_depthwise_conv2d_f32_macs(const ep_dims_t *filter_dims, const ep_dims_t *output_dims, int32_t n_channels)
{
    const int64_t positions = (int64_t)output_dims->n * output_dims->h * output_dims->w;
    return positions * filter_dims->h * filter_dims->w * n_channels;
}

int64_t ep_depthwise_conv2d_f32_backward_macs(const ep_dims_t *filter_dims, const ep_dims_t *output_dims,
                                              int32_t n_channels, int32_t with_input_grad)
{
    return ep_depthwise_conv2d_f32_macs(filter_dims, output_dims, n_channels) +
           (with_input_grad ? ep_depthwise_conv2d_f32_macs(filter_dims, output_dims, output_dims->c) : 0);
}

ep_param_layout_t ep_depthwise_conv2d_f32_layout(const ep_dims_t *filter_dims)
{
    /* Channel oc's taps are strided by the channel count in the (1,H,W,C*M) tensor. */
    ep_param_layout_t layout = {filter_dims->c, filter_dims->h * filter_dims->w, 1, filter_dims->c};
    return layout;
}
