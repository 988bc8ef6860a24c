/* Float32 forward and backward kernels for on-device training.
 *
 * Layouts are those of the int8 ops: activations NHWC, conv weights (O,H,W,I), depthwise
 * weights (1,H,W,C*M) with output channel oc = ic * M + m, fully connected weights (O,I).
 * Geometry (strides, dilation, top/left padding) comes from ep_conv_params_t; the output size
 * implies the bottom/right padding. Portable C99, plain loops. Only RELU (forward and backward)
 * works in place; the layers' outputs and gradients must not overlap any of their inputs.
 *
 * Backward passes and partial training. Only a few output channels ("neurons") of a layer train.
 * The selection is a list `channels` of `n_channels` output channel indices, in any order, no
 * duplicates; channels == NULL selects every output channel (n_channels is then ignored).
 * grad_filter and grad_bias hold only the selected channels, packed in list order, so their size
 * scales with the selection:
 *   fully connected: grad_filter[j * in_features + i]                      (n_channels, I)
 *   conv2d:          grad_filter[((j * k_h + ky) * k_w + kx) * in_c + ic]  (n_channels, H, W, I)
 *   depthwise:       grad_filter[(j * k_h + ky) * k_w + kx]                (n_channels, H, W)
 *   every layer:     grad_bias[j]                                          (n_channels)
 * (depthwise gradients are channel-major, unlike the (1,H,W,C*M) weights: ep_sgd_update_f32
 * scatters them back through ep_param_layout_t).
 * Weight and bias gradients are summed (not averaged) over the batch: scale the learning rate
 * by 1/batch for a mean loss. With accumulate == 0 they overwrite the buffers; with
 * accumulate != 0 they are added to them, so a batch can be processed one sample at a time
 * (keeping one input activation in RAM) before a single SGD step.
 * The input gradient (dL/dx, shape of the input) always uses every output channel of
 * grad_output, is always overwritten, and is skipped when grad_input == NULL. Any of
 * grad_input, grad_filter and grad_bias may be NULL; `input` is read only for grad_filter and
 * `filter` only for grad_input.
 *
 * Costs for the adaptation budget (pure C, so the device can run its own greedy selection):
 *   *_grad_bytes: bytes of the packed gradient buffers (weights, plus bias when has_bias) for
 *     n_channels channels, doubled when with_momentum (the momentum buffers are packed alike).
 *     Not included: the float master copy of the weights, the saved input activation and the
 *     error buffers (the caller knows those sizes).
 *   *_macs: forward MACs of n_channels output channels over all batches (output_dims->n, or
 *     `batches`; pass 1 for the per-sample budget) and output positions, counting every weight
 *     once per output position (padding taps included, as report.json; zeros included).
 *   *_backward_macs: weight-gradient MACs of n_channels channels (equal to their forward MACs)
 *     plus, when with_input_grad, the input-gradient MACs (the forward MACs of all channels).
 *     Bias gradients are additions only and are not counted.
 */
#ifndef EP_TRAIN_F32_H_
#define EP_TRAIN_F32_H_

#include <stdint.h>

#include "ep_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* FULLY_CONNECTED: output[b][o] = bias[o] + sum_i filter[o][i] * input[b][i]; bias may be NULL. */
void ep_fully_connected_f32(int32_t batches, int32_t in_features, int32_t out_features, const float *input,
                            const float *filter, const float *bias, float *output);
void ep_fully_connected_f32_backward(int32_t batches, int32_t in_features, int32_t out_features, const float *input,
                                     const float *filter, const float *grad_output, float *grad_input,
                                     const int32_t *channels, int32_t n_channels, float *grad_filter,
                                     float *grad_bias, int32_t accumulate);
int64_t ep_fully_connected_f32_grad_bytes(int32_t in_features, int32_t n_channels, int32_t has_bias,
                                          int32_t with_momentum);
int64_t ep_fully_connected_f32_macs(int32_t batches, int32_t in_features, int32_t n_channels);
int64_t ep_fully_connected_f32_backward_macs(int32_t batches, int32_t in_features, int32_t out_features,
                                             int32_t n_channels, int32_t with_input_grad);

