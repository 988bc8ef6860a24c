/* Int8 SOFTMAX, LOGISTIC and TANH with TensorFlow Lite Micro's exact fixed-point arithmetic. */
#ifndef EP_ACTIVATIONS_S8_H_
#define EP_ACTIVATIONS_S8_H_

#include <stdint.h>

#include "ep_types.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif /* EP_ACTIVATIONS_S8_H_ */
