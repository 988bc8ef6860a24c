/* ep_io.h over the CMSDK APB UART of Arm's MPS2/MPS3 boards as QEMU emulates them (mps2-an500,
 * mps2-an386: UART0 at 0x40004000; mps3-an547: UART0 at 0x49303000, Secure alias 0x59303000).
 * The build passes EP_UART_BASE and EP_CORE_CLOCK_HZ. QEMU ignores the baud divisor; it is set
 * from the clock anyway so the same code is right on the FPGA boards. Polled, no interrupts. */
#if defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'

#include <stdint.h>

#include "cortexm_io.h"
#include "ep_io.h"

#ifndef EP_UART_BASE
#define EP_UART_BASE 0x40004000u
#endif
#ifndef EP_CORE_CLOCK_HZ
#define EP_CORE_CLOCK_HZ 25000000u
#endif
#ifndef EP_UART_BAUD
#define EP_UART_BAUD 115200u
#endif

#ifndef EP_UART_POLL_SPIN
#define EP_UART_POLL_SPIN 500u
#endif

#define UART_DATA (*(volatile uint32_t *)(EP_UART_BASE + 0x00u))
#define UART_STATE (*(volatile uint32_t *)(EP_UART_BASE + 0x04u))
#define UART_CTRL (*(volatile uint32_t *)(EP_UART_BASE + 0x08u))
#define UART_BAUDDIV (*(volatile uint32_t *)(EP_UART_BASE + 0x10u))
#define STATE_TX_FULL 1u
#define STATE_RX_FULL 2u

void ep_io_init(void)
{
    const uint32_t div = EP_CORE_CLOCK_HZ / EP_UART_BAUD;
    UART_CTRL = 0;
    UART_BAUDDIV = div < 16u ? 16u : div; /* the UART needs at least 16 */
    UART_CTRL = 3u;                       /* TX and RX enabled */
    ep_cortexm_io_init(EP_CORE_CLOCK_HZ);
}

/* Polls until a byte is there (1) or the time is up (0). */
static int wait_ready(uint32_t timeout_ms)
{
    const uint32_t start = ep_io_millis();
    for (;;) {
        if (UART_STATE & STATE_RX_FULL) {
            return 1;
        }
        if (timeout_ms != EP_IO_FOREVER && ep_io_millis() - start >= timeout_ms) {
            return 0;
        }
        /* Spin a little between polls: each register read is slow to emulate while plain
         * instructions are fast, so under `-icount` this makes device time pass ~50x faster in
         * real time (a 200 ms timeout then takes well under a second). About 1 us at 1 GHz;
         * a byte at 115200 baud takes 87 us, so a board never misses one. */
        for (uint32_t i = EP_UART_POLL_SPIN; i != 0; --i) {
            __asm__ volatile("");
        }
    }
}

/* A byte that was not there yet: the wait and the read that ends it run between the idle
 * markers, so that only a few instructions per wait count as the device's work (ep_io.h). */
static int slow_byte(uint32_t timeout_ms)
{
    ep_idle_begin();
    const int b = wait_ready(timeout_ms) ? (int)(UART_DATA & 0xFFu) : -1;
    ep_idle_end();
    return b;
}

int ep_io_read_byte(uint32_t timeout_ms)
{
    if (UART_STATE & STATE_RX_FULL) {
        return (int)(UART_DATA & 0xFFu);
    }
    return slow_byte(timeout_ms);
}

uint32_t ep_io_read(uint8_t *buf, uint32_t n, uint32_t timeout_ms)
{
    for (uint32_t i = 0; i < n; ++i) {
        if (UART_STATE & STATE_RX_FULL) {
            buf[i] = (uint8_t)UART_DATA;
        } else {
            const int b = slow_byte(timeout_ms);
            if (b < 0) {
                return i;
            }
            buf[i] = (uint8_t)b;
        }
    }
    return n;
}

void ep_io_flush(void)
{
    /* Nothing held back: each byte is in the UART when ep_io_write returns. */
}

void ep_io_write(const uint8_t *data, uint32_t n)
{
    for (uint32_t i = 0; i < n; ++i) {
        while (UART_STATE & STATE_TX_FULL) {
        }
        UART_DATA = data[i];
    }
}

#endif /* Cortex-M */
