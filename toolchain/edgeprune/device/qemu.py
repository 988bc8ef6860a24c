"""Run programs on emulated devices: bare-metal Cortex-M under qemu-system-arm, arm64 Linux
programs under qemu-aarch64, optionally counting the instructions executed between two marker
functions with the TCG plugin of bench/qemu_plugin (built by `make qemu-plugin`).

Nothing is built here (see build.py). Counts are exact and identical run after run.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgeprune.device.build import REPO, require_tool
from edgeprune.errors import EdgepruneError

PLUGIN = REPO / "build" / "qemu-plugin" / "libinsncount.so"
AARCH64_SYSROOT = "/usr/aarch64-linux-gnu"
DEFAULT_MARKERS = ("ep_region_begin", "ep_region_end")  # firmware/markers.c


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    stdout: str
    stderr: str
    regions: tuple[int, ...]  # instructions between each begin/end marker pair, in order
    total: int | None  # instructions of the whole run (None when not counting)
    seconds: float


def symbol_address(elf: str | Path, name: str) -> int:
    """Address of a function in an ELF's symbol table (Thumb bit cleared)."""
    from elftools.elf.elffile import ELFFile

    with open(elf, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        if symtab is None:
            raise EdgepruneError(f"{elf} has no symbol table (stripped?); cannot find {name}")
        syms = symtab.get_symbol_by_name(name)
        if not syms:
            raise EdgepruneError(f"symbol {name} not found in {elf}")
        return syms[0]["st_value"] & ~1


def _is_position_independent(elf: Path) -> bool:
    from elftools.elf.elffile import ELFFile

    with open(elf, "rb") as f:
        return ELFFile(f).header["e_type"] == "ET_DYN"


def _plugin_args(elf: Path, count_between: tuple[str, str], out: Path) -> list[str]:
    if not PLUGIN.exists():
        raise EdgepruneError(f"instruction-counting plugin {PLUGIN.relative_to(REPO)} is missing; build it with `make qemu-plugin`")
    begin, end = (symbol_address(elf, s) for s in count_between)
    return ["-plugin", f"{PLUGIN},begin={begin:#x},end={end:#x},out={out}"]


def _run(cmd: list[str], elf: Path, timeout: float, counts_file: Path | None) -> RunResult:
    require_tool(cmd[0])
    if not elf.exists():
        raise EdgepruneError(f"{elf} does not exist")
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EdgepruneError(f"{cmd[0]}: {elf.name} did not finish within {timeout:g} s") from None
    seconds = time.monotonic() - start
    regions: list[int] = []
    total = None
    if counts_file is not None and counts_file.exists():
        for line in counts_file.read_text().splitlines():
            parts = line.split()
            if parts and parts[0] == "region":
                regions.append(int(parts[2]))
            elif parts and parts[0] == "total":
                total = int(parts[1])
    return RunResult(proc.returncode, proc.stdout, proc.stderr, tuple(regions), total, seconds)


def run_cortex_m(elf: str | Path, machine: str, args: Sequence[str] = (), timeout: float = 120.0,
                 count_between: tuple[str, str] | None = None) -> RunResult:
    """Run a bare-metal ELF on a QEMU Arm machine (e.g. mps2-an500) with semihosting.

    `args` become main's argv[1:] (no spaces: semihosting passes one space-separated line).
    The exit code is main's return value; a fault exits with 1 (firmware/startup_cortexm.c).
    `-icount shift=0` makes timers count instructions, so runs are deterministic.
    """
    elf = Path(elf)
    args = [str(a) for a in args]
    if any(" " in a for a in args):
        raise EdgepruneError("semihosting arguments cannot contain spaces")
    semi = ",".join(["enable=on", "target=native", *(f"arg={a.replace(',', ',,')}" for a in (elf.name, *args))])
    cmd = ["qemu-system-arm", "-M", machine, "-nographic", "-semihosting-config", semi, "-icount", "shift=0",
           "-kernel", str(elf)]
    with tempfile.TemporaryDirectory() as tmp:
        counts = Path(tmp) / "counts.txt" if count_between else None
        if count_between:
            cmd[1:1] = _plugin_args(elf, count_between, counts)
        return _run(cmd, elf, timeout, counts)


def run_arm64(binary: str | Path, cpu: str = "max", args: Sequence[str] = (), timeout: float = 120.0,
              count_between: tuple[str, str] | None = None) -> RunResult:
    """Run an arm64 Linux program under qemu-aarch64 -cpu <cpu> (cortex-a53 lacks dotprod)."""
    binary = Path(binary)
    cmd = ["qemu-aarch64", "-L", AARCH64_SYSROOT, "-cpu", cpu]
    with tempfile.TemporaryDirectory() as tmp:
        counts = Path(tmp) / "counts.txt" if count_between else None
        if count_between:
            if _is_position_independent(binary):
                raise EdgepruneError(f"{binary.name} is position independent; link it -static or -no-pie to count instructions")
            cmd += _plugin_args(binary, count_between, counts)
        return _run([*cmd, str(binary), *map(str, args)], binary, timeout, counts)
