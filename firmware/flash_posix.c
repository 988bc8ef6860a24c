/* The param_store flash backend on Linux (the arm64 runner): the two slots live in a static array
 * mirrored to the file named by the environment variable EP_STORE_FILE (Arm64Link(..., store=));
 * flash_mirror.c does the flash operations. Without EP_STORE_FILE the slots are volatile. */
#if defined(EP_WITH_STORE) && defined(__unix__) && !(defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M')

#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flash_mirror.h"
#include "param_store.h"

#define REGION_BYTES EP_MIRROR_BYTES

static uint8_t region[REGION_BYTES] __attribute__((aligned(8)));
static int fd = -1;

uint8_t *ep_mirror(void)
{
    return region;
}

int ep_mirror_write_through(uint32_t at, uint32_t n)
{
    return fd < 0 || pwrite(fd, region + at, n, (off_t)at) == (ssize_t)n ? 0 : -1;
}

void ep_mirror_gate(void)
{
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
    if ((uint32_t)have < REGION_BYTES && ep_mirror_write_through((uint32_t)have, REGION_BYTES - (uint32_t)have) != 0) {
        return 0; /* short file: pad it like blank flash */
    }
    return 1;
}

#endif /* EP_WITH_STORE on Linux */
