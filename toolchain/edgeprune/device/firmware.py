"""Build the device firmware for a compiled model folder: model.c + kernels_c (the target's
backend) + firmware/ (protocol server, transport, start-up) into one program.

Cortex-M targets give `firmware.elf`, `firmware.bin` and `firmware.hex`, linked with the board's
linker script (sized like the real part, so a model too big for the board fails here, at link
time, as it would on the board) and without newlib's stdio or semihosting library. arm64 gives
`runner`, a static Linux executable speaking the protocol on stdin/stdout (for qemu-aarch64 or a
phone's shell). `firmware.json` records what was built, for `open_link`.

    fw = build_firmware(Path("build/model"), "cortex-m7")         # board qemu-mps2-an500
    fw = build_firmware(Path("build/model"), "cortex-m7", board="stm32f746-disco")
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from edgeprune.device.build import (
    FIRMWARE, BuildError, _first_problem, backend_build, compile_objects, kernel_library, require_tool,
)
from edgeprune.errors import EdgepruneError

KiB = 1024
SECTION_FLAGS = ("-ffunction-sections", "-fdata-sections")  # with --gc-sections: only what is called is linked
MANIFEST = "firmware.json"


@dataclass(frozen=True)
class Board:
    name: str
    target: str  # edgeprune target (targets.py / build.py BUILD_TARGETS)
    part: str  # the chip the memory is sized like, for messages
    linker_script: str | None  # firmware/boards/<file>; None for Linux
    machine: str | None  # QEMU machine; None: real hardware only (or Linux)
    transport: tuple[str, ...]  # firmware/ sources of ep_io.h
    defines: tuple[str, ...]
    flash_bytes: int | None
    sram_bytes: int | None


_QEMU_IO = ("uart_cmsdk.c", "cortexm_io.c")
BOARDS: dict[str, Board] = {
    b.name: b
    for b in [
        # QEMU's MPS2 machines clock SysTick at 25 MHz, the AN547 at 32 MHz (only timeouts depend on it).
        Board("qemu-mps2-an500", "cortex-m7", "stm32f746", "mps2-an500.ld", "mps2-an500", _QEMU_IO,
              ("EP_UART_BASE=0x40004000u", "EP_CORE_CLOCK_HZ=25000000u", "EP_SEMIHOSTING_EXIT"), 1024 * KiB, 320 * KiB),
        Board("qemu-mps2-an386", "cortex-m4", "stm32f446", "mps2-an386.ld", "mps2-an386", _QEMU_IO,
              ("EP_UART_BASE=0x40004000u", "EP_CORE_CLOCK_HZ=25000000u", "EP_SEMIHOSTING_EXIT"), 512 * KiB, 128 * KiB),
        Board("qemu-mps3-an547", "cortex-m55", "corstone-300", "mps3-an547.ld", "mps3-an547", _QEMU_IO,
              ("EP_UART_BASE=0x59303000u", "EP_CORE_CLOCK_HZ=32000000u", "EP_SEMIHOSTING_EXIT"), 2048 * KiB, 512 * KiB),
        Board("stm32f746-disco", "cortex-m7", "stm32f746", "stm32f746-disco.ld", None,
              ("uart_stm32f7.c", "cortexm_io.c"),
              ("EP_CORE_CLOCK_HZ=16000000u", "EP_DWT_UNLOCK"), 1024 * KiB, 320 * KiB),
        Board("linux-arm64", "arm64", "arm64 linux", None, None, ("io_stdio.c",), (), None, None),
    ]
}
DEFAULT_BOARDS = {"cortex-m7": "qemu-mps2-an500", "cortex-m4": "qemu-mps2-an386", "cortex-m55": "qemu-mps3-an547",
                  "arm64": "linux-arm64"}
DEFAULT_BACKENDS = {"cortex-m7": "dsp", "cortex-m4": "dsp", "cortex-m55": "mve", "arm64": "neon_dot"}


class FirmwareTooBig(BuildError):
    """The model and firmware do not fit the board's flash or SRAM (a link-time overflow)."""


@dataclass(frozen=True)
class FirmwareBuild:
    elf: Path  # firmware.elf, or the arm64 `runner`
    bin: Path | None  # raw image for flashing (None for arm64)
    hex: Path | None  # Intel hex (None for arm64)
    board: str
    target: str
    backend: str
    flash_bytes: int  # code + constants + .data initial values
    sram_bytes: int  # .data + .bss (the arena included), without the stack
    stack_bytes: int  # the stack region the linker script reserves (arm64: the painted window)

    @property
    def machine(self) -> str | None:
        return BOARDS[self.board].machine

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(elf=self.elf.name, bin=self.bin.name if self.bin else None, hex=self.hex.name if self.hex else None,
                 machine=self.machine)
        return d


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise EdgepruneError(f"unknown board '{name}'; choose one of: {', '.join(BOARDS)}") from None


