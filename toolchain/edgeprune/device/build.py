"""Cross-compile kernels_c plus a few sources into a bare-metal Cortex-M ELF or an arm64 Linux binary.

The flag sets here are the ones every device test and benchmark uses, so numbers are comparable.
Cortex-M programs link firmware/startup_cortexm.c and the board's linker script
(firmware/boards/<machine>.ld) and talk to the host through newlib's semihosting (rdimon); arm64
programs are static Linux executables for qemu-aarch64. Every program also gets the region markers
of firmware/markers.c. Compiled kernel libraries are cached by the content of their inputs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from edgeprune.errors import EdgepruneError

REPO = Path(__file__).resolve().parents[3]
KERNELS = REPO / "kernels_c"
FIRMWARE = REPO / "firmware"
DEFAULT_CACHE = REPO / "build" / "device-cache"

COMMON_CFLAGS = ("-O2", "-std=c99", "-Wall", "-Wextra", "-Werror")


class BuildError(EdgepruneError):
    """A compile or link failed. The message is one line; `detail` holds the compiler's output."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class BuildTarget:
    name: str
    cc: str
    arch_flags: tuple[str, ...]
    machine: str | None  # QEMU machine and linker script name for bare metal; None: arm64 Linux

    @property
    def bare_metal(self) -> bool:
        return self.machine is not None

    @property
    def cflags(self) -> tuple[str, ...]:
        return (*self.arch_flags, *COMMON_CFLAGS)


