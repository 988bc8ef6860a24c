"""Persistence of adapted parameters (issue 6): the host side of firmware/param_store.[ch].

Two A/B slots at the end of the board's flash, each EP_STORE_SLOT_BYTES with a 32-byte header
(magic, version, model hash, length, sequence, CRC-32) and an opaque payload. Under QEMU the region
is backed by a host file (firmware/flash_qemu.c, semihosting): `QemuLink(elf, machine, store=path)`,
by default `<build dir>/param_store.bin` through `open_link`, so the state survives restarts. The
arm64 runner keeps them in a file too (firmware/flash_posix.c, `Arm64Link(runner, store=path)`).

    with open_link("build/model") as link:                 # firmware built with adaptation=True
        slot, seq = store_save(link, blob)                  # persists blob; it is active from now on
        store_load(link)                                    # the active blob, or None (factory weights)
        store_info(link)                                    # both slots' state, which one booted
        store_rollback(link)                                # back to the factory weights
    read_store_file("build/model/param_store.bin", slot_bytes)   # the same state, parsed on the host
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from edgeprune.errors import EdgepruneError

KiB = 1024
MAGIC = 0x53505045  # "EPPS"
VERSION = 1
HEADER = struct.Struct("<IHH8sIIII")  # magic, version, header bytes, hash, length, sequence, reserved, crc
HEADER_BYTES = HEADER.size  # 32
NO_SLOT = 0xFF

CMD_STORE_SAVE = 0x30
CMD_STORE_LOAD = 0x31
CMD_STORE_INFO = 0x32
CMD_STORE_ROLLBACK = 0x33
ERR_STORE = 8

STATES = {0: "empty", 1: "valid", 2: "corrupt", 3: "other_model"}
STORE_FILE = "param_store.bin"


@dataclass(frozen=True)
class StoreLayout:
    slot_bytes: int  # one slot = one erase unit of the part
    backend: tuple[str, ...]  # firmware/ sources of the flash backend
    defines: tuple[str, ...] = ()
    linker_reserved: bool = True  # a Cortex-M board: its linker script reserves the slots at the end of FLASH


# Slot sizes: the device saves the trainable region's non-zero weights and biases in float32
# (firmware/adapt.h): 11,296 B for the digits model's region (56,872 B if it were dense). 64 KiB slots
# leave room for regions five times larger on the 1 MiB and 2 MiB parts (12.5% / 6% of the flash); the
# 512 KiB M4 profile gets 32 KiB slots (12.5% of its flash). On the STM32F746 a
# slot must be a whole erase sector and the last ones are 256 KiB: the store takes sectors 6 and 7.
_QEMU = ("flash_qemu.c", "flash_mirror.c")  # a RAM mirror written through to a host file
LAYOUTS: dict[str, StoreLayout] = {
    "qemu-mps2-an500": StoreLayout(64 * KiB, _QEMU),
    "qemu-mps2-an386": StoreLayout(32 * KiB, _QEMU),
    "qemu-mps3-an547": StoreLayout(64 * KiB, _QEMU),
    "stm32f746-disco": StoreLayout(256 * KiB, ("flash_stm32f7.c",)),
    "linux-arm64": StoreLayout(64 * KiB, ("flash_posix.c", "flash_mirror.c"), linker_reserved=False),  # a file (EP_STORE_FILE)
}


def store_build(board: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], int]:
    """(firmware sources, defines, link flags, flash bytes reserved) that add the store to a
    firmware for `board`."""
    layout = LAYOUTS.get(board)
    if layout is None:
        raise EdgepruneError(f"board '{board}' has no parameter store; boards with one: {', '.join(LAYOUTS)}")
    defines = ("EP_WITH_STORE", f"EP_STORE_SLOT_BYTES={layout.slot_bytes}u", *layout.defines)
    reserved = 2 * layout.slot_bytes if layout.linker_reserved else 0
    link = (f"-Wl,--defsym=__ep_store_bytes__={reserved}",) if reserved else ()
    return ("param_store.c", *layout.backend), defines, link, reserved


def model_hash_bytes(model_hash: str) -> bytes:
    """EP_MODEL_HASH (16 hex digits) as the header's 8 bytes."""
    try:
        b = bytes.fromhex(model_hash)
    except ValueError:
        b = b""
    if len(b) != 8:
        raise EdgepruneError(f"model hash must be 16 hex digits, got {model_hash!r}")
    return b


@dataclass(frozen=True)
class Slot:
    state: str  # empty | valid | corrupt | other_model (valid data of another model)
    sequence: int
    length: int
    payload: bytes | None  # the blob when the slot is valid or other_model


