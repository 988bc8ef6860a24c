/* edgeprune kernels: int8 inference ops with TensorFlow Lite Micro's exact arithmetic.
 *
 * Layouts follow TFLite: activations NHWC, conv weights (O,H,W,I), depthwise weights
 * (1,H,W,C*M), fully connected weights (O,I). Weights are symmetric int8 per output channel,
 * activations asymmetric int8, biases int32. Requantization uses a per-channel fixed-point
 * multiplier and shift (see ep_fixedpoint.h), computed by the compiler from the scales.
 */
#ifndef EP_KERNELS_H_
#define EP_KERNELS_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int32_t n, h, w, c;
} ep_dims_t;

/* Requantization of an int32 accumulator to int8, one multiplier/shift per output channel. */
typedef struct {
    int32_t input_offset;   /* minus the input zero point */
    int32_t output_offset;  /* the output zero point */
    int32_t activation_min; /* fused activation range, in output units */
    int32_t activation_max;
    const int32_t *multiplier;
    const int32_t *shift;
} ep_quant_t;

typedef struct {
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_h, pad_w; /* top and left padding; bottom/right are implied by the output size */
} ep_conv_params_t;

/* CONV_2D. filter dims: n = output channels, h, w, c = input channels. */
void ep_conv2d_s8(const ep_conv_params_t *params, const ep_quant_t *quant, const ep_dims_t *input_dims,
                  const int8_t *input, const ep_dims_t *filter_dims, const int8_t *filter, const int32_t *bias,
                  const ep_dims_t *output_dims, int8_t *output);

/* DEPTHWISE_CONV_2D. filter dims: n = 1, h, w, c = input channels * depth_multiplier. */
void ep_depthwise_conv2d_s8(const ep_conv_params_t *params, int32_t depth_multiplier, const ep_quant_t *quant,
                            const ep_dims_t *input_dims, const int8_t *input, const ep_dims_t *filter_dims,
                            const int8_t *filter, const int32_t *bias, const ep_dims_t *output_dims, int8_t *output);

/* FULLY_CONNECTED: output[b][o] from input[b][0..in_features). */
void ep_fully_connected_s8(const ep_quant_t *quant, int32_t batches, int32_t in_features, int32_t out_features,
                           const int8_t *input, const int8_t *filter, const int32_t *bias, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* EP_KERNELS_H_ */
