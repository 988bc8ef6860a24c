/* Start-up for the protocol firmware (device_main.c) on every Cortex-M board: vector table,
 * .data copy, .bss zeroing, FPU/MVE access, then main(). Unlike startup_cortexm.c (the test
 * programs'), nothing from newlib's semihosting or stdio: the firmware talks over its UART and
 * stops through ep_device_exit. Compile with -ffreestanding -fno-builtin (the loops stay loops). */
#if defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'

#include <stdint.h>

#include "ep_io.h"

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__, __stack_top__;
extern int main(void);

void Reset_Handler(void);
void Default_Handler(void);

/* Any fault or unexpected interrupt stops the device with status 1 (QEMU) or resets it (board). */
void Default_Handler(void)
{
    ep_device_exit(1);
}

__attribute__((section(".vectors"), used)) static void (*const vector_table[16])(void) = {
    (void (*)(void))(uintptr_t)&__stack_top__,
    Reset_Handler,
    Default_Handler, /* NMI */
    Default_Handler, /* HardFault */
    Default_Handler, /* MemManage */
    Default_Handler, /* BusFault */
    Default_Handler, /* UsageFault */
    Default_Handler, /* SecureFault (v8-M) */
    0, 0, 0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMonitor */
    0,
    Default_Handler, /* PendSV */
    Default_Handler, /* SysTick */
};

void Reset_Handler(void)
{
    for (uint32_t *src = &__data_load__, *dst = &__data_start__; dst < &__data_end__;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &__bss_start__; dst < &__bss_end__;) {
        *dst++ = 0;
    }
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    volatile uint32_t *const cpacr = (volatile uint32_t *)0xE000ED88u;
    *cpacr |= 0xFu << 20; /* CP10/CP11 full access: FPU and MVE */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    ep_device_exit(main());
}

#endif /* Cortex-M */
