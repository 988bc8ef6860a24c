/* Int8 SOFTMAX, LOGISTIC and TANH with TensorFlow Lite Micro's exact fixed-point arithmetic.
 *
 * In place (output == input), which the compiler's memory planner relies on: safe for every
 * int8-output kernel here (SOFTMAX takes a row's maximum and sum of exps before it writes the
 * row, then reads each value just before overwriting it; the others are element-wise); not for
 * ep_softmax_s8_s16, whose output is twice as wide.
 */
#ifndef EP_ACTIVATIONS_S8_H_
#define EP_ACTIVATIONS_S8_H_

#include <stdint.h>

#include "ep_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* SOFTMAX over the innermost axis: `outer_size` rows of `depth` values. Output scale 1/256, zero
 * point -128 (the only int8 output TFLM accepts). Parameters from quant_activations.softmax_params:
 * beta * input_scale as a multiplier/left shift into Q5.26, and diff_min, the smallest difference
 * from the row maximum whose exp() is not treated as 0. TFLM aborts on a row whose sum of exps
 * reaches 512 (512 or more values at or near the row maximum); there every true output is at most
 * half an LSB and this kernel writes -128. */
typedef struct {
    int32_t input_multiplier;
    int32_t input_left_shift; /* >= 0 */
    int32_t diff_min;         /* <= 0 */
} ep_softmax_s8_params_t;

void ep_softmax_s8(const ep_softmax_s8_params_t *params, int32_t outer_size, int32_t depth, const int8_t *input,
                   int8_t *output);
/* The same with int16 output, scale 1/65536, zero point -32768 (TFLM's int8 -> int16 SOFTMAX, same
 * parameters). Rows whose sum of exps reaches 4096 overflow TFLM's int32 sum; there this kernel is
 * not bit-exact with anything but stays close to the true softmax. */
void ep_softmax_s8_s16(const ep_softmax_s8_params_t *params, int32_t outer_size, int32_t depth, const int8_t *input,
                       int16_t *output);
/* ep_softmax_s8 with the exps precomputed: exp() only ever sees x - max in -255..0, so
 * ep_softmax_s8_exp_table fills exp_table[-(x - max)] once, at init (1 KB, 256 exps), and
 * ep_softmax_s8_tabled then skips every exp. Bit-exact with ep_softmax_s8. */
void ep_softmax_s8_exp_table(const ep_softmax_s8_params_t *params, int32_t exp_table[256]);
void ep_softmax_s8_tabled(const int32_t exp_table[256], int32_t outer_size, int32_t depth, const int8_t *input,
                          int8_t *output);

/* LOGISTIC and TANH, element-wise over `size` values. The input minus its zero point is rescaled
 * into Q4.27 (multiplier/left shift, which may be negative); beyond +-input_range_radius the
 * output saturates. Parameters from quant_activations.logistic_params / tanh_params. Outputs:
 * LOGISTIC scale 1/256 zero point -128, TANH scale 1/128 zero point 0, whatever the output tensor
 * says (TFLM does not read its scale, nor TANH's zero point). */
typedef struct {
    int32_t input_zero_point;
    int32_t input_range_radius;
    int32_t input_multiplier;
    int32_t input_left_shift;
} ep_logistic_tanh_s8_params_t;

void ep_logistic_s8(const ep_logistic_tanh_s8_params_t *params, int32_t size, const int8_t *input, int8_t *output);
void ep_tanh_s8(const ep_logistic_tanh_s8_params_t *params, int32_t size, const int8_t *input, int8_t *output);

/* The same ops precomputed: each output depends on one int8 input, so a 256-entry table holds the
 * whole op (table[(uint8_t)x] is the output for input x). Build it once, at init (256 evaluations
 * of the kernel above), then ep_table_lookup_s8 applies it: bit-exact, a few instructions per value
 * instead of a few hundred. */
void ep_logistic_s8_table(const ep_logistic_tanh_s8_params_t *params, int8_t table[256]);
void ep_tanh_s8_table(const ep_logistic_tanh_s8_params_t *params, int8_t table[256]);
void ep_table_lookup_s8(const int8_t table[256], int32_t size, const int8_t *input, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* EP_ACTIVATIONS_S8_H_ */
