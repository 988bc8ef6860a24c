"""The adaptation loop. `--device sim` runs it in PyTorch on the deployed model's trainable region and
reports what the device would do: the same data order, probe set, velocities, selections and costs.

Per epoch (0-based t):
  1. select neurons (selectors.py) from the velocities of the last probe pass (None while t < 2);
  2. SGD over the adaptation data in the order np.random.default_rng([seed, t, 3]).permutation(N),
     mini-batches of `batch_size`, mean cross-entropy on the logits; only the selected neurons'
     non-zero weights and biases change (the sim masks the gradients; the device computes only
     those, and budget.py counts only those). SGD as ep_sgd_update_f32 (torch.optim.SGD semantics);
     momentum buffers start at zero every epoch because the selection changes;
  3. run the probe set forward and update the NEq velocities;
  4. measure accuracy on --eval-data (else on the probe set) with the adapted model: the int8 prefix
     plus the float32 region, which is what the device runs after adaptation.
For the gradient-signal scores (selectors.USES_GRAD) step 2 also sums each neuron's error mass
(ErrorMass), which step 1 of the next epoch reads.
accuracy_before is the deployed int8 model's (TFLite Micro) accuracy on the same data; the float
region's accuracy before training is reported too (accuracy_before_float).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import UsageError

DEVICES = ("sim", "qemu")
LR = 0.1
BATCH_SIZE = 16
EPOCHS = 10
_ORDER = 3  # purpose in the data-order seed


@dataclass
class AdaptOptions:
    dir: str | Path
    data: str | Path
    eval_data: str | Path | None = None
    budget_ram: str | int | None = "20%"
    budget_macs: str | int | None = None
    selector: str = "neq"
    init: str = "su"
    epochs: int = EPOCHS
    seed: int = 0
    device: str = "sim"
    lr: float = LR
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = BATCH_SIZE
    mu: float = 0.5
    eps: float = 1e-3
    probe_per_class: int = 2
    history: str = "recompute"
    probe_in_ram: bool = False
    rollback: bool = False
    trainable_from: str | None = None  # the region's first layer (region.load_region); default the second weighted layer


def load_labelled_npz(path: str | Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """x (float, NCHW or NHWC) and y (integer labels) of an .npz, every sample (no split)."""
    from edgeprune.data import validate_inputs

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} file {path} does not exist; pass an .npz with 'x' (N,C,H,W) float and 'y' (N,) integer labels")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise UsageError(f"cannot read {path} as an .npz archive ({e}); save it with numpy.savez(path, x=..., y=...)") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise UsageError(f"{path} has no array '{key}' (found: {', '.join(sorted(arrays)) or 'none'}); "
                             "adaptation needs x=(N,C,H,W) inputs and y=(N,) integer labels")
    x = validate_inputs(arrays["x"], f"{path}:x")
    y = arrays["y"]
    if y.ndim != 1 or len(y) != len(x):
        raise UsageError(f"{path}:y has shape {y.shape} but must be ({len(x)},): one integer label per sample of x")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise UsageError(f"{path}:y has dtype {y.dtype}; labels must be integers (class indices)")
    return x, y.astype(np.int64)


def _check_labels(y: np.ndarray, classes: int, path) -> None:
    bad = np.flatnonzero((y < 0) | (y >= classes))
    if len(bad):
        raise UsageError(f"{path}:y has label {int(y[bad[0]])} at sample {int(bad[0])}, but the model has {classes} classes "
                         f"(labels 0..{classes - 1})")


class ErrorMass:
    """Per neuron of cm.neurons(), sum over an epoch's samples and output positions of |d loss_s / d o_n|
    (o_n: the output before the activation, loss_s: one sample's cross-entropy); NaN for the layers
    below the deepest selected one, whose errors the backward pass does not compute (scores.py)."""

    def __init__(self, region, deepest: int | None):
        self.region = region
        self.observed = range(len(region.layers) if deepest is None else deepest, len(region.layers))
        self.sums = [np.zeros(lay.channels) for lay in region.layers]

    def add(self, logits, pre, y) -> None:
        """One batch; the sim's extra autograd call (the device gets these errors from its backward pass)."""
        import torch

        if not self.observed:
            return
        outs = [pre[i] for i in self.observed]
        loss_sum = torch.nn.functional.cross_entropy(logits, y, reduction="sum")  # per-sample errors, no 1/B
        for i, g in zip(self.observed, torch.autograd.grad(loss_sum, outs, retain_graph=True)):
            self.sums[i] += g.detach().abs().reshape(-1, self.region.layers[i].channels).double().sum(0).numpy()

    def per_neuron(self) -> np.ndarray:
        return np.concatenate([s if i in self.observed else np.full(len(s), np.nan) for i, s in enumerate(self.sums)])


def load_session_data(opts: AdaptOptions, region):
    """The checked samples of a session, shared by the sim and the device: (inputs as the model takes
    them, labels, probe indices, evaluation inputs, evaluation labels, what the evaluation runs on)."""
    from edgeprune.adapt import region as R
    from edgeprune.adapt.neq import probe_indices

    x, y = load_labelled_npz(opts.data, "--data")
    _check_labels(y, region.num_classes, opts.data)
    inputs = R.model_inputs(region, x, f"{opts.data}:x")
    probe = probe_indices(y, opts.probe_per_class, opts.seed)
    if opts.eval_data is not None:
        ex, ey = load_labelled_npz(opts.eval_data, "--eval-data")
        _check_labels(ey, region.num_classes, opts.eval_data)
        eval_inputs, eval_on = R.model_inputs(region, ex, f"{opts.eval_data}:x"), "eval-data"
    else:
        eval_inputs, ey, eval_on = inputs[probe], y[probe], "probe set"
    return inputs, y, probe, eval_inputs, ey, eval_on


def adapt(opts: AdaptOptions, log=lambda msg: None, on_epoch=None) -> dict:
    """Run an adaptation session; returns the `adapt --json` dict. on_epoch(record) is called after each epoch."""
    if opts.device not in DEVICES:
        raise UsageError(f"unknown --device {opts.device}; choose one of {', '.join(DEVICES)}")
    if opts.rollback and opts.device == "sim":
        raise UsageError("--rollback returns a device to its factory weights; the simulation keeps none: use --device qemu")
    if opts.device == "qemu":  # the firmware's adaptation mode (adapt/device.py): same algorithm, on the device
        from edgeprune.adapt.device import run_qemu

        return run_qemu(opts, on_epoch=on_epoch, log=log)
    if opts.epochs < 1 or opts.batch_size < 1 or opts.probe_per_class < 1:
        raise UsageError("--epochs, --batch-size and --probe-per-class must be at least 1")
    if not opts.lr > 0 or not 0 <= opts.momentum < 1 or opts.weight_decay < 0:
        raise UsageError("--lr must be positive, --momentum in [0, 1), --weight-decay non-negative")
    import torch

    from edgeprune.adapt import region as R
    from edgeprune.adapt.budget import CostModel, parse_budget_macs, parse_budget_ram
    from edgeprune.adapt.neq import NEqTracker, neq_macs_per_epoch
    from edgeprune.adapt.selectors import USES_GRAD, USES_NEQ, Selector, warmup_epochs

    region = R.load_region(opts.dir, opts.trainable_from)
    inputs, y, probe, eval_inputs, ey, eval_on = load_session_data(opts, region)

    uses_neq = opts.selector in USES_NEQ
    uses_grad = opts.selector in USES_GRAD
    cm = CostModel(region, momentum=opts.momentum > 0, neq=uses_neq, probe_samples=len(probe), history=opts.history,
                   probe_in_ram=opts.probe_in_ram, grad=uses_grad)
    full = cm.full_cost()
    budget_ram = parse_budget_ram(opts.budget_ram, full.ram) if opts.budget_ram is not None else None
    budget_macs = parse_budget_macs(opts.budget_macs, full.macs)
    selector = Selector(opts.selector, cm, budget_ram, budget_macs, seed=opts.seed, init=opts.init)

    # The frozen int8 prefix once per sample, bit-exact; the region trains from its dequantized output.
    xr = torch.tensor(R.dequantize_input(region, R.prefix_int8(region, inputs)))
    xe = torch.tensor(R.dequantize_input(region, R.prefix_int8(region, eval_inputs)))
    ye_t = torch.tensor(ey)
    y_t = torch.tensor(y)
    accuracy_before = float((R.deployed_logits(region, eval_inputs).reshape(len(ey), -1).argmax(1) == ey).mean())

    params = R.torch_params(region)
    prune = [(torch.tensor(lay.mask), None if lay.bias is None else torch.ones(lay.channels, dtype=torch.bool))
             for lay in region.layers]

    def evaluate():
        with torch.no_grad():
            logits = R.forward(region, params, xe)
            return float((logits.argmax(1) == ye_t).double().mean()), float(torch.nn.functional.cross_entropy(logits, ye_t))

    def probe_outputs():
        with torch.no_grad():
            _, pre = R.forward(region, params, xr[probe], capture=True)
        return [p.numpy() for p in pre]

    accuracy_before_float, _ = evaluate()
    tracker = NEqTracker(region, mu=opts.mu, eps=opts.eps, history=opts.history)
    tracker.observe(probe_outputs())
    log(f"{region.layer_names} trainable, {', '.join(region.frozen)} frozen; full needs {full.ram:,} B, "
        f"{full.macs:,} backward MACs per sample; budget {budget_ram} B / {budget_macs} MACs")

    records = []
    n = len(xr)
    errors = None  # the last epoch's error mass per neuron (gradient-signal scores only)
    for epoch in range(opts.epochs):
        # cheapest only needs to know the warm-up is over; neq and neq-shuffled use the values.
        sel = selector.select(epoch, tracker.velocities, errors)
        cost = cm.cost(sel) if opts.selector != "full" else full
        masks = []
        for lay, (wm, bm), w, b in zip(region.layers, prune, sel.weights, sel.biases):
            wsel = torch.tensor(lay.channel_mask(w)) & wm if w else torch.zeros_like(wm)
            bsel = None
            if bm is not None:
                bsel = torch.zeros(lay.channels, dtype=torch.bool)
                bsel[sorted(w | b)] = True
            masks.append((wsel, bsel))
        buffers = [(torch.zeros_like(w), None if b is None else torch.zeros_like(b)) for w, b in params]
        order = np.random.default_rng([opts.seed, epoch, _ORDER]).permutation(n)
        losses = []
        mass = ErrorMass(region, sel.deepest()) if uses_grad else None
        for start in range(0, n, opts.batch_size):
            idx = torch.tensor(order[start:start + opts.batch_size])
            leaves = [(w.clone().requires_grad_(True), None if b is None else b.clone().requires_grad_(True)) for w, b in params]
            if mass is None:
                logits = R.forward(region, leaves, xr[idx])
            else:  # hook: the same forward, keeping each layer's output for the error mass
                logits, pre = R.forward(region, leaves, xr[idx], capture=True)
                mass.add(logits, pre, y_t[idx])
            loss = torch.nn.functional.cross_entropy(logits, y_t[idx])
            grads = torch.autograd.grad(loss, [t for pair in leaves for t in pair if t is not None])
            losses.append(float(loss.detach()) * len(idx))
            k = 0
            with torch.no_grad():
                for i, (w, b) in enumerate(params):
                    for j, (p, m) in enumerate(((w, masks[i][0]), (b, masks[i][1]))):
                        if p is None:
                            continue
                        g = grads[k]
                        k += 1
                        if not m.any():
                            continue
                        d = g + opts.weight_decay * p if opts.weight_decay else g
                        buf = buffers[i][j]
                        if opts.momentum:
                            buf.mul_(opts.momentum).add_(d)
                            d = buf
                        p.sub_(torch.where(m, opts.lr * d, torch.zeros_like(d)))
        tracker.observe(probe_outputs())
        errors = mass.per_neuron() if mass is not None else None
        accuracy, eval_loss = evaluate()
        record = {
            "epoch": epoch + 1, "accuracy": accuracy, "loss": float(np.sum(losses) / n), "eval_loss": eval_loss,
            "selected": sel.counts(region.layer_names),
            "selected_bias_only": {name: len(b - w) for name, w, b in zip(region.layer_names, sel.weights, sel.biases)},
            "ram_used": cost.ram, "macs_used": cost.macs, "peak_ram_measured": None,
            "at_equilibrium": (None if not uses_neq or tracker.velocities is None
                               else int((np.abs(tracker.velocities[selector.offset:]) < opts.eps).sum())),
            "candidates": len(selector.neurons),
            "warmup": epoch < warmup_epochs(opts.selector),
            "ram_breakdown": {k: v for k, v in cost.breakdown.items() if not k.endswith("macs")},
        }
        records.append(record)
        if on_epoch:
            on_epoch(record)

    return {
        "selector": opts.selector, "device": opts.device, "seed": int(opts.seed),
        "budget_ram": budget_ram, "budget_macs": budget_macs, "full_ram": full.ram, "full_macs": full.macs,
        "accuracy_before": accuracy_before, "accuracy_before_float": accuracy_before_float,
        "accuracy_after": records[-1]["accuracy"], "evaluated_on": eval_on, "eval_samples": int(len(ey)),
        "adaptation_samples": int(n), "probe_samples": int(len(probe)), "init": opts.init,
        "trainable_layers": region.layer_names, "frozen_layers": region.frozen,
        "neq_per_epoch": neq_macs_per_epoch(region, len(probe), opts.history, cm.first_candidate) if uses_neq else None,
        "neq_candidates": len(selector.neurons) if uses_neq else None,
        "options": {"lr": opts.lr, "momentum": opts.momentum, "weight_decay": opts.weight_decay, "batch_size": opts.batch_size,
                    "epochs": opts.epochs, "mu": opts.mu, "eps": opts.eps, "probe_per_class": opts.probe_per_class,
                    "history": opts.history, "probe_in_ram": opts.probe_in_ram},
        "epochs": records,
    }
