"""Exact RAM and backward-MAC costs of training a selection of neurons (METHODS.md section 1).

A *neuron* is one output channel of a region layer. It trains either fully (its non-zero weights and
its bias) or, for `su`, its bias alone. Everything adaptation keeps beyond plain int8 inference
counts, in bytes, with every buffer allocated statically for the epoch (one buffer per tensor, no
reuse between them, which is what the device allocates):

- params: per trained parameter a float32 master copy and a float32 gradient (plus a float32
  momentum buffer when momentum != 0). Only the selected neurons' non-zero weights and biases: the
  other weights are read from the int8 model in flash and dequantized on the fly.
- saved: the float32 activations the backward pass reads: the input of every layer with a
  weight-training neuron (for its weight gradients), the output of every crossed layer with a fused
  RELU/RELU6 (for the activation's backward), and the input of every crossed MAX_POOL.
- errors: one float32 gradient buffer per tensor the backward pass writes, from the logits down to
  the output of the deepest selected layer (RESHAPE/QUANTIZE share their input's buffer).
- neq: for selectors that track velocities (`neq`, `neq-shuffled`), per candidate neuron five float32
  (v_n^{t-1}, nu_n, and the three running sums of the cosine: o.o', o.o, o'.o'), and the previous
  outputs o_n^{t-1}, in one of two ways (`history`, below). The probe set itself (int8 model inputs)
  is constant during adaptation, so by default the device keeps it in flash next to the adapted
  weights (like the weights, it is read in place: no RAM; the bytes are reported as `probe_flash`);
  `probe_in_ram=True` counts it in RAM instead (a device without writable flash).
  * "recompute" (default): o_n^{t-1} is not stored. Only the selected neurons changed during the
    epoch, so the device keeps a float32 copy of their parameters as they were before the epoch
    (4 more bytes per trained parameter) and runs the probe set through the region twice, with the
    old and the new parameters, accumulating the sums sample by sample. Costs 2 region forward
    passes per probe sample per epoch (neq_macs_per_epoch).
  * "int8": o_n^{t-1} of every candidate neuron over the probe set in int8 (probe samples x output
    positions bytes per neuron; quantized with a fixed symmetric scale per layer taken from the
    deployed int8 output tensor, so it streams; the cosine is scale-invariant, so no scale is
    stored). One region forward pass per probe sample per epoch. On the digits CNN this history
    alone is 60% of what full training needs, which is why it is not the default.
- grad: for the gradient-signal scores (scores.GRAD_SCORES), one float32 error-mass accumulator per
  candidate neuron (reported as "grad"; the key is absent for every other selector). Candidates are
  restricted as with NEq state (fit_candidates).

MACs per training sample (backward only): the weight-gradient MACs of the weight-training neurons
(their non-zero weights times the output positions) plus the input-gradient MACs of every layer the
backward pass crosses above the deepest selected one (all its non-zero weights times its output
positions). Bias gradients are additions and cost no MACs. Adding the first neuron of a deeper layer
adds the whole path (errors, saved activations, input gradients), and every total here includes it.

`dense=True` counts every weight of a channel, zeros included, which is what the dense float kernels
of kernels_c/include/ep_train_f32.h compute and allocate; their cost functions then give the same
gradient bytes and backward MACs (tests/test_adapt_budget.py checks that through ctypes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from edgeprune.adapt.region import ALIAS, Region
from edgeprune.errors import UsageError

F32 = 4
HISTORIES = ("recompute", "int8")
NEQ_FLOATS_PER_NEURON = 5  # v_prev, nu, and the cosine's three running sums


@dataclass
class Selection:
    """Per region layer, the channels training weights and bias, and those training their bias alone."""

    weights: list[set[int]]
    biases: list[set[int]] = field(default_factory=list)

    def __post_init__(self):
        if not self.biases:
            self.biases = [set() for _ in self.weights]

    @classmethod
    def empty(cls, n_layers: int) -> "Selection":
        return cls([set() for _ in range(n_layers)])

    def copy(self) -> "Selection":
        return Selection([set(s) for s in self.weights], [set(s) for s in self.biases])

    def is_empty(self) -> bool:
        return not any(self.weights) and not any(self.biases)

    def deepest(self) -> int | None:
        """Index of the earliest region layer with anything selected (the backward pass goes down to it)."""
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w or b:
                return i
        return None

    def counts(self, names: list[str]) -> dict[str, int]:
        """Neurons with anything trained, per layer name."""
        return {n: len(w | b) for n, w, b in zip(names, self.weights, self.biases)}

    def as_lists(self) -> dict:
        return {"weights": [sorted(s) for s in self.weights], "biases": [sorted(s) for s in self.biases]}


@dataclass(frozen=True)
class Cost:
    ram: int
    macs: int
    breakdown: dict  # bytes per kind: master, grads, momentum, saved, errors, neq, probe; macs: weight_grad, input_grad


class CostModel:
    """Costs of selections on one region, for one optimizer and one selector's extra state."""

    def __init__(self, region: Region, momentum: bool = False, neq: bool = False, probe_samples: int = 0,
                 dense: bool = False, history: str = "recompute", probe_in_ram: bool = False, grad: bool = False):
        if history not in HISTORIES:
            raise UsageError(f"unknown NEq history '{history}'; choose one of {', '.join(HISTORIES)}")
        self.region = region
        self.momentum = bool(momentum)
        self.neq = bool(neq)
        self.probe_samples = int(probe_samples)
        self.dense = bool(dense)
        self.history = history
        self.probe_in_ram = bool(probe_in_ram)
        self.grad = bool(grad)
        # NEq tracks only the layers from here on (fit_candidates): a neuron whose path alone exceeds
        # the budget can never be selected, so the device keeps no state for it.
        self.first_candidate = 0
        # master + gradient (+ momentum) (+ the pre-epoch copy NEq's recomputation needs)
        self.recompute = self.neq and history == "recompute"
        self.bytes_per_param = F32 * (2 + int(self.momentum) + int(self.recompute))
        self.nnz = []
        for lay in region.layers:
            self.nnz.append(np.full(lay.channels, lay.channel_size, np.int64) if dense else lay.channel_nnz())
        self.has_bias = [lay.bias is not None for lay in region.layers]
        self.positions = [lay.positions for lay in region.layers]
        self.step_of = {st.layer: p for p, st in enumerate(region.steps) if st.layer >= 0}
        self._structure: dict = {}

    # -- per neuron ------------------------------------------------------------------------------
    def neuron_params(self, layer: int, ch: int, bias_only: bool = False) -> int:
        b = 1 if self.has_bias[layer] else 0
        return b if bias_only else int(self.nnz[layer][ch]) + b

    def neuron_bytes(self, layer: int, ch: int, bias_only: bool = False) -> int:
        """The neuron's own RAM: master copy, gradient (and momentum) of its trained parameters."""
        return self.neuron_params(layer, ch, bias_only) * self.bytes_per_param

    def neuron_macs(self, layer: int, ch: int, bias_only: bool = False) -> int:
        """The neuron's own backward MACs per sample (its weight gradient)."""
        return 0 if bias_only else int(self.nnz[layer][ch]) * self.positions[layer]

    def neurons(self) -> list[tuple[int, int]]:
        """Every candidate neuron as (layer, channel), in layer then channel order (the device's order too)."""
        return [(i, c) for i, lay in enumerate(self.region.layers) for c in range(lay.channels)]

    # -- fixed state ---------------------------------------------------------------------------------
    def candidates(self) -> list[tuple[int, int]]:
        """The neurons a selector may pick: those of layers first_candidate and later (a suffix of neurons())."""
        return [(i, c) for i, c in self.neurons() if i >= self.first_candidate]

    def neq_bytes(self) -> int:
        """NEq state of every candidate neuron: 5 float32, plus int8 o_n over the probe set with history="int8"."""
        if not self.neq:
            return 0
        per_position = 0 if self.recompute else self.probe_samples
        return int(sum(lay.channels * (per_position * lay.positions + NEQ_FLOATS_PER_NEURON * F32)
                       for lay in self.region.layers[self.first_candidate:]))

    def grad_bytes(self) -> int:
        """The gradient-signal scores' state: one float32 error-mass accumulator per candidate neuron."""
        return F32 * len(self.candidates()) if self.grad else 0

    def has_candidate_state(self) -> bool:
        """Whether some state is kept per candidate neuron (then candidates are restricted)."""
        return self.neq or self.grad

    def fit_candidates(self, budget_ram: int, budget_macs: int | None) -> int:
        """With per-candidate state (NEq, error mass): the earliest layer L such that one neuron of layer
        L or later fits both budgets with the state of layers L and later; sets and returns
        first_candidate (0 if none fits)."""
        self.first_candidate = 0
        if not self.has_candidate_state():
            return 0
        for first in range(len(self.region.layers)):
            self.first_candidate = first
            for c in range(self.region.layers[first].channels):
                cost = self.cost(_single(self, first, c, False))
                if cost.ram <= budget_ram and (budget_macs is None or cost.macs <= budget_macs):
                    return first
        self.first_candidate = 0
        return 0

    def probe_bytes(self) -> int:
        """The probe set's RAM (0 when it is kept in flash)."""
        return self.probe_set_bytes() if self.probe_in_ram else 0

    def probe_set_bytes(self) -> int:
        if not self.neq:
            return 0
        r = self.region
        return int(self.probe_samples * int(np.prod(r.model_input_shape)) * np.dtype(r.model_input_dtype).itemsize)

    # -- path ----------------------------------------------------------------------------------------
    def structure(self, deepest: int, weight_layers: frozenset) -> tuple[int, int, int]:
        """(saved bytes, error bytes, input-gradient MACs) of a backward pass down to region layer
        `deepest`, computing weight gradients in `weight_layers`."""
        key = (deepest, weight_layers)
        if key in self._structure:
            return self._structure[key]
        steps, layers = self.region.steps, self.region.layers
        p0 = self.step_of[deepest]
        saved: dict[int, int] = {}
        for lay in weight_layers:
            st = steps[self.step_of[lay]]
            saved[st.in_tensor] = st.in_size
        errors = in_macs = 0
        for p in range(p0, len(steps)):
            st = steps[p]
            if st.layer >= 0:
                if layers[st.layer].activation != "NONE":
                    saved[st.out_tensor] = st.out_size
                if p > p0:
                    in_macs += int(self.nnz[st.layer].sum()) * self.positions[st.layer]
            elif st.kind == "MAX_POOL_2D":
                saved[st.in_tensor] = st.in_size
            if st.kind not in ALIAS:
                errors += st.out_size
        out = (F32 * int(sum(saved.values())), F32 * errors, in_macs)
        self._structure[key] = out
        return out

    # -- totals ----------------------------------------------------------------------------------------
    def cost(self, sel: Selection) -> Cost:
        n_w = n_b = wg_macs = 0
        for i in range(len(self.region.layers)):
            for c in sel.weights[i]:
                n_w += int(self.nnz[i][c])
                n_b += 1 if self.has_bias[i] else 0
                wg_macs += int(self.nnz[i][c]) * self.positions[i]
            for c in sel.biases[i] - sel.weights[i]:
                n_b += 1 if self.has_bias[i] else 0
        return self._total(n_w + n_b, wg_macs, sel.deepest(), frozenset(i for i, s in enumerate(sel.weights) if s))

    def _total(self, n_params: int, wg_macs: int, deepest: int | None, weight_layers: frozenset) -> Cost:
        neq, probe = self.neq_bytes(), self.probe_bytes()
        saved = errors = in_macs = 0
        if deepest is not None:
            saved, errors, in_macs = self.structure(deepest, weight_layers)
        bd = {
            "master": F32 * n_params, "grads": F32 * n_params, "momentum": F32 * n_params if self.momentum else 0,
            "saved": saved, "errors": errors, "neq": neq + (F32 * n_params if self.recompute else 0), "probe": probe,
            "weight_grad_macs": wg_macs, "input_grad_macs": in_macs,
            "probe_flash": 0 if self.probe_in_ram else self.probe_set_bytes(),
        }
        if self.grad:  # only then: every other selector's breakdown stays as it was
            bd["grad"] = self.grad_bytes()
        ram = bd["master"] + bd["grads"] + bd["momentum"] + saved + errors + bd["neq"] + probe + bd.get("grad", 0)
        return Cost(int(ram), int(wg_macs + in_macs), bd)

    def full_selection(self) -> Selection:
        return Selection([set(range(lay.channels)) for lay in self.region.layers])

    def full_cost(self) -> Cost:
        """What `full` needs: every neuron of the region, no NEq state."""
        plain = CostModel(self.region, self.momentum, neq=False, dense=self.dense)
        return plain.cost(plain.full_selection())

    def smallest(self, bias_only: bool = False) -> tuple[Cost, str]:
        """The cheapest single-neuron selection by RAM (and the layer it is in); with NEq state, over
        every choice of first candidate layer."""
        best, keep = None, self.first_candidate
        for first in range(len(self.region.layers)) if self.has_candidate_state() else [keep]:
            self.first_candidate = first
            for i, c in self.candidates():
                cost = self.cost(_single(self, i, c, bias_only))
                if best is None or (cost.ram, cost.macs) < (best[0].ram, best[0].macs):
                    best = (cost, self.region.layers[i].name)
        self.first_candidate = keep
        return best


