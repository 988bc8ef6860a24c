"""The host side of `edgeprune flash / run / bench`: talk to a compiled model folder's device.

A model folder (the `--out` of `edgeprune compile`) holds report.json, model.h (EP_MODEL_HASH),
model.tflite and the device build: firmware.elf for Cortex-M targets, `runner` for arm64. The
device is reached through a Link (link.py: QEMU, qemu-aarch64) or pyocd_link.py (real boards);
everything here only sends inputs, collects answers and joins them with report.json.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError, UsageError

NO_COUNTER = 0xFFFFFFFF  # what the device sends for cycles when it has no counter (PROTOCOL.md)
ARM64_TARGETS = ("arm64",)


@dataclass(frozen=True)
class ModelDir:
    path: Path
    report: dict
    model_hash: str
    target: str
    input_shape: tuple[int, ...]  # the .tflite input without batch (NHWC for images)
    torch_shape: tuple[int, ...] | None  # report.json's PyTorch input without batch (NCHW), if known
    input_scale: float
    input_zero_point: int
    output_size: int
    graph: object = None  # compile.ir.Graph of model.tflite after the compiler's passes

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def is_arm64(self) -> bool:
        return self.target in ARM64_TARGETS

    @property
    def device_program(self) -> Path:
        """The file a device runs: the bare-metal firmware or the arm64 Linux runner."""
        return self.path / ("runner" if self.is_arm64 else "firmware.elf")


def read_model_hash(model_h: Path) -> str:
    m = re.search(r'#define\s+EP_MODEL_HASH\s+"([0-9a-fA-F]+)"', model_h.read_text())
    if not m:
        raise EdgepruneError(f"{model_h} has no EP_MODEL_HASH; recompile the model with `edgeprune compile`")
    return m.group(1)


def load_model_dir(path: str | Path) -> ModelDir:
    """A compiled model folder's facts, or one clear line saying what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path} is not a folder; pass the --out folder of `edgeprune compile`")
    for name in ("report.json", "model.h", "model.tflite"):
        if not (path / name).exists():
            raise UsageError(f"{path} has no {name}; pass the --out folder of `edgeprune compile`")
    try:
        report = json.loads((path / "report.json").read_text())
    except ValueError as e:
        raise UsageError(f"{path / 'report.json'} is not valid JSON ({e})") from None
    # The generated C's int8 input and output, as the compiler sees them (a float-I/O .tflite has its
    # boundary QUANTIZE/DEQUANTIZE stripped: passes.int8_io).
    from edgeprune.compile.backend import load_graph

    graph = load_graph((path / "model.tflite").read_bytes())
    ti, to = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    inp = {"shape": list(ti.shape), "scale": float(ti.scale[0]), "zero_point": int(ti.zero_point[0])}
    out = {"shape": list(to.shape)}
    torch_shape = report.get("input_shape")
    return ModelDir(
        path=path, report=report, model_hash=read_model_hash(path / "model.h"), target=report.get("target", "cortex-m7"),
        input_shape=tuple(int(d) for d in inp["shape"][1:]),
        torch_shape=tuple(int(d) for d in torch_shape[1:]) if torch_shape else None,
        input_scale=float(inp["scale"]), input_zero_point=int(inp["zero_point"]),
        output_size=int(np.prod(out["shape"][1:])), graph=graph,
    )


def prepare_inputs(x: np.ndarray, model: ModelDir) -> np.ndarray:
    """Samples as the device takes them: int8, (N, *the .tflite input shape).

    Accepts (N, *shape) or one sample, in the .tflite layout (NHWC) or PyTorch's (NCHW, what
    --data holds). Float inputs are quantized with the model's input scale and zero point (rounded
    like the compile's accuracy check); int8 is used as is. When both layouts fit, float data is
    taken as PyTorch's and int8 data as the .tflite's.
    """
    x = np.asarray(x)
    if x.dtype.kind == "f":
        is_float = True
    elif x.dtype == np.int8:
        is_float = False
    else:
        raise UsageError(f"inputs are {x.dtype}; give float inputs (quantized with the model's input parameters) or int8")
    tfl = model.input_shape
    chw = (tfl[2], tfl[0], tfl[1]) if len(tfl) == 3 else None
    layouts = [("nchw", chw)] if chw and chw != tfl else []
    layouts = (layouts + [("nhwc", tfl)]) if is_float else ([("nhwc", tfl)] + layouts)
    for layout, shape in layouts:
        xb = _batched(x, shape)
        if xb is not None:
            if layout == "nchw":
                xb = xb.transpose(0, 2, 3, 1)
            break
    else:
        want = " or ".join(f"(N, {', '.join(map(str, s))})" for _, s in layouts)
        raise UsageError(f"inputs have shape {x.shape}; the model takes {want}, or one sample without N")
    if len(xb) == 0:
        raise UsageError("the input file holds no samples")
    if is_float:
        if not np.all(np.isfinite(xb)):
            raise UsageError("float inputs contain NaN or infinity")
        from edgeprune.front.fidelity import quantize

        # float32 arithmetic like the model itself and the compile's accuracy check
        return np.ascontiguousarray(quantize(xb.astype(np.float32), np.float32(model.input_scale), model.input_zero_point))
    return np.ascontiguousarray(xb)


