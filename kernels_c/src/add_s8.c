/* ADD, int8, with broadcasting: TFLite's reference_integer_ops::AddFunc. Both inputs are brought to
 * a common scale with 20 bits of headroom (left_shift), added, then rescaled to the output. */
#include "ep_broadcast.h"
#include "ep_fixedpoint.h"
#include "ep_kernels.h"

static inline int8_t add_one(const ep_add_params_t *p, int32_t a, int32_t b)
{
    /* |q + offset| <= 255, so with left_shift <= 23 the scaled inputs stay below 2^31, and after
     * their rescaling (multipliers below 1/2) so does their sum. */
    const int32_t x = (a + p->input1_offset) * (1 << p->left_shift);
    const int32_t y = (b + p->input2_offset) * (1 << p->left_shift);
    const int32_t sum = ep_multiply_by_quantized_multiplier(x, p->input1_multiplier, p->input1_shift) +
                        ep_multiply_by_quantized_multiplier(y, p->input2_multiplier, p->input2_shift);
    return ep_requantize(sum, p->output_multiplier, p->output_shift, p->output_offset, p->activation_min,
                         p->activation_max);
}

void ep_add_s8(const ep_add_params_t *params, const ep_dims_t *input1_dims, const int8_t *input1,
               const ep_dims_t *input2_dims, const int8_t *input2, const ep_dims_t *output_dims, int8_t *output)
{
    if (ep_dims_equal(input1_dims, input2_dims)) {
        const int32_t size = output_dims->n * output_dims->h * output_dims->w * output_dims->c;
        for (int32_t i = 0; i < size; ++i) {
            output[i] = add_one(params, input1[i], input2[i]);
        }
        return;
    }
    const ep_broadcast_strides_t s1 = ep_broadcast_strides(input1_dims), s2 = ep_broadcast_strides(input2_dims);
    int8_t *out = output;
    for (int32_t n = 0; n < output_dims->n; ++n) {
        for (int32_t h = 0; h < output_dims->h; ++h) {
            for (int32_t w = 0; w < output_dims->w; ++w) {
                const int8_t *in1 = &input1[n * s1.n + h * s1.h + w * s1.w];
                const int8_t *in2 = &input2[n * s2.n + h * s2.h + w * s2.w];
                for (int32_t c = 0; c < output_dims->c; ++c) {
                    *out++ = add_one(params, in1[c * s1.c], in2[c * s2.c]);
                }
            }
        }
    }
}
