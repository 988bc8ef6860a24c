/* CONV_2D, int8, EP_SPARSE_BLOCK4 weights (see ep_sparse_s8.h): Cortex-M DSP (SMLAD). */
#include "ep_sparse_rows.h"

#if defined(EP_DSP_ENABLED)
void ep_conv2d_s8_block4_dsp(EP_CONV2D_S8_SPARSE_ARGS)
{
    ep_sparse_conv_dsp(params, quant, input_dims, input, filter_dims, filter, output_dims, output, scratch,
                       ep_sparse_rows4_block4_dsp);
}
#endif /* EP_DSP_ENABLED */
