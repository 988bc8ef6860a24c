/* CONCATENATION, int8: TFLM only accepts inputs quantized like the output, so no rescaling. */
#include <string.h>

#include "ep_kernels.h"

void ep_concatenation_s8(int32_t num_inputs, const int8_t *const *inputs, const int32_t *copy_sizes,
                         int32_t outer_size, int8_t *output)
{
    int8_t *out = output;
    for (int32_t k = 0; k < outer_size; ++k) {
        for (int32_t i = 0; i < num_inputs; ++i) {
            memcpy(out, &inputs[i][k * copy_sizes[i]], (size_t)copy_sizes[i]);
            out += copy_sizes[i];
        }
    }
}
