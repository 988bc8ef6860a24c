/* MUL, int8, with broadcasting: TFLite's reference_integer_ops::MulElementwise. */
#include "ep_fixedpoint.h"
#include "ep_kernels.h"

static inline int8_t mul_one(const ep_mul_params_t *p, int32_t a, int32_t b)
{
    /* |product| <= 255 * 255: no overflow. */
    return ep_requantize((a + p->input1_offset) * (b + p->input2_offset), p->output_multiplier, p->output_shift,
                         p->output_offset, p->activation_min, p->activation_max);
}

void ep_mul_s8(const ep_mul_params_t *params, const ep_dims_t *input1_dims, const int8_t *input1,
               const ep_dims_t *input2_dims, const int8_t *input2, const ep_dims_t *output_dims, int8_t *output)
{
    const ep_dims_t *d1 = input1_dims, *d2 = input2_dims, *o = output_dims;
    if (d1->n == d2->n && d1->h == d2->h && d1->w == d2->w && d1->c == d2->c) {
        const int32_t size = o->n * o->h * o->w * o->c;
        for (int32_t i = 0; i < size; ++i) {
            output[i] = mul_one(params, input1[i], input2[i]);
        }
        return;
    }
    /* Broadcast: a dim of size 1 has stride 0. */
    const int32_t s1c = d1->c == 1 ? 0 : 1, s1w = d1->w == 1 ? 0 : d1->c, s1h = d1->h == 1 ? 0 : d1->w * d1->c,
                  s1n = d1->n == 1 ? 0 : d1->h * d1->w * d1->c;
    const int32_t s2c = d2->c == 1 ? 0 : 1, s2w = d2->w == 1 ? 0 : d2->c, s2h = d2->h == 1 ? 0 : d2->w * d2->c,
                  s2n = d2->n == 1 ? 0 : d2->h * d2->w * d2->c;
    int32_t i = 0;
    for (int32_t n = 0; n < o->n; ++n) {
        for (int32_t h = 0; h < o->h; ++h) {
            for (int32_t w = 0; w < o->w; ++w) {
                const int32_t base1 = n * s1n + h * s1h + w * s1w, base2 = n * s2n + h * s2h + w * s2w;
                for (int32_t c = 0; c < o->c; ++c) {
                    output[i++] = mul_one(params, input1[base1 + c * s1c], input2[base2 + c * s2c]);
                }
            }
        }
    }
}
