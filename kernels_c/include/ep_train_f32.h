/* Float32 forward and backward kernels for on-device training. */
#ifndef EP_TRAIN_F32_H_
#define EP_TRAIN_F32_H_

#include <stdint.h>

#include "ep_types.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif /* EP_TRAIN_F32_H_ */
