/* The board-independent part of ep_io.h on Cortex-M: a millisecond clock from SysTick, the DWT
 * cycle counter when there is one, and stopping (semihosting exit under QEMU, reset on a board).
 * The board's UART file (uart_cmsdk.c, uart_stm32f7.c) calls ep_cortexm_io_init from ep_io_init. */
#if defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'

#include <stdint.h>

#include "cortexm_io.h"
#include "ep_io.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define SCB_AIRCR REG(0xE000ED0Cu)
#define DEMCR REG(0xE000EDFCu)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#define DWT_LAR REG(0xE0001FB0u)

static uint32_t ticks_per_ms = 1;
static uint32_t last_tick, tick_remainder, millis;
static int have_cycles;

static void detect_cycle_counter(void)
{
    DEMCR |= 1u << 24; /* TRCENA: powers the DWT */
#ifdef EP_DWT_UNLOCK
    DWT_LAR = 0xC5ACCE55u; /* Cortex-M7's DWT ignores writes until unlocked */
#endif
    if (DWT_CTRL & (1u << 25)) { /* NOCYCCNT */
        return;
    }
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u; /* CYCCNTENA */
    const uint32_t first = DWT_CYCCNT;
    for (volatile int i = 0; i < 8; ++i) {
    }
    /* QEMU accepts the writes but its counter stays 0: count it as no counter. */
    have_cycles = DWT_CYCCNT != first;
}

void ep_cortexm_io_init(uint32_t core_clock_hz)
{
    ticks_per_ms = core_clock_hz / 1000u > 0 ? core_clock_hz / 1000u : 1u;
    /* SysTick free-running on the core clock, no interrupt: ep_io_millis reads it. */
    SYST_CSR = 0;
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 5u; /* ENABLE | CLKSOURCE=core */
    last_tick = SYST_CVR;
    detect_cycle_counter();
}

/* The 24-bit down-counter wraps every 2^24 ticks: the time between two calls is exact while
 * callers poll (waiting for the host); longer gaps (a model running) only shift the origin. */
uint32_t ep_io_millis(void)
{
    const uint32_t now = SYST_CVR;
    tick_remainder += (last_tick - now) & 0x00FFFFFFu;
    last_tick = now;
    millis += tick_remainder / ticks_per_ms;
    tick_remainder %= ticks_per_ms;
    return millis;
}

int ep_cycles_available(void)
{
    return have_cycles;
}

uint32_t ep_cycles_now(void)
{
    return have_cycles ? DWT_CYCCNT : 0u;
}

void ep_device_exit(int code)
{
#ifdef EP_SEMIHOSTING_EXIT
    /* SYS_EXIT_EXTENDED (0x20): {ADP_Stopped_ApplicationExit, code} becomes QEMU's exit status. */
    uint32_t block[2] = {0x20026u, (uint32_t)code};
    register uint32_t r0 __asm__("r0") = 0x20u;
    register uint32_t *r1 __asm__("r1") = block;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
#else
    (void)code;
#endif
    /* On a board (or if the emulator ignored the request): system reset. */
    __asm__ volatile("dsb" ::: "memory");
    SCB_AIRCR = 0x05FA0004u; /* VECTKEY | SYSRESETREQ */
    __asm__ volatile("dsb" ::: "memory");
    for (;;) {
    }
}

#endif /* Cortex-M */
