/* Running a CONV_2D or DEPTHWISE_CONV_2D one band of output rows at a time with the unchanged
 * kernels. A band's geometry is the layer's restricted to the input rows the band reads: the
 * kernels skip out-of-bounds taps, so the band's own top padding and height reproduce exactly the
 * taps the whole layer would use, and every output bit is the same. */
#include <string.h>

#include "ep_kernels.h"

static int32_t min_i32(int32_t a, int32_t b)
{
    return a < b ? a : b;
}

static int32_t max_i32(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

int ep_conv_band(const ep_conv_params_t *params, const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                 const ep_dims_t *output_dims, int32_t row, int32_t band_rows, ep_conv_band_t *band)
{
    if (row < 0 || band_rows <= 0 || row >= output_dims->h) {
        return 0;
    }
    const int32_t rows = min_i32(band_rows, output_dims->h - row);
    /* Input rows the band's taps reach, before clipping to the tensor. */
    const int32_t first = row * params->stride_h - params->pad_h;
    const int32_t last = (row + rows - 1) * params->stride_h - params->pad_h + (filter_dims->h - 1) * params->dilation_h;
    const int32_t top = max_i32(first, 0);
    const int32_t bottom = min_i32(last, input_dims->h - 1);
    const int32_t input_row_bytes = input_dims->w * input_dims->c;
    const int32_t output_row_bytes = output_dims->w * output_dims->c;

    band->row = row;
    band->rows = rows;
    band->params = *params;
    band->params.pad_h = top - first; /* the rows above `top` the band would read are padding */
    band->input_dims = *input_dims;
    band->input_dims.h = max_i32(bottom - top + 1, 1);
    band->output_dims = *output_dims;
    band->output_dims.h = rows;
    band->input_offset = top * input_row_bytes;
    band->output_offset = row * output_row_bytes;
    band->output_bytes = rows * output_row_bytes;
    return 1;
}

void ep_conv_bands(const ep_conv_params_t *params, const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                   const ep_dims_t *output_dims, int32_t band_rows, ep_conv_band_fn layer, int8_t *band_buffer,
                   int8_t *in_place)
{
    ep_conv_band_t band;
    if (in_place == NULL) {
        for (int32_t row = 0; ep_conv_band(params, input_dims, filter_dims, output_dims, row, band_rows, &band);
             row += band_rows) {
            layer(&band, band_buffer);
        }
        return;
    }
    if (params->pad_h == 0) {
        /* Each band reads only its own rows (a 1-row kernel): copy it back at once. */
        for (int32_t row = 0; ep_conv_band(params, input_dims, filter_dims, output_dims, row, band_rows, &band);
             row += band_rows) {
            layer(&band, band_buffer);
            memcpy(in_place + band.output_offset, band_buffer, (size_t)band.output_bytes);
        }
        return;
    }
    /* The next band reads up to pad_h rows above its own (band_rows >= pad_h), so a band is copied
     * back one band later, from the other half of the double buffer. */
    const int32_t half = band_rows * output_dims->w * output_dims->c;
    int32_t pending_offset = 0, pending_bytes = 0;
    int8_t *pending = band_buffer + half;
    for (int32_t row = 0; ep_conv_band(params, input_dims, filter_dims, output_dims, row, band_rows, &band);
         row += band_rows) {
        int8_t *out = pending == band_buffer ? band_buffer + half : band_buffer;
        layer(&band, out);
        memcpy(in_place + pending_offset, pending, (size_t)pending_bytes);
        pending = out;
        pending_offset = band.output_offset;
        pending_bytes = band.output_bytes;
    }
    memcpy(in_place + pending_offset, pending, (size_t)pending_bytes);
}
