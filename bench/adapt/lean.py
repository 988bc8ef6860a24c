"""A cheaper, still exact, accounting of the backward path, to ask whether budget.py's (every buffer
separate, every saved activation in float32) is what keeps every selector in the last layer at small
budgets. Used only by the benchmark (`run.py --accounting lean`); budget.py is unchanged (the device
implements it). Differences from budget.py's CostModel.structure, each implementable on a device:

- error buffers: two ping-pong buffers instead of one per tensor. Backward step p reads the error of
  its output and writes the error of its input, so only two are alive at once; buffer A holds the
  errors written at even positions along the path, B the odd ones, each sized for its largest.
- the error below a MEAN (or an AVERAGE_POOL_2D whose windows do not overlap) is never materialised:
  it is the pooled error divided by the window, broadcast, which the layer below reads on the fly.
- a crossed RELU / RELU6 keeps a 1-bit mask of where its derivative is 1 (ceil(n / 8) bytes), not
  its float32 output; when the same tensor is saved in float32 anyway (the input of a weight-training
  layer), the mask is free.
Params, NEq state and MACs are counted exactly as budget.py counts them.
"""

from __future__ import annotations

import contextlib

from edgeprune.adapt import budget
from edgeprune.adapt.region import ALIAS

_ORIGINAL = budget.CostModel.structure


def lean_structure(self, deepest: int, weight_layers: frozenset) -> tuple[int, int, int]:
    key = ("lean", deepest, weight_layers)
    if key in self._structure:
        return self._structure[key]
    steps, layers = self.region.steps, self.region.layers
    p0 = self.step_of[deepest]
    floats: dict[int, int] = {}
    for lay in weight_layers:
        st = steps[self.step_of[lay]]
        floats[st.in_tensor] = st.in_size
    masks: dict[int, int] = {}
    errors: list[int] = []  # materialised error tensors, from the deepest up
    in_macs = 0
    real = [p for p in range(p0, len(steps)) if steps[p].kind not in ALIAS]
    for k, p in enumerate(real):
        st = steps[p]
        if st.layer >= 0:
            if layers[st.layer].activation != "NONE":
                masks[st.out_tensor] = st.out_size
            if p > p0:
                in_macs += int(self.nnz[st.layer].sum()) * self.positions[st.layer]
        elif st.kind == "MAX_POOL_2D":
            floats[st.in_tensor] = st.in_size
        nxt = steps[real[k + 1]] if k + 1 < len(real) else None
        broadcast = nxt is not None and (nxt.kind == "MEAN" or (nxt.kind == "AVERAGE_POOL_2D"
                                                                and nxt.params["filter"] == nxt.params["stride"]))
        if not broadcast:
            errors.append(st.out_size)
    even = max(errors[0::2], default=0)
    odd = max(errors[1::2], default=0)
    saved = budget.F32 * sum(floats.values()) + sum((n + 7) // 8 for t, n in masks.items() if t not in floats)
    out = (int(saved), budget.F32 * (even + odd), in_macs)
    self._structure[key] = out
    return out


@contextlib.contextmanager
def accounting(name: str):
    """Within the block, every CostModel uses `name`'s path accounting ("budget.py" or "lean")."""
    if name == "budget.py":
        yield
        return
    if name != "lean":
        raise ValueError(f"unknown accounting {name}")
    budget.CostModel.structure = lean_structure
    try:
        yield
    finally:
        budget.CostModel.structure = _ORIGINAL


def path_costs(region) -> list[dict]:
    """Per region layer: RAM of the path (saved + errors) to train one neuron of it, in both accountings."""
    out = []
    for acc in ("budget.py", "lean"):
        with accounting(acc):
            cm = budget.CostModel(region)
            full = cm.full_cost().ram
            for i, lay in enumerate(region.layers):
                s, e, m = cm.structure(i, frozenset([i]))
                out.append({"accounting": acc, "layer": lay.name, "saved": s, "errors": e, "path_ram": s + e,
                            "input_grad_macs": m, "full_ram": full})
    return out
