"""The host side of the host-device protocol (firmware/PROTOCOL.md, wire format version 1).

    frame = encode_frame(CMD_INFO, b"")
    decoder = FrameDecoder()
    for f in decoder.feed(received_bytes):   # Frame(kind, payload), complete frames only
        ...

The decoder resynchronises on the magic after garbage and drops frames with a bad CRC or an
oversized length (counting them in `dropped`), so a noisy line never wedges the host either.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Iterator

from edgeprune.errors import EdgepruneError

MAGIC = b"EP"
VERSION = 1
MAX_PAYLOAD = 4096  # EP_PROTO_MAX_PAYLOAD on every device, unless the model's tensors need more (`info`)
HOST_MAX_PAYLOAD = 1 << 24  # what the host accepts from a device (it has the memory)
BYTE_TIMEOUT_S = 0.2  # the device's inter-byte timeout inside a frame (device clock)
HEADER = struct.Struct("<2sBBI")  # magic, version, kind, length

CMD_INFO = 0x01
CMD_INFER = 0x02
CMD_BENCH = 0x03
CMD_EXIT = 0x0F
KIND_ERROR = 0x7F
RESPONSE_BIT = 0x80
ADAPTATION_KINDS = range(0x10, 0x40)  # reserved for on-device adaptation

ERR_BAD_CRC = 1
ERR_TRUNCATED = 2
ERR_TOO_LONG = 3
ERR_UNKNOWN_COMMAND = 4
ERR_BAD_LENGTH = 5
ERR_BAD_VERSION = 6
ERR_MODEL_ERROR = 7
ERROR_NAMES = {ERR_BAD_CRC: "BAD_CRC", ERR_TRUNCATED: "TRUNCATED", ERR_TOO_LONG: "TOO_LONG",
               ERR_UNKNOWN_COMMAND: "UNKNOWN_COMMAND", ERR_BAD_LENGTH: "BAD_LENGTH", ERR_BAD_VERSION: "BAD_VERSION",
               ERR_MODEL_ERROR: "MODEL_ERROR"}
NO_COUNTER = 0xFFFFFFFF  # cycles from a device without a cycle counter


class DeviceError(EdgepruneError):
    """The device answered with an error frame: `code` (ERR_*) and the device's `text`."""

    def __init__(self, code: int, text: str):
        self.code = code
        self.text = text
        name = ERROR_NAMES.get(code, f"error {code}")
        super().__init__(f"device error {name} ({code}): {text}" if text else f"device error {name} ({code})")


@dataclass(frozen=True)
class Frame:
    kind: int
    payload: bytes

    @property
    def is_error(self) -> bool:
        return self.kind == KIND_ERROR

    @property
    def error_code(self) -> int | None:
        return self.payload[0] if self.is_error and self.payload else None

    def raise_for_error(self) -> "Frame":
        if self.is_error:
            code = self.payload[0] if self.payload else 0
            raise DeviceError(code, self.payload[1:].decode("ascii", "replace"))
        return self


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_frame(kind: int, payload: bytes = b"", *, version: int = VERSION) -> bytes:
    """One frame: magic, version, kind, length, payload, CRC-32 of everything after the magic."""
    if not 0 <= kind <= 0xFF:
        raise ValueError(f"frame kind {kind} is not a byte")
    body = struct.pack("<BBI", version, kind, len(payload)) + bytes(payload)
    return MAGIC + body + struct.pack("<I", crc32(body))


class FrameDecoder:
    """Incremental decoder: feed() any chunks, get back the complete, valid frames."""

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.max_payload = max_payload
        self._buf = bytearray()
        self.dropped = 0  # frames or garbage runs skipped (bad CRC, bad version, oversized)

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> Iterator[Frame]:
        self._buf += data
        while True:
            start = self._buf.find(MAGIC)
            if start < 0:
                # Keep a trailing 'E': it may be the first half of the next magic.
                keep = 1 if self._buf[-1:] == MAGIC[:1] else 0
                if len(self._buf) > keep:
                    self.dropped += 1
                del self._buf[: len(self._buf) - keep]
                return
            if start > 0:
                self.dropped += 1
                del self._buf[:start]
            if len(self._buf) < HEADER.size:
                return
            _, version, kind, length = HEADER.unpack_from(self._buf)
            if version != VERSION or length > self.max_payload:
                self.dropped += 1
                del self._buf[:1]  # not a frame start after all: look for the next magic
                continue
            end = HEADER.size + length + 4
            if len(self._buf) < end:
                return
            body = bytes(self._buf[2: HEADER.size + length])
            (crc,) = struct.unpack_from("<I", self._buf, HEADER.size + length)
            if crc != crc32(body):
                self.dropped += 1
                del self._buf[:1]
                continue
            del self._buf[:end]
            yield Frame(kind, body[6:])


def parse_info(payload: bytes) -> dict[str, str]:
    """The `info` response: one key=value per line."""
    out: dict[str, str] = {}
    for line in payload.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_infer(payload: bytes, output_size: int) -> tuple[bytes, int | None]:
    """(output bytes, cycles or None) of an `infer` response."""
    if len(payload) != output_size + 4:
        raise EdgepruneError(f"infer response has {len(payload)} bytes, expected {output_size + 4}")
    (cycles,) = struct.unpack_from("<I", payload, output_size)
    return bytes(payload[:output_size]), None if cycles == NO_COUNTER else cycles


def parse_bench(payload: bytes) -> tuple[list[int] | None, int]:
    """(per-layer cycles or None without a counter, peak stack bytes) of a `bench` response."""
    if len(payload) < 8:
        raise EdgepruneError(f"bench response has {len(payload)} bytes, expected at least 8")
    (layers,) = struct.unpack_from("<I", payload)
    if len(payload) != 8 + 4 * layers:
        raise EdgepruneError(f"bench response has {len(payload)} bytes for {layers} layers")
    cycles = list(struct.unpack_from(f"<{layers}I", payload, 4))
    (peak,) = struct.unpack_from("<I", payload, 4 + 4 * layers)
    return (None if any(c == NO_COUNTER for c in cycles) else cycles), peak
