/* The flash operations of param_store.h over a mirrored region (flash_mirror.h). */
#ifdef EP_WITH_STORE

#include <string.h>

#include "flash_mirror.h"
#include "param_store.h"

#define PAGE_BYTES 256u
#define ERASE_CHUNK 4096u

#if EP_STORE_SLOT_BYTES % ERASE_CHUNK != 0
#error "EP_STORE_SLOT_BYTES must be a multiple of the 4 KiB erase chunk"
#endif

const uint8_t *ep_flash_slot(uint32_t slot)
{
    return ep_mirror() + slot * EP_STORE_SLOT_BYTES;
}

int ep_flash_erase_slot(uint32_t slot)
{
    const uint32_t base = slot * EP_STORE_SLOT_BYTES;
    for (uint32_t end = EP_STORE_SLOT_BYTES; end > 0; end -= ERASE_CHUNK) {
        ep_mirror_gate();
        memset(ep_mirror() + base + end - ERASE_CHUNK, 0xFF, ERASE_CHUNK);
        if (ep_mirror_write_through(base + end - ERASE_CHUNK, ERASE_CHUNK) != 0) {
            return -1;
        }
    }
    return 0;
}

int ep_flash_program(uint32_t slot, uint32_t offset, const uint8_t *data, uint32_t n)
{
    const uint32_t base = slot * EP_STORE_SLOT_BYTES + offset;
    for (uint32_t done = 0; done < n;) {
        const uint32_t k = n - done < PAGE_BYTES ? n - done : PAGE_BYTES;
        ep_mirror_gate();
        uint8_t *dst = ep_mirror() + base + done;
        for (uint32_t i = 0; i < k; ++i) {
            dst[i] &= data[done + i]; /* flash only clears bits */
        }
        if (ep_mirror_write_through(base + done, k) != 0) {
            return -1;
        }
        done += k;
    }
    return 0;
}

#endif /* EP_WITH_STORE */
