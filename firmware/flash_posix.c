/* The param_store flash backend on Linux (the arm64 runner): the two slots live in a static array
 * mirrored to the file named by the environment variable EP_STORE_FILE (Arm64Link(..., store=)),
 * written through with the same granularity as under QEMU (flash_qemu.c): one write per 4 KiB
 * erase chunk, erased from the end, and per 256-byte program page, programming ANDs like flash.
 * Without EP_STORE_FILE the slots are volatile. */
#if defined(EP_WITH_STORE) && defined(__unix__) && !(defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M')

#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "param_store.h"

#define REGION_BYTES (2u * EP_STORE_SLOT_BYTES)
#define PAGE_BYTES 256u
#define ERASE_CHUNK 4096u

#if EP_STORE_SLOT_BYTES % ERASE_CHUNK != 0
#error "EP_STORE_SLOT_BYTES must be a multiple of the 4 KiB erase chunk"
#endif

static uint8_t region[REGION_BYTES] __attribute__((aligned(8)));
static int fd = -1;

static int write_through(uint32_t at, uint32_t n)
{
    return fd < 0 || pwrite(fd, region + at, n, (off_t)at) == (ssize_t)n ? 0 : -1;
}

int ep_flash_init(void)
{
    memset(region, 0xFF, REGION_BYTES);
    const char *path = getenv("EP_STORE_FILE");
    if (path == NULL || *path == '\0') {
        return 0;
    }
    fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) {
        return 0;
    }
    ssize_t have = pread(fd, region, REGION_BYTES, 0);
    if (have < 0) {
        memset(region, 0xFF, REGION_BYTES); /* unreadable: run volatile, never overwrite it */
        close(fd);
        fd = -1;
        return 0;
    }
    if ((uint32_t)have < REGION_BYTES && write_through((uint32_t)have, REGION_BYTES - (uint32_t)have) != 0) {
        return 0; /* short file: pad it like blank flash */
    }
    return 1;
}

const uint8_t *ep_flash_slot(uint32_t slot)
{
    return region + slot * EP_STORE_SLOT_BYTES;
}

int ep_flash_erase_slot(uint32_t slot)
{
    const uint32_t base = slot * EP_STORE_SLOT_BYTES;
    for (uint32_t end = EP_STORE_SLOT_BYTES; end > 0; end -= ERASE_CHUNK) {
        memset(region + base + end - ERASE_CHUNK, 0xFF, ERASE_CHUNK);
        if (write_through(base + end - ERASE_CHUNK, ERASE_CHUNK) != 0) {
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
        uint8_t *dst = region + base + done;
        for (uint32_t i = 0; i < k; ++i) {
            dst[i] &= data[done + i]; /* flash only clears bits */
        }
        if (write_through(base + done, k) != 0) {
            return -1;
        }
        done += k;
    }
    return 0;
}

#endif /* EP_WITH_STORE on Linux */
