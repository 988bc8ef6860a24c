/* On-device adaptation (issue 6, METHODS.md section 1): the firmware trains the selected neurons of the
 * model's trainable region in float32 on samples the host streams (firmware/PROTOCOL.md, "Adaptation").
 *
 * The region (every layer after the first weighted one, or from `adapt --trainable-from`'s layer) is
 * described by the generated adapt_region.c (toolchain/edgeprune/adapt/region_c.py); the frozen int8
 * prefix is the generated adapt_prefix.c.
 * The device keeps the region's float32 parameters packed, non-zero weights only (pruned weights stay
 * zero), and runs kernels_c's channel-sparse float32 kernels on them.
 * Every buffer training needs beyond inference (master copies, gradients, momentum, the NEq pre-epoch
 * copy or int8 history and state, the gradient scores' error mass, saved activations, error buffers)
 * comes from one static pool of EP_ADAPT_POOL_BYTES, allocated exactly as
 * toolchain/edgeprune/adapt/budget.py counts it, so the pool's high-water mark is the measured training RAM. Built only with -DEP_WITH_ADAPT (build_firmware(..., adaptation=True)). */
#ifndef EP_ADAPT_H_
#define EP_ADAPT_H_

#include <stdint.h>

#include "adapt_region.h"
#include "ep_types.h"

#define EP_ADAPT_REGION_VERSION 4

/* Protocol kinds (0x10..0x2F are adaptation's). */
#define EP_KIND_ADAPT_BEGIN 0x10u
#define EP_KIND_ADAPT_PROBE 0x11u
#define EP_KIND_ADAPT_EPOCH 0x12u
#define EP_KIND_ADAPT_SAMPLE 0x13u
#define EP_KIND_ADAPT_EPOCH_END 0x14u
#define EP_KIND_ADAPT_EVAL 0x15u
#define EP_KIND_ADAPT_END 0x16u
#define EP_KIND_ADAPT_RESET 0x17u
#define EP_ERR_ADAPT 9 /* refused: budget, state or arguments (the message says why) */

/* Step and layer kinds of the region tables. */
#define EP_ADAPT_CONV 1
#define EP_ADAPT_DEPTHWISE 2
#define EP_ADAPT_FC 3
#define EP_ADAPT_MEAN 4
#define EP_ADAPT_ALIAS 5 /* RESHAPE, QUANTIZE: same values, the output shares the input's buffer */
#define EP_ADAPT_AVG_POOL 6 /* without padding */
#define EP_ADAPT_MAX_POOL 7 /* without padding */
#define EP_ADAPT_PAD 8

typedef struct {
    int32_t kind;
    int32_t has_bias;
    int32_t activation; /* 0 none, 1 RELU, 2 RELU6 */
    ep_conv_params_t conv;
    int32_t depth_multiplier;
    ep_dims_t in_dims, filter_dims, out_dims; /* fully connected: (1,1,1,in) (O,1,1,I) (1,1,1,O) */
    int32_t in_features;                     /* input elements per sample */
    int32_t channels, channel_size, positions;
    /* The packed parameters (ep_adapt_factory): the layer's non-zero weights start at weight_offset
     * (ep_adapt_weight_index gives their positions from the same offset), its biases at bias_offset
     * (-1: none); channel c's weights are the row_start[c] .. row_start[c + 1] of them, where
     * row_start = ep_adapt_row_start + row_offset (kernels_c's ep_sparse_f32_t). */
    int32_t weight_offset, bias_offset, row_offset;
    float history_scale; /* the NEq int8 history's fixed symmetric scale (region.py's Layer.history_scale) */
} ep_adapt_layer_t;

typedef struct {
    int32_t kind;
    int32_t layer; /* index into ep_adapt_layers, or -1 */
    int32_t tin, tout; /* local tensor ids: 0 is the region input */
    int32_t in_size, out_size;
    int32_t positions; /* MEAN: input positions (H*W) */
    /* in H, W, C; out H, W, C; pools: filter H, W, stride H, W; PAD: top, left, channel-front padding */
    int32_t in_h, in_w, in_c, out_h, out_w, out_c, f_h, f_w, s_h, s_w, pad_h, pad_w, pad_c;
    float pad_value;
} ep_adapt_step_t;

extern const int32_t ep_adapt_num_layers, ep_adapt_num_steps, ep_adapt_num_tensors, ep_adapt_num_classes;
extern const float ep_adapt_input_scale;
extern const int32_t ep_adapt_input_zero_point;
extern const int32_t ep_adapt_output_softmax;
extern const ep_adapt_layer_t ep_adapt_layers[];
extern const ep_adapt_step_t ep_adapt_steps[];
extern const int32_t ep_adapt_tensor_sizes[];
extern const int32_t ep_adapt_tensor_offsets[]; /* in a forward buffer, in floats */
extern const float ep_adapt_factory[EP_ADAPT_PARAM_FLOATS];
extern const int32_t ep_adapt_row_start[EP_ADAPT_ROW_STARTS];
extern const uint16_t ep_adapt_weight_index[EP_ADAPT_WEIGHT_ENTRIES];

/* Registers the adaptation commands; call once after ep_model_init. */
void ep_adapt_register(void);

/* The adapted model on one int8 model input: float32 logits (EP_ADAPT_CLASSES). 0, or -1 on error. */
int ep_adapt_predict(const int8_t *input, float *logits);

#endif /* EP_ADAPT_H_ */