def make_slot(blob: bytes, model_hash: str, sequence: int, slot_bytes: int) -> bytes:
    """A whole slot image as the firmware writes it (erased bytes 0xFF after the payload)."""
    if len(blob) > slot_bytes - HEADER_BYTES:
        raise EdgepruneError(f"blob of {len(blob)} B does not fit a {slot_bytes} B slot")
    head = HEADER.pack(MAGIC, VERSION, HEADER_BYTES, model_hash_bytes(model_hash), len(blob), sequence, 0xFFFFFFFF, 0)
    crc = zlib.crc32(bytes(blob), zlib.crc32(head[:28])) & 0xFFFFFFFF
    head = head[:28] + struct.pack("<I", crc)
    return (head + bytes(blob)).ljust(slot_bytes, b"\xff")


def parse_slot(data: bytes, model_hash: str) -> Slot:
    """The firmware's validation of one slot image (param_store.c check_slot)."""
    if len(data) < HEADER_BYTES:
        return Slot("corrupt", 0, 0, None)
    magic, version, hbytes, mhash, length, seq, _, crc = HEADER.unpack_from(data)
    if magic == 0xFFFFFFFF:
        return Slot("empty", 0, 0, None)
    if magic != MAGIC or version != VERSION or hbytes != HEADER_BYTES or length > len(data) - HEADER_BYTES:
        return Slot("corrupt", 0, 0, None)
    payload = bytes(data[HEADER_BYTES:HEADER_BYTES + length])
    if zlib.crc32(payload, zlib.crc32(bytes(data[:28]))) & 0xFFFFFFFF != crc:
        return Slot("corrupt", 0, 0, None)
    return Slot("valid" if mhash == model_hash_bytes(model_hash) else "other_model", seq, length, payload)


def read_store_file(path: str | Path, slot_bytes: int, model_hash: str) -> tuple[Slot, Slot]:
    """Both slots of a host-side store file (missing bytes read as erased flash)."""
    p = Path(path)
    data = p.read_bytes() if p.exists() else b""
    data = data[:2 * slot_bytes].ljust(2 * slot_bytes, b"\xff")
    return parse_slot(data[:slot_bytes], model_hash), parse_slot(data[slot_bytes:], model_hash)


def default_store_path(build_dir: str | Path) -> Path:
    return Path(build_dir) / STORE_FILE


# ---- commands over a Link (edgeprune.device.link)
def store_save(link, blob: bytes, timeout: float = 60) -> tuple[str, int]:
    """Persist blob on the device: ("A" or "B", sequence number written)."""
    out = link.request(CMD_STORE_SAVE, bytes(blob), timeout)
    if len(out) != 5:
        raise EdgepruneError(f"store_save answer has {len(out)} bytes, expected 5")
    return "AB"[out[0]], struct.unpack_from("<I", out, 1)[0]


def store_load(link, timeout: float = 30) -> bytes | None:
    """The device's active blob, or None when it runs the factory weights."""
    chunks: list[bytes] = []
    got = 0
    while True:
        out = link.request(CMD_STORE_LOAD, struct.pack("<I", got), timeout)
        if len(out) < 9:
            raise EdgepruneError(f"store_load answer has {len(out)} bytes, expected at least 9")
        slot, _, total = out[0], *struct.unpack_from("<II", out, 1)
        if slot == NO_SLOT:
            return None
        chunks.append(out[9:])
        got += len(out) - 9
        if got >= total or len(out) == 9:
            return b"".join(chunks)


def store_info(link, timeout: float = 30) -> dict:
    """{"slots": [{"state", "sequence", "length"} x 2], "active", "booted": "A"|"B"|None,
    "slot_bytes", "persistent": bool (False: no store file, the slots live only while it runs)}."""
    out = link.request(CMD_STORE_INFO, b"", timeout)
    if len(out) != 25:
        raise EdgepruneError(f"store_info answer has {len(out)} bytes, expected 25")
    slots = []
    for s in range(2):
        state, seq, length = struct.unpack_from("<BII", out, 9 * s)
        slots.append({"state": STATES.get(state, str(state)), "sequence": seq, "length": length})

    def name(b: int) -> str | None:
        return None if b == NO_SLOT else "AB"[b]

    flash = struct.unpack_from("<b", out, 24)[0]
    return {"slots": slots, "active": name(out[18]), "booted": name(out[19]),
            "slot_bytes": struct.unpack_from("<I", out, 20)[0], "persistent": flash == 1, "flash": flash >= 0}


def store_rollback(link, timeout: float = 60) -> None:
    """Invalidate both slots: the device runs (and boots) the factory weights."""
    link.request(CMD_STORE_ROLLBACK, b"", timeout)
