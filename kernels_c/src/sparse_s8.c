/* Sparse weight formats: blob parsing and validation, storage size, format dispatch and scratch sizes. */
#include "ep_backend.h"
#include "ep_sparse_common.h"

#define EP_SPARSE_HEADER_BYTES 40

static int32_t ep_sparse_sections(const ep_sparse_s8_t *w, int32_t offsets[5])
{
    const int32_t bytes[5] = {4 * w->rows, 2 * w->n_live, 2 * w->n_count, w->n_index, w->n_values};
    int32_t at = EP_SPARSE_HEADER_BYTES;
    for (int i = 0; i < 5; ++i) {
        offsets[i] = at;
        at += ep_sparse_round4(bytes[i]);
    }
    return at;
}

int32_t ep_sparse_s8_nbytes(const ep_sparse_s8_t *w)
{
    int32_t offsets[5];
    return ep_sparse_sections(w, offsets);
}

/* Checks what the kernels rely on, so a bad blob is refused here instead of read out of bounds. */
static int ep_sparse_valid(const ep_sparse_s8_t *w)
{
    const int dw = w->kind == EP_SPARSE_KIND_DEPTHWISE;
    const int32_t units = dw && w->format == EP_SPARSE_BLOCK4 ? (w->rows + 3) / 4 : w->rows;
    for (int32_t j = 0; j < w->n_live; ++j) {
        if (w->live[j] >= units || (j > 0 && w->live[j] <= w->live[j - 1])) {
            return 0;
        }
    }
    const int32_t lanes = w->format == EP_SPARSE_BLOCK4 ? 4 : 1;
    switch (w->format) {
    case EP_SPARSE_UNSTRUCTURED:
    case EP_SPARSE_BLOCK4: {
        if (w->n_count != w->n_live) {
            return 0;
        }
        int32_t e = 0;
        for (int32_t j = 0; j < w->n_live; ++j) {
            int32_t k = 0;
            for (int32_t i = 0; i < w->count[j]; ++i, ++e) {
                if (e >= w->n_index) {
                    return 0;
                }
                if (dw) { /* absolute taps */
                    if (w->index[e] >= w->cols) {
                        return 0;
                    }
                } else {
                    k += w->index[e] * lanes;
                    if (k >= w->cols) {
                        return 0;
                    }
                }
            }
        }
        return e == w->n_index && e * lanes == w->n_values;
    }
    case EP_SPARSE_NM24:
        if (dw || w->cols % 4 != 0 || w->n_count != 0) {
            return 0;
        }
        if (w->n_index != w->n_live * ((w->cols + 7) / 8) || w->n_values != w->n_live * ep_sparse_round4(w->cols / 2)) {
            return 0;
        }
        for (int32_t i = 0; i < w->n_index; ++i) { /* positions in each nibble: p0 < p1 */
            for (int s = 0; s < 8; s += 4) {
                const int32_t nib = (w->index[i] >> s) & 15;
                if ((nib & 3) >= (nib >> 2) && nib != 0) {
                    return 0;
                }
            }
        }
        return 1;
    case EP_SPARSE_DEAD:
        return w->n_count == 0 && w->n_index == 0 && w->n_values == w->n_live * ep_sparse_round4(w->cols);
    default:
        return 0;
    }
}

