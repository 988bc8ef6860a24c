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

#include "ep_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The dense CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED ops come in one variant per backend
 * (portable, dsp, neon_dot, neon, mve), all bit-exact with each other. The un-suffixed function
 * dispatches to the backend selected at build time (see ep_backend.h); the suffixed ones exist
 * so tests can compare variants. `scratch` points to at least ep_<op>_scratch_size() bytes,
 * 4-byte aligned (may be NULL when the size is 0). */

/* CONV_2D. filter dims: n = output channels, h, w, c = input channels. */
#define EP_CONV2D_S8_ARGS                                                                                       \
    const ep_conv_params_t *params, const ep_quant_t *quant, const ep_dims_t *input_dims, const int8_t *input, \
        const ep_dims_t *filter_dims, const int8_t *filter, const int32_t *bias, const ep_dims_t *output_dims,  \
        int8_t *output, void *scratch
void ep_conv2d_s8(EP_CONV2D_S8_ARGS);
void ep_conv2d_s8_portable(EP_CONV2D_S8_ARGS);
void ep_conv2d_s8_dsp(EP_CONV2D_S8_ARGS);
void ep_conv2d_s8_neon_dot(EP_CONV2D_S8_ARGS);
void ep_conv2d_s8_neon(EP_CONV2D_S8_ARGS);
void ep_conv2d_s8_mve(EP_CONV2D_S8_ARGS);
int32_t ep_conv2d_s8_scratch_size(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                  const ep_dims_t *output_dims);
int32_t ep_conv2d_s8_scratch_size_dsp(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                      const ep_dims_t *output_dims);
int32_t ep_conv2d_s8_scratch_size_neon_dot(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                           const ep_dims_t *output_dims);
int32_t ep_conv2d_s8_scratch_size_neon(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                       const ep_dims_t *output_dims);
int32_t ep_conv2d_s8_scratch_size_mve(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                      const ep_dims_t *output_dims);

/* DEPTHWISE_CONV_2D. filter dims: n = 1, h, w, c = input channels * depth_multiplier. */
#define EP_DEPTHWISE_CONV2D_S8_ARGS                                                                         \
    const ep_conv_params_t *params, int32_t depth_multiplier, const ep_quant_t *quant,                     \
        const ep_dims_t *input_dims, const int8_t *input, const ep_dims_t *filter_dims, const int8_t *filter, \
        const int32_t *bias, const ep_dims_t *output_dims, int8_t *output, void *scratch
void ep_depthwise_conv2d_s8(EP_DEPTHWISE_CONV2D_S8_ARGS);
void ep_depthwise_conv2d_s8_portable(EP_DEPTHWISE_CONV2D_S8_ARGS);
void ep_depthwise_conv2d_s8_dsp(EP_DEPTHWISE_CONV2D_S8_ARGS);
void ep_depthwise_conv2d_s8_neon_dot(EP_DEPTHWISE_CONV2D_S8_ARGS);
void ep_depthwise_conv2d_s8_neon(EP_DEPTHWISE_CONV2D_S8_ARGS);
void ep_depthwise_conv2d_s8_mve(EP_DEPTHWISE_CONV2D_S8_ARGS);
int32_t ep_depthwise_conv2d_s8_scratch_size(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                            const ep_dims_t *output_dims);
int32_t ep_depthwise_conv2d_s8_scratch_size_dsp(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                                const ep_dims_t *output_dims);
int32_t ep_depthwise_conv2d_s8_scratch_size_neon_dot(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                                     const ep_dims_t *output_dims);
int32_t ep_depthwise_conv2d_s8_scratch_size_neon(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                                 const ep_dims_t *output_dims);
int32_t ep_depthwise_conv2d_s8_scratch_size_mve(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                                const ep_dims_t *output_dims);

/* FULLY_CONNECTED: output[b][o] from input[b][0..in_features). */
#define EP_FULLY_CONNECTED_S8_ARGS                                                                          \
    const ep_quant_t *quant, int32_t batches, int32_t in_features, int32_t out_features, const int8_t *input, \
        const int8_t *filter, const int32_t *bias, int8_t *output, void *scratch
void ep_fully_connected_s8(EP_FULLY_CONNECTED_S8_ARGS);
void ep_fully_connected_s8_portable(EP_FULLY_CONNECTED_S8_ARGS);
void ep_fully_connected_s8_dsp(EP_FULLY_CONNECTED_S8_ARGS);
void ep_fully_connected_s8_neon_dot(EP_FULLY_CONNECTED_S8_ARGS);
void ep_fully_connected_s8_neon(EP_FULLY_CONNECTED_S8_ARGS);
void ep_fully_connected_s8_mve(EP_FULLY_CONNECTED_S8_ARGS);
int32_t ep_fully_connected_s8_scratch_size(int32_t batches, int32_t in_features, int32_t out_features);
int32_t ep_fully_connected_s8_scratch_size_dsp(int32_t batches, int32_t in_features, int32_t out_features);
int32_t ep_fully_connected_s8_scratch_size_neon_dot(int32_t batches, int32_t in_features, int32_t out_features);
int32_t ep_fully_connected_s8_scratch_size_neon(int32_t batches, int32_t in_features, int32_t out_features);
int32_t ep_fully_connected_s8_scratch_size_mve(int32_t batches, int32_t in_features, int32_t out_features);

/* A CONV_2D or DEPTHWISE_CONV_2D run one band of output rows at a time (conv_bands.c), with the
 * same kernels and the same output bits: generated code uses it to write a layer's output over its
 * dying input (stride 1, output shape = input shape) and to apply a residual ADD band by band, so
 * the layer's full output never needs its own buffer. Batch 1 only. */
typedef struct {
    int32_t row, rows;               /* output rows [row, row + rows) */
    ep_conv_params_t params;         /* the layer's geometry for those rows: pad_h and input_dims.h change */
    ep_dims_t input_dims, output_dims;
    int32_t input_offset;            /* bytes from the layer's input to the first row the band reads */
    int32_t output_offset;           /* bytes from the layer's output to the band's first row */
    int32_t output_bytes;
} ep_conv_band_t;

/* Band of up to band_rows output rows starting at `row`; 0 when row is past the last one. */
int ep_conv_band(const ep_conv_params_t *params, const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                 const ep_dims_t *output_dims, int32_t row, int32_t band_rows, ep_conv_band_t *band);

/* Computes one band of a layer into `output` (the band's rows only, output_dims of the band). */
typedef void (*ep_conv_band_fn)(const ep_conv_band_t *band, int8_t *output);

/* Calls `layer` for each band of band_rows rows, top to bottom, into band_buffer. in_place == NULL:
 * that is all (the band function consumes its rows, e.g. a residual ADD). Otherwise the rows are
 * copied to in_place (the layer's input: stride 1, same shape) as soon as no later band reads the
 * input rows they cover: at once when pad_h == 0 (band_buffer: one band), else one band later
 * (band_rows >= pad_h; band_buffer: two bands). */
void ep_conv_bands(const ep_conv_params_t *params, const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                   const ep_dims_t *output_dims, int32_t band_rows, ep_conv_band_fn layer, int8_t *band_buffer,
                   int8_t *in_place);

/* Name of the backend this build dispatches to: "portable", "dsp", "neon_dot", "neon" or "mve". */
const char *ep_backend_name(void);

#ifdef __cplusplus
}
#endif

/* The other op families, one header each. */
#include "ep_activations_s8.h"
#include "ep_ops_s8.h"
#include "ep_sparse_s8.h"
#include "ep_train_f32.h"

#endif /* EP_KERNELS_H_ */
