"""The device firmware and its protocol (firmware/PROTOCOL.md) on every emulated device.

The digits CNN is compiled once for cortex-m7 (pruned to 80%: dead and block4 formats) and its
int8 .tflite once more for cortex-m4, cortex-m55 and arm64; build_firmware makes each device's
program and open_link runs it (qemu-system-arm, or qemu-aarch64 for the arm64 runner). Checked:
`info` against model.h, `infer` bit-exact with TFLite Micro, `bench` against `infer`'s instruction
count, and fuzzing: every malformed frame gets its error frame and the device still answers.
"""

from __future__ import annotations

import re
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgeprune.device.firmware import BOARDS, FirmwareTooBig, build_firmware
from edgeprune.device.link import IDLE_MARKERS, open_link
from edgeprune.device.protocol import (
    CMD_BENCH, CMD_EXIT, CMD_INFER, CMD_INFO, ERR_BAD_CRC, ERR_BAD_LENGTH, ERR_BAD_VERSION, ERR_TOO_LONG,
    ERR_TRUNCATED, ERR_UNKNOWN_COMMAND, KIND_ERROR, MAX_PAYLOAD, DeviceError, FrameDecoder, encode_frame,
)
from kernels_support import tflm

TARGETS = ["cortex-m7", "cortex-m4", "cortex-m55", "arm64"]
SAMPLES = 32
READ_TIMEOUT = 10.0  # seconds for any one answer: a silent device fails the test, never hangs it


@pytest.fixture(scope="session")
def builds(tmp_path_factory):
    """target -> (model folder, FirmwareBuild): the digits model compiled and its firmware built."""
    from edgeprune.api import CompileOptions, compile_model
    from edgeprune.examples import save_torchscript, train_digits_cnn

    root = tmp_path_factory.mktemp("firmware_protocol")
    module, _ = train_digits_cnn(epochs=5, seed=0, quiet=True)  # 97% accurate already; the test is the device
    save_torchscript(module, root / "model.pt")
    compile_model(CompileOptions(model=root / "model.pt", out=root / "cortex-m7", data="digits", target="cortex-m7",
                                 sparsity=0.8, finetune_epochs=0, quiet=True))
    out = {}
    for target in TARGETS:
        folder = root / target
        if target != "cortex-m7":  # the same int8 model, the back half only
            try:
                compile_model(CompileOptions(model=root / "cortex-m7" / "model.tflite", out=folder, target=target,
                                             quiet=True))
            except Exception as e:  # noqa: BLE001  (the compiler is being changed; say so and go on)
                if target == "arm64":
                    raise
                warnings.warn(f"compiling for {target} failed ({type(e).__name__}: {e}); using the cortex-m7 model.c")
                shutil.copytree(root / "cortex-m7", folder, ignore=shutil.ignore_patterns("fw"))
        out[target] = (folder, build_firmware(folder, target, out_dir=folder / "fw"))
    return out


@pytest.fixture(scope="session")
def digits_int8(builds):
    """SAMPLES test-split digits, quantized with the model's input parameters, NHWC int8."""
    from edgeprune.data import load_dataset

    header = (builds["cortex-m7"][0] / "model.h").read_text()
    scale = float(re.search(r"EP_MODEL_INPUT_SCALE ([0-9.e+-]+)f", header).group(1))
    zero_point = int(re.search(r"EP_MODEL_INPUT_ZERO_POINT (-?\d+)", header).group(1))
    x = load_dataset("digits").x_test[:SAMPLES].transpose(0, 2, 3, 1)
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def _model_h(folder: Path) -> dict[str, str]:
    return dict(re.findall(r"#define (EP_MODEL_\w+) (\S+)", (folder / "model.h").read_text()))


def test_info_round_trip(builds):
    folder, fw = builds["cortex-m7"]
    defs = _model_h(folder)
    with open_link(fw.elf.parent) as link:
        info = link.info()
    assert info["protocol"] == "1" and info["max_payload"] == str(MAX_PAYLOAD)
    assert info["model_hash"] == defs["EP_MODEL_HASH"].strip('"')
    for key, define in [("arena_bytes", "EP_MODEL_ARENA_SIZE"), ("input_bytes", "EP_MODEL_INPUT_SIZE"),
                        ("output_bytes", "EP_MODEL_OUTPUT_SIZE"), ("layers", "EP_MODEL_NUM_LAYERS")]:
        assert info[key] == defs[define], (key, info)
    assert len(info["layer_names"].split(",")) == int(defs["EP_MODEL_NUM_LAYERS"])
    assert (info["board"], info["backend"], info["cycle_counter"]) == ("qemu-mps2-an500", "dsp", "none")
    assert info["compiler"].startswith("gcc ") and "-mcpu=cortex-m7" in info["build_flags"]
    assert int(info["stack_bytes"]) == fw.stack_bytes == 16 * 1024
    assert 0 < int(info["stack_peak_bytes"]) < int(info["stack_bytes"])


