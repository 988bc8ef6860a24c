/* FULLY_CONNECTED, int8, EP_SPARSE_BLOCK4 weights (see ep_sparse_s8.h): NEON dot product (SDOT, Armv8.2). */
#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#define EP_SPARSE_NEON_SDOT 1
#include "ep_sparse_neon.h"

void ep_fully_connected_s8_block4_neon_dot(EP_FULLY_CONNECTED_S8_SPARSE_ARGS)
{
    ep_sn_fc(quant, batches, input, filter, output, scratch);
}
#endif
