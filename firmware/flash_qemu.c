/* The param_store flash backend under QEMU: the reserved region (RAM in QEMU's map, read like
 * flash) mirrors a host file through semihosting, so the slots survive QEMU restarts and kills.
 *
 * The host passes the file as a semihosting argument `ep_store=<path>` (QemuLink(..., store=));
 * at boot the file is read into the region (a missing or short file is blank flash, 0xFF). The
 * flash operations (flash_mirror.c) write each page or erase chunk through to the file with one
 * semihosting write, so a kill between two writes leaves the file torn as a power cut leaves flash.
 *
 * `ep_gate=<path>` (power-cut tests): a FIFO from which one byte is read before each operation,
 * so the host can stop the device at an exact operation. Without `ep_store=` the region is
 * volatile (lost at exit). */
#if defined(EP_WITH_STORE) && defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'

#include <stdint.h>
#include <string.h>

#include "flash_mirror.h"
#include "param_store.h"

#define REGION_BYTES EP_MIRROR_BYTES

#define SYS_OPEN 0x01u
#define SYS_WRITE 0x05u
#define SYS_READ 0x06u
#define SYS_SEEK 0x0Au
#define SYS_FLEN 0x0Cu
#define SYS_GET_CMDLINE 0x15u
#define MODE_RB 1u
#define MODE_RPLUSB 3u
#define MODE_WPLUSB 7u

extern uint8_t __ep_store_start__[]; /* the linker script: the end of FLASH */

static int32_t file = -1, gate = -1;

static int32_t semihost(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return (int32_t)r0;
}

static int32_t open_file(const char *path, uint32_t len, uint32_t mode)
{
    const uint32_t args[3] = {(uint32_t)(uintptr_t)path, mode, len};
    return semihost(SYS_OPEN, args);
}

uint8_t *ep_mirror(void)
{
    return __ep_store_start__;
}

/* Writes n bytes of the region, from its offset `at`, to the same place in the file. */
int ep_mirror_write_through(uint32_t at, uint32_t n)
{
    if (file < 0) {
        return 0;
    }
    const uint32_t seek[2] = {(uint32_t)file, at};
    const uint32_t write[3] = {(uint32_t)file, (uint32_t)(uintptr_t)(__ep_store_start__ + at), n};
    return semihost(SYS_SEEK, seek) == 0 && semihost(SYS_WRITE, write) == 0 ? 0 : -1;
}

void ep_mirror_gate(void)
{
    if (gate >= 0) {
        uint8_t token;
        const uint32_t read[3] = {(uint32_t)gate, (uint32_t)(uintptr_t)&token, 1u};
        if (semihost(SYS_READ, read) != 0) {
            gate = -1; /* the host closed it: no more gating */
        }
    }
}

/* The value of `key` in the command line: up to the next space, or (last) to the end. Plain
 * loops rather than newlib's strncmp/strlen, which would add about 350 bytes of flash. */
static char *find_arg(char *line, const char *key, uint32_t *len, int to_end)
{
    for (char *p = line; *p != '\0'; ++p) {
        uint32_t k = 0;
        while (key[k] != '\0' && p[k] == key[k]) {
            ++k;
        }
        if (key[k] == '\0' && (p == line || p[-1] == ' ')) {
            char *v = p + k;
            uint32_t n = 0;
            while (v[n] != '\0' && (to_end || v[n] != ' ')) {
                ++n;
            }
            *len = n;
            return v;
        }
    }
    return NULL;
}

int ep_flash_init(void)
{
    char line[512];
    uint32_t cmd[2] = {(uint32_t)(uintptr_t)line, sizeof line - 1u};
    memset(__ep_store_start__, 0xFF, REGION_BYTES);
    if (semihost(SYS_GET_CMDLINE, cmd) != 0) {
        return 0;
    }
    line[cmd[1] < sizeof line ? cmd[1] : sizeof line - 1u] = '\0';
    /* ep_store= comes last and runs to the end: the path may hold spaces (QemuLink puts ep_gate=
     * first; its terminator below then lands before ep_store=). */
    uint32_t n = 0, path_len = 0;
    char *path = find_arg(line, "ep_store=", &path_len, 1);
    char *gate_path = find_arg(line, "ep_gate=", &n, 0);
    if (gate_path != NULL) {
        gate_path[n] = '\0';
        gate = open_file(gate_path, n, MODE_RB);
    }
    if (path == NULL) {
        return 0;
    }
    file = open_file(path, path_len, MODE_RPLUSB);
    if (file < 0) {
        file = open_file(path, path_len, MODE_WPLUSB); /* it did not exist yet */
    }
    if (file < 0) {
        return 0;
    }
    const uint32_t flen_arg[1] = {(uint32_t)file};
    const int32_t flen = semihost(SYS_FLEN, flen_arg);
    uint32_t have = flen > 0 ? (uint32_t)flen : 0u;
    have = have < REGION_BYTES ? have : REGION_BYTES;
    const uint32_t seek[2] = {(uint32_t)file, 0u};
    const uint32_t read[3] = {(uint32_t)file, (uint32_t)(uintptr_t)__ep_store_start__, have};
    if (have > 0 && (semihost(SYS_SEEK, seek) != 0 || semihost(SYS_READ, read) != 0)) {
        memset(__ep_store_start__, 0xFF, REGION_BYTES); /* unreadable: run volatile, never overwrite it */
        file = -1;
        return 0;
    }
    if (have < REGION_BYTES && ep_mirror_write_through(have, REGION_BYTES - have) != 0) {
        return 0; /* short file: pad it like blank flash */
    }
    return 1;
}

#endif /* EP_WITH_STORE on Cortex-M */