@pytest.mark.parametrize("target", TARGETS)
def test_infer_bitexact_with_tflm(builds, digits_int8, target):
    folder, fw = builds[target]
    model = (folder / "model.tflite").read_bytes()
    counting = target in ("cortex-m7", "arm64")
    with open_link(fw.elf.parent, count_instructions=counting) as link:
        assert link.info()["board"] == fw.board
        for i, x in enumerate(digits_int8):
            y, count = link.infer(x.tobytes())
            expected = tflm(model, x[None]).reshape(-1)
            got = np.frombuffer(y, np.int8)
            assert np.array_equal(got, expected), f"{target} sample {i}: device {got} != TFLM {expected}"
            if counting:  # the model's instructions, between ep_region_begin/end
                assert count is not None and count > 10_000, (target, i, count)
            else:
                assert count is None, "QEMU has no cycle counter: the device must say so"
    assert link.exit_code == 0, f"{target}: the exit command should stop the emulator cleanly"


@pytest.mark.parametrize("target", ["cortex-m7", "arm64"])
def test_bench_layers_add_up_to_infer(builds, digits_int8, target):
    folder, fw = builds[target]
    layers = int(_model_h(folder)["EP_MODEL_NUM_LAYERS"])
    x = digits_int8[0].tobytes()
    with open_link(fw.elf.parent, count_instructions=True) as link:
        _, total = link.infer(x)
        counts, stack_peak = link.bench(x)
        _, again = link.infer(x)
        info = link.info()
    assert again == total, "instruction counts must be identical run after run"
    assert counts is not None and len(counts) == layers and all(c > 0 for c in counts), counts
    # Between the layers only the arena copies and the hooks run: the layers are almost all of it.
    assert 0.97 * total <= sum(counts) <= total, (sum(counts), total)
    assert 0 < stack_peak <= int(info["stack_peak_bytes"]) < int(info["stack_bytes"])


def test_protocol_overhead_under_one_percent(builds, digits_int8):
    """The device's own work per `infer` beyond the model (receive, CRC, answer) is under 1% of the
    model's instructions: a session's total minus its idle waits (ep_idle_begin/end), two session
    lengths, the difference per inference."""
    _, fw = builds["cortex-m7"]
    x = digits_int8[1].tobytes()
    with open_link(fw.elf.parent, count_instructions=True) as link:
        model = link.infer(x)[1]
    busy, waits = {}, {}
    for n in (1, 11):
        with open_link(fw.elf.parent, count_between=IDLE_MARKERS) as link:
            for _ in range(n):
                link.infer(x)
        busy[n] = link.total_instructions - sum(link.regions())
        waits[n] = len(link.regions())
    # Each wait also costs ~10 instructions outside the markers (call, return): how many waits
    # there are depends on the host's timing, so this varies a little (0.76% typically).
    overhead = (busy[11] - busy[1]) / 10 - model
    assert 0 < overhead < 0.01 * model, f"{overhead:.0f} instructions per infer, model {model}, waits {waits}"


# ---- fuzzing --------------------------------------------------------------------------------

def _no_magic(rng, n: int) -> bytes:
    """Random bytes without "EP" in them (nor a trailing "E"): no frame can start inside."""
    b = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    for i in range(len(b)):
        if b[i] == 0x50 and i > 0 and b[i - 1] == 0x45:
            b[i] = 0x51
    if b and b[-1] == 0x45:
        b[-1] = 0x46
    return bytes(b)


def expected_errors(data: bytes) -> list[int]:
    """The error codes the device sends for `data` followed by silence: PROTOCOL.md's parser, in
    Python (magic hunt, version, length, CRC), for byte streams with no valid frame in them."""
    codes, i, n = [], 0, len(data)
    while True:
        while True:  # hunt for "EP"; a lone "E" before silence is no frame
            if i >= n:
                return codes
            i += 1
            if data[i - 1] != 0x45:
                continue
            while i < n and data[i] == 0x45:
                i += 1
            if i >= n:
                return codes
            i += 1
            if data[i - 1] == 0x50:
                break
        if i >= n:
            return codes + [ERR_TRUNCATED]
        i += 1
        if data[i - 1] != 1:
            codes.append(ERR_BAD_VERSION)
            continue
        if i + 5 > n:
            return codes + [ERR_TRUNCATED]
        (length,) = struct.unpack_from("<I", data, i + 1)
        if length > MAX_PAYLOAD:
            i = min(n, i + 5 + length + 4)  # discarded as it comes; silence ends the discard
            codes.append(ERR_TOO_LONG)
            continue
        if i + 5 + length + 4 > n:
            return codes + [ERR_TRUNCATED]
        body = data[i - 1: i + 5 + length]
        assert struct.unpack_from("<I", data, i + 5 + length)[0] != zlib.crc32(body), "a valid frame by chance"
        codes.append(ERR_BAD_CRC)
        i += 5 + length + 4


