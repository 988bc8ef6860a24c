/* The transport every board implements: a byte stream to the host, a millisecond clock for
 * timeouts, an optional cycle counter and a way to stop. Cortex-M boards: uart_cmsdk.c (QEMU's
 * mps2/mps3 machines), uart_stm32f7.c (STM32F746-Discovery); arm64 Linux: io_stdio.c. */
#ifndef EP_IO_H_
#define EP_IO_H_

#include <stdint.h>

#define EP_IO_FOREVER 0xFFFFFFFFu /* timeout_ms for a read that waits as long as it takes */

void ep_io_init(void);
/* The next byte from the host (0..255), or -1 when none arrived within timeout_ms. */
int ep_io_read_byte(uint32_t timeout_ms);
/* Up to n bytes into buf, each within timeout_ms of the previous one; returns how many came
 * (fewer than n only on a timeout). The protocol's bulk path: no call per byte. */
uint32_t ep_io_read(uint8_t *buf, uint32_t n, uint32_t timeout_ms);
/* Sends n bytes; they may be held in a buffer until ep_io_flush (the protocol flushes every frame). */
void ep_io_write(const uint8_t *data, uint32_t n);
void ep_io_flush(void);
/* Milliseconds of device time; only differences are meaningful (it may start anywhere and wrap). */
uint32_t ep_io_millis(void);

/* A free-running cycle counter (DWT CYCCNT) when the core has one that counts; 0 under QEMU. */
int ep_cycles_available(void);
uint32_t ep_cycles_now(void);

/* Stops the device: QEMU exits with `code` (semihosting), a board resets, Linux exits. */
void ep_device_exit(int code);

/* Markers around every wait for the host (protocol.c). The instruction-counting plugin pointed at
 * them instead of ep_region_begin/end counts the idle polling, so that a session's total minus
 * the idle time is the device's real work (how the protocol's own cost is measured). */
void ep_idle_begin(void);
void ep_idle_end(void);

#endif /* EP_IO_H_ */
