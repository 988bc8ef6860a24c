"""Links to a running device that speaks the protocol (PROTOCOL.md): the firmware under
qemu-system-arm (QemuLink), the arm64 runner under qemu-aarch64 (Arm64Link), and, through
pyocd_link.py, a real board. Every read has a timeout; a dead device is an error, never a hang.

    with open_link("build/model") as link:           # what build_firmware wrote there
        info = link.info()                            # {"model_hash": ..., "layers": ..., ...}
        y, count = link.infer(x.tobytes())           # count: cycles, or instructions when counting
        layer_counts, stack_peak = link.bench(x.tobytes())

With count_instructions=True the emulator runs the TCG plugin of bench/qemu_plugin, counting the
instructions between ep_region_begin/end: `infer` then returns the model's instruction count and
`bench` the per-layer counts; regions() lists every count so far.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections import deque
from pathlib import Path

from edgeprune.device.protocol import (
    CMD_BENCH, CMD_EXIT, CMD_INFER, CMD_INFO, HOST_MAX_PAYLOAD, RESPONSE_BIT, Frame, FrameDecoder, encode_frame, parse_bench,
    parse_info, parse_infer,
)
from edgeprune.device.qemu import AARCH64_SYSROOT, DEFAULT_MARKERS, _plugin_args
from edgeprune.device.build import require_tool
from edgeprune.errors import EdgepruneError

START_TIMEOUT_S = 20.0
IDLE_MARKERS = ("ep_idle_begin", "ep_idle_end")  # around every wait for the host (ep_io.h)


class Link:
    """A connection to one device. Subclasses provide _write, _read_some, _alive and _stop."""

    name = "device"

    def __init__(self) -> None:
        self._decoder = FrameDecoder(max_payload=HOST_MAX_PAYLOAD)
        self._frames: deque[Frame] = deque()
        self._counts: Path | None = None  # the plugin's output file, when counting
        self._regions_taken = 0
        self.total_instructions: int | None = None  # the whole run's, known after close() when counting
        self.exit_code: int | None = None

    # ---- transport (subclasses)
    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _read_some(self, timeout: float) -> bytes:
        """Some bytes, or b"" when none came within timeout; raises when the device is gone."""
        raise NotImplementedError

    def _alive(self) -> bool:
        raise NotImplementedError

    def _stop(self, timeout: float) -> None:
        """Wait up to timeout for the device to stop by itself, then kill it."""

    # ---- frames
    def send_raw(self, data: bytes) -> None:
        """Bytes straight to the device (fuzzing: anything, framed or not)."""
        self._write(bytes(data))

    def read_frame(self, timeout: float) -> Frame | None:
        """The next frame from the device, or None if none is complete within timeout seconds."""
        deadline = time.monotonic() + timeout
        while not self._frames:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            data = self._read_some(left)
            if data:
                self._frames.extend(self._decoder.feed(data))
        return self._frames.popleft()

    def request(self, kind: int, payload: bytes = b"", timeout: float = 30) -> bytes:
        """Send one command, return its response's payload (DeviceError for an error frame)."""
        self._write(encode_frame(kind, payload))
        frame = self.read_frame(timeout)
        if frame is None:
            raise EdgepruneError(f"{self.name}: no answer to command {kind:#04x} within {timeout:g} s")
        frame.raise_for_error()
        if frame.kind != kind | RESPONSE_BIT:
            raise EdgepruneError(f"{self.name}: answer of kind {frame.kind:#04x} to command {kind:#04x}")
        return frame.payload

    # ---- instruction counts
    def regions(self) -> list[int]:
        """Instruction counts of every begin/end marker pair so far (empty when not counting)."""
        if self._counts is None or not self._counts.exists():
            return []
        out = []
        for line in self._counts.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "region":
                out.append(int(parts[2]))
        return out

    def _new_regions(self) -> list[int]:
        r = self.regions()
        new, self._regions_taken = r[self._regions_taken:], len(r)
        return new

    def _read_total(self) -> None:
        if self._counts is not None and self._counts.exists():
            for line in self._counts.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == "total":
                    self.total_instructions = int(parts[1])

    # ---- commands
    def info(self) -> dict[str, str]:
        return parse_info(self.request(CMD_INFO, timeout=30))

    def infer(self, x: bytes, timeout: float = 60) -> tuple[bytes, int | None]:
        """(output bytes, count): the model's instruction count when counting, else its cycles
        (None without a cycle counter)."""
        self._new_regions()
        payload = self.request(CMD_INFER, bytes(x), timeout)
        out, cycles = parse_infer(payload, len(payload) - 4)
        if self._counts is not None:
            new = self._new_regions()
            return out, (new[-1] if new else None)
        return out, cycles

    def bench(self, x: bytes, timeout: float = 60) -> tuple[list[int] | None, int]:
        """(per-layer counts, peak stack bytes): instructions when counting, else cycles (None
        without a cycle counter)."""
        self._new_regions()
        cycles, peak = parse_bench(self.request(CMD_BENCH, bytes(x), timeout))
        if self._counts is not None:
            return self._new_regions(), peak
        return cycles, peak

    def close(self, timeout: float = 5.0) -> None:
        """Ask the device to exit (if it still runs), wait for it, kill it after timeout."""
        if self._alive():
            try:
                self.request(CMD_EXIT, timeout=timeout)
            except EdgepruneError:
                pass
        self._stop(timeout)
        self._read_total()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _ProcessLink(Link):
    """A device that is an emulator process of ours."""

    def __init__(self) -> None:
        super().__init__()
        self._proc: subprocess.Popen | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="ep-link-"))
        self._log = open(self._tmp / "emulator.log", "w+b")

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _died(self) -> EdgepruneError:
        code = None
        if self._proc is not None:
            try:
                code = self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # its transport broke but it still runs: stop it
                self._proc.kill()
                code = self._proc.wait()
        self.exit_code = code
        self._log.flush()
        self._log.seek(0)
        tail = self._log.read().decode("utf-8", "replace").strip().splitlines()[-3:]
        detail = f": {' | '.join(tail)}" if tail else ""
        return EdgepruneError(f"{self.name} stopped (exit status {code}){detail}")

    def _stop(self, timeout: float) -> None:
        if self._proc is not None:
            try:
                self.exit_code = self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self.exit_code = self._proc.wait()
        self._close_transport()
        self._read_total()
        self._log.close()

    def _close_transport(self) -> None:
        pass

    def __del__(self):
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


