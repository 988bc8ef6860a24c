/* CONV_2D, float32, channel-sparse weights (ep_sparse_f32_t): forward and backward for selected
 * output channels, in train_conv2d_f32.c's order. A weight's position is k = (ky * k_w + kx) * in_c
 * + ic, and a channel's positions ascend, so each loop walks the taps (ky, kx) in order and takes the
 * channel's weights of one tap at a time: no division per weight, one padding check per tap.
 * Conventions in ep_train_f32.h. */
#include "ep_kernels.h"
#include "ep_train_common.h"

/* The end of the run of weights from e on whose positions lie below `limit` (the next tap's first). */
static int32_t tap_end(const uint16_t *index, int32_t e, int32_t end, int32_t limit)
{
    while (e < end && index[e] < limit) {
        ++e;
    }
    return e;
}

/* Offset of input pixel (iy, ix) within one image, or -1 in the padding. */
static int32_t pixel_offset(const ep_dims_t *input_dims, int32_t iy, int32_t ix)
{
    if (iy < 0 || iy >= input_dims->h || ix < 0 || ix >= input_dims->w) {
        return -1;
    }
    return (iy * input_dims->w + ix) * input_dims->c;
}

void ep_conv2d_f32_sparse(const ep_conv_params_t *params, const ep_dims_t *input_dims, const float *input,
                          const ep_dims_t *filter_dims, const ep_sparse_f32_t *filter, const float *bias,
                          const ep_dims_t *output_dims, float *output)
{
    const int32_t image = input_dims->h * input_dims->w * input_dims->c, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;

    for (int32_t b = 0; b < input_dims->n; ++b) {
        const float *in = &input[b * image];
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t in_y0 = oy * params->stride_h - params->pad_h;
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                float *out = &output[((b * out_h + oy) * out_w + ox) * out_c];
                for (int32_t oc = 0; oc < out_c; ++oc) {
                    float acc = 0.0f;
                    int32_t e = filter->row_start[oc];
                    const int32_t end = filter->row_start[oc + 1];
                    for (int32_t t = 0; t < k_h * k_w && e < end; ++t) {
                        const int32_t stop = tap_end(filter->index, e, end, (t + 1) * in_c);
                        const int32_t at = pixel_offset(input_dims, in_y0 + params->dilation_h * (t / k_w),
                                                        in_x0 + params->dilation_w * (t % k_w));
                        if (at >= 0) {
                            const float *x = &in[at];
                            for (; e < stop; ++e) {
                                acc += filter->values[e] * x[filter->index[e] - t * in_c];
                            }
                        }
                        e = stop;
                    }
                    out[oc] = bias ? acc + bias[oc] : acc;
                }
            }
        }
    }
}

void ep_conv2d_f32_sparse_backward(const ep_conv_params_t *params, const ep_dims_t *input_dims, const float *input,
                                   const ep_dims_t *filter_dims, const ep_sparse_f32_t *filter,
                                   const ep_dims_t *output_dims, const float *grad_output, float *grad_input,
                                   const int32_t *channels, int32_t n_channels, float *grad_values, float *grad_bias,
                                   int32_t accumulate)
{
    const int32_t batches = input_dims->n, image = input_dims->h * input_dims->w * input_dims->c, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;

    if (grad_input) { /* the transposed convolution, scattered weight by weight */
        for (int32_t i = 0; i < batches * image; ++i) {
            grad_input[i] = 0.0f;
        }
        for (int32_t b = 0; b < batches; ++b) {
            float *dx = &grad_input[b * image];
            for (int32_t oy = 0; oy < out_h; ++oy) {
                const int32_t in_y0 = oy * params->stride_h - params->pad_h;
                for (int32_t ox = 0; ox < out_w; ++ox) {
                    const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                    const float *dy = &grad_output[((b * out_h + oy) * out_w + ox) * out_c];
                    for (int32_t oc = 0; oc < out_c; ++oc) {
                        const float g = dy[oc];
                        if (g == 0.0f) {
                            continue;
                        }
                        int32_t e = filter->row_start[oc];
                        const int32_t end = filter->row_start[oc + 1];
                        for (int32_t t = 0; t < k_h * k_w && e < end; ++t) {
                            const int32_t stop = tap_end(filter->index, e, end, (t + 1) * in_c);
                            const int32_t at = pixel_offset(input_dims, in_y0 + params->dilation_h * (t / k_w),
                                                            in_x0 + params->dilation_w * (t % k_w));
                            if (at >= 0) {
                                float *d = &dx[at];
                                for (; e < stop; ++e) {
                                    d[filter->index[e] - t * in_c] += g * filter->values[e];
                                }
                            }
                            e = stop;
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
        const int32_t first = filter->row_start[oc], count = filter->row_start[oc + 1] - first;
        if (grad_values) {
            if (!accumulate) {
                for (int32_t e = 0; e < count; ++e) {
                    dw[e] = 0.0f;
                }
            }
            for (int32_t b = 0; b < batches; ++b) {
                const float *in = &input[b * image];
                for (int32_t oy = 0; oy < out_h; ++oy) {
                    const int32_t in_y0 = oy * params->stride_h - params->pad_h;
                    for (int32_t ox = 0; ox < out_w; ++ox) {
                        const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                        const float g = grad_output[((b * out_h + oy) * out_w + ox) * out_c + oc];
                        if (g == 0.0f) {
                            continue;
                        }
                        int32_t e = first;
                        for (int32_t t = 0; t < k_h * k_w && e < first + count; ++t) {
                            const int32_t stop = tap_end(filter->index, e, first + count, (t + 1) * in_c);
                            const int32_t at = pixel_offset(input_dims, in_y0 + params->dilation_h * (t / k_w),
                                                            in_x0 + params->dilation_w * (t % k_w));
                            if (at >= 0) {
                                const float *x = &in[at];
                                for (; e < stop; ++e) {
                                    dw[e - first] += g * x[filter->index[e] - t * in_c];
                                }
                            }
                            e = stop;
                        }
                    }
                }
            }
            dw += count;
        }
        if (grad_bias) {
            grad_bias[j] = ep_train_channel_sum(grad_output, batches * out_h * out_w, out_c, oc,
                                                accumulate ? grad_bias[j] : 0.0f);
        }
    }
}
