/* The device side of the host-device protocol (firmware/PROTOCOL.md, wire format version 1). */
#ifndef EP_PROTOCOL_H_
#define EP_PROTOCOL_H_

#include <stdint.h>

#define EP_PROTO_VERSION 1u
#ifndef EP_PROTO_MAX_PAYLOAD /* build_firmware raises it for models whose tensors need bigger frames */
#define EP_PROTO_MAX_PAYLOAD 4096u
#endif
#define EP_PROTO_MAGIC0 0x45u /* 'E' */
#define EP_PROTO_MAGIC1 0x50u /* 'P' */
#define EP_PROTO_BYTE_TIMEOUT_MS 200u /* inside a frame: longer silence means TRUNCATED */

#define EP_KIND_INFO 0x01u
#define EP_KIND_INFER 0x02u
#define EP_KIND_BENCH 0x03u
#define EP_KIND_EXIT 0x0Fu
#define EP_KIND_ERROR 0x7Fu
#define EP_KIND_RESPONSE 0x80u /* a response's kind is its command's with this bit set */
#define EP_KIND_MAX_COMMAND 0x3Fu /* commands are 0x01..0x3F; 0x10..0x3F are for adaptation */

#define EP_ERR_BAD_CRC 1
#define EP_ERR_TRUNCATED 2
#define EP_ERR_TOO_LONG 3
#define EP_ERR_UNKNOWN_COMMAND 4
#define EP_ERR_BAD_LENGTH 5
#define EP_ERR_BAD_VERSION 6
#define EP_ERR_MODEL_ERROR 7

/* A command handler: `in` holds the request's n payload bytes; write at most EP_PROTO_MAX_PAYLOAD
 * bytes to `out` and set *out_n. Return 0 for a normal response, or an EP_ERR_* code: then `out`
 * holds the error frame's ASCII message (may be empty). */
typedef int (*ep_command_fn)(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n);

/* Handles kind (0x01..0x3F) with fn from now on (NULL removes it). Returns 0, or -1 for a bad kind. */
int ep_protocol_register(uint8_t kind, ep_command_fn fn);

/* Waits for the next frame, answers it with exactly one frame and returns the command's kind,
 * or -1 when the frame was rejected (an error frame was sent). */
int ep_protocol_serve_one(void);

/* Sends one frame. */
void ep_protocol_send(uint8_t kind, const uint8_t *payload, uint32_t n);
void ep_protocol_send_error(uint8_t code, const char *message);

/* CRC-32 (IEEE 802.3, zlib's) of n bytes continuing from crc (start with 0). */
uint32_t ep_crc32(uint32_t crc, const uint8_t *data, uint32_t n);

#endif /* EP_PROTOCOL_H_ */
