/* Sparse int8 weight formats and the CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED kernels that read them. */
#ifndef EP_SPARSE_S8_H_
#define EP_SPARSE_S8_H_

#include <stdint.h>

#include "ep_types.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif /* EP_SPARSE_S8_H_ */