def _c_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _model_backend(model_dir: Path, target: str) -> str:
    report = model_dir / "report.json"
    if report.exists():
        try:
            data = json.loads(report.read_text())
        except (OSError, ValueError):
            data = {}
        backend = data.get("backend") if isinstance(data.get("backend"), str) else None
        if backend:
            return backend
    return DEFAULT_BACKENDS[target]


def _payload_define(model_h: Path) -> tuple[str, ...]:
    """EP_PROTO_MAX_PAYLOAD for models whose input, output (+ cycles) or bench answer exceed the
    default 4096 bytes: every tensor crosses the wire in one frame (the RX and TX buffers grow)."""
    text = model_h.read_text()
    sizes = {k: int(v) for k, v in re.findall(r"#define EP_MODEL_(INPUT_SIZE|OUTPUT_SIZE|NUM_LAYERS) (\d+)", text)}
    need = max(sizes.get("INPUT_SIZE", 0), sizes.get("OUTPUT_SIZE", 0) + 4, 8 + 4 * sizes.get("NUM_LAYERS", 0))
    return () if need <= 4096 else (f"EP_PROTO_MAX_PAYLOAD={(need + 15) // 16 * 16}u",)


def build_firmware(model_dir: Path, target: str, out_dir: Path | None = None, board: str | None = None,
                   backend: str | None = None, layer_hooks: bool = True, adaptation: bool = False,
                   trainable_from: str | None = None) -> FirmwareBuild:
    """Build model_dir's model.c into the firmware for `target` on `board`; outputs go to out_dir
    (default: model_dir), written under temporary names and renamed, with firmware.json.

    layer_hooks: model.c is compiled with -DEP_MODEL_LAYER_HOOKS so `bench` can count per layer;
    outside `bench` the hooks cost ~5 instructions per call (2 per layer) inside `infer`'s count.
    False leaves them out: `infer` counts exactly the model, `bench` has no per-layer counts.

    adaptation: also build the parameter store (device/param_store.py: -DEP_WITH_STORE, the A/B
    flash slots reserved at the end of the board's flash, the store_* commands) and, for a model with
    a trainable region, the adaptation mode (firmware/adapt.c); trainable_from: the region's first layer
    (adapt/region.py; default the second weighted layer)."""
    model_dir = Path(model_dir)
    out_dir = Path(out_dir) if out_dir is not None else model_dir
    if target not in DEFAULT_BOARDS:
        raise EdgepruneError(f"no firmware for target '{target}'; choose one of: {', '.join(DEFAULT_BOARDS)}")
    b = get_board(board or DEFAULT_BOARDS[target])
    if b.target != target:
        raise EdgepruneError(f"board '{b.name}' has a {b.target}, not a {target}")
    for f in ("model.c", "model.h"):
        if not (model_dir / f).exists():
            raise EdgepruneError(f"{model_dir} has no {f}; compile the model first with `edgeprune compile`")
    backend = backend or _model_backend(model_dir, target)
    t, backend_defines = backend_build(target, backend)
    flags = " ".join((*t.arch_flags, "-O2", *SECTION_FLAGS))  # for `info` (the warning flags say nothing)
    defines = (*backend_defines, *b.defines, f"EP_BOARD_NAME={_c_string(b.name)}", f"EP_BUILD_FLAGS={_c_string(flags)}",
               *_payload_define(model_dir / "model.h"))
    store_sources, store_link = (), ()
    if adaptation:
        from edgeprune.device.param_store import store_build

        store_sources, store_defines, store_link, reserved = store_build(b.name)
        defines = (*defines, *store_defines)
        if b.flash_bytes:  # overflow messages count only the flash code may use
            b = replace(b, flash_bytes=b.flash_bytes - reserved)
        from edgeprune.adapt.region_c import adapt_defines

        defines = (*defines, *adapt_defines(model_dir, trainable_from))  # firmware/adapt.c when the model has a trainable region

    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".firmware-", dir=out_dir))
    try:
        sources = [FIRMWARE / "device_main.c", FIRMWARE / "protocol.c", *(FIRMWARE / s for s in b.transport),
                   *(FIRMWARE / s for s in store_sources)]
        objs = compile_objects(t, sources, work / "obj", defines, include_dirs=(model_dir,), extra_flags=SECTION_FLAGS)
        hooks = ("EP_MODEL_LAYER_HOOKS",) if layer_hooks else ()
        objs += compile_objects(t, [model_dir / "model.c"], work / "obj", (*backend_defines, *hooks),
                                include_dirs=(model_dir,), extra_flags=SECTION_FLAGS)
        if adaptation:  # the trainable region's tables and int8 prefix, generated next to the firmware
            from edgeprune.adapt.region_c import adapt_objects

            objs += adapt_objects(t, model_dir, out_dir, work / "obj", defines, backend_defines, SECTION_FLAGS, target,
                                  trainable_from)
        lib = kernel_library(t, backend_defines, extra_flags=SECTION_FLAGS)
        if t.bare_metal:
            # The start-up's copy loops must stay loops (see startup_device.c).
            objs += compile_objects(t, [FIRMWARE / "startup_device.c"], work / "obj", defines,
                                    extra_flags=("-ffreestanding", "-fno-builtin"))
            program = work / "firmware.elf"
            link = ["-nostartfiles", "--specs=nano.specs", f"-L{FIRMWARE / 'boards'}", "-T", b.linker_script,
                    "-Wl,--gc-sections", "-Wl,--defsym=__heap_size__=0", *store_link]
        else:
            program = work / "runner"
            link = ["-static", "-Wl,--gc-sections"]
        _link([t.cc, *t.cflags, *map(str, objs), str(lib), *link, "-lm", "-o", str(program)], b, program.name)
        outputs = [program]
        if t.bare_metal:
            objcopy = require_tool("arm-none-eabi-objcopy")
            for fmt, ext in (("binary", ".bin"), ("ihex", ".hex")):
                dest = program.with_suffix(ext)
                proc = subprocess.run([objcopy, "-O", fmt, str(program), str(dest)], capture_output=True, text=True)
                if proc.returncode != 0:
                    raise BuildError(f"objcopy -O {fmt} failed: {_first_problem(proc.stderr)}", proc.stderr)
                outputs.append(dest)
        flash, sram, stack = _sizes(program)
        if not t.bare_metal:
            stack = 64 * KiB  # device_main.c's STACK_WINDOW
        final = [out_dir / p.name for p in outputs]
        build = FirmwareBuild(final[0], final[1] if len(final) > 1 else None, final[2] if len(final) > 2 else None,
                              b.name, target, backend, flash, sram, stack)
        manifest = work / MANIFEST
        manifest.write_text(json.dumps(build.to_dict(), indent=1) + "\n")
        for p in [*outputs, manifest]:
            os.replace(p, out_dir / p.name)
        return build
    finally:
        shutil.rmtree(work, ignore_errors=True)