/* CONV_2D. filter dims: n = output channels, h, w, c = input channels. bias may be NULL. */
void ep_conv2d_f32(const ep_conv_params_t *params, const ep_dims_t *input_dims, const float *input,
                   const ep_dims_t *filter_dims, const float *filter, const float *bias, const ep_dims_t *output_dims,
                   float *output);
void ep_conv2d_f32_backward(const ep_conv_params_t *params, const ep_dims_t *input_dims, const float *input,
                            const ep_dims_t *filter_dims, const float *filter, const ep_dims_t *output_dims,
                            const float *grad_output, float *grad_input, const int32_t *channels, int32_t n_channels,
                            float *grad_filter, float *grad_bias, int32_t accumulate);
int64_t ep_conv2d_f32_grad_bytes(const ep_dims_t *filter_dims, int32_t n_channels, int32_t has_bias,
                                 int32_t with_momentum);
int64_t ep_conv2d_f32_macs(const ep_dims_t *filter_dims, const ep_dims_t *output_dims, int32_t n_channels);
int64_t ep_conv2d_f32_backward_macs(const ep_dims_t *filter_dims, const ep_dims_t *output_dims, int32_t n_channels,
                                    int32_t with_input_grad);

/* DEPTHWISE_CONV_2D. filter dims: n = 1, h, w, c = input channels * depth_multiplier. bias may be NULL. */
void ep_depthwise_conv2d_f32(const ep_conv_params_t *params, int32_t depth_multiplier, const ep_dims_t *input_dims,
                             const float *input, const ep_dims_t *filter_dims, const float *filter, const float *bias,
                             const ep_dims_t *output_dims, float *output);
void ep_depthwise_conv2d_f32_backward(const ep_conv_params_t *params, int32_t depth_multiplier,
                                      const ep_dims_t *input_dims, const float *input, const ep_dims_t *filter_dims,
                                      const float *filter, const ep_dims_t *output_dims, const float *grad_output,
                                      float *grad_input, const int32_t *channels, int32_t n_channels,
                                      float *grad_filter, float *grad_bias, int32_t accumulate);
int64_t ep_depthwise_conv2d_f32_grad_bytes(const ep_dims_t *filter_dims, int32_t n_channels, int32_t has_bias,
                                           int32_t with_momentum);
int64_t ep_depthwise_conv2d_f32_macs(const ep_dims_t *filter_dims, const ep_dims_t *output_dims, int32_t n_channels);
int64_t ep_depthwise_conv2d_f32_backward_macs(const ep_dims_t *filter_dims, const ep_dims_t *output_dims,
                                              int32_t n_channels, int32_t with_input_grad);

/* Channel-sparse float32 weights: a pruned layer keeps only its non-zero weights. Output channel
 * c's weights are values[row_start[c] .. row_start[c + 1]), in ascending order of their position k
 * within the channel (ep_param_layout_t's k: (ky, kx, ic) for conv2d, (ky, kx) for depthwise, the
 * input feature for fully connected), which index[] gives. The sparse kernels below take the dense
 * kernels' arguments with the weights in this form. They visit the non-zero weights in the dense
 * kernels' order, and a skipped zero term changes no float sum, so their outputs and gradients equal
 * the dense kernels' bit for bit on the same weights (except the depthwise input gradient with a
 * depth multiplier above 1, which the dense kernel sums per input channel first: equal to rounding).
 * The weight gradient has one float per non-zero weight of the selected channels, packed in
 * selection order: channel channels[j]'s gradients follow those of channels[0 .. j-1]. */
typedef struct {
    const int32_t *row_start; /* channels + 1 offsets into index and values; row_start[0] == 0 */
    const uint16_t *index;    /* each weight's position k within its channel, ascending per channel */
    const float *values;
} ep_sparse_f32_t;

void ep_fully_connected_f32_sparse(int32_t batches, int32_t in_features, int32_t out_features, const float *input,
                                   const ep_sparse_f32_t *filter, const float *bias, float *output);
