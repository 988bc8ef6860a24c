/* CONV_2D, int8, portable reference: the plain loops of TFLite's ConvPerChannel. */
#include "ep_fixedpoint.h"
#include "ep_kernels.h"

void ep_conv2d_s8_portable(const ep_conv_params_t *params, const ep_quant_t *quant, const ep_dims_t *input_dims,
                           const int8_t *input, const ep_dims_t *filter_dims, const int8_t *filter, const int32_t *bias,
                           const ep_dims_t *output_dims, int8_t *output, void *scratch)
{
    (void)scratch;
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;

    for (int32_t b = 0; b < input_dims->n; ++b) {
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t in_y0 = oy * params->stride_h - params->pad_h;
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                for (int32_t oc = 0; oc < out_c; ++oc) {
                    int32_t acc = 0;
                    for (int32_t ky = 0; ky < k_h; ++ky) {
                        const int32_t iy = in_y0 + params->dilation_h * ky;
                        if (iy < 0 || iy >= in_h) {
                            continue; /* zero padding contributes nothing */
                        }
                        for (int32_t kx = 0; kx < k_w; ++kx) {
                            const int32_t ix = in_x0 + params->dilation_w * kx;
                            if (ix < 0 || ix >= in_w) {
                                continue;
                            }
                            const int8_t *in = &input[((b * in_h + iy) * in_w + ix) * in_c];
                            const int8_t *w = &filter[((oc * k_h + ky) * k_w + kx) * in_c];
                            for (int32_t ic = 0; ic < in_c; ++ic) {
                                acc += (int32_t)w[ic] * ((int32_t)in[ic] + quant->input_offset);
                            }
                        }
                    }
                    if (bias) {
                        acc += bias[oc];
                    }
                    output[((b * out_h + oy) * out_w + ox) * out_c + oc] =
                        ep_requantize(acc, quant->multiplier[oc], quant->shift[oc], quant->output_offset,
                                      quant->activation_min, quant->activation_max);
                }
            }
        }
    }
}
