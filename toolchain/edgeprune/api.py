"""The Python API: everything the CLI does, importable.

    from edgeprune.api import CompileOptions, compile_model
    report = compile_model(CompileOptions(model="model.pt", data="digits", sparsity=0.8, out="build"))
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError, UsageError, first_line
from edgeprune.fileio import staged_directory

DEFAULT_FINETUNE_EPOCHS = 5
DEFAULT_GMP_STEPS = 10


@dataclass
class CompileOptions:
    model: str | Path
    out: str | Path
    data: str | None = None  # None: "digits" for PyTorch/ONNX models; for a .tflite, random eval inputs
    target: str = "cortex-m7"
    prune: str | None = None  # magnitude | gmp | block | nm | channel | none; default: magnitude if sparsity > 0
    sparsity: float = 0.0
    scope: str = "global"
    nm: str = "2:4"
    keep_first_last: bool = False
    finetune_epochs: float = DEFAULT_FINETUNE_EPOCHS
    gmp_steps: int = DEFAULT_GMP_STEPS
    min_agreement: float = 0.9
    input_shape: tuple[int, ...] | None = None  # (C, H, W) without batch
    arch: str | None = None
    trust_pickle: bool = False
    seed: int = 0
    quiet: bool = False
    verbose: bool = False
    format: str = "auto"  # weight format per layer: auto | dense | a sparse format (compile/formats.py)
    board: str | None = None  # firmware board (device/firmware.py BOARDS); None: the target's default
    firmware: bool = True  # build firmware.elf (Cortex-M) or the arm64 runner next to the generated C


@dataclass
class _Stages:
    """Wall-clock seconds per pipeline stage, in order."""

    seconds: dict[str, float] = field(default_factory=dict)
    _t: float = field(default_factory=time.perf_counter)

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._t, 3)
        self._t = now


def compile_model(opts: CompileOptions, log=lambda msg: None) -> dict:
    """Prune, finetune, quantize and convert; write the outputs atomically into `opts.out`."""
    import torch

    from edgeprune import report as rep
    from edgeprune.compile.tflite_reader import read_tflite
    from edgeprune.data import load_dataset
    from edgeprune.front import convert, fidelity
    from edgeprune.front.channels import remove_dead_channels
    from edgeprune.front.finetune import predict
    from edgeprune.front.load import load_model
    from edgeprune.targets import get_target

    from edgeprune.compile.formats import CHOICES

    if opts.format not in CHOICES:
        raise UsageError(f"unknown --format {opts.format}; choose one of {', '.join(CHOICES)}")
    if Path(opts.model).suffix.lower() == ".tflite":
        return compile_tflite_file(opts, log)
    stages = _Stages()
    target = get_target(opts.target)
    method = opts.prune or ("magnitude" if opts.sparsity > 0 else "none")
    _check_options(opts, method)
    torch.manual_seed(opts.seed)

    model = load_model(opts.model, arch=opts.arch, trust_pickle=opts.trust_pickle)
    data = load_dataset(opts.data or "digits")
    input_shape = _resolve_input_shape(opts.input_shape, model.input_shape, data.sample_shape)
    if not model.is_torch and method != "none":
        raise UsageError(f"pruning needs the PyTorch model; {opts.model} is ONNX, which is compiled as is (drop --prune/--sparsity)")
    stages.done("load")

    pruning: dict = {"method": method, "requested_sparsity": opts.sparsity, "scope": opts.scope if method in ("magnitude", "gmp") else None}
    dense_accuracy = dense_recall = None
    if model.is_torch:
        _check_forward(model.module, data.x_test[:2], input_shape)
        if data.has_labels:
            dense_out = predict(model.module, data.x_test)
            if dense_out.ndim != 2 or dense_out.shape[1] <= data.num_classes - 1:
                raise UsageError(
                    f"the data has labels up to {data.num_classes - 1} but the model outputs shape {tuple(dense_out.shape[1:])}; "
                    "labels must be class indices below the number of outputs"
                )
            if dense_out.shape[1] > 1:
                dense_accuracy = float((dense_out.argmax(1) == data.y_test).mean())
                dense_recall = fidelity.per_class_recall(dense_out.argmax(1), data.y_test, dense_out.shape[1])
        pruning.update(_prune(model.module, method, opts, data, input_shape, log))
        stages.done("prune_finetune")

    onnx_model = convert.export_onnx(model, input_shape)
    onnx_model, removed = remove_dead_channels(onnx_model)
    if removed:
        pruning["channels_removed"] = removed
        log(f"removed {sum(removed.values())} dead channels from {len(removed)} layers")
    stages.done("export_onnx")

    with tempfile.TemporaryDirectory(prefix="edgeprune-onnx2tf-") as work:
        from edgeprune.progress import progress_bar

        with progress_bar("onnx2tf: int8 quantization and conversion", None, quiet=opts.quiet):
            int8_bytes, fp32_bytes = convert.onnx_to_int8_tflite(onnx_model, data.x_train, Path(work))
    stages.done("convert")

    int8_model = read_tflite(int8_bytes)
    _check_int8_io(int8_model)
    x_eval = data.x_test
    float_out = predict(model.module, x_eval) if model.is_torch else fidelity.run_float(fp32_bytes, x_eval)
    _, int8_out = fidelity.run_int8(int8_bytes, x_eval)
    fid = fidelity.compare(float_out, int8_out, data.y_test)
    stages.done("fidelity")

    nm = None
    if method == "nm":
        from edgeprune.front.prune import parse_nm

        nm = parse_nm(opts.nm)
    stats = rep.layer_stats(int8_model, read_tflite(fp32_bytes), nm=nm)
    accuracy = {
        "float": fid.float_accuracy,
        "int8": fid.int8_accuracy,
        "agreement": fid.agreement,
        "samples": fid.samples,
        "split": "test",
        "max_logit_error": fid.max_logit_error,
        "mean_logit_error": fid.mean_logit_error,
        "dense_float": dense_accuracy,
        "ece_float": fid.ece_float,
        "ece_int8": fid.ece_int8,
        "per_class_recall_float": fid.per_class_recall_float,
        "per_class_recall_int8": fid.per_class_recall_int8,
        "worst_class": _worst_hit_class(dense_recall, fid.per_class_recall_int8),
    }

    if fid.agreement is not None and fid.agreement < opts.min_agreement:
        raise EdgepruneError(
            f"int8 model agrees with float on only {fid.agreement:.1%} of {fid.samples} test samples "
            f"(--min-agreement {opts.min_agreement:.0%}); lower --sparsity, finetune longer (--finetune-epochs), "
            "or give more representative calibration data"
        )

    from edgeprune.compile.backend import build_backend

    back = build_backend(int8_bytes, target, opts.format, _quantize_inputs(int8_model, x_eval), source=str(opts.model),
                         check_limits=not _links_firmware(opts, target), log=log)
    stages.done("backend")

    header, source = convert.c_array_sources(int8_bytes)
    report = {
        "target": target.name,
        "source": str(opts.model),
        "input_shape": [1, *input_shape],
        "data": {"name": data.name, "train": len(data.x_train), "val": len(data.x_val), "test": len(data.x_test), "labels": data.has_labels},
        "pruning": pruning,
        "model": stats.to_dict(),
        "accuracy": accuracy,
        "tflite": {
            "input": _io_details(int8_model, int8_model.inputs[0]),
            "output": _io_details(int8_model, int8_model.outputs[0]),
            "ops": int8_model.op_counts,
        },
        "target_limits": {"sram_bytes": target.sram_bytes, "flash_bytes": target.flash_bytes},
        **_backend_fields(back),
        "files": {},
        "timings_s": {},
    }
    _merge_layers(report["model"]["layers"], back)
    out = Path(opts.out)
    with staged_directory(out) as stage:
        import onnx

        onnx.save(onnx_model, str(stage / "model.onnx"))
        (stage / "model.tflite").write_bytes(int8_bytes)
        (stage / "model_data.h").write_text(header)
        (stage / "model_data.c").write_text(source)
        back.write_into(stage)
        _build_firmware_into(stage, opts, target, report, stages)
        report["files"] = {p.name: p.stat().st_size for p in sorted(stage.iterdir()) if p.is_file()}
        stages.done("write")
        report["timings_s"] = dict(stages.seconds)
        (stage / "report.md").write_text(rep.to_markdown(report))
        report["files"]["report.md"] = (stage / "report.md").stat().st_size
        (stage / "report.json").write_text(rep.to_json(report))
    return report


def _merge_layers(layers: list[dict], back) -> None:
    """Each weighted layer's format, weight bytes and instruction estimate, matched by operator index."""
    fields = back.layer_fields()
    for layer in layers:
        layer.update(fields.get(layer["index"], {}))


