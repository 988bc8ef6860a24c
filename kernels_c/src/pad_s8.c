/* PAD and PADV2, int8, 4-D: the input placed inside a frame of pad_value. */
#include <string.h>

#include "ep_kernels.h"

void ep_pad_s8(const ep_dims_t *input_dims, const int8_t *input, const int32_t paddings[8], int8_t pad_value,
               int8_t *output)
{
    const int32_t in_n = input_dims->n, in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t out_h = in_h + paddings[2] + paddings[3];
    const int32_t out_w = in_w + paddings[4] + paddings[5];
    const int32_t out_c = in_c + paddings[6] + paddings[7];
    const int32_t out_n = in_n + paddings[0] + paddings[1];

    int8_t *out = output;
    for (int32_t n = 0; n < out_n; ++n) {
        const int32_t in_b = n - paddings[0]; /* the input batch this output batch copies, if any */
        for (int32_t y = 0; y < out_h; ++y) {
            const int32_t iy = y - paddings[2];
            if (in_b < 0 || in_b >= in_n || iy < 0 || iy >= in_h) {
                memset(out, pad_value, (size_t)(out_w * out_c)); /* a whole padding row */
                out += out_w * out_c;
                continue;
            }
            for (int32_t x = 0; x < out_w; ++x) {
                const int32_t ix = x - paddings[4];
                if (ix < 0 || ix >= in_w) {
                    memset(out, pad_value, (size_t)out_c);
                } else {
                    memset(out, pad_value, (size_t)paddings[6]);
                    memcpy(out + paddings[6], &input[((in_b * in_h + iy) * in_w + ix) * in_c], (size_t)in_c);
                    memset(out + paddings[6] + in_c, pad_value, (size_t)paddings[7]);
                }
                out += out_c;
            }
        }
    }
}