class QemuLink(_ProcessLink):
    """The firmware under qemu-system-arm: UART0 on a private unix socket, semihosting for exit,
    `-icount shift=0` (deterministic timers), optionally the instruction-counting plugin."""

    def __init__(self, elf: str | Path, machine: str, count_instructions: bool = False,
                 count_between: tuple[str, str] | None = None, start_timeout: float = START_TIMEOUT_S,
                 store: str | Path | None = None, flash_gate: str | Path | None = None):
        """store: the host file backing the parameter store's flash (created if missing; firmware
        built with adaptation=True, device/param_store.py). flash_gate (power-cut tests): a FIFO the
        firmware reads one byte from before each flash erase/program chunk (firmware/flash_qemu.c)."""
        super().__init__()
        self.elf = Path(elf)
        self.machine = machine
        self.name = f"qemu {machine}"
        if not self.elf.exists():
            raise EdgepruneError(f"{self.elf} does not exist; build it with `edgeprune compile`")
        qemu = require_tool("qemu-system-arm")
        sock_path = self._tmp / "uart.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(sock_path))
        server.listen(1)
        semihosting = "enable=on,target=native"
        if store is not None or flash_gate is not None:  # semihosting arguments firmware/flash_qemu.c reads
            semihosting += ",arg=firmware"
            if flash_gate is not None:
                semihosting += ",arg=ep_gate=" + str(Path(flash_gate).resolve()).replace(",", ",,")
            if store is not None:  # last: the firmware takes the path to the end of the line
                self.store = Path(store).resolve()
                self.store.touch(exist_ok=True)  # the firmware pads it to the region with erased bytes
                semihosting += ",arg=ep_store=" + str(self.store).replace(",", ",,")
        cmd = [qemu, "-M", machine, "-display", "none", "-monitor", "none",
               "-chardev", f"socket,id=uart0,path={sock_path}", "-serial", "chardev:uart0",
               "-semihosting-config", semihosting, "-icount", "shift=0", "-kernel", str(self.elf)]
        if count_instructions or count_between:
            self._counts = self._tmp / "counts.txt"
            cmd[1:1] = _plugin_args(self.elf, count_between or DEFAULT_MARKERS, self._counts)
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        server.settimeout(0.2)
        deadline = time.monotonic() + start_timeout
        try:
            while True:
                try:
                    self._conn, _ = server.accept()
                    break
                except socket.timeout:
                    if self._proc.poll() is not None:
                        raise self._died() from None
                    if time.monotonic() > deadline:
                        self._proc.kill()
                        raise EdgepruneError(
                            f"{self.name} did not connect its UART within {start_timeout:g} s") from None
        finally:
            server.close()

    def _write(self, data: bytes) -> None:
        try:
            self._conn.sendall(data)
        except OSError:
            raise self._died() from None

    def _read_some(self, timeout: float) -> bytes:
        self._conn.settimeout(max(timeout, 0.001))
        try:
            data = self._conn.recv(65536)
        except socket.timeout:
            return b""
        except OSError:
            raise self._died() from None
        if not data:
            raise self._died()
        return data

    def _close_transport(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()


class Arm64Link(_ProcessLink):
    """The arm64 runner under qemu-aarch64, the protocol on its stdin/stdout."""

    def __init__(self, runner: str | Path, count_instructions: bool = False,
                 count_between: tuple[str, str] | None = None, cpu: str = "max", store: str | Path | None = None):
        """store: the file backing the parameter store's slots (runner built with adaptation=True;
        firmware/flash_posix.c reads its path from EP_STORE_FILE)."""
        super().__init__()
        self.runner = Path(runner)
        self.name = "qemu-aarch64 runner"
        if not self.runner.exists():
            raise EdgepruneError(f"{self.runner} does not exist; build it with `edgeprune compile --target arm64`")
        cmd = [require_tool("qemu-aarch64"), "-L", AARCH64_SYSROOT, "-cpu", cpu]
        if count_instructions or count_between:
            self._counts = self._tmp / "counts.txt"
            cmd += _plugin_args(self.runner, count_between or DEFAULT_MARKERS, self._counts)
        env = None
        if store is not None:
            self.store = Path(store).resolve()
            env = {**os.environ, "EP_STORE_FILE": str(self.store)}
        self._proc = subprocess.Popen([*cmd, str(self.runner)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._log, bufsize=0, env=env)

    def _write(self, data: bytes) -> None:
        try:
            self._proc.stdin.write(data)
        except (BrokenPipeError, OSError):
            raise self._died() from None

    def _read_some(self, timeout: float) -> bytes:
        fd = self._proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(timeout, 0))
        if not ready:
            return b""
        data = os.read(fd, 65536)
        if not data:
            raise self._died()
        return data

    def _close_transport(self) -> None:
        for f in (self._proc.stdin, self._proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def _elf_machine(path: Path) -> str:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        return ELFFile(f).header["e_machine"]


def _has_store(path: Path) -> bool:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        return symtab is not None and bool(symtab.get_symbol_by_name("ep_store_init"))


def open_link(build_dir_or_elf: str | Path, device: str = "qemu", count_instructions: bool = False,
              count_between: tuple[str, str] | None = None, store: str | Path | bool | None = None) -> Link:
    """A started Link to the program build_firmware wrote (a folder with firmware.json, or the
    firmware.elf / runner itself). device: "qemu" (emulators), "pyocd" or "pyocd:<uid>" (a board).
    store (emulators; firmware built with the parameter store): the host file backing its flash
    slots; default <folder>/param_store.bin, so the state survives across runs; False: none (volatile)."""
    from edgeprune.device.firmware import BOARDS, DEFAULT_BOARDS, read_manifest

    path = Path(build_dir_or_elf)
    folder = path if path.is_dir() else path.parent
    manifest = read_manifest(folder) or {}
    if path.is_dir():
        name = manifest.get("elf") or ("runner" if (path / "runner").exists() else "firmware.elf")
        program = path / name
    else:
        program = path
    if not program.exists():
        raise EdgepruneError(f"{program} does not exist; build the firmware with `edgeprune compile`")
    kind, _, uid = device.partition(":")
    if kind == "pyocd":
        try:
            from edgeprune.device.pyocd_link import PyocdLink
        except ImportError as e:
            raise EdgepruneError(f"real boards (--device pyocd) are not available in this installation: {e}") from None
        return PyocdLink(program, uid=uid or None)
    if kind != "qemu":
        raise EdgepruneError(f"unknown device '{device}'; use qemu, pyocd or pyocd:<uid>")
    if store is None and _has_store(program):
        from edgeprune.device.param_store import default_store_path

        store = default_store_path(folder)
    if _elf_machine(program) == "EM_AARCH64":
        return Arm64Link(program, count_instructions=count_instructions, count_between=count_between,
                         store=store or None)
    board = manifest.get("board") if manifest.get("elf") == program.name else None
    if board is None:
        target = None
        report = folder / "report.json"
        if report.exists():
            try:
                target = json.loads(report.read_text()).get("target")
            except ValueError:
                target = None
        board = DEFAULT_BOARDS.get(target or "cortex-m7", DEFAULT_BOARDS["cortex-m7"])
    machine = BOARDS[board].machine if board in BOARDS else None
    if machine is None:
        raise EdgepruneError(f"{program.name} is built for board '{board}', which QEMU cannot run; "
                             f"use --device pyocd, or rebuild for a qemu-* board")
    return QemuLink(program, machine, count_instructions=count_instructions, count_between=count_between,
                    store=store or None)
