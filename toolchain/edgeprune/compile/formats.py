"""A weight format per weighted layer: dense or one of kernels_c's sparse formats.

`choose_formats` encodes each CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED layer's weights in every
format that can hold them (a format that cannot, e.g. nm24 on weights that are not 2:4, is skipped),
estimates each one's instructions with costmodel, and keeps the cheapest, except that a format
within NEAR_TIE of the cheapest estimate and smaller in flash wins (the estimates are not that
precise, and flash is the scarcer resource at equal speed); exact ties go to dense.

Given the target's kernel code sizes (`code_bytes`), the choice is then made for the whole model:
each format a model uses links its kernels (a few KiB each on Cortex-M), so mixing formats for small
per-layer gains can cost more flash than it saves. `fit_flash` searches assignments whose summed
instruction estimate stays within SPEED_TOLERANCE of the fastest and keeps the one with the least
flash (weights + kernel code).
`override` forces one format everywhere it applies ("dense", or a format name: layers it cannot
encode stay dense, and the report says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeprune.compile import costmodel
from edgeprune.compile.ir import Graph, Op
from edgeprune.errors import UsageError
from edgeprune.sparse.encode import FORMATS, SparseWeights, encode

WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
LAYOUTS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "fc"}
CHOICES = ("auto", "dense") + FORMATS
NEAR_TIE = 0.03  # estimates within 3% count as equally fast: the smaller weights win
SPEED_TOLERANCE = 0.10  # a whole-model choice may be up to 10% slower (estimated) to save flash


@dataclass
class LayerFormat:
    format: str  # "dense" or a sparse format name
    weight_bytes: int  # flash for the weights and bias (a sparse blob holds both), multipliers and shifts
    instructions_estimate: int
    macs: int = 0
    nonzero_macs: int = 0
    encoded: SparseWeights | None = field(default=None, repr=False)
    candidates: dict[str, int] = field(default_factory=dict)  # format -> estimate, for the report


def layer_macs(graph: Graph, op: Op) -> tuple[int, int]:
    """(MACs, non-zero MACs): every weight once per output position."""
    w = graph.tensors[op.inputs[1]].data
    out = graph.tensors[op.outputs[0]]
    if op.kind == "FULLY_CONNECTED":
        positions = out.size // w.shape[0]
    elif op.kind == "DEPTHWISE_CONV_2D":
        positions = out.size // w.shape[-1]
    else:
        positions = out.size // w.shape[0]
    return int(w.size * positions), int(np.count_nonzero(w) * positions)


def _bias(graph: Graph, op: Op, n_out: int) -> np.ndarray:
    b = op.inputs[2] if len(op.inputs) > 2 else -1
    return graph.tensors[b].data.astype(np.int64).reshape(-1) if b >= 0 else np.zeros(n_out, np.int64)


def _work(fmt: str, enc: SparseWeights | None, macs: int, nonzero_macs: int) -> int:
    """MACs the format performs: all (dense), those of live channels (dead), those of the stored
    weights (the others: a block4 block with one non-zero weight still costs four)."""
    if fmt == "dense":
        return macs
    if fmt == "dead":
        return macs * int(enc.live_channels.size) // max(enc.rows, 1)
    return max(nonzero_macs, macs * enc.stored_values // max(enc.rows * enc.cols, 1))


def choose_formats(graph: Graph, target, override: str = "auto",
                   code_bytes: dict[tuple[str, str], int] | None = None) -> dict[int, LayerFormat]:
    """op index -> LayerFormat for every weighted op of `graph` on `target` (a targets.Target).

    code_bytes: backend.kernel_code_bytes(target), for the whole-model flash trade-off (auto only)."""
    if override not in CHOICES:
        raise UsageError(f"unknown --format {override}; choose one of {', '.join(CHOICES)}")
    chosen, kinds, all_options = {}, {}, {}
    for op in graph.ops:
        if op.kind not in WEIGHTED:
            continue
        w = graph.tensors[op.inputs[1]]
        n_out = w.shape[-1] if op.kind == "DEPTHWISE_CONV_2D" else w.shape[0]
        macs, nz = layer_macs(graph, op)
        quant_bytes = 8 * n_out  # int32 multiplier and shift per output channel
        options = {"dense": (w.data.size + 4 * n_out + quant_bytes, None)}
        wanted = FORMATS if override == "auto" else ((override,) if override != "dense" else ())
        in_offset = -int(graph.tensors[op.inputs[0]].zero_point[0])
        for fmt in wanted:
            try:
                enc = encode(fmt, w.data, _bias(graph, op, n_out), in_offset, LAYOUTS[op.kind])
            except ValueError:
                continue  # the weights do not fit this format
            options[fmt] = (enc.nbytes + quant_bytes, enc)
        estimates = {f: costmodel.estimate(target.name, target.backend, f, _work(f, options[f][1], macs, nz), macs)
                     for f in options}
        if override == "auto":
            fastest = min(estimates.values())
            near = [f for f in options if estimates[f] <= fastest * (1 + NEAR_TIE)]
            best = min(near, key=lambda f: (options[f][0], estimates[f], f != "dense"))
        else:
            best = override if override in options else "dense"
        nbytes, enc = options[best]
        chosen[op.index] = LayerFormat(best, nbytes, estimates[best], macs, nz, enc, estimates)
        kinds[op.index], all_options[op.index] = op.kind, options
    if override == "auto" and code_bytes and chosen:
        picks = fit_flash({i: {f: (lf.candidates[f], all_options[i][f][0]) for f in lf.candidates}
                           for i, lf in chosen.items()}, kinds, code_bytes)
        for i, fmt in picks.items():
            if fmt != chosen[i].format:
                lf = chosen[i]
                nbytes, enc = all_options[i][fmt]
                chosen[i] = LayerFormat(fmt, nbytes, lf.candidates[fmt], lf.macs, lf.nonzero_macs, enc, lf.candidates)
    return chosen


def model_flash(assign: dict[int, str], options, kinds, code_bytes) -> tuple[int, int]:
    """(summed instruction estimate, flash bytes: weights + each (op, format)'s kernel code once)."""
    instr = sum(options[i][f][0] for i, f in assign.items())
    weights = sum(options[i][f][1] for i, f in assign.items())
    kernels = {(kinds[i], f) for i, f in assign.items()}
    code = sum(code_bytes.get(k, 0) for k in kernels)
    if any(f != "dense" for f in assign.values()):
        code += code_bytes.get(("sparse", "runtime"), 0)
    return instr, weights + code


def fit_flash(options: dict[int, dict[str, tuple[int, int]]], kinds: dict[int, str],
              code_bytes: dict[tuple[str, str], int], tolerance: float = SPEED_TOLERANCE) -> dict[int, str]:
    """Layer -> format with the least flash among assignments within `tolerance` of the fastest.

    options: layer -> {format: (instructions, weight bytes)}. A local search from the per-layer
    fastest choice and from every uniform choice (one format wherever it applies), moving one layer
    or every layer of one (op, format) kernel at a time: enough for a handful of formats."""
    fastest = {i: min(o, key=lambda f: (o[f][0], o[f][1])) for i, o in options.items()}
    budget = model_flash(fastest, options, kinds, code_bytes)[0] * (1 + tolerance)

    def cost(assign):
        instr, flash = model_flash(assign, options, kinds, code_bytes)
        return (flash, instr) if instr <= budget else None

    starts = [fastest] + [{i: (f if f in o else fastest[i]) for i, o in options.items()}
                          for f in {f for o in options.values() for f in o}]
    best, best_cost = fastest, cost(fastest)
    for assign in starts:
        current = cost(assign)
        if current is None:
            continue
        improved = True
        while improved:
            improved = False
            moves = [[i] for i in options]
            moves += [[i for i in options if (kinds[i], assign[i]) == k] for k in {(kinds[i], assign[i]) for i in options}]
            for layers in moves:
                for f in {f for i in layers for f in options[i]}:
                    trial = dict(assign)
                    trial.update({i: f for i in layers if f in options[i]})
                    c = cost(trial)
                    if c is not None and c < current:
                        assign, current, improved = trial, c, True
        if current < best_cost:
            best, best_cost = assign, current
    return best