def _backend_fields(back) -> dict:
    """report.json's back-half fields: memory, validation, and the back half's own timings."""
    d = back.to_dict()
    return {"memory": d["memory"], "memory_plan": d["memory_plan"], "validation": d["validation"],
            "backend_timings_s": d["timings_s"]}


def _quantize_inputs(model, x: np.ndarray) -> np.ndarray | None:
    """Float NCHW samples as the int8 model's input (NHWC, its scale and zero point); None if the shapes differ.

    `model` is a read .tflite or the compiler's graph (whose input is int8 even when the file's is
    float: passes.int8_io)."""
    t = model.tensors[model.inputs[0]]
    q = getattr(t, "quantization", t)  # the graph's tensors carry scale and zero_point themselves
    if q is None or getattr(q, "scale", None) is None or len(q.scale) == 0 or x.ndim < 2:
        return None
    shape = tuple(t.shape[1:])
    if x.ndim == 4 and tuple(x.shape[2:]) + (x.shape[1],) == shape:
        x = x.transpose(0, 2, 3, 1)
    if tuple(x.shape[1:]) != shape:
        return None
    scale, zp = float(q.scale[0]), int(q.zero_point[0])
    return np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)


def compile_tflite_file(opts: CompileOptions, log=lambda msg: None) -> dict:
    """`edgeprune compile MODEL.tflite`: the back half only (no pruning, no conversion) on any int8 .tflite."""
    from edgeprune import report as rep
    from edgeprune.compile.backend import build_backend, load_graph
    from edgeprune.compile.tflite_reader import read_tflite
    from edgeprune.targets import get_target

    stages = _Stages()
    target = get_target(opts.target)
    if opts.prune not in (None, "none") or opts.sparsity:
        raise UsageError("a .tflite model is compiled as is; drop --prune/--sparsity (prune the PyTorch model instead)")
    path = Path(opts.model)
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist")
    try:
        tflite_bytes = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or first_line(e)}") from None
    graph = load_graph(tflite_bytes)  # one-line rejection before anything else
    model = read_tflite(tflite_bytes)
    eval_x = None
    data_note = None
    if opts.data is not None:
        from edgeprune.data import load_dataset

        data = load_dataset(opts.data)
        eval_x = _quantize_inputs(graph, data.x_test)
        data_note = data.name if eval_x is not None else f"{data.name} (shape-incompatible, not used)"
    stages.done("load")
    back = build_backend(tflite_bytes, target, opts.format, eval_x, source=str(path),
                         check_limits=not _links_firmware(opts, target), log=log)
    stages.done("backend")
    stats = rep.layer_stats(model)
    report = {
        "target": target.name,
        "source": str(path),
        "input_shape": list(model.tensors[model.inputs[0]].shape),
        "data": {"name": data_note, "eval_inputs": back.validation.inputs},
        "pruning": {"method": "none", "requested_sparsity": 0.0, "note": "compiled as is from .tflite"},
        "model": stats.to_dict(),
        "tflite": {
            "input": _io_details(model, model.inputs[0]),
            "output": _io_details(model, model.outputs[0]),
            "ops": model.op_counts,
        },
        "target_limits": {"sram_bytes": target.sram_bytes, "flash_bytes": target.flash_bytes},
        **_backend_fields(back),
        "files": {},
        "timings_s": {},
    }
    _merge_layers(report["model"]["layers"], back)
    with staged_directory(Path(opts.out)) as stage:
        (stage / "model.tflite").write_bytes(tflite_bytes)
        back.write_into(stage)
        _build_firmware_into(stage, opts, target, report, stages)
        report["files"] = {p.name: p.stat().st_size for p in sorted(stage.iterdir()) if p.is_file()}
        stages.done("write")
        report["timings_s"] = dict(stages.seconds)
        (stage / "report.json").write_text(rep.to_json(report))
    return report


