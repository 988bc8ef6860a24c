"""`edgeprune adapt --device qemu`: the adaptation session of session.py run by the firmware's adaptation
mode (firmware/adapt.c) on the emulated Cortex-M7, with the same JSON as `--device sim`.

The host does what is host-side in session.py (reading and checking the data, the probe set, the data
order, numpy's random permutations) with the same code, and sends the device the constants of the model
and the run: per-neuron parameter counts and backward MACs, the path costs of budget.CostModel.structure,
the size of the score's state (NEq, or the gradient scores' error mass), and su's static choice
(selectors.su_selection, "chosen offline once"). The device keeps the probe set, selects the neurons
each epoch (budget.Greedy and the selectors' scores ported to C, with the velocities or error mass it
computes itself), trains them on the streamed samples, and reports its measured training RAM (the
high-water mark of its static training pool) and stack peak.

Both NEq histories of neq.py run on the device (`--neq-history`, flag 4 of adapt_begin): "recompute"
keeps a pre-epoch copy of the trained parameters; "int8" keeps every candidate's outputs over the probe
set in the training pool, quantized as neq.quantize_history with its layer's history_scale (a float32
constant of the generated region tables, region_c.py), and sums them exactly in int32. Either way the
pool holds exactly the bytes budget.py counts.

    from edgeprune.adapt.session import AdaptOptions
    from edgeprune.adapt.device import run_on_device
    result = run_on_device(AdaptOptions(dir="build", data="new.npz", device="qemu", budget_ram="10%"))
    result = run_on_device(AdaptOptions(dir="build", data="new.npz", device="qemu", budget_ram="10%",
                                        selector="neq-explore", history="int8"))
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from edgeprune.adapt.selectors import NO_WARMUP, warmup_epochs
from edgeprune.errors import UsageError

ADAPT_BEGIN, ADAPT_PROBE, ADAPT_EPOCH, ADAPT_SAMPLE, ADAPT_EPOCH_END, ADAPT_EVAL, ADAPT_END, ADAPT_RESET = range(0x10, 0x18)
ERR_ADAPT = 9
SELECTOR_CODES = {"neq": 0, "su": 1, "random": 2, "full": 3, "cheapest": 4, "neq-shuffled": 5, "neq-norm": 6,
                  "neq-explore": 7, "grad": 8, "grad-explore": 9}
INIT_CODES = {"su": 0, "random": 1, "full-last-layer": 2}
F_MOMENTUM, F_NEQ, F_RECOMPUTE, F_PROBE_IN_RAM, F_MACS, F_GRAD = 1, 2, 4, 8, 16, 32
_RANDOM, _SHUFFLE, _ORDER = 1, 2, 3  # purposes in the seeds (selectors.py, session.py)
FIRMWARE_DIR = "firmware-adapt"  # inside the model folder


def adapt_firmware_dir(model_dir: str | Path, trainable_from: str | None = None) -> Path:
    """DIR/firmware-adapt/, or DIR/firmware-adapt-LAYER/ for a region starting at LAYER (each region has
    its own firmware and its own parameter store file)."""
    return Path(model_dir) / (FIRMWARE_DIR if trainable_from is None else f"{FIRMWARE_DIR}-{trainable_from}")


def build_adapt_firmware(model_dir: str | Path, target: str | None = None, trainable_from: str | None = None) -> Path:
    """The firmware with the adaptation mode for a compiled folder, built into adapt_firmware_dir;
    target: default the one DIR was compiled for (its firmware.json), else cortex-m7; trainable_from:
    the region's first layer (region.load_region)."""
    import json

    from edgeprune.adapt.region import load_region
    from edgeprune.device.firmware import FirmwareTooBig, build_firmware

    if target is None:
        fw = Path(model_dir) / "firmware.json"
        target = json.loads(fw.read_text()).get("target", "cortex-m7") if fw.is_file() else "cortex-m7"
    region = load_region(model_dir, trainable_from)  # a bad --trainable-from is refused here, in one line
    out = adapt_firmware_dir(model_dir, trainable_from)
    try:
        build_firmware(Path(model_dir), target, out_dir=out, adaptation=True, trainable_from=trainable_from)
    except FirmwareTooBig as e:  # the training pool and the float32 region are static buffers
        what = str(e).split(";")[0].replace("model does not fit", "the adaptation firmware does not fit")
        fewer = f"train fewer layers (--trainable-from {region.layer_names[-1]}), " if len(region.layers) > 1 else ""
        raise FirmwareTooBig(f"{what}; {fewer}adapt on a {target} model with --device sim, or compile for a target "
                             "with more SRAM (cortex-m7)", e.detail) from None
    return out


