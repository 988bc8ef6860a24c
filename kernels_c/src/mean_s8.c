/* MEAN over H and W, int8: TFLM's QuantizedMeanOrSum. The raw int8 values are summed, the input
 * zero point is removed once per output (sum - zp * count), and the result is rescaled with a
 * multiplier that already holds 1/count; TFLM takes this path for int8 even when the input and
 * output quantization are equal. */
#include "ep_fixedpoint.h"
#include "ep_kernels.h"

void ep_mean_s8(const ep_mean_params_t *params, const ep_dims_t *input_dims, const int8_t *input, int8_t *output)
{
    const int32_t hw = input_dims->h * input_dims->w, depth = input_dims->c;
    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *in = &input[b * hw * depth];
        for (int32_t c = 0; c < depth; ++c) {
            int32_t sum = 0;
            for (int32_t i = 0; i < hw; ++i) {
                sum += in[i * depth + c];
            }
            /* |sum - zp * count| <= 256 * count: int32 for any count below 2^23 (mean_params checks). */
            const int32_t shifted = sum - params->input_zero_point * hw;
            output[b * depth + c] =
                ep_requantize(shifted, params->multiplier, params->shift, params->output_zero_point, INT8_MIN, INT8_MAX);
        }
    }
}
