"""A per-target instruction-count model for one weighted layer in one weight format.

    instructions ~= a * work + b * macs + c

`work` is the MACs the format actually performs: all of them for dense (it multiplies zeros too),
those of the live (not all-zero) output channels for dead, and those of the stored weights for the
other sparse formats (block4 stores whole blocks, nm24 two of every four; index overhead is in `a`); `macs` (every weight once
per output position) carries the per-position cost a sparse kernel pays whatever the sparsity
(im2col, requantization, walking the index). Coefficients are per (target, backend, format).

a and b are fitted by least squares (c fixed at PER_CALL) on bench/results/kernels.json (QEMU instruction counts of real
layers at several sparsities) when that file has rows for the target/backend; otherwise the
built-in DEFAULTS below apply (rounded from the Cortex-M7 measurements of that file: the DSP dense
conv does about 1.3 instructions per MAC, the portable loops about 8; block4 and dead pay from 50%
sparsity, unstructured from about 90%, nm24 costs more than dense DSP).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

KERNELS_JSON = Path(__file__).resolve().parents[3] / "bench" / "results" / "kernels.json"

PER_CALL = 2000.0  # c: call, requantization set-up, loop entry; too small to fit from the benchmark's large layers

# (a per worked MAC, b per MAC, c per call) by backend family and format.
DEFAULTS: dict[str, dict[str, tuple[float, float, float]]] = {
    "portable": {"dense": (8.0, 0.0, PER_CALL), "unstructured": (4.5, 0.5, PER_CALL), "block4": (4.0, 0.6, PER_CALL),
                 "dead": (7.5, 0.0, PER_CALL), "nm24": (6.0, 0.5, PER_CALL)},
    "dsp": {"dense": (1.3, 0.0, PER_CALL), "unstructured": (4.0, 0.3, PER_CALL), "block4": (1.6, 0.15, PER_CALL),
            "dead": (1.3, 0.0, PER_CALL), "nm24": (2.4, 0.2, PER_CALL)},
    "neon_dot": {"dense": (0.15, 0.0, PER_CALL), "unstructured": (2.5, 0.2, PER_CALL), "block4": (0.6, 0.1, PER_CALL),
                 "dead": (0.15, 0.0, PER_CALL), "nm24": (0.8, 0.1, PER_CALL)},
    "neon": {"dense": (0.3, 0.0, PER_CALL), "unstructured": (2.5, 0.2, PER_CALL), "block4": (0.8, 0.1, PER_CALL),
             "dead": (0.3, 0.0, PER_CALL), "nm24": (1.0, 0.1, PER_CALL)},
    "mve": {"dense": (0.4, 0.0, PER_CALL), "unstructured": (3.0, 0.3, PER_CALL), "block4": (1.0, 0.1, PER_CALL),
            "dead": (0.4, 0.0, PER_CALL), "nm24": (1.5, 0.2, PER_CALL)},
}


@dataclass(frozen=True)
class Coefficients:
    a: float
    b: float
    c: float
    source: str  # "kernels.json" or "default"

    def estimate(self, work: int, macs: int) -> int:
        return int(round(self.a * work + self.b * macs + self.c))


@lru_cache(maxsize=4)
def _fitted(path: str, mtime: float) -> dict[tuple[str, str, str], Coefficients]:
    rows = json.loads(Path(path).read_text())
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["backend"], r["format"]), []).append(r)
    fitted = {}
    for key, rs in groups.items():
        macs = np.array([r["macs"] for r in rs], float)
        nz = macs * (1.0 - np.array([r["sparsity"] for r in rs], float))
        y = np.array([r["instructions"] for r in rs], float)
        # bench/kernels prunes each format in its own pattern (blocks for block4, channels for dead),
        # so the stored weights are the non-zero ones there.
        work = macs if key[2] == "dense" else nz
        c = PER_CALL
        cols = [work] if key[2] == "dense" else [work, macs]
        coef, *_ = np.linalg.lstsq(np.stack(cols, 1), y - c, rcond=None)
        a, b = float(coef[0]), (float(coef[1]) if len(coef) > 1 else 0.0)
        if b < 0:  # refit without the per-MAC term rather than predict negative overhead
            a, b = float(np.linalg.lstsq(work[:, None], y - c, rcond=None)[0][0]), 0.0
        fitted[key] = Coefficients(max(a, 0.0), b, c, "kernels.json")
    return fitted


def coefficients(target: str, backend: str, fmt: str, path: Path = KERNELS_JSON) -> Coefficients:
    """The coefficients for a target profile name, its kernels_c backend (targets.Target.backend) and a format."""
    if path.exists():
        fitted = _fitted(str(path), path.stat().st_mtime)
        if (target, backend, fmt) in fitted:
            return fitted[(target, backend, fmt)]
        same_backend = sorted(k for k in fitted if k[1:] == (backend, fmt))  # e.g. cortex-m4 from cortex-m7's DSP rows
        if same_backend:
            return fitted[same_backend[0]]
    a, b, c = DEFAULTS.get(backend, DEFAULTS["portable"]).get(fmt, DEFAULTS["portable"]["dense"])
    return Coefficients(a, b, c, "default")


def estimate(target: str, backend: str, fmt: str, work: int, macs: int) -> int:
    """Instructions for one layer: `work` MACs performed by the format (see the module doc), `macs` in all."""
    return coefficients(target, backend, fmt).estimate(work, macs)