def begin_payload(cm, selector, opts, budget_ram: int | None, budget_macs: int | None, probe_count: int) -> bytes:
    """adapt_begin's payload (firmware/PROTOCOL.md, "Adaptation")."""
    region = cm.region
    n_layers = len(region.layers)
    uses_neq = cm.neq
    flags = (F_MOMENTUM if opts.momentum > 0 else 0) | (F_NEQ if uses_neq else 0) | (F_RECOMPUTE if cm.recompute else 0)
    flags |= (F_PROBE_IN_RAM if cm.probe_in_ram and uses_neq else 0) | (F_MACS if budget_macs is not None else 0)
    flags |= F_GRAD if cm.grad else 0
    header = struct.pack(
        "<4I5f8I", SELECTOR_CODES[opts.selector], flags, 0xFFFFFFFF if budget_ram is None else budget_ram,
        0 if budget_macs is None else budget_macs, opts.lr, opts.momentum, opts.weight_decay, opts.mu, opts.eps,
        cm.first_candidate, probe_count, cm.neq_bytes() + cm.grad_bytes(), cm.probe_bytes(), cm.bytes_per_param,
        len(cm.neurons()), n_layers, INIT_CODES[opts.init])
    neurons = b"".join(struct.pack("<IIB", cm.neuron_params(i, c), cm.neuron_macs(i, c), cm.neuron_params(i, c, True))
                       for i, c in cm.neurons())
    paths = b""
    for d in range(n_layers):
        for m in range(1 << n_layers):
            saved, errors, in_macs = cm.structure(d, frozenset(i for i in range(n_layers) if m >> i & 1))
            paths += struct.pack("<III", saved, errors, in_macs)
    su = bytearray(len(cm.neurons()))
    if opts.selector == "su" or (opts.selector not in NO_WARMUP and opts.init == "su"):
        sel = selector.su()
        for g, (i, c) in enumerate(cm.neurons()):
            su[g] = 2 if c in sel.weights[i] else (1 if c in sel.biases[i] else 0)
    return header + neurons + paths + bytes(su)


def epoch_payload(opts, epoch: int, n_candidates: int) -> bytes:
    """adapt_epoch's payload: the epoch and, for the selectors that draw, numpy's permutation of the candidates."""
    perm = None
    if opts.selector == "random" or (opts.init == "random" and epoch < warmup_epochs(opts.selector)):
        perm = np.random.default_rng([opts.seed, epoch, _RANDOM]).permutation(n_candidates)
    elif opts.selector == "neq-shuffled" and epoch >= 2:
        perm = np.random.default_rng([opts.seed, epoch, _SHUFFLE]).permutation(n_candidates)
    if perm is None:
        return struct.pack("<II", epoch, 0)
    return struct.pack("<II", epoch, len(perm)) + np.asarray(perm, "<u2").tobytes()


def _request(link, kind: int, payload: bytes = b"", timeout: float = 60) -> bytes:
    from edgeprune.device.protocol import DeviceError

    try:
        return link.request(kind, payload, timeout)
    except DeviceError as e:
        if e.code == ERR_ADAPT:
            raise UsageError(f"the device refused: {e.text}") from None
        if e.code == 4:  # UNKNOWN_COMMAND
            raise UsageError("this firmware has no adaptation mode; build it with "
                             "build_firmware(..., adaptation=True) (edgeprune.adapt.device.build_adapt_firmware)") from None
        raise


