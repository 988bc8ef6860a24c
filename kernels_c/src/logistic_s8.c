/* Int8 LOGISTIC, bit-exact with TFLite Micro (reference_integer_ops::Logistic): the input minus
 * its zero point rescaled to Q4.27, gemmlowp's fixed-point logistic, then Q0.31 to units of 1/256
 * with zero point -128. Inputs beyond the radius saturate without computing.
 */
#include "ep_activations_s8.h"
#include "ep_fixedpoint_gemmlowp.h"

void ep_logistic_s8(const ep_logistic_tanh_s8_params_t *params, int32_t size, const int8_t *input, int8_t *output)
{
    int32_t i;
    for (i = 0; i < size; i++) {
        const int32_t x = input[i] - params->input_zero_point;
        if (x <= -params->input_range_radius) {
            output[i] = INT8_MIN;
        } else if (x >= params->input_range_radius) {
            output[i] = INT8_MAX;
        } else {
            const int32_t x_q4 = ep_multiply_by_quantized_multiplier(x, params->input_multiplier, params->input_left_shift);
            int32_t v = ep_rounding_divide_by_pot(ep_gl_logistic(x_q4, 4), 31 - 8) + INT8_MIN;
            v = v > INT8_MAX ? INT8_MAX : v;
            output[i] = (int8_t)v;
        }
    }
}

void ep_logistic_s8_table(const ep_logistic_tanh_s8_params_t *params, int8_t table[256])
{
    int32_t i;
    for (i = 0; i < 256; i++) {
        table[i] = (int8_t)(i < 128 ? i : i - 256); /* the int8 value whose uint8 bits are i */
    }
    ep_logistic_s8(params, 256, table, table); /* element-wise, so in place */
}
