/* Broadcasting for the binary element-wise ops (ADD, MUL): numpy's rules on 4-D NHWC dims. */
#ifndef EP_BROADCAST_H_
#define EP_BROADCAST_H_

#include <stdint.h>

#include "ep_types.h"

/* Element strides that walk an input in step with the output: a dim of size 1 gets stride 0, so
 * the same element is read again all along that output dim. */
typedef struct {
    int32_t n, h, w, c;
} ep_broadcast_strides_t;

static inline ep_broadcast_strides_t ep_broadcast_strides(const ep_dims_t *dims)
{
    ep_broadcast_strides_t s;
    s.c = dims->c == 1 ? 0 : 1;
    s.w = dims->w == 1 ? 0 : dims->c;
    s.h = dims->h == 1 ? 0 : dims->w * dims->c;
    s.n = dims->n == 1 ? 0 : dims->h * dims->w * dims->c;
    return s;
}

static inline int ep_dims_equal(const ep_dims_t *a, const ep_dims_t *b)
{
    return a->n == b->n && a->h == b->h && a->w == b->w && a->c == b->c;
}

#endif /* EP_BROADCAST_H_ */