def run_on_device(opts, on_epoch=None, log=lambda msg: None, firmware: str | Path | None = None,
                  count_instructions: bool = False) -> dict:
    """Run opts (session.AdaptOptions, device "qemu") on the emulated device; returns the `adapt --json` dict.

    firmware: a folder build_adapt_firmware wrote (default: build it into adapt_firmware_dir(DIR, opts.trainable_from)).
    count_instructions: count each training sample's instructions (the result gets
    "instructions_per_sample" per epoch)."""
    from edgeprune.adapt import region as R
    from edgeprune.adapt.budget import CostModel, Selection, parse_budget_macs, parse_budget_ram
    from edgeprune.adapt.neq import neq_macs_per_epoch
    from edgeprune.adapt.selectors import USES_GRAD, USES_NEQ, Selector
    from edgeprune.adapt.session import load_session_data
    from edgeprune.device.link import open_link

    if opts.epochs < 1 or opts.batch_size < 1 or opts.probe_per_class < 1:
        raise UsageError("--epochs, --batch-size and --probe-per-class must be at least 1")
    if not opts.lr > 0 or not 0 <= opts.momentum < 1 or opts.weight_decay < 0:
        raise UsageError("--lr must be positive, --momentum in [0, 1), --weight-decay non-negative")
    if opts.batch_size > 0xFFFF:
        raise UsageError("--batch-size must be at most 65535 on the device")
    region = R.load_region(opts.dir, opts.trainable_from)
    if region.model_input_quant is None:
        raise UsageError("--device qemu needs a model with int8 input (the samples cross the wire as the model's input)")
    inputs, y, probe, eval_inputs, ey, eval_on = load_session_data(opts, region)

    uses_neq = opts.selector in USES_NEQ
    cm = CostModel(region, momentum=opts.momentum > 0, neq=uses_neq, probe_samples=len(probe), history=opts.history,
                   probe_in_ram=opts.probe_in_ram, grad=opts.selector in USES_GRAD)
    full = cm.full_cost()
    budget_ram = parse_budget_ram(opts.budget_ram, full.ram) if opts.budget_ram is not None else None
    budget_macs = parse_budget_macs(opts.budget_macs, full.macs)
    # Too small a budget is refused here with the sim's own message (the device refuses it too).
    selector = Selector(opts.selector, cm, budget_ram, budget_macs, seed=opts.seed, init=opts.init)
    n_cand = len(selector.neurons)
    if len(probe) > 64:
        raise UsageError(f"the device keeps at most 64 probe samples; this run has {len(probe)} (lower --probe-per-class)")

    from edgeprune.adapt.region_c import region_tables

    region_tables(region)  # a region the device cannot run is refused here, in one line
    folder = Path(firmware) if firmware is not None else build_adapt_firmware(opts.dir, trainable_from=opts.trainable_from)
    names = region.layer_names
    neurons = cm.neurons()
    records = []
    with open_link(folder, count_instructions=count_instructions) as link:
        def logits_of(batch: np.ndarray) -> np.ndarray:
            out = [np.frombuffer(_request(link, ADAPT_EVAL, s.tobytes()), "<f4") for s in batch]
            return np.stack(out)

        def evaluate() -> tuple[float, float]:
            z = logits_of(eval_inputs).astype(np.float64)
            zmax = z.max(1, keepdims=True)
            lse = np.log(np.exp(z - zmax).sum(1)) + zmax[:, 0]
            return float((z.argmax(1) == ey).mean()), float(np.mean(lse - z[np.arange(len(ey)), ey]))

        info = link.info()
        out_size = int(info["output_bytes"])
        # Every run starts from the factory weights, as the sim does (this also drops a saved adaptation).
        _request(link, ADAPT_RESET)
        before = [np.frombuffer(link.infer(s.tobytes())[0], np.int8)[:out_size] for s in eval_inputs]
        accuracy_before = float((np.stack(before).argmax(1) == ey).mean())
        pool, forward_bytes, persistent, model_f32, prefix_arena = struct.unpack("<5I", _request(
            link, ADAPT_BEGIN, begin_payload(cm, selector, opts, budget_ram, budget_macs, len(probe))))
        if uses_neq:
            for k, idx in enumerate(probe):
                _request(link, ADAPT_PROBE, struct.pack("<I", k) + inputs[idx].tobytes())
        accuracy_before_float, _ = evaluate()
        log(f"device pool {pool:,} B, float forward buffers {forward_bytes:,} B, adapted parameters {model_f32:,} B")
        n = len(inputs)
        for epoch in range(opts.epochs):
            reply = _request(link, ADAPT_EPOCH, epoch_payload(opts, epoch, n_cand))
            ram_used, macs_used, pool_now = struct.unpack("<3I", reply[:12])
            flags = reply[12:12 + len(neurons)]
            velocities = np.frombuffer(reply[12 + len(neurons):], "<f4").astype(float).tolist() or None
            sel = Selection.empty(len(region.layers))
            for (i, c), f in zip(neurons, flags):
                if f == 2:
                    sel.weights[i].add(c)
                if f >= 1:
                    sel.biases[i].add(c)
            cost = cm.cost(sel) if opts.selector != "full" else full
            if cost.ram != ram_used or cost.macs != macs_used:
                raise UsageError(f"device and host costs disagree in epoch {epoch + 1}: device {ram_used:,} B / "
                                 f"{macs_used:,} MACs, host {cost.ram:,} B / {cost.macs:,} MACs")
            order = np.random.default_rng([opts.seed, epoch, _ORDER]).permutation(n)
            counts_before = len(link.regions()) if count_instructions else 0
            for start in range(0, n, opts.batch_size):
                idx = order[start:start + opts.batch_size]
                for j, k in enumerate(idx):
                    head = struct.pack("<BBH", int(y[k]), int(j == len(idx) - 1), len(idx))
                    _request(link, ADAPT_SAMPLE, head + inputs[k].tobytes())
            sample_counts = link.regions()[counts_before:] if count_instructions else []
            peak, stack_peak, samples, at_eq, loss_sum, allocated = struct.unpack("<4IfI", _request(link, ADAPT_EPOCH_END))
            neq_counts = link.regions()[counts_before + len(sample_counts):] if count_instructions else []
            accuracy, eval_loss = evaluate()
            record = {
                "epoch": epoch + 1, "accuracy": accuracy, "loss": float(loss_sum) / n, "eval_loss": eval_loss,
                "selected": sel.counts(names),
                "selected_bias_only": {name: len(b - w) for name, w, b in zip(names, sel.weights, sel.biases)},
                "selection": sel.as_lists(),
                "ram_used": cost.ram, "macs_used": cost.macs, "peak_ram_measured": int(peak),
                "stack_peak_measured": int(stack_peak), "pool_allocated": int(allocated),
                # All of the device's RAM at its peak: the measured pool and stack plus the static float32
                # region, its forward buffers and the int8 arenas of the model and the prefix (outside the budget).
                "device_ram_peak": int(peak + stack_peak + forward_bytes + model_f32 + prefix_arena
                                       + int(info.get("arena_bytes", 0))),
                "at_equilibrium": None if at_eq == 0xFFFFFFFF else int(at_eq),
                "velocities": velocities,  # nu of the candidates the selection used (the device's own), or None
                "candidates": n_cand,
                "warmup": epoch < warmup_epochs(opts.selector),
                "ram_breakdown": {k: v for k, v in cost.breakdown.items() if not k.endswith("macs")},
            }
            if count_instructions:  # QEMU's instruction counts: a training sample (forward, backward, SGD), the NEq pass
                record["instructions_per_sample"] = int(np.mean(sample_counts)) if sample_counts else None
                record["instructions_neq_update"] = int(neq_counts[0]) if neq_counts else None
            records.append(record)
            if on_epoch:
                on_epoch(record)
        saved = struct.unpack("<I", _request(link, ADAPT_END))[0]
        after = [np.frombuffer(link.infer(s.tobytes())[0], np.int8)[:out_size] for s in eval_inputs]
        infer_accuracy_after = float((np.stack(after).argmax(1) == ey).mean())
        link.request(0x0F)

    return {
        "selector": opts.selector, "device": opts.device, "seed": int(opts.seed),
        "budget_ram": budget_ram, "budget_macs": budget_macs, "full_ram": full.ram, "full_macs": full.macs,
        "accuracy_before": accuracy_before, "accuracy_before_float": accuracy_before_float,
        "accuracy_after": records[-1]["accuracy"], "infer_accuracy_after": infer_accuracy_after,
        "evaluated_on": eval_on, "eval_samples": int(len(ey)),
        "adaptation_samples": int(n), "probe_samples": int(len(probe)), "init": opts.init,
        "trainable_layers": names, "frozen_layers": region.frozen,
        "neq_per_epoch": neq_macs_per_epoch(region, len(probe), opts.history, cm.first_candidate) if uses_neq else None,
        "device_memory": {"training_pool": int(pool), "float_forward_buffers": int(forward_bytes),
                          "int8_arena": int(info.get("arena_bytes", 0)), "prefix_arena": int(prefix_arena),
                          "adapted_parameters": int(model_f32), "persistent_training_state": int(persistent)},
        "saved_to_flash": bool(saved),
        "options": {"lr": opts.lr, "momentum": opts.momentum, "weight_decay": opts.weight_decay, "batch_size": opts.batch_size,
                    "epochs": opts.epochs, "mu": opts.mu, "eps": opts.eps, "probe_per_class": opts.probe_per_class,
                    "history": opts.history, "probe_in_ram": opts.probe_in_ram},
        "epochs": records,
    }


