/* Persistence of adapted parameters: two A/B slots in a reserved flash region at the end of the
 * board's flash (the linker scripts of firmware/boards reserve it when the firmware is built with EP_WITH_STORE).
 *
 * Slot layout (little-endian, EP_STORE_SLOT_BYTES per slot, each slot its own erase unit):
 *   0  u32 magic    EP_STORE_MAGIC ("EPPS"), programmed last: it commits the slot
 *   4  u16 version  EP_STORE_VERSION
 *   6  u16 header   EP_STORE_HEADER_BYTES
 *   8  u8[8]        model hash (EP_MODEL_HASH's 16 hex digits as 8 bytes)
 *  16  u32 length   payload bytes
 *  20  u32 sequence increases by one per save; the newest valid slot is the active one
 *  24  u32 reserved 0xFFFFFFFF
 *  28  u32 crc      CRC-32 (zlib's) of bytes 0..27, then the payload
 *  32  payload
 *
 * A save erases the slot not holding the newest valid data, programs the payload, then the
 * header's bytes 4..31, then the magic: a power cut at any point leaves at most that slot invalid.
 * The blob is opaque (the adaptation code decides what it holds). */
#ifndef EP_PARAM_STORE_H_
#define EP_PARAM_STORE_H_

#include <stdint.h>

#define EP_STORE_MAGIC 0x53505045u /* "EPPS" */
#define EP_STORE_VERSION 1u
#define EP_STORE_HEADER_BYTES 32u
#ifndef EP_STORE_SLOT_BYTES /* build_firmware sets it per board (device/param_store.py) */
#define EP_STORE_SLOT_BYTES (64u * 1024u)
#endif
#define EP_STORE_MAX_BLOB (EP_STORE_SLOT_BYTES - EP_STORE_HEADER_BYTES)
#define EP_STORE_NO_SLOT 0xFFu /* "factory": no valid slot */

/* Protocol commands (firmware/PROTOCOL.md, "Persistence"). */
#define EP_KIND_STORE_SAVE 0x30u
#define EP_KIND_STORE_LOAD 0x31u
#define EP_KIND_STORE_INFO 0x32u
#define EP_KIND_STORE_ROLLBACK 0x33u
#define EP_ERR_STORE 8 /* the flash backend failed (message says which operation) */

/* Return codes of the C API. */
#define EP_STORE_OK 0
#define EP_STORE_ERR_TOO_BIG (-1)
#define EP_STORE_ERR_FLASH (-2)
#define EP_STORE_ERR_NO_FLASH (-3) /* no backing store (e.g. QEMU started without a store file) */

/* Boot: brings up the flash backend and picks the newest valid slot. Call once, before the
 * adaptation code asks for ep_store_active (device_main.c does, before registering commands). */
void ep_store_init(void);
/* Registers store_save/load/info/rollback (kinds 0x30..0x33). */
void ep_store_register_commands(void);

/* Persists blob (n <= EP_STORE_MAX_BLOB bytes) into the older slot; it becomes the active one.
 * blob may point into the active slot itself (re-saving). Returns EP_STORE_OK or EP_STORE_ERR_*. */
int ep_store_save(const uint8_t *blob, uint32_t n);
/* The active blob (memory-mapped flash, valid until the next save or rollback) and its length,
 * or NULL when the device runs the factory weights. */
const uint8_t *ep_store_active(uint32_t *n);
/* Invalidates both slots (the older first, so a cut in between still boots the active blob):
 * the next boot, and ep_store_active from now on, give the factory weights. */
int ep_store_rollback(void);

/* ---- the flash backend one board kind provides (flash_qemu.c, flash_stm32f7.c). Slots are 0 (A)
 * and 1 (B); every address is memory-mapped and readable; programming needs an erased
 * destination, offsets and lengths are multiples of 4. Each returns 0, or -1 on a failure. */
int ep_flash_init(void); /* 0, or -1 when there is no usable backing store */
const uint8_t *ep_flash_slot(uint32_t slot);
int ep_flash_erase_slot(uint32_t slot);
int ep_flash_program(uint32_t slot, uint32_t offset, const uint8_t *data, uint32_t n);

#endif /* EP_PARAM_STORE_H_ */
