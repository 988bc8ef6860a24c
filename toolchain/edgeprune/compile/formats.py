"""A weight format per weighted layer: dense or one of kernels_c's sparse formats.

`choose_formats` encodes each CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED layer's weights in every
format that can hold them (a format that cannot, e.g. nm24 on weights that are not 2:4, is skipped),
estimates each one's instructions with costmodel, and keeps the cheapest, except that a format
within NEAR_TIE of the cheapest estimate and smaller in flash wins (the estimates are not that
precise, and flash is the scarcer resource at equal speed); exact ties go to dense.
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


def choose_formats(graph: Graph, target, override: str = "auto") -> dict[int, LayerFormat]:
    """op index -> LayerFormat for every weighted op of `graph` on `target` (a targets.Target)."""
    if override not in CHOICES:
        raise UsageError(f"unknown --format {override}; choose one of {', '.join(CHOICES)}")
    chosen = {}
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
    return chosen