def rollback_on_device(model_dir: str | Path, firmware: str | Path | None = None, trainable_from: str | None = None) -> list[Path]:
    """`edgeprune adapt --rollback --device qemu`: the device forgets its adaptation (the saved slots
    included) and `infer` runs the factory int8 model again. Under QEMU each region's firmware folder
    has its own flash file: without `firmware` or `trainable_from` every adaptation firmware DIR holds
    is reset (the default one is built when there is none). Returns the folders reset."""
    from edgeprune.device.link import open_link

    if firmware is not None:
        folders = [Path(firmware)]
    elif trainable_from is not None:
        folders = [build_adapt_firmware(model_dir, trainable_from=trainable_from)]
    else:
        folders = sorted(p.parent for p in Path(model_dir).glob(f"{FIRMWARE_DIR}*/firmware.json"))
        folders = folders or [build_adapt_firmware(model_dir)]
    for folder in folders:
        with open_link(folder) as link:
            _request(link, ADAPT_RESET)
            link.request(0x0F)
    return folders


def run_qemu(opts, on_epoch=None, log=lambda msg: None) -> dict:
    """session.adapt's dispatch for --device qemu: a session, or with opts.rollback the factory weights back."""
    if opts.rollback:
        rollback_on_device(opts.dir, trainable_from=opts.trainable_from)
        return {"device": opts.device, "rollback": True}
    return run_on_device(opts, on_epoch=on_epoch, log=log)