int32_t ep_sparse_s8_view(const void *blob, int32_t size, ep_sparse_s8_t *out)
{
    int32_t h[10];
    if (blob == NULL || out == NULL || size < EP_SPARSE_HEADER_BYTES || ((uintptr_t)blob & 3) != 0) {
        return -1;
    }
    memcpy(h, blob, sizeof h);
    if (h[0] != EP_SPARSE_MAGIC || h[1] < EP_SPARSE_UNSTRUCTURED || h[1] > EP_SPARSE_DEAD || (h[2] != 0 && h[2] != 1)) {
        return -1;
    }
    for (int i = 3; i < 10; ++i) { /* sizes: small enough that the byte counts below cannot overflow */
        if (i != 5 && (h[i] < 0 || h[i] > (1 << 24))) {
            return -1;
        }
    }
    if (h[3] == 0 || h[3] > 65535 || h[4] == 0 || h[4] > 65535 || h[6] > h[3]) {
        return -1;
    }
    ep_sparse_s8_t w;
    w.format = h[1];
    w.kind = h[2];
    w.rows = h[3];
    w.cols = h[4];
    w.input_offset = h[5];
    w.n_live = h[6];
    w.n_count = h[7];
    w.n_index = h[8];
    w.n_values = h[9];
    int32_t off[5];
    const int32_t total = ep_sparse_sections(&w, off);
    if (total > size) {
        return -1;
    }
    const uint8_t *base = (const uint8_t *)blob;
    w.bias = (const int32_t *)(const void *)(base + off[0]);
    w.live = (const uint16_t *)(const void *)(base + off[1]);
    w.count = (const uint16_t *)(const void *)(base + off[2]);
    w.index = base + off[3];
    w.values = (const int8_t *)(base + off[4]);
    if (!ep_sparse_valid(&w)) {
        return -1;
    }
    *out = w;
    return total;
}

/* The DSP variants where they exist and the backend has the extension; portable C otherwise. */
#if defined(EP_HAS_DSP_EXTENSION)
#define EP_SPARSE_BEST(fn) fn##_dsp
#else
#define EP_SPARSE_BEST(fn) fn
#endif
#if defined(EP_BACKEND_NEON_DOT) /* arm64 variants of the matrix formats (ep_sparse_neon.h) */
#define EP_SPARSE_ARM64(fn) fn##_neon_dot
#elif defined(EP_BACKEND_NEON)
#define EP_SPARSE_ARM64(fn) fn##_neon
#endif

/* One format each, the best variant for this build. Generated code calls these rather than the
 * format-dispatching functions below, so a firmware links only the kernels its layers use. */
#define EP_CONV_ARGS params, quant, input_dims, input, filter_dims, filter, output_dims, output, scratch
#define EP_DW_ARGS params, depth_multiplier, quant, input_dims, input, filter_dims, filter, output_dims, output, scratch
#define EP_FC_ARGS quant, batches, input, filter, output, scratch
#if defined(EP_SPARSE_ARM64)
#define EP_SPARSE_MATRIX(fn) EP_SPARSE_ARM64(fn) /* block4, nm24 and dead convs and FC have NEON variants */
#else
#define EP_SPARSE_MATRIX(fn) EP_SPARSE_BEST(fn)
#endif

void ep_conv2d_s8_sparse_unstructured(EP_CONV2D_S8_SPARSE_ARGS)
{
    EP_SPARSE_BEST(ep_conv2d_s8_unstructured)(EP_CONV_ARGS);
}

void ep_conv2d_s8_sparse_block4(EP_CONV2D_S8_SPARSE_ARGS)
{
    EP_SPARSE_MATRIX(ep_conv2d_s8_block4)(EP_CONV_ARGS);
}

void ep_conv2d_s8_sparse_nm24(EP_CONV2D_S8_SPARSE_ARGS)
{
    EP_SPARSE_MATRIX(ep_conv2d_s8_nm24)(EP_CONV_ARGS);
}

void ep_conv2d_s8_sparse_dead(EP_CONV2D_S8_SPARSE_ARGS)
{
    EP_SPARSE_MATRIX(ep_conv2d_s8_dead)(EP_CONV_ARGS);
}

void ep_fully_connected_s8_sparse_unstructured(EP_FULLY_CONNECTED_S8_SPARSE_ARGS)
{
    ep_fully_connected_s8_unstructured(EP_FC_ARGS);
}

void ep_fully_connected_s8_sparse_block4(EP_FULLY_CONNECTED_S8_SPARSE_ARGS)
{
    EP_SPARSE_MATRIX(ep_fully_connected_s8_block4)(EP_FC_ARGS);
}

void ep_fully_connected_s8_sparse_nm24(EP_FULLY_CONNECTED_S8_SPARSE_ARGS)
{
    EP_SPARSE_BEST(ep_fully_connected_s8_nm24)(EP_FC_ARGS); /* no NEON variant */
}

void ep_fully_connected_s8_sparse_dead(EP_FULLY_CONNECTED_S8_SPARSE_ARGS)
{
    EP_SPARSE_MATRIX(ep_fully_connected_s8_dead)(EP_FC_ARGS);
}

