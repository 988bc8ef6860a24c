/* FULLY_CONNECTED, int8, EP_SPARSE_NM24 weights (see ep_sparse_s8.h): Cortex-M DSP (SMLAD). */
#include "ep_sparse_rows.h"

#if defined(EP_DSP_ENABLED)
void ep_fully_connected_s8_nm24_dsp(EP_FULLY_CONNECTED_S8_SPARSE_ARGS)
{
    ep_sparse_fc(quant, batches, input, filter, output, scratch, ep_sparse_rows_nm24_dsp, 0);
}
#endif /* EP_DSP_ENABLED */
