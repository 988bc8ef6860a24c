/* Sparse int8 weight formats and the CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED kernels that read them.
 *
 * Every format views the weights as a matrix of `rows` output channels by `cols` weights:
 *   CONV_2D          rows = O, cols = kh*kw*I (the (O,H,W,I) row of one output channel, im2col order)
 *   FULLY_CONNECTED  rows = O, cols = I
 *   DEPTHWISE        rows = C (output channels), cols = kh*kw taps (weight (1,H,W,C): column t, row c)
 * Rows whose weights are all zero are dead: they are not stored, and their output is the constant
 * requantize(bias[o]). `live` lists the other rows in ascending order (for depthwise block4: groups of 4).
 *
 * The input offset is folded into the bias at encode time: bias[o] = bias + input_offset * sum(row o),
 * exact in int32, so inner loops multiply raw int8 inputs. Padded taps read the input zero point
 * (-input_offset), which then contributes exactly nothing. Kernels are bit-exact with the dense
 * ones given quant->input_offset == filter->input_offset.
 *
 * Formats (see toolchain/edgeprune/sparse/encode.py, which writes the blobs):
 *   EP_SPARSE_UNSTRUCTURED  matrix: per live row j, count[j] entries of (uint8 delta in `index`, int8 value):
 *                           position = previous position + delta (the first delta is from column 0); a gap
 *                           longer than 255 is bridged by filler entries (delta 255, value 0).
 *                           depthwise: index[] holds the absolute tap (0..kh*kw-1) of each value.
 *   EP_SPARSE_BLOCK4        matrix: blocks of 4 consecutive columns (int8x4, one 32-bit word, 4-byte aligned).
 *                           Per live row j, count[j] blocks, block column = previous + delta*4 (uint8 deltas in
 *                           `index`, first from column 0, filler blocks of zeros for gaps > 255 blocks).
 *                           The last block of a row may run past `cols`; its extra weights are zero.
 *                           depthwise: blocks are 4 adjacent channels at one tap: live[] lists channel groups
 *                           g (channels 4g..4g+3), count[j] taps, index[] the absolute taps, values 4 per tap.
 *   EP_SPARSE_NM24          matrix, cols % 4 == 0 (conv: I % 4 == 0): every group of 4 consecutive columns keeps
 *                           2 values (zeros allowed). Per live row: values 2 per group, row stride
 *                           nm_value_stride() = round_up(cols/2, 4) bytes; positions 2 bits each, p0 < p1,
 *                           one nibble per group (p0 | p1 << 2), even group in the low nibble, row stride
 *                           nm_index_stride() = ceil(cols/8) bytes. Not for depthwise.
 *   EP_SPARSE_DEAD          dense rows for live rows only, row stride round_up(cols, 4), padded with zeros.
 *                           depthwise: row = the kh*kw taps of one live channel, stride round_up(kh*kw, 4).
 *
 * The blob written by the encoder is: a header of 10 int32 (magic EP_SPARSE_MAGIC, format, kind, rows,
 * cols, input_offset, n_live, n_count, n_index, n_values), then bias int32[rows], live uint16[n_live],
 * count uint16[n_count], index uint8[n_index], values int8[n_values], each section starting 4-byte aligned
 * (zero padding). Its size is the encoder's `nbytes`. ep_sparse_s8_view() fills the struct from a blob.
 *
 * Measured on Cortex-M7 (QEMU instruction counts): block4 and dead, with their _dsp variants, pay from 50%
 * sparsity; unstructured only from about 90%; nm24 never beats the dense DSP kernel there (no sparse
 * hardware: selecting 2 of 4 inputs costs more than the 2 multiplies saved).
 */
#ifndef EP_SPARSE_S8_H_
#define EP_SPARSE_S8_H_

#include <stdint.h>

#include "ep_types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EP_SPARSE_MAGIC 0x31535045 /* "EPS1" little-endian */

typedef enum {
    EP_SPARSE_UNSTRUCTURED = 1,
    EP_SPARSE_BLOCK4 = 2,
    EP_SPARSE_NM24 = 3,
    EP_SPARSE_DEAD = 4
} ep_sparse_format_t;

typedef enum {
    EP_SPARSE_KIND_MATRIX = 0,   /* CONV_2D and FULLY_CONNECTED */
    EP_SPARSE_KIND_DEPTHWISE = 1 /* DEPTHWISE_CONV_2D */
} ep_sparse_kind_t;

typedef struct {
    int32_t format;       /* ep_sparse_format_t */
    int32_t kind;         /* ep_sparse_kind_t */
    int32_t rows;         /* output channels */
    int32_t cols;         /* weights per row: kh*kw*I, I, or kh*kw taps (depthwise) */
    int32_t input_offset; /* the input offset folded into bias; must equal quant->input_offset */
    int32_t n_live;       /* entries in live (rows, or channel groups for depthwise block4) */
    int32_t n_count;      /* entries in count: n_live (unstructured, block4) or 0 */
    int32_t n_index;      /* bytes in index */
    int32_t n_values;     /* bytes in values */
    const int32_t *bias;  /* [rows] folded bias */
    const uint16_t *live; /* [n_live] ascending */
    const uint16_t *count;/* [n_count] entries or blocks per live row */
    const uint8_t *index; /* [n_index] deltas, taps or nibble positions (per format) */
    const int8_t *values; /* [n_values] 4-byte aligned */
} ep_sparse_s8_t;

/* Fills *out from an encoder blob (4-byte aligned, `size` bytes); the struct points into the blob.
 * Returns the bytes the blob occupies (== the encoder's nbytes), or -1 if it is malformed. */
