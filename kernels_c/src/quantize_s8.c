/* QUANTIZE, to int8: from float32 (TFLite's AffineQuantize) and from int8 (TFLite's Requantize). */
#include <math.h>

#include "ep_fixedpoint.h"
#include "ep_kernels.h"

void ep_quantize_f32_s8(const float *input, int32_t size, float scale, int32_t zero_point, int8_t *output)
{
    for (int32_t i = 0; i < size; ++i) {
        /* TFLM divides in float and rounds half away from zero (TfLiteRound is std::round). */
        float r = roundf(input[i] / scale);
        /* Bound before converting: a float outside int32 is UB in C; saturation gives the same int8. */
        if (isnan(r)) {
            r = 0.0f;
        } else if (r > 512.0f) {
            r = 512.0f;
        } else if (r < -512.0f) {
            r = -512.0f;
        }
        int32_t q = (int32_t)r + zero_point;
        q = q < INT8_MIN ? INT8_MIN : q;
        q = q > INT8_MAX ? INT8_MAX : q;
        output[i] = (int8_t)q;
    }
}

void ep_requantize_s8(const int8_t *input, int32_t size, int32_t input_zero_point, int32_t multiplier,
                      int32_t shift, int32_t output_zero_point, int8_t *output)
{
    for (int32_t i = 0; i < size; ++i) {
        output[i] = ep_requantize(input[i] - input_zero_point, multiplier, shift, output_zero_point, INT8_MIN, INT8_MAX);
    }
}