void ep_depthwise_conv2d_s8_sparse_unstructured(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS)
{
    ep_depthwise_conv2d_s8_unstructured(EP_DW_ARGS);
}

void ep_depthwise_conv2d_s8_sparse_block4(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS)
{
    EP_SPARSE_BEST(ep_depthwise_conv2d_s8_block4)(EP_DW_ARGS);
}

void ep_depthwise_conv2d_s8_sparse_dead(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS)
{
    ep_depthwise_conv2d_s8_dead(EP_DW_ARGS);
}

void ep_conv2d_s8_sparse(EP_CONV2D_S8_SPARSE_ARGS)
{
    switch (filter->format) {
    case EP_SPARSE_BLOCK4:
        ep_conv2d_s8_sparse_block4(EP_CONV_ARGS);
        break;
    case EP_SPARSE_NM24:
        ep_conv2d_s8_sparse_nm24(EP_CONV_ARGS);
        break;
    case EP_SPARSE_DEAD:
        ep_conv2d_s8_sparse_dead(EP_CONV_ARGS);
        break;
    default:
        ep_conv2d_s8_sparse_unstructured(EP_CONV_ARGS);
        break;
    }
}

void ep_fully_connected_s8_sparse(EP_FULLY_CONNECTED_S8_SPARSE_ARGS)
{
    switch (filter->format) {
    case EP_SPARSE_BLOCK4:
        ep_fully_connected_s8_sparse_block4(EP_FC_ARGS);
        break;
    case EP_SPARSE_NM24:
        ep_fully_connected_s8_sparse_nm24(EP_FC_ARGS);
        break;
    case EP_SPARSE_DEAD:
        ep_fully_connected_s8_sparse_dead(EP_FC_ARGS);
        break;
    default:
        ep_fully_connected_s8_sparse_unstructured(EP_FC_ARGS);
        break;
    }
}

void ep_depthwise_conv2d_s8_sparse(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS)
{
    switch (filter->format) {
    case EP_SPARSE_BLOCK4:
        ep_depthwise_conv2d_s8_sparse_block4(EP_DW_ARGS);
        break;
    case EP_SPARSE_DEAD:
        ep_depthwise_conv2d_s8_sparse_dead(EP_DW_ARGS);
        break;
    default:
        ep_depthwise_conv2d_s8_sparse_unstructured(EP_DW_ARGS);
        break;
    }
}

int32_t ep_conv2d_s8_sparse_scratch_size(const ep_sparse_s8_t *filter, const ep_dims_t *input_dims,
                                         const ep_dims_t *filter_dims, const ep_dims_t *output_dims)
{
    (void)input_dims;
    (void)filter_dims;
    (void)output_dims;
#if defined(EP_SPARSE_ARM64) /* the arm64 variants' 16-pixel panels */
    if (filter->format != EP_SPARSE_UNSTRUCTURED &&
        ep_conv2d_s8_sparse_neon_scratch_size(filter, input_dims, filter_dims) > ep_sparse_conv_scratch(filter)) {
        return ep_conv2d_s8_sparse_neon_scratch_size(filter, input_dims, filter_dims);
    }
#endif
    return ep_sparse_conv_scratch(filter);
}

int32_t ep_depthwise_conv2d_s8_sparse_scratch_size(const ep_sparse_s8_t *filter, const ep_dims_t *input_dims,
                                                   const ep_dims_t *filter_dims, const ep_dims_t *output_dims)
{
    (void)output_dims;
    return ep_sparse_dw_scratch(filter, input_dims->c, filter_dims->h * filter_dims->w);
}

int32_t ep_fully_connected_s8_sparse_scratch_size(const ep_sparse_s8_t *filter, int32_t batches)
{
    (void)batches;
#if defined(EP_SPARSE_ARM64) /* the arm64 variants keep int32 accumulators of every row */
    if (ep_fully_connected_s8_sparse_neon_scratch_size(filter) > ep_sparse_fc_scratch(filter)) {
        return ep_fully_connected_s8_sparse_neon_scratch_size(filter);
    }
#endif
    return ep_sparse_fc_scratch(filter);
}
