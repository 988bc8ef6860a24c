"""Neurons at equilibrium (NEq): similarity of each candidate neuron's outputs between epochs, and its velocity.

After each epoch t the probe set V runs forward; o_n^t are neuron n's outputs (after bias, before the
activation) over every probe sample and output position. Then
    v_n^t  = cos(o_n^t, o_n^{t-1})
    dv_n^t = v_n^t - v_n^{t-1}
    nu_n^t = dv_n^t + mu * nu_n^{t-1}          (nu starts at 0)
and n is at equilibrium when |nu_n^t| < eps. The first observation (before training) only records
o^0; the second gives v^1; velocities exist from the third on, so the first two epochs train with
the selector's `--init` policy.

Everything here is computable on the device with the state budget.py counts: per neuron v, nu and
three running sums (a.b, a.a, b.b, accumulated probe sample by probe sample), plus o^{t-1} either
recomputed from a pre-epoch copy of the trained parameters ("recompute") or stored in int8 with the
layer's fixed symmetric scale ("int8": the sums are then exact integers). A zero vector on both
sides counts as unchanged (v = 1); on one side only as v = 0.
"""

from __future__ import annotations

import numpy as np

from edgeprune.adapt.region import Region

MU = 0.5
EPS = 1e-3
PROBE_PER_CLASS = 2


def probe_indices(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """`per_class` samples of every class present in y, drawn with the seed, in class order."""
    rng = np.random.default_rng([seed, 0x9E0])
    out = []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        out.extend(sorted(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist()))
    return np.asarray(out, np.int64)


def quantize_history(o: np.ndarray, scale: float) -> np.ndarray:
    """int8 history of outputs: round half away from zero, saturate to [-127, 127]."""
    x = np.asarray(o, np.float32) / np.float32(scale)
    return np.clip(np.sign(x) * np.floor(np.abs(x) + 0.5), -127, 127).astype(np.int8)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (neurons, elements) arrays; integers are summed exactly."""
    if a.dtype.kind == "i":
        a64, b64 = a.astype(np.int64), b.astype(np.int64)
        dot, na, nb = (a64 * b64).sum(1).astype(np.float64), (a64 * a64).sum(1).astype(np.float64), (b64 * b64).sum(1).astype(np.float64)
    else:
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        dot, na, nb = (a64 * b64).sum(1), (a64 * a64).sum(1), (b64 * b64).sum(1)
    both_zero = (na == 0) & (nb == 0)
    denom = np.sqrt(na * nb)
    v = np.divide(dot, denom, out=np.zeros_like(dot), where=denom > 0)
    v[both_zero] = 1.0
    return v


class NEqTracker:
    """Velocities of every candidate neuron (flattened in layer, channel order)."""

    def __init__(self, region: Region, mu: float = MU, eps: float = EPS, history: str = "recompute"):
        self.region, self.mu, self.eps, self.history = region, float(mu), float(eps), history
        self.prev: list[np.ndarray] | None = None
        self.v_prev: np.ndarray | None = None
        self.nu: np.ndarray | None = None
        self.observations = 0

    def _rows(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        rows = []
        for lay, o in zip(self.region.layers, outputs):
            o = np.asarray(o).reshape(-1, lay.channels).T  # (channels, samples * positions)
            rows.append(quantize_history(o, lay.history_scale) if self.history == "int8" else o.astype(np.float32))
        return rows

    def observe(self, outputs: list[np.ndarray]) -> None:
        """Record the probe set's pre-activation outputs per layer, each (P, *out_shape)."""
        rows = self._rows(outputs)
        if self.prev is not None:
            v = np.concatenate([cosine(a, b) for a, b in zip(rows, self.prev)])
            if self.v_prev is not None:
                dv = v - self.v_prev
                self.nu = dv + (self.mu * self.nu if self.nu is not None else 0.0)
            self.v_prev = v
        self.prev = rows
        self.observations += 1

    @property
    def velocities(self) -> np.ndarray | None:
        """nu per neuron, or None during the first two epochs."""
        return self.nu

    def at_equilibrium(self) -> int | None:
        return None if self.nu is None else int((np.abs(self.nu) < self.eps).sum())


def neq_macs_per_epoch(region: Region, probe_samples: int, history: str = "recompute", first_candidate: int = 0) -> dict:
    """What the device computes per epoch to update the velocities (not part of --budget-macs, which is
    per training sample): the probe set through the int8 prefix once and through the float region once
    ("int8") or twice (old and new parameters, "recompute"), and 3 MACs per output element for the sums."""
    passes = 2 if history == "recompute" else 1
    elements = sum(lay.channels * lay.positions for lay in region.layers[first_candidate:])
    return {
        "prefix_int8_macs": int(probe_samples * region.prefix_macs),
        "region_f32_macs": int(passes * probe_samples * region.forward_macs()),
        "similarity_macs": int(3 * probe_samples * elements),
    }
