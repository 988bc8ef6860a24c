/* Shared by the Cortex-M UART drivers (cortexm_io.c). */
#ifndef EP_CORTEXM_IO_H_
#define EP_CORTEXM_IO_H_

#include <stdint.h>

/* Starts the SysTick millisecond clock (core_clock_hz: the clock SysTick counts) and detects DWT. */
void ep_cortexm_io_init(uint32_t core_clock_hz);

#endif /* EP_CORTEXM_IO_H_ */
