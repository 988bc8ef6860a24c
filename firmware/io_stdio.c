/* ep_io.h on Linux (the arm64 runner under qemu-aarch64, or any POSIX host): the protocol on
 * stdin/stdout, unbuffered (read/write system calls), timeouts with poll(). No cycle counter. */
#if defined(__unix__) && !(defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M')

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ep_io.h"

/* Bytes already read from stdin and bytes not yet written to stdout: one system call per burst
 * or per frame, not per byte. */
static uint8_t in_buf[4096];
static uint32_t in_pos, in_len;
static uint8_t out_buf[1024];
static uint32_t out_len;

void ep_io_init(void)
{
}

uint32_t ep_io_millis(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)ts.tv_sec * 1000u + (uint32_t)(ts.tv_nsec / 1000000);
}

static int refill(uint32_t timeout_ms)
{
    const uint32_t start = ep_io_millis();
    for (;;) {
        int wait = -1;
        if (timeout_ms != EP_IO_FOREVER) {
            const uint32_t spent = ep_io_millis() - start;
            if (spent >= timeout_ms) {
                return 0;
            }
            wait = (int)(timeout_ms - spent);
        }
        struct pollfd p = {.fd = 0, .events = POLLIN};
        const int ready = poll(&p, 1, wait);
        if (ready < 0 && errno != EINTR) {
            ep_device_exit(1);
        }
        if (ready > 0) {
            const ssize_t got = read(0, in_buf, sizeof in_buf);
            if (got == 0) {
                ep_device_exit(0); /* the host closed the pipe: nothing more will come */
            }
            if (got > 0) {
                in_pos = 0;
                in_len = (uint32_t)got;
                return 1;
            }
            if (errno != EINTR && errno != EAGAIN) {
                ep_device_exit(1);
            }
        }
    }
}

int ep_io_read_byte(uint32_t timeout_ms)
{
    if (in_pos == in_len) {
        ep_idle_begin();
        const int ok = refill(timeout_ms);
        ep_idle_end();
        if (!ok) {
            return -1;
        }
    }
    return in_buf[in_pos++];
}

uint32_t ep_io_read(uint8_t *buf, uint32_t n, uint32_t timeout_ms)
{
    uint32_t done = 0;
    while (done < n) {
        if (in_pos == in_len) {
            ep_idle_begin();
            const int ok = refill(timeout_ms);
            ep_idle_end();
            if (!ok) {
                break;
            }
        }
        uint32_t take = in_len - in_pos;
        take = take < n - done ? take : n - done;
        memcpy(buf + done, in_buf + in_pos, take);
        in_pos += take;
        done += take;
    }
    return done;
}

static void write_all(const uint8_t *data, uint32_t n)
{
    while (n > 0) {
        const ssize_t put = write(1, data, n);
        if (put < 0) {
            if (errno == EINTR) {
                continue;
            }
            ep_device_exit(1); /* the host is gone */
        }
        data += put;
        n -= (uint32_t)put;
    }
}

void ep_io_flush(void)
{
    write_all(out_buf, out_len);
    out_len = 0;
}

void ep_io_write(const uint8_t *data, uint32_t n)
{
    if (out_len + n > sizeof out_buf) {
        ep_io_flush();
    }
    if (n > sizeof out_buf) {
        write_all(data, n);
        return;
    }
    memcpy(out_buf + out_len, data, n);
    out_len += n;
}

int ep_cycles_available(void)
{
    return 0;
}

uint32_t ep_cycles_now(void)
{
    return 0;
}

void ep_device_exit(int code)
{
    exit(code);
}

#endif /* POSIX, not Cortex-M */
