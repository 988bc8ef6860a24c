"""What a compile reports: per-layer weights and MACs read from the deployed .tflite, accuracy,
files and timings, as report.json (a stable contract) and report.md (for people)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from edgeprune.compile.tflite_reader import TFLiteModel

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclass
class LayerReport:
    name: str
    op: str
    index: int  # operator index in the .tflite
    weight_shape: list[int]  # TFLite layout: conv (O,H,W,I), depthwise (1,H,W,C), FC (O,I)
    sparsity: float  # of the int8 weights as deployed
    float_sparsity: float | None  # of the float weights before quantization
    zeros_preserved: bool | None  # every float zero is an int8 zero
    params: int  # weights + bias
    nonzero_params: int
    nonzero_weights: int
    macs: int
    nonzero_macs: int
    nm_pattern: str | None = None  # "2:4" when every group of 4 input weights has <= 2 non-zeros

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelStats:
    params: int
    nonzero_params: int
    weights: int  # conv and FC weights only: what pruning acts on
    nonzero_weights: int
    sparsity: float  # weight sparsity of the deployed int8 model
    macs: int
    nonzero_macs: int
    layers: list[LayerReport] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [l.to_dict() for l in self.layers]
        return d


def layer_stats(int8: TFLiteModel, float32: TFLiteModel | None = None, nm: tuple[int, int] | None = None) -> ModelStats:
    float_weights = _weights_in_order(float32) if float32 is not None else []
    layers = []
    counts: dict[str, int] = {}
    for k, op in enumerate(o for o in int8.operators if o.op in WEIGHTED_OPS):
        w = int8.tensors[op.inputs[1]]
        if w.data is None:
            continue
        bias = int8.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        bias_data = bias.data if bias is not None and bias.data is not None else np.zeros(0)
        out_shape = int8.tensors[op.outputs[0]].shape
        positions = _output_positions(op.op, out_shape, w.shape)
        nnz = int(np.count_nonzero(w.data))
        fw = float_weights[k] if k < len(float_weights) and float_weights[k].shape == w.data.shape else None
        n = counts.get(op.op, 0)
        counts[op.op] = n + 1
        layers.append(
            LayerReport(
                name=f"{op.op.lower()}_{n}",
                op=op.op,
                index=op.index,
                weight_shape=list(w.shape),
                sparsity=1.0 - nnz / w.data.size,
                float_sparsity=None if fw is None else float(1.0 - np.count_nonzero(fw) / fw.size),
                zeros_preserved=None if fw is None else bool(np.all(w.data[fw == 0] == 0)),
                params=int(w.data.size + bias_data.size),
                nonzero_params=int(nnz + np.count_nonzero(bias_data)),
                nonzero_weights=nnz,
                macs=int(positions * w.data.size),  # every weight is used once per output position
                nonzero_macs=int(positions * nnz),
                nm_pattern=_nm_label(op.op, w.data, nm),
            )
        )
    weights = sum(int(np.prod(l.weight_shape)) for l in layers)
    nonzero_weights = sum(l.nonzero_weights for l in layers)
    return ModelStats(
        params=sum(l.params for l in layers),
        nonzero_params=sum(l.nonzero_params for l in layers),
        weights=weights,
        nonzero_weights=nonzero_weights,
        sparsity=1.0 - nonzero_weights / max(weights, 1),
        macs=sum(l.macs for l in layers),
        nonzero_macs=sum(l.nonzero_macs for l in layers),
        layers=layers,
    )


def _weights_in_order(model: TFLiteModel) -> list[np.ndarray]:
    out = []
    for op in model.operators:
        if op.op in WEIGHTED_OPS:
            w = model.tensors[op.inputs[1]]
            out.append(w.data if w.data is not None else np.zeros(0))
    return out


def _output_positions(op: str, out_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> int:
    """How many times the whole weight tensor is swept: output pixels (conv) or rows (FC)."""
    if op == "FULLY_CONNECTED":
        return int(np.prod(out_shape)) // int(w_shape[0])
    return int(np.prod(out_shape[:-1]))


def _nm_label(op: str, w: np.ndarray, nm: tuple[int, int] | None) -> str | None:
    if nm is None or op == "DEPTHWISE_CONV_2D":
        return None
    n, m = nm
    if w.shape[-1] % m:
        return None
    groups = (w.reshape(-1, m) != 0).sum(axis=1)
    return f"{n}:{m}" if int(groups.max()) <= n else None


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=_json_default) + "\n"


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o).__name__)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def to_markdown(report: dict) -> str:
    m, acc = report["model"], report["accuracy"]
    lines = [
        f"# edgeprune compile report: {report['source']}",
        "",
        f"- target: **{report['target']}**, input shape {report['input_shape']}",
        f"- pruning: {report['pruning']['method']} (requested sparsity {report['pruning']['requested_sparsity']})",
        f"- weights: {m['nonzero_weights']:,} non-zero of {m['weights']:,} (sparsity {_pct(m['sparsity'])}); "
        f"params with biases {m['nonzero_params']:,} / {m['params']:,}",
        f"- MACs: {m['nonzero_macs']:,} non-zero of {m['macs']:,}",
        f"- accuracy (evaluation split, {acc.get('samples')} samples): float {_pct(acc['float'])}, int8 {_pct(acc['int8'])}, "
        f"top-1 agreement {_pct(acc['agreement'])}, max logit error {acc.get('max_logit_error', float('nan')):.4f}",
    ]
    if acc.get("dense_float") is not None:
        lines.append(f"- float accuracy before pruning: {_pct(acc['dense_float'])}")
    if acc.get("worst_class") is not None:
        w = acc["worst_class"]
        lines.append(f"- worst-hit class (int8 recall vs dense float): {w['class']} ({_pct(w['dense_recall'])} -> {_pct(w['int8_recall'])})")
    mem, val = report.get("memory"), report.get("validation")
    if mem:
        lines.append(f"- memory: flash {mem['flash_bytes']:,} B (weights {mem['weights_bytes']:,}, code {mem['code_bytes']:,}), "
                     f"SRAM peak {mem['sram_peak_bytes']:,} B (arena {mem['arena_bytes']:,})")
    if val:
        verdict = "bit-exact" if val["bitexact"] else "NOT checked"
        lines.append(f"- generated C: {verdict} with {val['oracle']} on {val['samples']} samples ({val.get('inputs', '')} inputs)")
    lines += [
        "",
        "| layer | op | weight shape | float sparsity | int8 sparsity | zeros kept | MACs | non-zero MACs "
        "| format | weight bytes | est. instructions |",
        "|---|---|---|---:|---:|:---:|---:|---:|---|---:|---:|",
    ]
    for l in m["layers"]:
        kept = {True: "yes", False: "NO", None: "n/a"}[l["zeros_preserved"]]
        lines.append(
            f"| {l['name']} | {l['op']} | {'x'.join(map(str, l['weight_shape']))} | {_pct(l['float_sparsity'])} | "
            f"{_pct(l['sparsity'])} | {kept} | {l['macs']:,} | {l['nonzero_macs']:,} | {l.get('format', '-')} | "
            f"{l.get('weight_bytes', 0):,} | {l.get('instructions_estimate', 0):,} |"
        )
    lines += ["", "| file | bytes |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in report["files"].items()]
    lines += ["", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report["timings_s"].items()]
    return "\n".join(lines) + "\n"


def plot_memory_timeline(memory_plan: dict, path) -> None:
    """memory.png: the bytes live in the arena during each op, against the arena size."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    steps = memory_plan.get("timeline") or []
    if not steps:
        return
    fig = Figure(figsize=(max(6.0, 0.35 * len(steps)), 3.6), dpi=110)
    ax = fig.add_subplot()
    colors = ["tab:green" if s.get("reuse") else "tab:blue" for s in steps]
    ax.bar(range(len(steps)), [s["live_bytes"] for s in steps], color=colors)
    ax.axhline(memory_plan["arena_bytes"], color="tab:red", linewidth=1, label=f"arena {memory_plan['arena_bytes']:,} B")
    ax.set_xticks(range(len(steps)), [s["op"] for s in steps], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("live bytes")
    ax.set_title("activation memory per op (green: in place or banded)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