def _batched(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    if x.ndim == len(shape) + 1 and x.shape[1:] == shape:
        return x
    return x[None] if x.shape == shape else None


def load_array(path: str | Path, what: str) -> np.ndarray:
    path = Path(path)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except (ValueError, OSError) as e:
        raise UsageError(f"{what} {path} is not a .npy array ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def tflm_outputs(model_tflite: Path, x: np.ndarray, graph=None) -> np.ndarray:
    """TFLite Micro's Python interpreter (the oracle) on int8 samples: (N, output size) int8, the
    compiler's own comparison (float-I/O models compared in int8 through `graph`)."""
    from edgeprune.compile.backend import tflm_outputs as oracle

    x = np.asarray(x)
    return oracle(Path(model_tflite).read_bytes(), x.reshape(len(x), 1, *x.shape[1:]), graph).reshape(len(x), -1)


# ---- devices -------------------------------------------------------------------------------------

def parse_device(device: str) -> tuple[str, str | None]:
    """'qemu' | 'pyocd' | 'pyocd:UID' -> (kind, board unique id or None)."""
    kind, sep, uid = (device or "qemu").partition(":")
    if kind not in ("qemu", "pyocd") or (sep and (kind != "pyocd" or not uid)):
        raise UsageError(f"unknown --device {device!r}; use qemu, pyocd or pyocd:<probe unique id>")
    return kind, uid or None


def open_device(model: ModelDir, device: str = "qemu", count_instructions: bool = False, program: bool = False):
    """A connected Link to the model's device (use as a context manager).

    program: write the firmware into a real board first (`flash`); run and bench use what the
    board holds and check its model hash. QEMU always starts from the ELF.
    """
    kind, uid = parse_device(device)
    program_file = model.device_program
    if kind == "pyocd":
        if model.is_arm64:
            raise UsageError("--device pyocd programs Cortex-M boards; an arm64 model runs under qemu-aarch64 (--device qemu)")
        if not program_file.exists():
            raise UsageError(f"{model.path} has no firmware.elf; recompile with `edgeprune compile --target {model.target}`")
        from edgeprune.device.firmware import BOARDS, read_manifest

        board = (read_manifest(model.path) or {}).get("board")
        if board in BOARDS and BOARDS[board].machine is not None:
            raise UsageError(f"{program_file} is built for the emulator ({board}), not a real board; build it for yours, e.g. "
                             f"edgeprune.device.firmware.build_firmware(dir, '{model.target}', board='stm32f746-disco')")
        from edgeprune.device.pyocd_link import PyocdLink

        return PyocdLink(program_file, uid=uid, program=program)
    if not program_file.exists():
        what = "arm64 runner" if model.is_arm64 else "firmware.elf"
        raise UsageError(f"{model.path} has no {what}; recompile with `edgeprune compile --target {model.target}`")
    from edgeprune.device.link import open_link

    return open_link(model.path, device="qemu", count_instructions=count_instructions)


def device_label(model: ModelDir, device: str, info: dict) -> str:
    kind, uid = parse_device(device)
    board = info.get("board", "?")
    if kind == "pyocd":
        return f"pyocd:{uid}:{board}" if uid else f"pyocd:{board}"
    return f"qemu-aarch64:{board}" if model.is_arm64 else f"qemu:{board}"


def check_hash(model: ModelDir, info: dict) -> None:
    got = info.get("model_hash")
    if got != model.model_hash:
        raise EdgepruneError(f"the device runs model {got or '?'} but {model.path}/model.h is {model.model_hash}; "
                             f"the firmware is stale: recompile, then flash again")


def _int(info: dict, key: str) -> int | None:
    try:
        return int(info[key])
    except (KeyError, ValueError):
        return None


# ---- flash ---------------------------------------------------------------------------------------

def flash(model_dir: str | Path, device: str = "qemu") -> dict:
    """Program the device (pyOCD) or start the emulator, check it answers with this model's hash."""
    from edgeprune.device.elf_sizes import elf_sizes

    model = load_model_dir(model_dir)
    kind, _ = parse_device(device)
    with open_device(model, device, program=True) as link:
        info = dict(link.info())
    check_hash(model, info)
    sizes = elf_sizes(model.device_program)
    return {
        "device": device_label(model, device, info), "board": info.get("board"), "model_hash": info.get("model_hash"),
        "backend": info.get("backend"), "arena_bytes": _int(info, "arena_bytes"),
        "flash_bytes": sizes.flash_bytes, "sram_bytes": sizes.sram_bytes, "program": str(model.device_program),
        "persistent": kind == "pyocd",
        "note": None if kind == "pyocd" else (
            "the arm64 runner is a program, not flashed: `edgeprune run` and `bench` start it under qemu-aarch64"
            if model.is_arm64 else "QEMU has no persistent flash: `edgeprune run` and `bench` start their own emulator"),
    }


# ---- run -----------------------------------------------------------------------------------------

def run(model_dir: str | Path, inputs, device: str = "qemu", labels=None, out: str | Path | None = None) -> dict:
    """Run every sample on the device and compare with TFLite Micro bit for bit.

    `inputs`/`labels`: arrays or .npy paths. `out`: where to save the device's raw int8 outputs.
    """
    model = load_model_dir(model_dir)
    parse_device(device)
    x = inputs if isinstance(inputs, np.ndarray) else load_array(inputs, "input")
    x8 = prepare_inputs(x, model)
    y = None
    if labels is not None:
        y = labels if isinstance(labels, np.ndarray) else load_array(labels, "labels")
        y = np.asarray(y).reshape(-1)
        if len(y) != len(x8) or y.dtype.kind not in "iu":
            raise UsageError(f"labels must be {len(x8)} integers (one per sample); got {y.dtype} of shape {np.shape(labels)}")
    expected = tflm_outputs(model.path / "model.tflite", x8, model.graph)
    outputs = np.empty((len(x8), model.output_size), np.int8)
    cycles: list[int] = []
    with open_device(model, device) as link:
        info = dict(link.info())
        check_hash(model, info)
        for i, sample in enumerate(x8):
            o, c = link.infer(sample.tobytes())
            if len(o) != model.output_size:
                raise EdgepruneError(f"sample {i}: the device sent {len(o)} output bytes, the model has {model.output_size}")
            outputs[i] = np.frombuffer(bytes(o), np.int8)
            if c is not None and c != NO_COUNTER:
                cycles.append(int(c))
    diff = outputs != expected
    bad = np.flatnonzero(diff.any(axis=1))
    result = {
        "device": device_label(model, device, info), "samples": int(len(x8)), "bitexact": bool(len(bad) == 0),
        "mismatches": int(len(bad)), "mismatched_values": int(diff.sum()),
        "max_abs_diff": int(np.abs(outputs.astype(np.int16) - expected).max()) if len(bad) else 0,
        "first_mismatch": int(bad[0]) if len(bad) else None, "oracle": "tflite-micro",
        "quantized_inputs": bool(np.asarray(x).dtype.kind == "f"),
        "mean_cycles": float(np.mean(cycles)) if cycles else None,
    }
    if y is not None:
        result["accuracy"] = float((outputs.argmax(1) == y).mean())
        result["tflm_accuracy"] = float((expected.argmax(1) == y).mean())
    if out is not None:
        result["out"] = str(save_npy_atomic(out, outputs.reshape((len(x8), *_output_shape(model)))))
    return result


def _output_shape(model: ModelDir) -> tuple[int, ...]:
    shape = (((model.report.get("tflite") or {}).get("output") or {}).get("shape") or [1, model.output_size])[1:]
    return tuple(int(d) for d in shape) if int(np.prod(shape)) == model.output_size else (model.output_size,)


def save_npy_atomic(path: str | Path, arr: np.ndarray) -> Path:
    """np.save through a temporary file and a rename: readers never see half an array."""
    import io

    from edgeprune.fileio import write_bytes_atomic

    path = Path(path)
    if path.suffix != ".npy":
        path = path.with_name(path.name + ".npy")  # what np.save itself would write
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())
    return path


# ---- bench ---------------------------------------------------------------------------------------

def default_bench_input(model: ModelDir) -> np.ndarray:
    """A fixed pseudo-random int8 sample, so counts are comparable run after run."""
    return np.random.default_rng(0).integers(-128, 128, model.input_size).astype(np.int8)


def layer_index(name: str) -> int | None:
    """The operator index of a generated layer name such as conv_2d_3 (codegen: <op>_<index>)."""
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else None


def join_layers(names: list[str], counts: list[int | None], cycles: list[int | None], report: dict) -> list[dict]:
    """One row per generated layer, with report.json's name, op, format and MACs where it has the layer.

    report.json lists the layers with weights, keyed by operator index; the generated C names
    every layer it runs `<op>_<operator index>`, including weightless ones (MEAN, pooling, ...).
    """
    by_index = {l.get("index"): l for l in (report.get("model") or {}).get("layers", [])}
    rows = []
    for i, name in enumerate(names):
        rep = by_index.get(layer_index(name)) or {}
        op = rep.get("op") or re.sub(r"_\d+$", "", name).upper()
        rows.append({
            "name": rep.get("name", name), "c_name": name, "op": op, "format": rep.get("format", "-"),
            "macs": int(rep.get("macs", 0)), "nonzero_macs": int(rep.get("nonzero_macs", 0)),
            "instructions_estimate": rep.get("instructions_estimate"),
            "instructions": counts[i] if i < len(counts) else None,
            "cycles": cycles[i] if i < len(cycles) else None,
        })
    return rows


def bench(model_dir: str | Path, device: str = "qemu", plot: str | Path | None = "default", inputs=None) -> dict:
    """Per-layer and total instructions (QEMU) or cycles (boards), memory from the ELF, peak stack.

    plot: a PNG path, "default" for DIR/bench.png, None for no chart.
    """
    from edgeprune.device.elf_sizes import elf_sizes

    model = load_model_dir(model_dir)
    kind, _ = parse_device(device)
    x = default_bench_input(model) if inputs is None else prepare_inputs(
        inputs if isinstance(inputs, np.ndarray) else load_array(inputs, "input"), model)[0]
    emulated = kind == "qemu"
    with open_device(model, device, count_instructions=emulated) as link:
        info = dict(link.info())
        check_hash(model, info)
        _, total_cycles = link.infer(x.tobytes())
        total_regions = list(link.regions()) if emulated else []
        layer_cycles, stack_peak = link.bench(x.tobytes())
        bench_regions = list(link.regions()) if emulated else []
    names = [n for n in info.get("layer_names", "").split(",") if n]
    n = len(names) or len(layer_cycles or [])
    layer_counts: list[int | None] = []
    total = None
    if emulated:
        # regions() lists every begin/end pair so far (infer: one; bench: one per layer); the
        # newest ones belong to the last command whether or not the list was reset in between.
        if not total_regions or len(bench_regions) < n:
            raise EdgepruneError("the emulator reported no instruction counts; is the plugin built (`make qemu-plugin`)?")
        total = int(total_regions[-1])
        layer_counts = [int(c) for c in bench_regions[-n:]]
    # Under QEMU the link's counts are instructions (above); cycles exist only on boards.
    cyc = [] if emulated else [None if c is None or c == NO_COUNTER else int(c) for c in (layer_cycles or [])]
    if not names:
        names = [f"layer_{i}" for i in range(n)]
    sizes = elf_sizes(model.device_program)
    result = {
        "device": device_label(model, device, info), "board": info.get("board"), "target": model.target,
        "backend": info.get("backend"), "model_hash": model.model_hash,
        "total_instructions": total,
        "layers": join_layers(names, layer_counts, cyc, model.report),
        "flash_bytes": sizes.flash_bytes, "sram_bytes": sizes.sram_bytes, "stack_bytes": int(stack_peak),
        "arena_bytes": _int(info, "arena_bytes"), "stack_region_bytes": _int(info, "stack_bytes") or sizes.stack_region_bytes,
        "heap_bytes": sizes.heap_bytes, "elf": sizes.to_dict(), "program": str(model.device_program),
        "model_memory": model.report.get("memory"),  # the compiler's estimate for the model alone
    }
    if not emulated:
        result["total_cycles"] = None if total_cycles in (None, NO_COUNTER) else int(total_cycles)
    if plot is not None:
        png = model.path / "bench.png" if plot == "default" else Path(plot)
        result["plot"] = str(plot_layers(result, png))
    return result


def plot_layers(result: dict, png: str | Path) -> Path:
    """A bar chart of instructions (or cycles) per layer, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    png = Path(png)
    key = "instructions" if result.get("total_instructions") is not None else "cycles"
    layers = result["layers"]
    values = [l.get(key) or 0 for l in layers]
    fig = Figure(figsize=(max(4.0, 0.9 * len(layers) + 2), 3.6), dpi=100)
    ax = fig.subplots()
    bars = ax.bar(range(len(layers)), values, color="#3b75af")
    ax.set_xticks(range(len(layers)), [f"{l['name']}\n{l['format']}" for l in layers], fontsize=8)
    ax.set_ylabel(key)
    total = result.get("total_instructions") if key == "instructions" else result.get("total_cycles")
    ax.set_title(f"{result['device']}: {total or sum(values):,} {key} per inference", fontsize=10)
    ax.bar_label(bars, [f"{v:,}" for v in values], fontsize=7)
    ax.margins(y=0.15)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{png.stem}.", suffix=".png", dir=png.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, png)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return png
