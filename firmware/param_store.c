/* A/B slots of adapted parameters in flash (layout and guarantees: param_store.h), and the
 * store_* protocol commands (PROTOCOL.md, "Persistence"). Compiled in only with EP_WITH_STORE
 * (build_firmware(..., adaptation=True)); the flash itself is the board's flash_<kind>.c. */
#ifdef EP_WITH_STORE

#include <stdint.h>
#include <string.h>

#include "model.h"
#include "param_store.h"
#include "protocol.h"

enum { SLOT_EMPTY = 0, SLOT_VALID = 1, SLOT_CORRUPT = 2, SLOT_OTHER_MODEL = 3 };

typedef struct {
    uint8_t state;
    uint32_t seq, len;
} slot_info_t;

static int flash_state = -1; /* ep_flash_init: 1 persistent, 0 volatile, -1 none */
static uint8_t model_hash[8];
static slot_info_t slots[2];
static uint8_t active = EP_STORE_NO_SLOT, booted = EP_STORE_NO_SLOT;

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* memcmp without newlib's (96 bytes of flash for two fixed-purpose compares). */
static int same(const uint8_t *a, const uint8_t *b, uint32_t n)
{
    uint8_t diff = 0;
    for (uint32_t i = 0; i < n; ++i) {
        diff |= (uint8_t)(a[i] ^ b[i]);
    }
    return diff == 0;
}

