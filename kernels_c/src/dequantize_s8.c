/* DEQUANTIZE, int8 to float32: TFLite's Dequantize. */
#include "ep_kernels.h"

void ep_dequantize_s8_f32(const int8_t *input, int32_t size, float scale, int32_t zero_point, float *output)
{
    for (int32_t i = 0; i < size; ++i) {
        /* A float product is the exact product rounded once, the same value TFLM gets whether it
         * multiplies in float or in double (24 + 9 bits are exact in a double) then narrows. */
        output[i] = scale * (float)(input[i] - zero_point);
    }
}
