/* MUL, int8, with broadcasting: TFLite's reference_integer_ops::MulElementwise. */
#include "ep_broadcast.h"
#include "ep_fixedpoint.h"
#include "ep_kernels.h"

static inline int8_t mul_one(const ep_mul_params_t *p, int32_t a, int32_t b)
{
    /* |product| <= 255 * 255 < 2^16: quant.mul_params keeps the rescale's left shift <= 15 so that
     * it cannot overflow either. */
    return ep_requantize((a + p->input1_offset) * (b + p->input2_offset), p->output_multiplier, p->output_shift,
                         p->output_offset, p->activation_min, p->activation_max);
}

void ep_mul_s8(const ep_mul_params_t *params, const ep_dims_t *input1_dims, const int8_t *input1,
               const ep_dims_t *input2_dims, const int8_t *input2, const ep_dims_t *output_dims, int8_t *output)
{
    if (ep_dims_equal(input1_dims, input2_dims)) {
        const int32_t size = output_dims->n * output_dims->h * output_dims->w * output_dims->c;
        for (int32_t i = 0; i < size; ++i) {
            output[i] = mul_one(params, input1[i], input2[i]);
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
                    *out++ = mul_one(params, in1[c * s1.c], in2[c * s2.c]);
                }
            }
        }
    }
}
