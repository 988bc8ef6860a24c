/* One entry point per dense op: forwards to the variant of the backend chosen at build time. */
#include "ep_backend.h"
#include "ep_kernels.h"

#if defined(EP_BACKEND_MVE)
#define EP_VARIANT(fn) fn##_mve
#elif defined(EP_BACKEND_DSP)
#define EP_VARIANT(fn) fn##_dsp
#elif defined(EP_BACKEND_NEON_DOT)
#define EP_VARIANT(fn) fn##_neon_dot
#elif defined(EP_BACKEND_NEON)
#define EP_VARIANT(fn) fn##_neon
#else
#define EP_VARIANT(fn) fn##_portable
#endif

const char *ep_backend_name(void)
{
    return EP_BACKEND_NAME;
}

void ep_conv2d_s8(const ep_conv_params_t *params, const ep_quant_t *quant, const ep_dims_t *input_dims,
                  const int8_t *input, const ep_dims_t *filter_dims, const int8_t *filter, const int32_t *bias,
                  const ep_dims_t *output_dims, int8_t *output, void *scratch)
{
    EP_VARIANT(ep_conv2d_s8)(params, quant, input_dims, input, filter_dims, filter, bias, output_dims, output, scratch);
}

void ep_depthwise_conv2d_s8(const ep_conv_params_t *params, int32_t depth_multiplier, const ep_quant_t *quant,
                            const ep_dims_t *input_dims, const int8_t *input, const ep_dims_t *filter_dims,
                            const int8_t *filter, const int32_t *bias, const ep_dims_t *output_dims, int8_t *output,
                            void *scratch)
{
    EP_VARIANT(ep_depthwise_conv2d_s8)(params, depth_multiplier, quant, input_dims, input, filter_dims, filter, bias,
                                       output_dims, output, scratch);
}

void ep_fully_connected_s8(const ep_quant_t *quant, int32_t batches, int32_t in_features, int32_t out_features,
                           const int8_t *input, const int8_t *filter, const int32_t *bias, int8_t *output,
                           void *scratch)
{
    EP_VARIANT(ep_fully_connected_s8)(quant, batches, in_features, out_features, input, filter, bias, output, scratch);
}

/* Scratch sizes: each backend file defines ep_<op>_scratch_size_<backend>(); portable needs none. */
int32_t ep_conv2d_s8_scratch_size(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                  const ep_dims_t *output_dims)
{
#if defined(EP_BACKEND_PORTABLE)
    (void)input_dims;
    (void)filter_dims;
    (void)output_dims;
    return 0;
#else
    return EP_VARIANT(ep_conv2d_s8_scratch_size)(input_dims, filter_dims, output_dims);
#endif
}

int32_t ep_depthwise_conv2d_s8_scratch_size(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                            const ep_dims_t *output_dims)
{
#if defined(EP_BACKEND_PORTABLE)
    (void)input_dims;
    (void)filter_dims;
    (void)output_dims;
    return 0;
#else
    return EP_VARIANT(ep_depthwise_conv2d_s8_scratch_size)(input_dims, filter_dims, output_dims);
#endif
}

int32_t ep_fully_connected_s8_scratch_size(int32_t batches, int32_t in_features, int32_t out_features)
{
#if defined(EP_BACKEND_PORTABLE)
    (void)batches;
    (void)in_features;
    (void)out_features;
    return 0;
#else
    return EP_VARIANT(ep_fully_connected_s8_scratch_size)(batches, in_features, out_features);
#endif
}
