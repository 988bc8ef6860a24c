/* CONV_2D, int8, EP_SPARSE_UNSTRUCTURED weights (see ep_sparse_s8.h): Cortex-M DSP, 4 output pixels per
 * weight entry (halfword multiply-accumulates on inputs paired per position). */
#include "ep_sparse_rows.h"

#if defined(EP_DSP_ENABLED)
void ep_conv2d_s8_unstructured_dsp(EP_CONV2D_S8_SPARSE_ARGS)
{
    ep_sparse_conv_pairs(params, quant, input_dims, input, filter_dims, filter, output_dims, output, scratch,
                         ep_sparse_rows4_unstructured_dsp);
}
#endif /* EP_DSP_ENABLED */
