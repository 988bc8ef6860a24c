/* FULLY_CONNECTED, int8, EP_SPARSE_BLOCK4 weights (see ep_sparse_s8.h): Cortex-M DSP (SMLAD). */
#include "ep_sparse_rows.h"

#if defined(EP_DSP_ENABLED)
void ep_fully_connected_s8_block4_dsp(EP_FULLY_CONNECTED_S8_SPARSE_ARGS)
{
    ep_sparse_fc_dsp(quant, batches, input, filter, output, scratch,
                     ep_sparse_rows1_block4_dsp);
}
#endif /* EP_DSP_ENABLED */
