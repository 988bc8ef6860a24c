/* Int8 SOFTMAX, bit-exact with TFLite Micro (reference_ops::Softmax, int8 in, int8 or int16 out).
 *
 * Per row: exp() of (x - max) * beta * input_scale in gemmlowp fixed point (input Q5.26, sum of
 * exps Q12.19), one reciprocal of the sum, then each exp times the reciprocal. TFLM computes each
 * exp twice (for the sum, then for the output) instead of storing them; so do we, to need no
 * scratch memory. The exp depends only on x - max, in -255..0, so the tabled variant looks the 256
 * possible values up instead.
 */
#include "ep_activations_s8.h"
#include "ep_fixedpoint_gemmlowp.h"

enum { SCALED_DIFF_INTEGER_BITS = 5, ACCUMULATION_INTEGER_BITS = 12 };

/* exp((x - max) * beta * scale) in Q0, for diff = x - max <= 0. Below diff_min TFLM skips the
 * value: it adds nothing to the sum and outputs the minimum, exactly what an exp of 0 gives. Above
 * it the shifted difference fits in int32 (diff_min is derived from the shift for that). */
static inline int32_t softmax_exp(const ep_softmax_s8_params_t *params, int32_t diff)
{
    if (diff < params->diff_min) {
        return 0;
    }
    const int32_t shifted = (int32_t)((uint32_t)diff << params->input_left_shift);
    const int32_t scaled_diff = ep_saturating_rounding_doubling_high_mul(shifted, params->input_multiplier);
    return ep_gl_exp_on_negative_values(scaled_diff, SCALED_DIFF_INTEGER_BITS);
}

/* One body for every variant: exps from the parameters or from a table, int8 or int16 output. The
 * callers pass constants, so each gets its own specialized copy. */
static inline void softmax_rows(const ep_softmax_s8_params_t *params, const int32_t *exp_table, int32_t outer_size,
                                int32_t depth, const int8_t *input, int8_t *output8, int16_t *output16,
                                int32_t output_bits)
{
    const int32_t out_min = -((int32_t)1 << (output_bits - 1));
    const int32_t out_max = ((int32_t)1 << (output_bits - 1)) - 1;
    int32_t row, c;
    for (row = 0; row < outer_size; row++, input += depth) {
        int8_t *out8 = output8 ? output8 + (intptr_t)row * depth : 0;
        int16_t *out16 = output16 ? output16 + (intptr_t)row * depth : 0;
        int32_t max_in_row = INT8_MIN;
        for (c = 0; c < depth; c++) {
            max_in_row = input[c] > max_in_row ? input[c] : max_in_row;
        }

        /* int64 so that a row beyond TFLM's range (see below) cannot wrap; within it, < 2^31 (int8
         * output: < 2^28). */
        int64_t sum_of_exps = 0;
        for (c = 0; c < depth; c++) {
            const int32_t diff = input[c] - max_in_row;
            const int32_t e = exp_table ? exp_table[-diff] : softmax_exp(params, diff);
            sum_of_exps += ep_gl_rescale(e, 0, ACCUMULATION_INTEGER_BITS);
        }
        int32_t extra_bits = 0;
        while (sum_of_exps > INT32_MAX) { /* only beyond TFLM's range, where its int32 sum overflows */
            sum_of_exps >>= 1;
            extra_bits++;
        }
        int32_t num_bits_over_unit;
        const int32_t reciprocal = ep_gl_get_reciprocal((int32_t)sum_of_exps, ACCUMULATION_INTEGER_BITS, &num_bits_over_unit);
        /* From a Q0 product to output units: the reciprocal's 2^-num_bits_over_unit and 31 - output_bits. */
        const int32_t exponent = num_bits_over_unit + extra_bits + 31 - output_bits;
        for (c = 0; c < depth; c++) {
            const int32_t diff = input[c] - max_in_row;
            int32_t v = out_min;
            /* exponent > 31: the sum of exps is >= 2^(output_bits + 1), every output <= half an LSB
             * (for int8 output TFLM aborts on such a row) */
            if (exponent <= 31) {
                const int32_t e = exp_table ? exp_table[-diff] : softmax_exp(params, diff);
                v = ep_rounding_divide_by_pot(ep_saturating_rounding_doubling_high_mul(reciprocal, e), exponent) + out_min;
                v = v > out_max ? out_max : v;
            }
            if (out8) {
                out8[c] = (int8_t)v;
            } else {
                out16[c] = (int16_t)v;
            }
        }
    }
}

void ep_softmax_s8(const ep_softmax_s8_params_t *params, int32_t outer_size, int32_t depth, const int8_t *input,
                   int8_t *output)
{
    softmax_rows(params, 0, outer_size, depth, input, output, 0, 8);
}

void ep_softmax_s8_s16(const ep_softmax_s8_params_t *params, int32_t outer_size, int32_t depth, const int8_t *input,
                       int16_t *output)
{
    softmax_rows(params, 0, outer_size, depth, input, 0, output, 16);
}

void ep_softmax_s8_exp_table(const ep_softmax_s8_params_t *params, int32_t exp_table[256])
{
    int32_t i;
    for (i = 0; i < 256; i++) {
        exp_table[i] = softmax_exp(params, -i);
    }
}

void ep_softmax_s8_tabled(const int32_t exp_table[256], int32_t outer_size, int32_t depth, const int8_t *input,
                          int8_t *output)
{
    softmax_rows(0, exp_table, outer_size, depth, input, output, 0, 8);
}