class Greedy:
    """Adds neurons in a given order while the total cost stays within both budgets (a neuron that does
    not fit is skipped and the next one tried), with the path cost of every new deepest layer included."""

    def __init__(self, cm: CostModel, budget_ram: int, budget_macs: int | None):
        self.cm, self.budget_ram, self.budget_macs = cm, budget_ram, budget_macs

    def fits(self, cost: Cost) -> bool:
        return cost.ram <= self.budget_ram and (self.budget_macs is None or cost.macs <= self.budget_macs)

    def run(self, order, start: Selection | None = None, bias_only: bool = False) -> Selection:
        cm = self.cm
        sel = start.copy() if start is not None else Selection.empty(len(cm.region.layers))
        base = cm.cost(sel)
        n_params = (base.breakdown["master"]) // F32
        wg = base.breakdown["weight_grad_macs"]
        deepest = sel.deepest()
        wl = set(i for i, s in enumerate(sel.weights) if s)
        for i, c in order:
            if c in sel.weights[i] or (bias_only and c in sel.biases[i]):
                continue
            if bias_only:
                add_p, add_m = cm.neuron_params(i, c, True), 0
            else:
                add_p = cm.neuron_params(i, c) - (cm.neuron_params(i, c, True) if c in sel.biases[i] else 0)
                add_m = cm.neuron_macs(i, c)
            d = i if deepest is None else min(deepest, i)
            w2 = frozenset(wl | ({i} if not bias_only else set()))
            if self.fits(cm._total(n_params + add_p, wg + add_m, d, w2)):
                (sel.biases if bias_only else sel.weights)[i].add(c)
                n_params, wg, deepest, wl = n_params + add_p, wg + add_m, d, set(w2)
        return sel