_OVERFLOW = re.compile(r"region `(\w+)' overflowed by (\d+) bytes")


def _link(cmd: list[str], board: Board, what: str) -> None:
    require_tool(cmd[0])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        return
    err = proc.stderr
    m = _OVERFLOW.search(err)
    if m and m.group(1) in ("FLASH", "ITCM"):
        has = board.flash_bytes or 0
        raise FirmwareTooBig(f"model does not fit {board.part} flash: needs {has + int(m.group(2))} bytes, has {has}; "
                             "prune harder (--sparsity), or pick a target with more flash", err)
    if (m and m.group(1) == "RAM") or "RAM overflow" in err:
        has = board.sram_bytes or 0
        needed = _ram_needed(err) if not m or int(m.group(2)) == 0 else has + int(m.group(2))
        need = f"needs {needed} bytes, " if needed and needed > has else "static data + stack exceed it, "
        raise FirmwareTooBig(f"model does not fit {board.part} SRAM: {need}has {has}; "
                             "shrink the activations (smaller input or channels), or pick a target with more SRAM", err)
    raise BuildError(f"linking {what} for {board.name} failed: {_first_problem(err)}", err)


_SECTION_RANGE = re.compile(r"section (\.\w+) VMA \[([0-9a-f]+),([0-9a-f]+)\]")
RAM_ORIGIN = 0x20000000  # every board's linker script


def _ram_needed(err: str) -> int | None:
    """SRAM the image needs when ld reports "overflowed by 0 bytes" (the stack reservation overlapping
    .bss): the end of the static data plus the stack, from the VMA ranges in ld's message."""
    ranges = {name: (int(lo, 16), int(hi, 16)) for name, lo, hi in _SECTION_RANGE.findall(err)}
    stack = ranges.pop(".stack", None)
    if stack is None or not ranges:
        return None
    return max(hi for _, hi in ranges.values()) + 1 - RAM_ORIGIN + (stack[1] + 1 - stack[0])


def _sizes(elf: Path) -> tuple[int, int, int]:
    """(flash, sram, stack) from the ELF's section headers: flash = allocated sections with
    contents; sram = writable allocated sections except the .heap/.stack reservations."""
    from elftools.elf.elffile import ELFFile

    flash = sram = stack = 0
    with open(elf, "rb") as f:
        for s in ELFFile(f).iter_sections():
            flags, size = s["sh_flags"], s["sh_size"]
            if not flags & 0x2:  # SHF_ALLOC
                continue
            if s.name == ".stack":
                stack = size
                continue
            if s.name == ".heap":
                continue
            if s["sh_type"] != "SHT_NOBITS":
                flash += size
            if flags & 0x1:  # SHF_WRITE
                sram += size
    return flash, sram, stack


def read_manifest(folder: Path) -> dict | None:
    """firmware.json of a folder build_firmware wrote into, or None."""
    p = Path(folder) / MANIFEST
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        return None