def _links_firmware(opts: CompileOptions, target) -> bool:
    """Whether the compile ends by linking a device program; its link is then the fit check, exactly
    as on the board (the linker script has the part's flash and SRAM)."""
    from edgeprune.device.firmware import DEFAULT_BOARDS

    return opts.firmware and target.name in DEFAULT_BOARDS


def _build_firmware_into(stage: Path, opts: CompileOptions, target, report: dict, stages: _Stages) -> None:
    """firmware.elf/.bin/.hex (Cortex-M) or the arm64 runner, built in the staged output folder."""
    if not _links_firmware(opts, target):
        return
    from edgeprune.device.firmware import build_firmware

    fw = build_firmware(stage, target.name, stage, board=opts.board)
    report["firmware"] = fw.to_dict()
    stages.done("firmware")


def _worst_hit_class(dense_recall: list[float] | None, int8_recall: list[float] | None) -> dict | None:
    """The class whose recall dropped most from the dense float model to the deployed int8 one."""
    if dense_recall is None or int8_recall is None:
        return None
    worst = int(np.nanargmax([d - q for d, q in zip(dense_recall, int8_recall)]))
    return {"class": worst, "dense_recall": dense_recall[worst], "int8_recall": int8_recall[worst]}


def _check_options(opts: CompileOptions, method: str) -> None:
    from edgeprune.front.prune import METHODS, SCOPES

    if method not in METHODS:
        raise UsageError(f"unknown --prune {method}; choose one of {', '.join(METHODS)}")
    if opts.scope not in SCOPES:
        raise UsageError(f"unknown --scope {opts.scope}; choose one of {', '.join(SCOPES)}")
    if method in ("magnitude", "gmp", "channel") and not 0.0 < opts.sparsity < 1.0:
        raise UsageError(f"--prune {method} needs --sparsity in (0, 1), got {opts.sparsity}")
    if not 0.0 <= opts.min_agreement <= 1.0:
        raise UsageError(f"--min-agreement {opts.min_agreement} must be in [0, 1]")
    if opts.finetune_epochs < 0:
        raise UsageError("--finetune-epochs must be >= 0")


