/* Flash emulated by a RAM mirror of the two slots, written through to a host file, for the param
 * store under QEMU (flash_qemu.c) and on Linux (flash_posix.c). flash_mirror.c implements the flash
 * operations of param_store.h once, with flash's granularity and semantics: one write-through per
 * 4 KiB erase chunk, erased from the slot's end, and per 256-byte program page, programming ANDs.
 * A kill between two write-throughs then leaves the file torn exactly as a power cut leaves flash. */
#ifndef EP_FLASH_MIRROR_H
#define EP_FLASH_MIRROR_H

#include <stdint.h>

#define EP_MIRROR_BYTES (2u * EP_STORE_SLOT_BYTES)

/* Provided by the backend. */
uint8_t *ep_mirror(void); /* the mirror of both slots, EP_MIRROR_BYTES long */
int ep_mirror_write_through(uint32_t at, uint32_t n); /* bytes [at, at+n) to the file; 0 or -1 */
void ep_mirror_gate(void); /* called before each operation (power-cut tests); may do nothing */

#endif
