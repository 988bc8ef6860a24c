/* Minimal Cortex-M startup for the emulated boards: vector table, .data/.bss set-up, FPU on,
 * then main(); main's return code leaves through semihosting as the emulator's exit status.
 *
 * Compile this file with -ffreestanding -fno-builtin so the copy loops stay loops: GCC would
 * otherwise turn them into memcpy/memset calls, which may touch .bss before it exists.
 * Console and host files go through newlib's semihosting (link with --specs=rdimon.specs).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* Defined by firmware/boards/<board>.ld. */
extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern char __heap_start__[], __heap_end__[];
extern uint32_t __stack_top__;

extern int main(int argc, char **argv);
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);

void Reset_Handler(void);
void Default_Handler(void);

/* One semihosting call: operation in r0, parameter block pointer in r1, result in r0. */
static uint32_t semihost(uint32_t op, void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

/* argv from the emulator (QEMU's -semihosting-config ...,arg=prog,arg=a1): SYS_GET_CMDLINE gives
 * one space-separated line; arguments therefore cannot contain spaces. */
#define EP_MAX_ARGS 16
static char cmdline[512];
static char *argv_storage[EP_MAX_ARGS + 1];

static int read_command_line(void)
{
    uint32_t block[2] = {(uint32_t)(uintptr_t)cmdline, sizeof cmdline - 1};
    if (semihost(0x15 /* SYS_GET_CMDLINE */, block) != 0) {
        return 0;
    }
    cmdline[block[1] < sizeof cmdline ? block[1] : sizeof cmdline - 1] = '\0';
    int argc = 0;
    for (char *p = cmdline; *p && argc < EP_MAX_ARGS;) {
        while (*p == ' ') {
            *p++ = '\0';
        }
        if (*p) {
            argv_storage[argc++] = p;
            while (*p && *p != ' ') {
                ++p;
            }
        }
    }
    argv_storage[argc] = NULL;
    return argc;
}

/* Any unexpected exception or interrupt: report it and stop with a distinctive exit status, so a
 * crash under QEMU fails fast instead of hanging until the timeout. */
void Default_Handler(void)
{
    for (;;) {
        /* SYS_EXIT with ADP_Stopped_RunTimeErrorUnknown (0x20023): QEMU exits with status 1. */
        semihost(0x18, (void *)(uintptr_t)0x20023u);
    }
}

/* Core exceptions only: the tests and benchmarks use no peripheral interrupts. Entry 0 is the
 * initial stack pointer, entry 1 the reset handler (Thumb bit set by the linker). */
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
    /* Full access to CP10/CP11 (the FPU and, on v8.1-M, MVE) before any floating-point code. */
    volatile uint32_t *const cpacr = (volatile uint32_t *)0xE000ED88u;
    *cpacr |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    initialise_monitor_handles();
    __libc_init_array();
    const int argc = read_command_line();
    exit(main(argc, argv_storage));
}

/* The heap is the explicit region the board's linker script reserves, not "up to the stack". */
void *_sbrk(ptrdiff_t increment)
{
    static char *brk = __heap_start__;
    if (increment > __heap_end__ - brk || increment < __heap_start__ - brk) {
        return (void *)-1; /* malloc then fails cleanly with ENOMEM semantics */
    }
    char *previous = brk;
    brk += increment;
    return previous;
}
