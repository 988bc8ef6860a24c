"""Build for and run on emulated devices: Cortex-M boards under qemu-system-arm, arm64 under
qemu-aarch64 (build.py compiles, qemu.py runs and counts instructions)."""

from edgeprune.device.build import BUILD_TARGETS, BuildError, backend_build, build_program, kernel_library
from edgeprune.device.qemu import RunResult, run_arm64, run_cortex_m, symbol_address

__all__ = ["BUILD_TARGETS", "BuildError", "RunResult", "backend_build", "build_program", "kernel_library",
           "run_arm64", "run_cortex_m", "symbol_address"]