# ---------------------------------------------------------------------------------------------
# Budget strings

_RAM_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6, "mib": 1 << 20}
_MAC_UNITS = {"": 1, "k": 1000, "m": 10**6, "g": 10**9}
_NUMBER = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z%]*)\s*$")


def parse_budget_ram(text: str | int, full_ram: int) -> int:
    """Bytes from `6144`, `6KiB` (1024), `6 kB`/`6KB` (1000, SI), `1MiB`, or `20%` of full's RAM."""
    return _parse(text, full_ram, _RAM_UNITS, "--budget-ram", "6144, 6KiB, 6kB, 1MiB or 20% (of what full training needs)")


def parse_budget_macs(text: str | int | None, full_macs: int) -> int | None:
    """Backward MACs per sample from `400000`, `400k`, `1.5M`, `2G`, or `20%` of full's MACs; None: no bound."""
    if text is None:
        return None
    return _parse(text, full_macs, _MAC_UNITS, "--budget-macs", "400000, 400k, 1.5M or 20% (of what full training needs)")


def _parse(text, full: int, units: dict, flag: str, examples: str) -> int:
    if isinstance(text, (int, np.integer)):
        value = int(text)
    else:
        m = _NUMBER.match(str(text))
        unit = m.group(2).lower() if m else None
        if m is None or (unit not in units and unit != "%"):
            raise UsageError(f"{flag} '{text}' is not a budget; write it as {examples}")
        number = float(m.group(1))
        value = int(number * full / 100.0) if unit == "%" else int(number * units[unit])
    if value <= 0:
        raise UsageError(f"{flag} '{text}' must be positive; write it as {examples}")
    return value


