/* CONV_2D, int8, EP_SPARSE_BLOCK4 weights (see ep_sparse_s8.h): NEON dot product (SDOT, Armv8.2), 16-pixel tiles (ep_sparse_neon.h). */
#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#define EP_SPARSE_NEON_SDOT 1
#include "ep_sparse_neon.h"

void ep_conv2d_s8_block4_neon_dot(EP_CONV2D_S8_SPARSE_ARGS)
{
    ep_sn_conv(params, quant, input_dims, input, filter_dims, filter, output_dims, output, scratch, ep_sn_tile_block4);
}
#endif
