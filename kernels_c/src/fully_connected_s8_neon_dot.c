/* FULLY_CONNECTED, int8, arm64 with the Armv8.2 dot product: SDOT over 4 weight rows at a time. */
#include "ep_backend.h"
#include "ep_kernels.h"

#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#include "ep_neon_helpers.h"

int32_t ep_fully_connected_s8_scratch_size_neon_dot(int32_t batches, int32_t in_features, int32_t out_features)
{
    (void)batches;
    (void)in_features;
    (void)out_features;
    return 0;
}

void ep_fully_connected_s8_neon_dot(const ep_quant_t *quant, int32_t batches, int32_t in_features,
                                    int32_t out_features, const int8_t *input, const int8_t *filter,
                                    const int32_t *bias, int8_t *output, void *scratch)
{
    (void)scratch;
    ep_neon_fully_connected(quant, batches, in_features, out_features, input, filter, bias, output, 1);
}
#else
typedef int ep_fully_connected_s8_neon_dot_unused; /* ISO C wants a non-empty file */
#endif