static uint8_t hex_digit(char c)
{
    return (uint8_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
}

static slot_info_t check_slot(uint32_t s)
{
    slot_info_t info = {SLOT_CORRUPT, 0, 0};
    const uint8_t *p = ep_flash_slot(s);
    const uint32_t magic = rd32(p);
    if (magic == 0xFFFFFFFFu) {
        info.state = SLOT_EMPTY; /* erased, or cut before its commit */
        return info;
    }
    const uint32_t len = rd32(p + 16);
    if (magic != EP_STORE_MAGIC || (rd32(p + 4) & 0xFFFFu) != EP_STORE_VERSION ||
        rd32(p + 4) >> 16 != EP_STORE_HEADER_BYTES || len > EP_STORE_MAX_BLOB) {
        return info; /* the length is checked before the CRC reads that many bytes */
    }
    const uint32_t crc = ep_crc32(ep_crc32(0, p, 28), p + EP_STORE_HEADER_BYTES, len);
    if (crc != rd32(p + 28)) {
        return info;
    }
    info.seq = rd32(p + 20);
    info.len = len;
    info.state = same(p + 8, model_hash, 8) ? SLOT_VALID : SLOT_OTHER_MODEL;
    return info;
}

/* Re-reads both headers; the newest valid slot becomes the active one. */
static void scan(void)
{
    active = EP_STORE_NO_SLOT;
    if (flash_state < 0) {
        return;
    }
    for (uint32_t s = 0; s < 2; ++s) {
        slots[s] = check_slot(s);
        if (slots[s].state == SLOT_VALID && (active == EP_STORE_NO_SLOT || slots[s].seq > slots[active].seq)) {
            active = (uint8_t)s;
        }
    }
}

void ep_store_init(void)
{
    const char *hex = EP_MODEL_HASH;
    for (int i = 0; i < 8; ++i) {
        model_hash[i] = (uint8_t)(hex_digit(hex[2 * i]) << 4 | hex_digit(hex[2 * i + 1]));
    }
    flash_state = ep_flash_init();
    scan();
    booted = active;
}

const uint8_t *ep_store_active(uint32_t *n)
{
    if (active == EP_STORE_NO_SLOT) {
        *n = 0;
        return NULL;
    }
    *n = slots[active].len;
    return ep_flash_slot(active) + EP_STORE_HEADER_BYTES;
}

int ep_store_save(const uint8_t *blob, uint32_t n)
{
    if (flash_state < 0) {
        return EP_STORE_ERR_NO_FLASH;
    }
    if (n > EP_STORE_MAX_BLOB) {
        return EP_STORE_ERR_TOO_BIG;
    }
    scan();
    /* Never touch the slot holding the newest valid data. */
    const uint32_t target = active == EP_STORE_NO_SLOT ? 0u : 1u - active;
    const uint32_t seq = active == EP_STORE_NO_SLOT ? 1u : slots[active].seq + 1u;
    const uint32_t whole = n & ~3u;
    if (ep_flash_erase_slot(target) != 0 || ep_flash_program(target, EP_STORE_HEADER_BYTES, blob, whole) != 0) {
        return EP_STORE_ERR_FLASH;
    }
    if (n > whole) { /* the last partial word, padded with erased bytes */
        uint8_t tail[4] = {0xFF, 0xFF, 0xFF, 0xFF};
        memcpy(tail, blob + whole, n - whole);
        if (ep_flash_program(target, EP_STORE_HEADER_BYTES + whole, tail, 4) != 0) {
            return EP_STORE_ERR_FLASH;
        }
    }
    const uint8_t *payload = ep_flash_slot(target) + EP_STORE_HEADER_BYTES;
    if (!same(payload, blob, n)) {
        return EP_STORE_ERR_FLASH; /* read-back differs: leave the slot uncommitted */
    }
    uint8_t h[EP_STORE_HEADER_BYTES];
    wr32(h, EP_STORE_MAGIC);
    wr32(h + 4, EP_STORE_VERSION | EP_STORE_HEADER_BYTES << 16);
    memcpy(h + 8, model_hash, 8);
    wr32(h + 16, n);
    wr32(h + 20, seq);
    wr32(h + 24, 0xFFFFFFFFu);
    wr32(h + 28, ep_crc32(ep_crc32(0, h, 28), payload, n));
    /* Header body first, magic last: a header cut short never carries the magic. */
    if (ep_flash_program(target, 4, h + 4, EP_STORE_HEADER_BYTES - 4) != 0 || ep_flash_program(target, 0, h, 4) != 0) {
        return EP_STORE_ERR_FLASH;
    }
    scan();
    return active == target ? EP_STORE_OK : EP_STORE_ERR_FLASH;
}

int ep_store_rollback(void)
{
    if (flash_state < 0) {
        return EP_STORE_ERR_NO_FLASH;
    }
    scan();
    /* The older (or invalid) slot first: a cut after it still boots the active blob. */
    const uint32_t first = active == EP_STORE_NO_SLOT ? 0u : 1u - active;
    const uint32_t order[2] = {first, 1u - first};
    int rc = EP_STORE_OK;
    for (int i = 0; i < 2; ++i) {
        if (slots[order[i]].state != SLOT_EMPTY && ep_flash_erase_slot(order[i]) != 0) {
            rc = EP_STORE_ERR_FLASH;
        }
    }
    scan();
    return rc;
}

/* ---- protocol commands */
static int store_error(int rc, uint8_t *out, uint32_t *out_n)
{
    const char *msg = rc == EP_STORE_ERR_TOO_BIG ? "blob larger than the slot"
                      : rc == EP_STORE_ERR_NO_FLASH ? "no flash store on this device"
                                                    : "flash erase/program failed";
    uint32_t k = 0;
    while (msg[k] != '\0') {
        out[k] = (uint8_t)msg[k];
        ++k;
    }
    *out_n = k;
    return rc == EP_STORE_ERR_TOO_BIG ? EP_ERR_BAD_LENGTH : EP_ERR_STORE;
}

static int cmd_save(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    const int rc = ep_store_save(in, n);
    if (rc != EP_STORE_OK) {
        return store_error(rc, out, out_n);
    }
    out[0] = active;
    wr32(out + 1, slots[active].seq);
    *out_n = 5;
    return 0;
}

/* in: empty, or u32 offset into the blob (blobs longer than one frame come in pieces). */
static int cmd_load(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    if (n != 0 && n != 4) {
        *out_n = 0;
        return EP_ERR_BAD_LENGTH;
    }
    uint32_t len;
    const uint8_t *blob = ep_store_active(&len);
    const uint32_t offset = n == 4 ? rd32(in) : 0u;
    const uint32_t from = offset < len ? offset : len;
    const uint32_t room = EP_PROTO_MAX_PAYLOAD - 9u;
    const uint32_t take = len - from < room ? len - from : room;
    out[0] = active;
    wr32(out + 1, blob != NULL ? slots[active].seq : 0u);
    wr32(out + 5, len);
    if (take > 0) {
        memcpy(out + 9, blob + from, take);
    }
    *out_n = 9u + take;
    return 0;
}

static int cmd_info(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    (void)in;
    if (n != 0) {
        *out_n = 0;
        return EP_ERR_BAD_LENGTH;
    }
    scan();
    for (uint32_t s = 0; s < 2; ++s) {
        out[9 * s] = slots[s].state;
        wr32(out + 9 * s + 1, slots[s].seq);
        wr32(out + 9 * s + 5, slots[s].len);
    }
    out[18] = active;
    out[19] = booted;
    wr32(out + 20, EP_STORE_SLOT_BYTES);
    out[24] = (uint8_t)(int8_t)flash_state;
    *out_n = 25;
    return 0;
}

static int cmd_rollback(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    (void)in;
    if (n != 0) {
        *out_n = 0;
        return EP_ERR_BAD_LENGTH;
    }
    const int rc = ep_store_rollback();
    if (rc != EP_STORE_OK) {
        return store_error(rc, out, out_n);
    }
    *out_n = 0;
    return 0;
}

void ep_store_register_commands(void)
{
    ep_protocol_register(EP_KIND_STORE_SAVE, cmd_save);
    ep_protocol_register(EP_KIND_STORE_LOAD, cmd_load);
    ep_protocol_register(EP_KIND_STORE_INFO, cmd_info);
    ep_protocol_register(EP_KIND_STORE_ROLLBACK, cmd_rollback);
}

#endif /* EP_WITH_STORE */
