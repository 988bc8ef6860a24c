"""TFLite Micro's smallest working arena for a model: the baseline our static plan is compared with.

TFLM's Python interpreter (`tflite_micro.runtime`) allocates everything (activation plan, tensor
and node metadata, kernel scratch and persistent data) in the arena it is given, and fails to
allocate when it is too small. Bisection over the arena size (16-byte steps) finds the smallest
one that allocates and invokes. `print_allocations()` (C printf to fd 1) then tells how TFLM split
it: the head is its planned (non-persistent) activation memory, the tail its persistent data.

Used by tests and bench/models only; the compiler itself never runs TFLM.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np

from edgeprune.compile.tflite_reader import read_tflite

STEP = 16


@dataclass
class TFLMArena:
    minimal_arena: int  # the smallest arena_size that allocates and invokes
    total_bytes: int = 0  # what TFLM reports it used of that arena (head + tail)
    head_bytes: int = 0  # the planned activation memory
    tail_bytes: int = 0  # persistent: tensor structs, node data, quantization params, kernel buffers
    allocations: dict[str, int] = field(default_factory=dict)  # TFLM's record name -> bytes used


@contextlib.contextmanager
def _capture_fds():
    """Redirect fds 1 and 2 (TFLM's C logging) to a temporary file; yields a callable returning the text."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        text = []
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield lambda: "".join(text)
        finally:
            libc.fflush(None)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            text.append(tmp.read().decode(errors="replace"))


def _inputs(model: bytes) -> list[np.ndarray]:
    m = read_tflite(model)
    return [np.zeros(m.tensors[t].shape, m.tensors[t].dtype) for t in m.inputs]


def _runs(model: bytes, arena: int, inputs: list[np.ndarray]):
    """The interpreter if TFLM allocates and invokes in `arena` bytes, else None."""
    from tflite_micro import runtime

    try:
        it = runtime.Interpreter.from_bytes(model, arena_size=arena)
        for i, x in enumerate(inputs):
            it.set_input(x, i)
        it.invoke()
        return it
    except (RuntimeError, ValueError):
        return None


def _runs_in_child(model: bytes, arena: int, inputs: list[np.ndarray]) -> bool:
    """_runs in a forked child, reporting through its exit code only. TFLM's Python interpreter
    can segfault on some arenas that are too small (seen on an autoencoder at 16 KiB: a failed
    tail allocation while populating a temporary tensor); a crash then counts as too small."""
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            import faulthandler

            faulthandler.disable()  # an expected crash is not worth a traceback (pytest enables it)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)  # silence TFLM's logging of the failed allocation
            os.dup2(null, 2)
            code = 0 if _runs(model, arena, inputs) is not None else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def tflm_runs(model: bytes, arena_size: int) -> bool:
    """Whether TFLM allocates and invokes the model in arena_size bytes."""
    return _runs_in_child(model, arena_size, _inputs(model))


def tflm_arena_report(model: bytes, limit: int = 64 << 20) -> TFLMArena:
    """Bisect TFLM's minimal arena and read its allocation records at that size."""
    inputs = _inputs(model)
    hi = 1024
    while not _runs_in_child(model, hi, inputs):
        if hi >= limit:
            raise RuntimeError(f"TFLite Micro cannot run this model even with a {limit}-byte arena")
        hi *= 2
    lo = 0  # fails (an arena of 0 never works)
    while hi - lo > STEP:
        mid = (lo + hi) // 2 // STEP * STEP
        if mid <= lo:
            break
        if _runs_in_child(model, mid, inputs):
            hi = mid
        else:
            lo = mid
    with _capture_fds():
        it = _runs(model, hi, inputs)
    with _capture_fds() as read:
        it.print_allocations()
    report = TFLMArena(hi)
    text = read()
    for name, attr in (("total", "total_bytes"), ("head", "head_bytes"), ("tail", "tail_bytes")):
        m = re.search(rf"Arena allocation {name} (\d+) bytes", text)
        if m:
            setattr(report, attr, int(m.group(1)))
    for m in re.finditer(r"'([^']+)' used (\d+) bytes", text):
        report.allocations[m.group(1)] = int(m.group(2))
    return report


def tflm_minimal_arena(model: bytes) -> int:
    """The smallest arena_size (a multiple of 16) with which TFLM's Python interpreter allocates and invokes."""
    return tflm_arena_report(model).minimal_arena
