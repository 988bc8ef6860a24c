"""Persistence of adapted parameters (issue 6 item 3): A/B flash slots surviving power cuts.

The firmware is built with the store (build_firmware(..., adaptation=True)) for a small int8 model
(one FULLY_CONNECTED layer written with tflite_writer: the store does not care what the model is).
Under QEMU the slots live in a host file (firmware/flash_qemu.c): every flash erase chunk or
program page is one semihosting write, and with a flash gate (a FIFO) the firmware reads one byte
before each of them, so the test lets exactly k operations through, then SIGKILLs QEMU: every
phase of a save (before the erase, mid-erase, mid-payload, between header body and magic, after)
and of a rollback is cut. After each cut the firmware restarts on the same file and must boot,
answer `store_load` with the old blob or the new one (exactly: the new one only once its magic was
programmed), never garbage, never the factory weights while a good blob existed (a rollback may
give the factory weights or the old blob), and `infer` must still give the same answer.
Damaged files (random bytes, a slot of another model, truncated, an absurd length) fall back.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
import time
from pathlib import Path

import numpy as np
import pytest

from edgeprune.device.firmware import BOARDS, DEFAULT_BACKENDS, build_firmware
from edgeprune.device.link import Arm64Link, QemuLink, open_link
from edgeprune.device.param_store import (
    CMD_STORE_ROLLBACK, CMD_STORE_SAVE, HEADER_BYTES, LAYOUTS, make_slot, read_store_file, store_build,
    store_info, store_load, store_rollback, store_save,
)
from edgeprune.device.protocol import ERR_TOO_LONG, DeviceError, encode_frame

SEED = 6
INPUT = 64
KILL_SAVES = 7  # saves cut at 6-7 points each, plus the rollbacks: 40+ kill points


def _fc_model(path: Path) -> Path:
    """A one-layer int8 model (64 -> 10) as a .tflite."""
    from edgeprune.compile import tflite_writer as W

    rng = np.random.default_rng(SEED)
    w = rng.integers(-127, 128, (10, INPUT)).astype(np.int8)
    tensors = [
        W.TensorSpec((1, INPUT), np.int8, 1 / 255.0, -128),
        W.TensorSpec((10, INPUT), np.int8, np.full(10, 0.01, np.float32), np.zeros(10, np.int64), 0, data=w),
        W.TensorSpec((10,), np.int32, np.full(10, 0.01 / 255.0, np.float32), np.zeros(10, np.int64), 0,
                     data=rng.integers(-300, 300, 10).astype(np.int32)),
        W.TensorSpec((1, 10), np.int8, 0.1, 0),
    ]
    ops = [W.OpSpec("FULLY_CONNECTED", [0, 1, 2], [3], W.fully_connected_options())]
    path.write_bytes(W.write_tflite(W.ModelSpec(tensors, ops, [0], [3])))
    return path


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    """(FirmwareBuild with the store, model hash, the plain build) for cortex-m7."""
    from edgeprune.api import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("param_store")
    folder = root / "model"
    compile_model(CompileOptions(model=_fc_model(root / "fc.tflite"), out=folder, target="cortex-m7", quiet=True,
                                 firmware=False))
    model_hash = (folder / "model.h").read_text().split('#define EP_MODEL_HASH "')[1][:16]
    store = build_firmware(folder, "cortex-m7", out_dir=root / "fw", adaptation=True)
    plain = build_firmware(folder, "cortex-m7", out_dir=root / "plain")
    return store, model_hash, plain


class Gate:
    """A FIFO the firmware reads one byte from before each flash operation."""

    def __init__(self, path: Path):
        os.mkfifo(path)
        self.path = path
        self.fd = os.open(path, os.O_RDWR)  # never blocks, and keeps a writer so the firmware's open doesn't

    def allow(self, n: int) -> None:
        os.write(self.fd, b"\0" * n)

    def pending(self) -> int:
        buf = bytearray(4)
        fcntl.ioctl(self.fd, termios.FIONREAD, buf)
        return struct.unpack("<i", buf)[0]

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink()


def _start(fw, store: Path, gate: Gate | None = None) -> QemuLink:
    build = fw[0]
    return QemuLink(build.elf, build.machine, store=store, flash_gate=gate.path if gate else None)


def _ops_for_save(n: int, slot_bytes: int) -> int:
    """Flash operations of one save (firmware/flash_qemu.c granularity): the erase chunks, the
    payload pages (+1 for a partial last word), the header body and the magic."""
    whole = n // 4 * 4
    return slot_bytes // 4096 + -(-whole // 256) + (n % 4 != 0) + 2


def _cut(fw, store: Path, tmp: Path, kind: int, payload: bytes, k: int, name: str) -> bool:
    """Runs one command on the firmware with only k flash operations allowed, then SIGKILLs QEMU
    once they are done. Returns True when the command finished (k was enough)."""
    gate = Gate(tmp / f"gate-{name}")
    link = _start(fw, store, gate)
    try:
        gate.allow(k)
        link.send_raw(encode_frame(kind, payload))
        deadline = time.monotonic() + 20
        answered = None
        while answered is None and gate.pending() > 0 and time.monotonic() < deadline:
            answered = link.read_frame(0.01)
        assert gate.pending() == 0 or answered is not None, f"{name}: the firmware stopped taking flash operations"
        if answered is None:
            answered = link.read_frame(0.05)  # lets operation k-1 finish; answers only if it was the last
        link._proc.kill()  # the power cut
        link._proc.wait()
        return answered is not None
    finally:
        link.close()
        gate.close()


def _check_boot(fw, store: Path, allowed: dict, x: bytes, y_ref: bytes, name: str):
    """Restarts on the same file; the loaded blob must be one of allowed (name -> blob or None)."""
    with _start(fw, store) as link:
        blob = store_load(link)
        info = store_info(link)
        y, _ = link.infer(x)
    which = [k for k, v in allowed.items() if v == blob]
    assert which, (f"{name}: store_load gave {'factory' if blob is None else f'{len(blob)} B'} (not one of "
                   f"{list(allowed)}); slots {info['slots']}")
    assert y == y_ref, f"{name}: infer changed after the cut"
    assert info["booted"] == info["active"], f"{name}: {info}"
    return blob, which[0]


def test_save_load_rollback_and_file_backing(fw, tmp_path):
    build, model_hash, _ = fw
    slot_bytes = LAYOUTS[build.board].slot_bytes
    store = tmp_path / "store.bin"
    blobs = [bytes(np.random.default_rng(SEED + i).integers(0, 256, n, dtype=np.uint8)) for i, n in
             enumerate([1, 4093, slot_bytes - HEADER_BYTES, 0])]
    with _start(fw, store) as link:
        info = store_info(link)
        assert info["persistent"] and info["booted"] is None and store_load(link) is None
        assert store_save(link, blobs[0]) == ("A", 1)
        assert store_load(link) == blobs[0]
        assert store_save(link, blobs[1]) == ("B", 2)  # the older slot: A stays as the fallback
        assert store_load(link) == blobs[1]
        info = store_info(link)
        assert [s["state"] for s in info["slots"]] == ["valid", "valid"] and info["active"] == "B"
        with pytest.raises(DeviceError) as e:  # longer than one frame: the C API saves those
            store_save(link, bytes(5000))
        assert e.value.code == ERR_TOO_LONG
        assert store_load(link) == blobs[1]
    assert store.stat().st_size == 2 * slot_bytes
    a, b = read_store_file(store, slot_bytes, model_hash)  # the host parses what the firmware wrote
    assert (a.state, a.sequence, a.payload) == ("valid", 1, blobs[0])
    assert (b.state, b.sequence, b.payload) == ("valid", 2, blobs[1])
    with _start(fw, store) as link:  # survives a restart
        assert store_info(link)["booted"] == "B" and store_load(link) == blobs[1]
        assert store_save(link, blobs[3]) == ("A", 3)  # an empty blob is a blob, not the factory weights
        assert store_load(link) == b""
        store_rollback(link)
        assert store_load(link) is None
        assert [s["state"] for s in store_info(link)["slots"]] == ["empty", "empty"]
        store_rollback(link)  # idempotent
    with _start(fw, store) as link:
        assert store_info(link)["booted"] is None and store_load(link) is None
    # The largest blob fits exactly; written through the host file (larger than one frame).
    store.write_bytes(make_slot(blobs[2], model_hash, 7, slot_bytes) + b"\xff" * slot_bytes)
    with _start(fw, store) as link:
        assert store_load(link) == blobs[2]
        assert store_save(link, blobs[0]) == ("B", 8)
    # open_link's default: <build dir>/param_store.bin, so state survives across invocations.
    default = build.elf.parent / "param_store.bin"
    default.unlink(missing_ok=True)
    with open_link(build.elf.parent) as link:
        store_save(link, b"persist me")
    with open_link(build.elf.parent) as link:
        assert store_load(link) == b"persist me"
    with open_link(build.elf.parent, store=False) as link:  # volatile: no file
        assert not store_info(link)["persistent"] and store_load(link) is None


def test_power_cuts_during_save_and_rollback(fw, tmp_path):
    """SIGKILL at 40+ exact points: every phase of save and rollback."""
    build, model_hash, _ = fw
    slot_bytes = LAYOUTS[build.board].slot_bytes
    erase_ops = slot_bytes // 4096
    rng = np.random.default_rng(SEED)
    store = tmp_path / "store.bin"
    x = bytes(rng.integers(-128, 128, INPUT, dtype=np.int8).view(np.uint8))
    with _start(fw, store) as link:
        y_ref, _ = link.infer(x)
        # Measure one save's operations through the gate: the formula of _ops_for_save holds.
    gate = Gate(tmp_path / "gate-measure")
    with _start(fw, store, gate) as link:
        gate.allow(10_000)
        store_save(link, b"123456789")
        assert 10_000 - gate.pending() == _ops_for_save(9, slot_bytes)
        store_rollback(link)
        assert 10_000 - gate.pending() == _ops_for_save(9, slot_bytes) + erase_ops  # A was written, B empty
    gate.close()

    good = None  # what the device holds: None = factory weights
    outcomes: dict[str, int] = {}
    points = 0
    lengths = [int(n) for n in rng.integers(1, 4097, KILL_SAVES)]
    lengths[0], lengths[1] = 4096, 1023  # a whole last page; a partial last word
    for i, n in enumerate(lengths):
        new = bytes(rng.integers(0, 256, n, dtype=np.uint8))
        total = _ops_for_save(n, slot_bytes)
        payload_end = total - 2
        ks = sorted({0, int(rng.integers(1, erase_ops)), erase_ops, int(rng.integers(erase_ops + 1, payload_end + 1)),
                     payload_end, total - 1, total})
        for k in ks:
            name = f"save {i} ({n} B), cut after {k}/{total} flash operations"
            finished = _cut(fw, store, tmp_path, CMD_STORE_SAVE, new, k, f"s{i}-{k}")
            expect = new if k >= total else good  # the magic, programmed last, commits the slot
            blob, which = _check_boot(fw, store, {"old": good, "new": new}, x, y_ref, name)
            assert blob == expect, f"{name}: got the {which} blob"
            assert finished == (k >= total), name
            phase = ("before erase" if k == 0 else "mid-erase" if k < erase_ops else "before payload"
                     if k == erase_ops else "mid-payload" if k < payload_end else "before header" if k == payload_end
                     else "header body, no magic" if k == total - 1 else "after")
            outcomes[f"{phase}: {which}"] = outcomes.get(f"{phase}: {which}", 0) + 1
            points += 1
            good = blob
        if i in (2, 5):  # a rollback cut at several points, then completed
            before = good
            for k in sorted({0, int(rng.integers(1, erase_ops)), erase_ops, erase_ops + 1,
                             int(rng.integers(erase_ops + 2, 2 * erase_ops))}):
                name = f"rollback after save {i}, cut after {k} flash operations"
                _cut(fw, store, tmp_path, CMD_STORE_ROLLBACK, b"", k, f"r{i}-{k}")
                blob, which = _check_boot(fw, store, {"old": before, "factory": None}, x, y_ref, name)
                outcomes[f"rollback: {which}"] = outcomes.get(f"rollback: {which}", 0) + 1
                points += 1
                if blob is None:
                    break
            with _start(fw, store) as link:
                store_rollback(link)
            good = None
    print(f"\n{points} power cuts: {dict(sorted(outcomes.items()))}")
    assert points >= 40


def test_random_time_kills(fw, tmp_path):
    """Kills at wall-clock-random moments during a save (no gate): always the old blob or the new."""
    rng = np.random.default_rng(SEED + 1)
    store = tmp_path / "store.bin"
    x = bytes(INPUT)
    with _start(fw, store) as link:
        y_ref, _ = link.infer(x)
        t = time.monotonic()
        store_save(link, bytes(4000))
        save_s = time.monotonic() - t
    good = bytes(4000)
    seen: dict[str, int] = {}
    for i in range(10):
        new = bytes(rng.integers(0, 256, int(rng.integers(1, 4097)), dtype=np.uint8))
        link = _start(fw, store)
        store_info(link)  # booted and serving
        link.send_raw(encode_frame(CMD_STORE_SAVE, new))
        time.sleep(float(rng.uniform(0, 1.5 * save_s)))
        link._proc.kill()
        link._proc.wait()
        link.close()
        good, which = _check_boot(fw, store, {"old": good, "new": new}, x, y_ref, f"random kill {i}")
        seen[which] = seen.get(which, 0) + 1
    print(f"\none save takes {save_s * 1e3:.1f} ms; random-time kills gave {seen}")


def test_damaged_files_fall_back(fw, tmp_path):
    build, model_hash, _ = fw
    slot_bytes = LAYOUTS[build.board].slot_bytes
    rng = np.random.default_rng(SEED + 2)
    x = bytes(INPUT)
    store = tmp_path / "store.bin"
    with _start(fw, store) as link:
        y_ref, _ = link.infer(x)
    ours_a, ours_b = b"ours, older", b"ours, newer!"
    slot_a = make_slot(ours_a, model_hash, 1, slot_bytes)
    slot_b = make_slot(ours_b, model_hash, 2, slot_bytes)
    other = make_slot(b"another model's parameters", "0123456789abcdef", 99, slot_bytes)
    huge = bytearray(slot_a)
    huge[16:20] = struct.pack("<I", 0xFFFFFFF0)  # a length past the slot: checked before the CRC reads that far
    cases = {
        "random bytes": (bytes(rng.integers(0, 256, 2 * slot_bytes, dtype=np.uint8)), None),
        "random bytes, short": (bytes(rng.integers(0, 256, 1000, dtype=np.uint8)), None),
        "empty file": (b"", None),
        "another model, newer, in A": (other + slot_b, ours_b),
        "another model only": (other + other, None),
        "truncated mid-B": (slot_a + slot_b[:HEADER_BYTES + 5], ours_a),
        "truncated mid-A header": (slot_a[:20], None),
        "B's payload flipped": (slot_a + slot_b[:40] + bytes([slot_b[40] ^ 1]) + slot_b[41:], ours_a),
        "absurd length": (bytes(huge) + b"\xff" * slot_bytes, None),
        "both valid": (slot_a + slot_b, ours_b),
        "older in B": (slot_b + make_slot(ours_a, model_hash, 1, slot_bytes), ours_b),
        "longer file": (slot_a + slot_b + b"junk" * 100, ours_b),
    }
    for name, (data, expect) in cases.items():
        store.write_bytes(data)
        with _start(fw, store) as link:
            got = store_load(link)
            assert got == expect, f"{name}: loaded {got!r}, expected {expect!r}"
            assert link.infer(x)[0] == y_ref, name
            slot, seq = store_save(link, b"after " + name.encode())  # the store keeps working
            assert store_load(link) == b"after " + name.encode(), name
        assert store.stat().st_size >= 2 * slot_bytes, name  # padded like blank flash


def _store_code_bytes(elf: Path) -> int:
    """Bytes of the store's own functions and data in a linked ELF: the local symbols of
    param_store.c / flash_*.c and the global ep_store_* / ep_flash_* / ep_mirror* ones."""
    from elftools.elf.elffile import ELFFile

    total, in_store = 0, False
    with open(elf, "rb") as f:
        for sym in ELFFile(f).get_section_by_name(".symtab").iter_symbols():
            kind, bind = sym["st_info"]["type"], sym["st_info"]["bind"]
            if kind == "STT_FILE":
                in_store = sym.name == "param_store.c" or sym.name.startswith("flash_")
            elif kind in ("STT_FUNC", "STT_OBJECT") and sym["st_shndx"] != "SHN_UNDEF" and (
                    (bind == "STB_LOCAL" and in_store) or sym.name.startswith(("ep_store_", "ep_flash_", "ep_mirror"))):
                total += sym["st_size"]
    return total


def test_builds_and_overhead(fw, tmp_path):
    """The store is only in adaptation builds; it builds (and persists) on every board that has one."""
    from elftools.elf.elffile import ELFFile

    build, _, plain = fw
    own = _store_code_bytes(build.elf)
    print(f"\nparameter store code: {own} B; adaptation build - plain build: {build.flash_bytes - plain.flash_bytes} B "
          f"flash, {build.sram_bytes - plain.sram_bytes} B SRAM on cortex-m7")
    assert 0 < own < 3072
    with open(plain.elf, "rb") as f:
        assert ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name("ep_store_init") is None
    assert _store_code_bytes(plain.elf) == 0
    folder = build.elf.parent.parent / "model"
    for board in ("stm32f746-disco", "qemu-mps2-an386", "qemu-mps3-an547"):
        b = BOARDS[board]
        fwb = build_firmware(folder, b.target, out_dir=tmp_path / board, board=board, adaptation=True,
                             backend=DEFAULT_BACKENDS[b.target])
        assert fwb.flash_bytes > 0
        with open(fwb.elf, "rb") as f:
            start = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name("__ep_store_start__")[0]["st_value"]
        layout = LAYOUTS[board]
        flash_end = {"stm32f746-disco": 0x08100000, "qemu-mps2-an386": 0x80000, "qemu-mps3-an547": 0x01200000}[board]
        assert start == flash_end - 2 * layout.slot_bytes, board
        if b.machine:
            with QemuLink(fwb.elf, b.machine, store=tmp_path / f"{board}.bin") as link:
                assert store_save(link, b"on " + board.encode()) == ("A", 1)
            with QemuLink(fwb.elf, b.machine, store=tmp_path / f"{board}.bin") as link:
                assert store_load(link) == b"on " + board.encode()
    assert store_build("stm32f746-disco")[1][1] == f"EP_STORE_SLOT_BYTES={256 * 1024}u"
    # The arm64 runner keeps its slots in a file too (flash_posix.c).
    runner = build_firmware(folder, "arm64", out_dir=tmp_path / "arm64", adaptation=True, backend="neon_dot")
    with Arm64Link(runner.elf, store=tmp_path / "arm64.bin") as link:
        assert store_load(link) is None and store_save(link, b"on arm64") == ("A", 1)
    with Arm64Link(runner.elf, store=tmp_path / "arm64.bin") as link:
        assert store_info(link)["booted"] == "A" and store_load(link) == b"on arm64"
    a, b = read_store_file(tmp_path / "arm64.bin", LAYOUTS["linux-arm64"].slot_bytes, fw[1])
    assert a.payload == b"on arm64" and b.state == "empty"