def too_small_message(cm: CostModel, budget_ram: int, budget_macs: int | None, bias_only: bool = False) -> str | None:
    """None when one neuron fits; otherwise one line naming the smallest workable budget."""
    cost, layer = cm.smallest(bias_only)
    what = "one neuron's bias" if bias_only else "one neuron"
    extra = f", of which {cost.breakdown['neq'] + cost.breakdown['probe']:,} B NEq state" if cm.neq else ""
    if cm.grad:
        extra = f", of which {cost.breakdown['grad']:,} B error-mass accumulators"
    if cost.ram > budget_ram:
        return (f"--budget-ram {budget_ram:,} B is too small for even {what}: the smallest workable budget is "
                f"{cost.ram:,} B ({what} of {layer}{extra})")
    if budget_macs is not None:
        best = min((cm.cost(_single(cm, i, c, bias_only)).macs, cm.region.layers[i].name) for i, c in cm.neurons())
        if best[0] > budget_macs:
            return (f"--budget-macs {budget_macs:,} is too small for even {what}: the smallest workable budget is "
                    f"{best[0]:,} backward MACs per sample ({what} of {best[1]})")
    return None


def _single(cm: CostModel, i: int, c: int, bias_only: bool) -> Selection:
    sel = Selection.empty(len(cm.region.layers))
    (sel.biases if bias_only else sel.weights)[i].add(c)
    return sel
