/* CONV_2D, int8, EP_SPARSE_DEAD weights (see ep_sparse_s8.h): portable C. */
#include "ep_sparse_rows.h"

void ep_conv2d_s8_dead(EP_CONV2D_S8_SPARSE_ARGS)
{
    ep_sparse_conv(params, quant, input_dims, input, filter_dims, filter, output_dims, output, scratch,
                   ep_sparse_rows_dead, 0);
}
