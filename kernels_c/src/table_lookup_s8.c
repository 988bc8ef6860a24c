/* Table lookup, int8 to int8: any element-wise op whose output depends on one int8 input
 * (LOGISTIC and TANH here, tables from ep_logistic_s8_table / ep_tanh_s8_table). */
#include "ep_activations_s8.h"

void ep_table_lookup_s8(const int8_t table[256], int32_t size, const int8_t *input, int8_t *output)
{
    int32_t i;
    for (i = 0; i < size; i++) {
        output[i] = table[(uint8_t)input[i]];
    }
}