FAST_CASES = ["raw_random", "garbage", "bad_crc", "bad_payload_bit", "bad_kind_bit", "unknown", "response_kind",
              "bad_length", "bad_version"]
# Slow under QEMU: the device waits out its 200 ms timeout, or 4 KiB crawl through the emulated UART.
SLOW_CASES = ["truncated", "too_long_silent", "magic_only", "too_long_exact"]


def _fuzz_case(rng, input_size: int, slow: bool):
    """(description, bytes to send, expected error codes in order), a slow case or a fast one."""
    kinds = SLOW_CASES if slow else FAST_CASES
    kind = kinds[int(rng.integers(len(kinds)))]
    good = encode_frame(CMD_INFER, rng.integers(-128, 128, input_size, dtype=np.int8).tobytes())
    if kind == "raw_random":  # anything, sometimes with a magic in it; the device's answers predicted
        data = bytearray(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes())
        if rng.random() < 0.5:
            at = int(rng.integers(len(data)))
            data[at:at] = b"EP"
        return kind, bytes(data), expected_errors(bytes(data))
    if kind == "garbage":
        return kind, _no_magic(rng, int(rng.integers(1, 300))), []
    if kind == "bad_crc":
        f = bytearray(good)
        f[-1 - int(rng.integers(4))] ^= 1 << int(rng.integers(8))
        return kind, bytes(f), [ERR_BAD_CRC]
    if kind == "bad_payload_bit":
        f = bytearray(good)
        f[8 + int(rng.integers(input_size))] ^= 1 << int(rng.integers(8))
        return kind, bytes(f), [ERR_BAD_CRC]
    if kind == "bad_kind_bit":
        f = bytearray(encode_frame(CMD_INFO))
        f[3] ^= 1 << int(rng.integers(8))
        return kind, bytes(f), [ERR_BAD_CRC]
    if kind == "unknown":
        k = int(rng.choice([0x00, 0x04, 0x0E, 0x10, 0x2A, 0x3F, 0x40, 0x7F, 0xC3]))
        return kind, encode_frame(k, _no_magic(rng, int(rng.integers(0, 50)))), [ERR_UNKNOWN_COMMAND]
    if kind == "response_kind":
        return kind, encode_frame(0x81, b""), [ERR_UNKNOWN_COMMAND]
    if kind == "bad_length":
        cmd = int(rng.choice([CMD_INFER, CMD_BENCH, CMD_INFO]))
        wrong = [0, 1, input_size - 1, input_size + 1, 300]
        n = int(rng.integers(1, 200)) if cmd == CMD_INFO else int(rng.choice(wrong))
        return kind, encode_frame(cmd, bytes(n)), [ERR_BAD_LENGTH]
    if kind == "bad_version":
        v = int(rng.choice([0, 2, 0x45, 0xFF]))
        f = encode_frame(CMD_INFO, b"", version=v)
        return kind, (f if b"EP" not in f[2:] else b"EP" + bytes([v])), [ERR_BAD_VERSION]
    if kind == "too_long_exact":  # the whole oversized frame arrives: TOO_LONG as soon as it is discarded
        n = MAX_PAYLOAD + 1 + int(rng.integers(200))
        return kind, b"EP" + struct.pack("<BBI", 1, CMD_INFER, n) + bytes(n + 4), [ERR_TOO_LONG]
    if kind == "too_long_silent":  # the length lies: the device discards until 200 ms of silence
        n = int(rng.choice([MAX_PAYLOAD + 1, 1 << 20, 0xFFFFFFFF]))
        return kind, b"EP" + struct.pack("<BBI", 1, CMD_INFER, n) + bytes(int(rng.integers(0, 100))), [ERR_TOO_LONG]
    if kind == "truncated":
        return kind, good[: int(rng.integers(3, len(good)))], [ERR_TRUNCATED]
    return kind, b"EP", [ERR_TRUNCATED]  # magic_only


@pytest.mark.parametrize("target, cases, slow_cases", [("cortex-m7", 300, 6), ("cortex-m4", 40, 1),
                                                       ("cortex-m55", 40, 1), ("arm64", 60, 3)])
