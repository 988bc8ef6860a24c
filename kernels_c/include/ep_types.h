/* Types shared by every kernel family: tensor dims, int8 requantization, conv geometry. */
#ifndef EP_TYPES_H_
#define EP_TYPES_H_

#include <stdint.h>

typedef struct {
    int32_t n, h, w, c;
} ep_dims_t;

/* Requantization of an int32 accumulator to int8, one multiplier/shift per output channel. */
typedef struct {
    int32_t input_offset;   /* minus the input zero point */
    int32_t output_offset;  /* the output zero point */
    int32_t activation_min; /* fused activation range, in output units */
    int32_t activation_max;
    const int32_t *multiplier;
    const int32_t *shift;
} ep_quant_t;

typedef struct {
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_h, pad_w; /* top and left padding; bottom/right are implied by the output size */
} ep_conv_params_t;

#endif /* EP_TYPES_H_ */
