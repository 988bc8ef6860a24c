/* Region markers for instruction counting: a program calls ep_region_begin() before the code to
 * measure and ep_region_end() after it; the QEMU plugin counts the instructions in between (see
 * bench/qemu_plugin/insn_count.c). noipa keeps each a real, distinct call: never inlined, never
 * folded into one identical function, never assumed side-effect free. */
#include "markers.h"

__attribute__((noipa)) void ep_region_begin(void)
{
    __asm__ volatile("" ::: "memory");
}

__attribute__((noipa)) void ep_region_end(void)
{
    __asm__ volatile("" ::: "memory");
}
