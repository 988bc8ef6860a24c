/* The other int8 inference ops: pooling, element-wise, reductions, activations, layout and (de)quantization. */
#ifndef EP_OPS_S8_H_
#define EP_OPS_S8_H_

#include <stdint.h>

#include "ep_types.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif /* EP_OPS_S8_H_ */
