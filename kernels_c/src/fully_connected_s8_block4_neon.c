/* FULLY_CONNECTED, int8, EP_SPARSE_BLOCK4 weights (see ep_sparse_s8.h): plain Armv8.0 NEON (widening multiplies in place of SDOT). */
#if defined(__aarch64__) && defined(__ARM_NEON)
#define EP_SPARSE_NEON_SDOT 0
#include "ep_sparse_neon.h"

void ep_fully_connected_s8_block4_neon(EP_FULLY_CONNECTED_S8_SPARSE_ARGS)
{
    ep_sn_fc(quant, batches, input, filter, output, scratch);
}

int32_t ep_fully_connected_s8_sparse_neon_scratch_size(const ep_sparse_s8_t *filter)
{
    return ep_sn_fc_scratch(filter);
}
#endif