def _resolve_input_shape(flag, from_model, from_data) -> tuple[int, ...]:
    shape = tuple(flag) if flag else (tuple(from_model) if from_model else tuple(from_data))
    for what, other in (("the model", from_model), ("the data", from_data)):
        if other is not None and tuple(other) != shape:
            raise UsageError(
                f"input shape {shape} does not match {what}, which has samples of shape {tuple(other)}; "
                "fix --input-shape or the data"
            )
    return shape


def _check_forward(module, x: np.ndarray, input_shape) -> None:
    import torch

    try:
        with torch.no_grad():
            module(torch.from_numpy(x))
    except Exception as e:
        raise UsageError(f"the model does not run on inputs of shape (N, {', '.join(map(str, input_shape))}): {first_line(e)}") from None


def _check_int8_io(model) -> None:
    for idx, role in ((model.inputs[0], "input"), (model.outputs[0], "output")):
        t = model.tensors[idx]
        if t.dtype is not np.int8:
            raise EdgepruneError(f"the converted model's {role} is {np.dtype(t.dtype).name}, not int8; this is an onnx2tf conversion problem")


def _io_details(model, idx: int) -> dict:
    t = model.tensors[idx]
    q = t.quantization
    return {
        "shape": list(t.shape),
        "dtype": np.dtype(t.dtype).name,
        "scale": float(q.scale[0]) if q else None,
        "zero_point": int(q.zero_point[0]) if q else None,
    }