BUILD_TARGETS: dict[str, BuildTarget] = {
    t.name: t
    for t in [
        BuildTarget("cortex-m7", "arm-none-eabi-gcc",
                    ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"), "mps2-an500"),
        BuildTarget("cortex-m4", "arm-none-eabi-gcc",
                    ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"), "mps2-an386"),
        BuildTarget("cortex-m55", "arm-none-eabi-gcc", ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"), "mps3-an547"),
        BuildTarget("arm64", "aarch64-linux-gnu-gcc", ("-march=armv8.2-a+dotprod",), None),
        BuildTarget("arm64-nodot", "aarch64-linux-gnu-gcc", ("-march=armv8-a",), None),
    ]
}

# (target, backend) -> the build that selects that backend: ep_backend.h picks it from the flags,
# except portable, which is forced with -DEP_BACKEND_PORTABLE.
_BACKEND_BUILDS: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("cortex-m7", "dsp"): ("cortex-m7", ()),
    ("cortex-m4", "dsp"): ("cortex-m4", ()),
    ("cortex-m55", "mve"): ("cortex-m55", ()),
    ("arm64", "neon_dot"): ("arm64", ()),
    ("arm64", "neon"): ("arm64-nodot", ()),
}


def get_build_target(name: str) -> BuildTarget:
    try:
        return BUILD_TARGETS[name]
    except KeyError:
        raise EdgepruneError(f"unknown build target '{name}'; choose one of: {', '.join(BUILD_TARGETS)}") from None


def backend_build(target: str, backend: str) -> tuple[BuildTarget, tuple[str, ...]]:
    """The build target and preprocessor defines that make `target` dispatch to `backend`."""
    if backend == "portable":
        return get_build_target(target), ("EP_BACKEND_PORTABLE",)
    try:
        name, defines = _BACKEND_BUILDS[(target, backend)]
    except KeyError:
        raise EdgepruneError(f"no '{backend}' backend for target '{target}'") from None
    return get_build_target(name), defines


def require_tool(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise EdgepruneError(f"{tool} not found on PATH; install the cross toolchains and emulators with `make setup`")
    return path


def _run(cmd: Sequence[str], what: str) -> None:
    require_tool(cmd[0])
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed: {_first_problem(proc.stderr)}", proc.stderr)


def _first_problem(output: str) -> str:
    """The compiler's or linker's first real complaint (not collect2's summary), without the tool path."""
    keys = ("error", "undefined reference", "will not fit", "overflow")
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not ln.startswith("collect2")]
    line = next((ln for ln in lines if any(k in ln for k in keys)), lines[0] if lines else "no output")
    return re.sub(r"^\S*/(ld|as|cc1)(\.\w+)?: ", "", line)


def _define_flags(defines: Iterable[str]) -> list[str]:
    return [f"-D{d}" for d in defines]


def kernel_sources() -> list[Path]:
    return sorted((KERNELS / "src").glob("*.c"))


def _digest(*parts: object, files: Iterable[Path] = ()) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
    for f in sorted(files):
        h.update(str(f).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cached_objects(cc: str, flags: Sequence[str], sources: Sequence[Path], cache_dir: Path,
                   depends_on: Sequence[Path] = ()) -> list[Path]:
    """Each source compiled with `cc flags -c` into cache_dir, one object per version of the source,
    the files it depends_on (headers), the compiler and the flags: while the kernels are being edited
    only the changed files recompile. Objects are written atomically, so processes may share the cache."""
    common = _digest(cc, tuple(flags), files=depends_on)
    objs = [cache_dir / f"{src.stem}-{_digest(common, files=[src])}.o" for src in sources]
    todo = [(src, obj) for src, obj in zip(sources, objs) if not obj.exists()]
    if not todo:
        return objs
    cache_dir.mkdir(parents=True, exist_ok=True)

    def one(job) -> None:
        src, obj = job
        tmp = obj.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
        _run([cc, *flags, "-c", str(src), "-o", str(tmp)], f"{cc} on {src.name}")
        os.replace(tmp, obj)  # atomic: a concurrent build sees the whole object or none

    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        list(pool.map(one, todo))
    return objs


def kernel_headers() -> list[Path]:
    """What every kernels_c object depends on besides its own source."""
    return [*(KERNELS / "include").glob("*.h"), *(KERNELS / "src").glob("*.h"), FIRMWARE / "markers.h"]


def compile_objects(target: BuildTarget, sources: Sequence[Path], out_dir: Path, defines: Sequence[str] = (),
                    include_dirs: Sequence[Path] = (), extra_flags: Sequence[str] = ()) -> list[Path]:
    """Compile each source to out_dir/<stem>.o (two at a time: a 2-core machine is shared)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    incs = [f"-I{d}" for d in (KERNELS / "include", FIRMWARE, *include_dirs)]
    objs = [out_dir / f"{Path(s).stem}.o" for s in sources]

    def one(src_obj):
        src, obj = src_obj
        _run([target.cc, *target.cflags, *extra_flags, *_define_flags(defines), *incs, "-c", str(src), "-o", str(obj)],
             f"{target.cc} ({target.name}) on {Path(src).name}")

    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        list(pool.map(one, zip(sources, objs)))
    return objs


def kernel_library(target: BuildTarget, defines: Sequence[str] = (), cache_dir: Path = DEFAULT_CACHE,
                   extra_flags: Sequence[str] = ()) -> Path:
    """kernels_c/src/*.c plus firmware/markers.c as a static library.

    Objects are cached by their source, the headers and the flags, so while the kernels are being
    edited only the changed files recompile; the archive is cached by the set of objects.
    extra_flags (e.g. -ffunction-sections for the firmware) are added to the target's flags.
    """
    with _LIBRARY_LOCK:  # threads building the same library would duplicate the work
        return _kernel_library(target, tuple(defines), cache_dir, tuple(extra_flags))


_LIBRARY_LOCK = threading.Lock()


def _kernel_library(target: BuildTarget, defines: tuple[str, ...], cache_dir: Path,
                    extra_flags: tuple[str, ...] = ()) -> Path:
    flags = (*target.cflags, *extra_flags, *_define_flags(defines), f"-I{KERNELS / 'include'}", f"-I{FIRMWARE}")
    objs = cached_objects(target.cc, flags, [*kernel_sources(), FIRMWARE / "markers.c"], cache_dir / f"{target.name}-objects",
                          kernel_headers())
    lib = cache_dir / f"{target.name}-{_digest(*(o.name for o in objs))}" / "libep_kernels.a"
    if lib.exists():
        return lib
    ar = "arm-none-eabi-ar" if target.bare_metal else "aarch64-linux-gnu-ar"
    lib.parent.mkdir(parents=True, exist_ok=True)
    tmp_lib = lib.parent / f"tmp-{os.getpid()}-{threading.get_ident()}.a"
    _run([ar, "rcs", str(tmp_lib), *map(str, objs)], f"{ar} ({target.name})")
    os.replace(tmp_lib, lib)
    return lib


def defined_symbols(library: Path, target: BuildTarget) -> set[str]:
    """Names of the functions and data a static library or object defines."""
    nm = "arm-none-eabi-nm" if target.bare_metal else "aarch64-linux-gnu-nm"
    require_tool(nm)
    out = subprocess.run([nm, "--defined-only", "-g", str(library)], capture_output=True, text=True, check=True).stdout
    return {parts[-1] for parts in (ln.split() for ln in out.splitlines()) if len(parts) == 3}


def build_program(target: str | BuildTarget, sources: Sequence[Path], out: Path, *, defines: Sequence[str] = (),
                  include_dirs: Sequence[Path] = (), cache_dir: Path = DEFAULT_CACHE,
                  link_flags: Sequence[str] = (), with_kernels: bool = True) -> Path:
    """Compile `sources` and link them with kernels_c (same defines) and the markers into `out`.

    Bare-metal targets get the startup code, semihosting newlib and the board's linker script;
    arm64 targets a static Linux executable (static so marker addresses are the ELF's own).
    with_kernels=False links only the markers (programs that test the harness itself).
    """
    t = get_build_target(target) if isinstance(target, str) else target
    out = Path(out)
    obj_dir = out.parent / f"{out.name}.obj"
    extra = [] if with_kernels else [FIRMWARE / "markers.c"]
    objs = compile_objects(t, [*map(Path, sources), *extra], obj_dir, defines, include_dirs)
    libs = [str(kernel_library(t, defines, cache_dir))] if with_kernels else []
    if t.bare_metal:
        # The startup's copy loops must stay loops (see firmware/startup_cortexm.c).
        objs += compile_objects(t, [FIRMWARE / "startup_cortexm.c"], obj_dir, extra_flags=("-ffreestanding", "-fno-builtin"))
        link = ["--specs=rdimon.specs", f"-L{FIRMWARE / 'boards'}", "-T", f"{t.machine}.ld", "-Wl,--gc-sections"]
    else:
        link = ["-static"]
    _run([t.cc, *t.cflags, *map(str, objs), *libs, *link, *link_flags, "-lm", "-o", str(out)],
         f"linking {out.name} for {t.name}")
    return out
