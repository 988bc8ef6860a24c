/* CONV_2D, int8, EP_SPARSE_DEAD weights (see ep_sparse_s8.h): plain Armv8.0 NEON (widening multiplies in place of SDOT), 16-pixel tiles (ep_sparse_neon.h). */
#if defined(__aarch64__) && defined(__ARM_NEON)
#define EP_SPARSE_NEON_SDOT 0
#include "ep_sparse_neon.h"

void ep_conv2d_s8_dead_neon(EP_CONV2D_S8_SPARSE_ARGS)
{
    ep_sn_conv(params, quant, input_dims, input, filter_dims, filter, output_dims, output, scratch, ep_sn_tile_dense);
}
#endif