def _prune(module, method: str, opts: CompileOptions, data, input_shape, log) -> dict:
    """Run the chosen pruning method in place; returns what the report says about it."""
    from edgeprune.front import prune as P
    from edgeprune.front.finetune import finetune, reestimate_batchnorm

    layers = P.prunable_layers(module)
    if method != "none" and not layers:
        raise UsageError("the model has no conv or linear weights to prune")
    dense = {layers[0].name, layers[-1].name} if opts.keep_first_last and layers else set()
    can_finetune = data.has_labels and opts.finetune_epochs > 0
    info: dict = {"keep_first_last": opts.keep_first_last, "finetune_epochs": opts.finetune_epochs if can_finetune else 0}
    if method == "none":
        return info

    if method == "gmp":
        n_steps = max(1, opts.gmp_steps)
        info["gmp_steps"] = n_steps
        if can_finetune:
            state = {"masks": None}

            def schedule(step: int, total: int):
                # Prune during the first 75% of finetuning, then recover at the final sparsity.
                # Short runs get fewer steps, so the final sparsity is always trained at.
                steps = min(n_steps, max(1, int(0.75 * total)))
                interval = max(1, int(0.75 * total) // steps)
                if step % interval == 0 and step // interval <= steps:
                    s = P.gmp_sparsity(step // interval, steps, opts.sparsity)
                    state["masks"] = P.magnitude_masks(module, s, opts.scope, dense)
                    P.apply_masks(module, state["masks"])
                return state["masks"]

            finetune(module, data.x_train, data.y_train, opts.finetune_epochs, on_step=schedule, seed=opts.seed,
                     description="GMP prune + finetune", quiet=opts.quiet)
            masks = P.magnitude_masks(module, opts.sparsity, opts.scope, dense)  # exact final sparsity
            P.apply_masks(module, masks)
        else:
            for t in range(1, n_steps + 1):
                masks = P.magnitude_masks(module, P.gmp_sparsity(t, n_steps, opts.sparsity), opts.scope, dense)
                P.apply_masks(module, masks)
                reestimate_batchnorm(module, data.x_train)
        info["achieved_sparsity"] = P.mask_sparsity(masks)
        return info

    if method == "magnitude":
        masks = P.magnitude_masks(module, opts.sparsity, opts.scope, dense)
    elif method == "block":
        masks, skipped = P.block_masks(module, opts.sparsity, 4, dense)
        info["block"] = "1x4: 4 consecutive input-channel weights kept or zeroed together"
        info["dense_layers"] = skipped
    elif method == "nm":
        n, m = P.parse_nm(opts.nm)
        masks, skipped = P.nm_masks(module, n, m, dense)
        info["nm"] = f"{n}:{m}"
        info["nm_convention"] = f"at most {n} non-zero weights in every {m} consecutive input-channel weights"
        info["dense_layers"] = skipped
    elif method == "channel":
        from edgeprune.front.channel_prune import channel_masks, module_channel_groups

        groups = module_channel_groups(module, input_shape)
        if not groups:
            raise UsageError("no prunable channel groups found (channels must feed conv/linear layers through ReLU, pooling or BatchNorm)")
        masks, removed = channel_masks(module, groups, opts.sparsity, dense)
        info["channels_pruned"] = removed
        info["channel_fraction"] = sum(removed.values()) / max(1, sum(g.channels for g in groups if g.weight not in dense))
    P.apply_masks(module, masks)
    info["bn_layers_reestimated"] = reestimate_batchnorm(module, data.x_train)
    if can_finetune:
        finetune(module, data.x_train, data.y_train, opts.finetune_epochs, masks=masks, seed=opts.seed, quiet=opts.quiet)
    weight_masks = {k: v for k, v in masks.items() if k in {l.name for l in layers}}
    info["achieved_sparsity"] = P.mask_sparsity(weight_masks)
    log(f"pruned with {method}: weight sparsity {info['achieved_sparsity']:.3f}")
    return info


def make_example(name: str, out: str | Path, epochs: int = 20, seed: int = 0, quiet: bool = False) -> dict:
    from edgeprune.examples import EXAMPLES, save_torchscript, train_digits_cnn

    if name not in EXAMPLES:
        raise UsageError(f"unknown example '{name}'; available: {', '.join(EXAMPLES)}")
    model, accuracy = train_digits_cnn(epochs=epochs, seed=seed, quiet=quiet)
    size = save_torchscript(model, out)
    params = sum(p.numel() for p in model.parameters())
    return {"example": name, "path": str(out), "bytes": size, "params": params, "test_accuracy": accuracy, "input_shape": [1, 1, 8, 8]}


def write_shifted_digits(shift: str, out: str | Path) -> dict:
    """The digits held-out split under a shift (adapt/shifts.py), halved into <shift>_adapt.npz and <shift>_eval.npz."""
    from edgeprune.adapt.shifts import SHIFTS, write_npz

    if shift not in SHIFTS:
        raise UsageError(f"unknown shift '{shift}'; choose one of {', '.join(SHIFTS)}")
    pa, pe = write_npz(shift, out)
    with np.load(pa) as a, np.load(pe) as e:
        return {"adapt": str(pa), "eval": str(pe), "adapt_samples": len(a["y"]), "eval_samples": len(e["y"])}


# ---- devices: edgeprune flash / run / bench (the work is in edgeprune.device.runner) ----

def flash(dir: str | Path, device: str = "qemu") -> dict:
    """Program the board (pyOCD) or start QEMU with DIR's firmware; check it answers with DIR's model hash."""
    from edgeprune.device import runner

    return runner.flash(dir, device)


def run(dir: str | Path, inputs, device: str = "qemu", labels=None, out: str | Path | None = None) -> dict:
    """Run `inputs` (array or .npy; float is quantized) on the device, compare with TFLite Micro bit for bit.

    Returns at least {"device", "samples", "bitexact", "mismatches"} (+ "accuracy" with labels).
    """
    from edgeprune.device import runner

    return runner.run(dir, inputs, device=device, labels=labels, out=out)


def bench(dir: str | Path, device: str = "qemu", plot: str | Path | None = "default", inputs=None) -> dict:
    """Per-layer instructions (QEMU) or cycles (boards), flash/SRAM from the ELF, peak stack; a PNG chart
    at `plot` ("default": DIR/bench.png, None: none). `inputs` (array or .npy): its first sample is measured."""
    from edgeprune.device import runner

    return runner.bench(dir, device=device, plot=plot, inputs=inputs)


# ---- on-device adaptation: edgeprune adapt (the work is in edgeprune.adapt) ----

def adapt(dir: str | Path, data: str | Path, eval_data: str | Path | None = None, budget_ram: str | int | None = "20%",
          budget_macs: str | int | None = None, selector: str = "neq", epochs: int = 10, seed: int = 0,
          device: str = "sim", on_epoch=None, **options) -> dict:
    """Adapt DIR's deployed model to labelled samples within a RAM (and MAC) budget; returns the
    `adapt --json` dict. Other options (init, lr, momentum, batch_size, ...): edgeprune.adapt.session.AdaptOptions."""
    from edgeprune.adapt.session import AdaptOptions, adapt as adapt_session

    opts = AdaptOptions(dir=dir, data=data, eval_data=eval_data, budget_ram=budget_ram, budget_macs=budget_macs,
                        selector=selector, epochs=epochs, seed=seed, device=device, **options)
    return adapt_session(opts, on_epoch=on_epoch)