int32_t ep_sparse_s8_view(const void *blob, int32_t size, ep_sparse_s8_t *out);

/* Bytes of weight storage the struct describes: header + all sections with their alignment padding. */
int32_t ep_sparse_s8_nbytes(const ep_sparse_s8_t *w);

#define EP_CONV2D_S8_SPARSE_ARGS                                                                               \
    const ep_conv_params_t *params, const ep_quant_t *quant, const ep_dims_t *input_dims, const int8_t *input, \
        const ep_dims_t *filter_dims, const ep_sparse_s8_t *filter, const ep_dims_t *output_dims, int8_t *output, \
        void *scratch
#define EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS                                                                     \
    const ep_conv_params_t *params, int32_t depth_multiplier, const ep_quant_t *quant,                         \
        const ep_dims_t *input_dims, const int8_t *input, const ep_dims_t *filter_dims,                        \
        const ep_sparse_s8_t *filter, const ep_dims_t *output_dims, int8_t *output, void *scratch
/* FULLY_CONNECTED: in_features = filter->cols, out_features = filter->rows. */
#define EP_FULLY_CONNECTED_S8_SPARSE_ARGS                                                                      \
    const ep_quant_t *quant, int32_t batches, const int8_t *input, const ep_sparse_s8_t *filter, int8_t *output, \
        void *scratch

/* Any format, best variant for the build's backend (dispatches on filter->format). */
void ep_conv2d_s8_sparse(EP_CONV2D_S8_SPARSE_ARGS);
void ep_depthwise_conv2d_s8_sparse(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS);
void ep_fully_connected_s8_sparse(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);

/* One format (filter->format must match), best variant for the build's backend: generated code
 * calls these, so a program links only the kernels of the formats its layers use. */
void ep_conv2d_s8_sparse_unstructured(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_sparse_block4(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_sparse_nm24(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_sparse_dead(EP_CONV2D_S8_SPARSE_ARGS);
void ep_depthwise_conv2d_s8_sparse_unstructured(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS);
void ep_depthwise_conv2d_s8_sparse_block4(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS);
void ep_depthwise_conv2d_s8_sparse_dead(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS);
void ep_fully_connected_s8_sparse_unstructured(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);
void ep_fully_connected_s8_sparse_block4(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);
void ep_fully_connected_s8_sparse_nm24(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);
void ep_fully_connected_s8_sparse_dead(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);

/* Scratch bytes (4-byte aligned buffer; 8-byte on 64-bit hosts) enough for every format and variant of the
 * op on this build: conv round4(O) + 9 * round4(kh*kw*I) (the DSP variants widen 4 im2col columns to int16),
 * fully connected round4(O) + 3 * round4(I), depthwise the tap pointer table + round4(C) + round4(I). */
int32_t ep_conv2d_s8_sparse_scratch_size(const ep_sparse_s8_t *filter, const ep_dims_t *input_dims,
                                         const ep_dims_t *filter_dims, const ep_dims_t *output_dims);
int32_t ep_depthwise_conv2d_s8_sparse_scratch_size(const ep_sparse_s8_t *filter, const ep_dims_t *input_dims,
                                                   const ep_dims_t *filter_dims, const ep_dims_t *output_dims);
int32_t ep_fully_connected_s8_sparse_scratch_size(const ep_sparse_s8_t *filter, int32_t batches);

/* One function per op and format: portable C, and Cortex-M DSP (SMLAD) variants where they pay.
 * Each requires filter->format to match its name. */
void ep_conv2d_s8_unstructured(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_unstructured_dsp(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_block4(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_block4_dsp(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_nm24(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_nm24_dsp(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_dead(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_dead_dsp(EP_CONV2D_S8_SPARSE_ARGS);

void ep_fully_connected_s8_unstructured(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);
void ep_fully_connected_s8_block4(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);
void ep_fully_connected_s8_block4_dsp(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);
void ep_fully_connected_s8_nm24(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);
void ep_fully_connected_s8_nm24_dsp(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);
void ep_fully_connected_s8_dead(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);
void ep_fully_connected_s8_dead_dsp(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);

void ep_depthwise_conv2d_s8_unstructured(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS);
void ep_depthwise_conv2d_s8_block4(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS);
void ep_depthwise_conv2d_s8_block4_dsp(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS);
void ep_depthwise_conv2d_s8_dead(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS);

/* arm64 variants (matrix formats): _neon_dot needs the dot product extension (__ARM_FEATURE_DOTPROD),
 * _neon plain Armv8.0 NEON; compiled only for aarch64. Conv tiles 16 output pixels; nm24 rows are
 * expanded to dense rows once per call. Their scratch: the *_neon_scratch_size functions (aarch64 only;
 * the ep_*_sparse_scratch_size functions include them on the NEON backends). */
void ep_conv2d_s8_block4_neon_dot(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_block4_neon(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_nm24_neon_dot(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_nm24_neon(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_dead_neon_dot(EP_CONV2D_S8_SPARSE_ARGS);
void ep_conv2d_s8_dead_neon(EP_CONV2D_S8_SPARSE_ARGS);
void ep_fully_connected_s8_block4_neon_dot(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);
void ep_fully_connected_s8_block4_neon(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);
void ep_fully_connected_s8_dead_neon_dot(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);
void ep_fully_connected_s8_dead_neon(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);
int32_t ep_conv2d_s8_sparse_neon_scratch_size(const ep_sparse_s8_t *filter, const ep_dims_t *input_dims,
                                              const ep_dims_t *filter_dims);
int32_t ep_fully_connected_s8_sparse_neon_scratch_size(const ep_sparse_s8_t *filter);

#ifdef __cplusplus
}
#endif

#endif /* EP_SPARSE_S8_H_ */