void ep_fully_connected_f32_sparse_backward(int32_t batches, int32_t in_features, int32_t out_features,
                                            const float *input, const ep_sparse_f32_t *filter,
                                            const float *grad_output, float *grad_input, const int32_t *channels,
                                            int32_t n_channels, float *grad_values, float *grad_bias,
                                            int32_t accumulate);
void ep_conv2d_f32_sparse(const ep_conv_params_t *params, const ep_dims_t *input_dims, const float *input,
                          const ep_dims_t *filter_dims, const ep_sparse_f32_t *filter, const float *bias,
                          const ep_dims_t *output_dims, float *output);
void ep_conv2d_f32_sparse_backward(const ep_conv_params_t *params, const ep_dims_t *input_dims, const float *input,
                                   const ep_dims_t *filter_dims, const ep_sparse_f32_t *filter,
                                   const ep_dims_t *output_dims, const float *grad_output, float *grad_input,
                                   const int32_t *channels, int32_t n_channels, float *grad_values, float *grad_bias,
                                   int32_t accumulate);
void ep_depthwise_conv2d_f32_sparse(const ep_conv_params_t *params, int32_t depth_multiplier,
                                    const ep_dims_t *input_dims, const float *input, const ep_dims_t *filter_dims,
                                    const ep_sparse_f32_t *filter, const float *bias, const ep_dims_t *output_dims,
                                    float *output);
void ep_depthwise_conv2d_f32_sparse_backward(const ep_conv_params_t *params, int32_t depth_multiplier,
                                             const ep_dims_t *input_dims, const float *input,
                                             const ep_dims_t *filter_dims, const ep_sparse_f32_t *filter,
                                             const ep_dims_t *output_dims, const float *grad_output,
                                             float *grad_input, const int32_t *channels, int32_t n_channels,
                                             float *grad_values, float *grad_bias, int32_t accumulate);

/* RELU between layers (kept separate from the layers). Both may work in place. The backward
 * pass passes the gradient where the forward input was positive (as torch: zero at 0); it reads
 * the forward input or output, which have the same sign pattern. */
void ep_relu_f32(int32_t size, const float *input, float *output);
void ep_relu_f32_backward(int32_t size, const float *forward_input, const float *grad_output, float *grad_input);

/* Where one output channel's weights lie in a weight tensor: weight k (0 <= k < channel_size)
 * of channel oc is at oc * channel_stride + k * element_stride. */
typedef struct {
    int32_t channels;       /* output channels of the layer */
    int32_t channel_size;   /* weights per output channel */
    int32_t channel_stride; /* in floats */
    int32_t element_stride; /* in floats */
} ep_param_layout_t;

ep_param_layout_t ep_fully_connected_f32_layout(int32_t in_features, int32_t out_features);
ep_param_layout_t ep_conv2d_f32_layout(const ep_dims_t *filter_dims);
ep_param_layout_t ep_depthwise_conv2d_f32_layout(const ep_dims_t *filter_dims);

typedef struct {
    float lr;
    float momentum;     /* 0 disables momentum (momentum buffers may then be NULL) */
    float weight_decay; /* L2, added to the gradient of weights and biases alike; 0 disables */
} ep_sgd_params_t;

/* One SGD step on the selected channels, as torch.optim.SGD (dampening 0, no Nesterov):
 *   d = g + weight_decay * p;  buf = momentum * buf + d (when momentum != 0);  p -= lr * buf (or d).
 * grad_* and momentum_* are packed in selection order like the backward passes' gradients; the
 * momentum buffers start at zero and belong to that selection (reset or remap them when the
 * selection changes). The updated channels' weights and biases are scattered into the full
 * tensors; every other weight is left untouched. bias (with grad_bias, momentum_bias) may be
 * NULL for a layer without bias. channels == NULL selects every channel of the layout (n_channels
 * is then ignored). */
void ep_sgd_update_f32(const ep_sgd_params_t *sgd, const ep_param_layout_t *layout, const int32_t *channels,
                       int32_t n_channels, float *weights, const float *grad_weights, float *momentum_weights,
                       float *bias, const float *grad_bias, float *momentum_bias);

#ifdef __cplusplus
}
#endif

#endif /* EP_TRAIN_F32_H_ */
