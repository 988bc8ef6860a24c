/* FULLY_CONNECTED, int8, EP_SPARSE_DEAD weights (see ep_sparse_s8.h): plain Armv8.0 NEON (widening multiplies in place of SDOT). */
#if defined(__aarch64__) && defined(__ARM_NEON)
#define EP_SPARSE_NEON_SDOT 0
#include "ep_sparse_neon.h"

void ep_fully_connected_s8_dead_neon(EP_FULLY_CONNECTED_S8_SPARSE_ARGS)
{
    ep_sn_fc(quant, batches, input, filter, output, scratch);
}
#endif
