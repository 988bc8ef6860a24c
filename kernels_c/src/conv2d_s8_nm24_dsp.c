/* CONV_2D, int8, EP_SPARSE_NM24 weights (see ep_sparse_s8.h): Cortex-M DSP (SMLAD). */
#include "ep_sparse_rows.h"

#if defined(EP_DSP_ENABLED)
void ep_conv2d_s8_nm24_dsp(EP_CONV2D_S8_SPARSE_ARGS)
{
    ep_sparse_conv(params, quant, input_dims, input, filter_dims, filter, output_dims, output, scratch,
                   ep_sparse_rows_nm24_dsp, 0);
}
#endif /* EP_DSP_ENABLED */