def test_fuzzed_frames_get_error_frames_and_device_survives(builds, target, cases, slow_cases):
    folder, fw = builds[target]
    input_size = int(_model_h(folder)["EP_MODEL_INPUT_SIZE"])
    rng = np.random.default_rng(1234)
    slow_at = set(np.linspace(0, cases - 1, slow_cases).astype(int).tolist())
    with open_link(fw.elf.parent) as link:
        model_hash = link.info()["model_hash"]
        for i in range(cases):
            name, data, expected = _fuzz_case(rng, input_size, slow=i in slow_at)
            link.send_raw(data)
            for code in expected:
                frame = link.read_frame(READ_TIMEOUT)
                assert frame is not None, f"{target} case {i} ({name}): no answer, expected error {code}"
                assert frame.kind == KIND_ERROR and frame.error_code == code, \
                    f"{target} case {i} ({name}): got {frame}, expected error {code}"
            # The device still works: the next answer is the info response, nothing stray before it.
            assert link.info()["model_hash"] == model_hash, f"{target} case {i} ({name}): info failed afterwards"
        assert link.read_frame(0.3) is None, "the device sent a frame nobody asked for"
        with pytest.raises(DeviceError, match="BAD_LENGTH"):
            link.request(CMD_INFER, bytes(input_size + 1))
    assert link.exit_code == 0


def test_expected_errors_model():
    info = encode_frame(CMD_INFO)
    assert expected_errors(b"xxEEzz") == [] and expected_errors(b"E") == []
    assert expected_errors(b"EP") == [ERR_TRUNCATED] and expected_errors(b"EEP\x02") == [ERR_BAD_VERSION]
    assert expected_errors(info[:-1]) == [ERR_TRUNCATED]
    assert expected_errors(info[:-1] + bytes([info[-1] ^ 1]) + b"EP\x03") == [ERR_BAD_CRC, ERR_BAD_VERSION]
    assert expected_errors(b"EP\x01\x02" + struct.pack("<I", 5000) + bytes(5004) + b"EP\x00") == [ERR_TOO_LONG,
                                                                                                 ERR_BAD_VERSION]


def test_frame_codec_round_trip():
    rng = np.random.default_rng(0)
    frames = [(int(k), rng.integers(0, 256, int(n), dtype=np.uint8).tobytes())
              for k, n in zip(rng.integers(0, 256, 50), rng.integers(0, MAX_PAYLOAD + 1, 50))]
    stream = b"".join(_no_magic(rng, 7) + encode_frame(k, p) for k, p in frames)
    decoder = FrameDecoder()
    got = []
    for start in range(0, len(stream), 997):  # arbitrary chunking
        got += [(f.kind, f.payload) for f in decoder.feed(stream[start:start + 997])]
    assert got == frames and decoder.pending == 0
    assert encode_frame(CMD_EXIT) == b"EP\x01\x0f\0\0\0\0" + struct.pack("<I", zlib.crc32(b"\x01\x0f\0\0\0\0"))


def test_model_too_big_for_the_board_fails_at_link_time(builds, tmp_path):
    """A model whose constants exceed the board's flash: one clear line, nothing written."""
    folder, _ = builds["cortex-m4"]
    big = tmp_path / "big"
    big.mkdir()
    (big / "model.h").write_text((folder / "model.h").read_text())
    # 600 KB of extra constants that the model really uses: over the STM32F446 profile's 512 KiB.
    src = (folder / "model.c").read_text()
    ballast = "static const unsigned char ep_test_ballast[600000] = {1};\n"
    src = src.replace("void ep_model_init(void)\n{", ballast + "void ep_model_init(void)\n{\n"
                      "    (void)*(volatile const unsigned char *)ep_test_ballast;", 1)
    (big / "model.c").write_text(src)
    with pytest.raises(FirmwareTooBig, match=r"model does not fit stm32f446 flash: needs \d+ bytes, has 524288"):
        build_firmware(big, "cortex-m4", board="qemu-mps2-an386")
    assert not [p.name for p in big.iterdir() if p.name.startswith((".firmware", "firmware"))]
    assert BOARDS["stm32f746-disco"].flash_bytes == 1 << 20


def test_stm32f746_disco_builds(builds):
    folder, _ = builds["cortex-m7"]
    fw = build_firmware(folder, "cortex-m7", out_dir=folder / "disco", board="stm32f746-disco")
    assert fw.bin.stat().st_size >= fw.flash_bytes and fw.hex.exists()
    from elftools.elf.elffile import ELFFile

    with open(fw.elf, "rb") as f:
        elf = ELFFile(f)
        assert elf.get_section_by_name(".vectors")["sh_addr"] == 0x08000000
        names = {s.name for s in elf.get_section_by_name(".symtab").iter_symbols()}
    assert "ep_protocol_serve_one" in names and not names & {"printf", "_write", "initialise_monitor_handles"}
