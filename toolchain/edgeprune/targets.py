"""Target profiles: what a model must fit into and how its code is built.

Limits are those of a representative part, not of the emulator (QEMU's boards have
more memory than the chips we size for), so a model that would not fit the part fails here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgeprune.errors import UsageError

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    cpu: str
    backend: str  # kernels_c backend, as ep_backend_name() says: portable, dsp, mve, neon_dot, neon
    cflags: tuple[str, ...]
    sram_bytes: int | None  # None: not a constraint (phones, host)
    flash_bytes: int | None
    emulator: str | None  # how device tests run it without hardware

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cflags"] = list(self.cflags)
        return d


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target(
            name="cortex-m7",
            description="STM32F746-class MCU (216 MHz Cortex-M7, FPU, DSP)",
            cpu="cortex-m7",
            backend="dsp",
            cflags=("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"),
            sram_bytes=320 * KiB,
            flash_bytes=1 * MiB,
            emulator="qemu-system-arm -M mps2-an500",
        ),
        Target(
            name="cortex-m4",
            description="STM32F446-class MCU (180 MHz Cortex-M4F, DSP)",
            cpu="cortex-m4",
            backend="dsp",
            cflags=("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
            sram_bytes=128 * KiB,
            flash_bytes=512 * KiB,
            emulator="qemu-system-arm -M mps2-an386",
        ),
        Target(
            name="cortex-m55",
            description="Corstone-300-class MCU (Cortex-M55 with Helium/MVE)",
            cpu="cortex-m55",
            backend="mve",
            cflags=("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"),
            sram_bytes=512 * KiB,
            flash_bytes=2 * MiB,
            emulator="qemu-system-arm -M mps3-an547",
        ),
        Target(
            name="arm64",
            description="Arm phone (Armv8.2-A with dot product; NEON fallback without it)",
            cpu="armv8.2-a+dotprod",
            backend="neon_dot",
            cflags=("-march=armv8.2-a+dotprod",),
            sram_bytes=None,
            flash_bytes=None,
            emulator="qemu-aarch64 -L /usr/aarch64-linux-gnu",
        ),
        Target(
            name="host",
            description="This machine (portable C; used for validation)",
            cpu="native",
            backend="portable",
            cflags=(),
            sram_bytes=None,
            flash_bytes=None,
            emulator=None,
        ),
    ]
}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise UsageError(
            f"unknown target '{name}'; choose one of: {', '.join(TARGETS)} (see `edgeprune targets`)"
        ) from None
