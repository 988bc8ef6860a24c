/* The other int8 inference ops: pooling, element-wise, reductions, layout and (de)quantization
 * (SOFTMAX, LOGISTIC and TANH are in ep_activations_s8.h).
 *
 * Portable C, bit-exact with TensorFlow Lite Micro's reference kernels. Activations are NHWC; a
 * tensor of lower rank is described by right-aligning its shape into ep_dims_t (n, h, w, c) and
 * filling the leading dims with 1, as numpy broadcasting does. Fixed-point parameters come from
 * toolchain/edgeprune/compile/quant.py, which mirrors each op's Prepare in TFLM.
 *
 * In place (output == input), which the compiler's memory planner relies on: safe for the
 * element-wise int8 ops, ADD and MUL (with an input of the output's shape; not with one that is
 * broadcast) and ep_requantize_s8, and for RESHAPE. Not safe for pooling, MEAN, PAD, CONCATENATION,
 * ep_quantize_f32_s8 and ep_dequantize_s8_f32: their outputs must not overlap their inputs.
 * The element-wise kernels read input element i before they write output element i and never
 * read it again, which is what makes them safe (tests/test_kernels_ops.py runs each in place).
 */
#ifndef EP_OPS_S8_H_
#define EP_OPS_S8_H_

#include <stdint.h>

#include "ep_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* AVERAGE_POOL_2D and MAX_POOL_2D. TFLM requires the input and output quantization to be equal.
 * pad_h/pad_w: top/left padding (quant.conv_padding with dilation 1); padded taps are skipped,
 * and the average divides by the number of in-bounds taps, rounding half away from zero. The
 * average sums in int32: windows up to 2^24 taps. Not in place. */
typedef struct {
    int32_t filter_h, filter_w;
    int32_t stride_h, stride_w;
    int32_t pad_h, pad_w;
    int32_t activation_min, activation_max; /* fused activation, in output units */
} ep_pool_params_t;

void ep_average_pool2d_s8(const ep_pool_params_t *params, const ep_dims_t *input_dims, const int8_t *input,
                          const ep_dims_t *output_dims, int8_t *output);
void ep_max_pool2d_s8(const ep_pool_params_t *params, const ep_dims_t *input_dims, const int8_t *input,
                      const ep_dims_t *output_dims, int8_t *output);

/* ADD and MUL with broadcasting: every dim of input1_dims and input2_dims equals the output's or
 * is 1 (both inputs may broadcast, along different dims). In place: output may be an input whose
 * dims equal the output's. quant.add_params / mul_params refuse scales whose fixed-point
 * rescaling could overflow int32. */
typedef struct {
    int32_t input1_offset, input2_offset; /* minus the input zero points */
    int32_t left_shift;                   /* 20 for int8; at most 23 ((q + offset) * 2^23 < 2^31) */
    int32_t input1_multiplier, input1_shift;
    int32_t input2_multiplier, input2_shift;
    int32_t output_multiplier, output_shift;
    int32_t output_offset; /* the output zero point */
    int32_t activation_min, activation_max;
} ep_add_params_t;

typedef struct {
    int32_t input1_offset, input2_offset; /* minus the input zero points */
    int32_t output_multiplier, output_shift;
    int32_t output_offset;
    int32_t activation_min, activation_max;
} ep_mul_params_t;

void ep_add_s8(const ep_add_params_t *params, const ep_dims_t *input1_dims, const int8_t *input1,
               const ep_dims_t *input2_dims, const int8_t *input2, const ep_dims_t *output_dims, int8_t *output);
void ep_mul_s8(const ep_mul_params_t *params, const ep_dims_t *input1_dims, const int8_t *input1,
               const ep_dims_t *input2_dims, const int8_t *input2, const ep_dims_t *output_dims, int8_t *output);

/* MEAN over H and W of an NHWC tensor; output[n][c] (keep_dims or not: same memory layout).
 * multiplier/shift already fold in 1/(h*w) the way TFLM does at run time (quant.mean_params).
 * The sum is int32: h * w below 2^23 (quant.mean_params checks). Not in place. */
typedef struct {
    int32_t input_zero_point;
    int32_t output_zero_point;
    int32_t multiplier, shift;
} ep_mean_params_t;

void ep_mean_s8(const ep_mean_params_t *params, const ep_dims_t *input_dims, const int8_t *input, int8_t *output);

/* PAD / PADV2: paddings = {n_before, n_after, h_before, h_after, w_before, w_after, c_before, c_after}
 * (TFLite's [4, 2] paddings tensor, all >= 0; quant.pad_paddings). pad_value: the output zero
 * point for PAD, the constant for PADV2. Not in place. */
void ep_pad_s8(const ep_dims_t *input_dims, const int8_t *input, const int32_t paddings[8], int8_t pad_value,
               int8_t *output);

/* CONCATENATION of any rank along any axis. TFLM requires every input to have the output's scale and
 * zero point, so this is a copy. With outer_size = product of the output dims before the axis,
 * copy_sizes[i] = input i's dim at the axis times the product of the dims after it
 * (quant.concatenation_sizes). Not in place. */
void ep_concatenation_s8(int32_t num_inputs, const int8_t *const *inputs, const int32_t *copy_sizes,
                         int32_t outer_size, int8_t *output);

/* RESHAPE moves no data: the compiler should alias output to input. This copies size bytes when
 * the buffers differ (overlapping buffers included) and does nothing when they are the same. */
void ep_reshape_s8(const int8_t *input, int8_t *output, int32_t size);

/* QUANTIZE float32 -> int8: round(x / scale) + zero_point, division in float, rounding half away
 * from zero, then saturation. NaN becomes the zero point. Not in place. */
void ep_quantize_f32_s8(const float *input, int32_t size, float scale, int32_t zero_point, int8_t *output);

/* QUANTIZE int8 -> int8 (requantization): multiplier/shift for input_scale / output_scale
 * (quant.requantize_params). In place. */
void ep_requantize_s8(const int8_t *input, int32_t size, int32_t input_zero_point, int32_t multiplier,
                      int32_t shift, int32_t output_zero_point, int8_t *output);

/* DEQUANTIZE int8 -> float32: scale * (q - zero_point). Not in place (the output is 4x wider). */
void ep_dequantize_s8_f32(const int8_t *input, int32_t size, float scale, int32_t zero_point, float *output);

#ifdef __cplusplus
}
#endif

#endif /* EP_OPS_S8_H_ */
