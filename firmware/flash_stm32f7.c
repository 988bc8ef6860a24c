/* The param_store flash backend on STM32F74x/75x (the STM32F746-Discovery): the embedded flash
 * controller (RM0385, section 3), single-bank map 4 x 32 KiB, 128 KiB, 3 x 256 KiB sectors.
 * Each slot must be exactly one sector, so erasing one never touches the other: with 256 KiB
 * slots the store is sectors 6 and 7 (0x08080000, 0x080C0000), the last half of the flash.
 *
 * Erase: SER + sector number + STRT; program: PG with 32-bit parallelism (2.7-3.6 V supply), one
 * word at a time. The CPU stalls on flash reads while an operation runs (single bank), which is
 * fine: nothing else needs to run meanwhile. The firmware runs with the caches off, so reads
 * after an operation see the new contents. Builds here; it can only run on the board. */
#if defined(EP_WITH_STORE) && defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'

#include <stdint.h>

#include "param_store.h"

#define FLASH_R 0x40023C00u
#define FLASH_KEYR (*(volatile uint32_t *)(FLASH_R + 0x04u))
#define FLASH_SR (*(volatile uint32_t *)(FLASH_R + 0x0Cu))
#define FLASH_CR (*(volatile uint32_t *)(FLASH_R + 0x10u))
#define KEY1 0x45670123u
#define KEY2 0xCDEF89ABu
#define SR_BSY (1u << 16)
#define SR_ERRORS 0xF2u /* OPERR, WRPERR, PGAERR, PGPERR, ERSERR (write 1 to clear) */
#define SR_EOP 1u
#define CR_PG 1u
#define CR_SER (1u << 1)
#define CR_SNB_SHIFT 3u
#define CR_PSIZE_X32 (2u << 8)
#define CR_STRT (1u << 16)
#define CR_LOCK (1u << 31)
#define FLASH_BASE 0x08000000u

extern uint8_t __ep_store_start__[]; /* firmware/boards/stm32f746-disco.ld */

/* The sector starting at addr, or -1 when addr is not a sector start; *bytes gets its size. */
static int sector_at(uint32_t addr, uint32_t *bytes)
{
    const uint32_t off = addr - FLASH_BASE;
    if (off < 0x20000u) {
        *bytes = 0x8000u;
        return off % 0x8000u == 0 ? (int)(off / 0x8000u) : -1;
    }
    if (off == 0x20000u) {
        *bytes = 0x20000u;
        return 4;
    }
    *bytes = 0x40000u;
    return off >= 0x40000u && off < 0x100000u && off % 0x40000u == 0 ? (int)(5u + (off - 0x40000u) / 0x40000u) : -1;
}

static int slot_sector(uint32_t slot)
{
    uint32_t bytes = 0;
    const int s = sector_at((uint32_t)(uintptr_t)ep_flash_slot(slot), &bytes);
    return s >= 0 && bytes == EP_STORE_SLOT_BYTES ? s : -1;
}

static void unlock(void)
{
    if (FLASH_CR & CR_LOCK) {
        FLASH_KEYR = KEY1;
        FLASH_KEYR = KEY2;
    }
}

/* Waits for the operation, clears the controller, locks it; 0 when no error flag rose. */
static int finish(void)
{
    while (FLASH_SR & SR_BSY) {
    }
    const uint32_t errors = FLASH_SR & SR_ERRORS;
    FLASH_SR = SR_ERRORS | SR_EOP;
    FLASH_CR = CR_LOCK;
    return errors == 0 ? 0 : -1;
}

int ep_flash_init(void)
{
    return slot_sector(0) >= 0 && slot_sector(1) >= 0 ? 1 : -1;
}

const uint8_t *ep_flash_slot(uint32_t slot)
{
    return __ep_store_start__ + slot * EP_STORE_SLOT_BYTES;
}

int ep_flash_erase_slot(uint32_t slot)
{
    const int sector = slot_sector(slot);
    if (sector < 0) {
        return -1;
    }
    while (FLASH_SR & SR_BSY) {
    }
    unlock();
    FLASH_SR = SR_ERRORS | SR_EOP;
    FLASH_CR = CR_SER | CR_PSIZE_X32 | (uint32_t)sector << CR_SNB_SHIFT;
    FLASH_CR |= CR_STRT;
    __asm__ volatile("dsb" ::: "memory");
    return finish();
}

int ep_flash_program(uint32_t slot, uint32_t offset, const uint8_t *data, uint32_t n)
{
    if (slot_sector(slot) < 0 || (offset | n) % 4u != 0 || offset + n > EP_STORE_SLOT_BYTES) {
        return -1;
    }
    volatile uint32_t *dst = (volatile uint32_t *)(uintptr_t)(ep_flash_slot(slot) + offset);
    while (FLASH_SR & SR_BSY) {
    }
    unlock();
    FLASH_SR = SR_ERRORS | SR_EOP;
    FLASH_CR = CR_PG | CR_PSIZE_X32;
    for (uint32_t i = 0; i < n; i += 4) {
        /* data may be unaligned (a protocol buffer, a caller's blob): assemble the word. */
        const uint32_t w = (uint32_t)data[i] | (uint32_t)data[i + 1] << 8 | (uint32_t)data[i + 2] << 16 |
                           (uint32_t)data[i + 3] << 24;
        *dst++ = w;
        __asm__ volatile("dsb" ::: "memory");
        while (FLASH_SR & SR_BSY) {
        }
        if (FLASH_SR & SR_ERRORS) {
            break;
        }
    }
    return finish();
}

#endif /* EP_WITH_STORE on Cortex-M */
