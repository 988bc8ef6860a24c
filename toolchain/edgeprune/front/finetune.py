"""Finetuning with masks held at zero, BatchNorm re-estimation, and float evaluation."""

from __future__ import annotations

import numpy as np
import torch

from edgeprune.errors import UsageError
from edgeprune.front.prune import Masks, apply_masks
from edgeprune.progress import progress_bar

BATCH_SIZE = 32


def batchnorm_layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    """BatchNorm submodules of an nn.Module or a TorchScript module (ExportedPrograms have none)."""
    found = []
    for sub in module.modules():
        name = getattr(sub, "original_name", type(sub).__name__)
        if name in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d") and hasattr(sub, "running_mean"):
            found.append(sub)
    return found


def can_train_mode(module: torch.nn.Module) -> bool:
    """ExportedPrograms are frozen in eval mode (their BatchNorm uses running statistics)."""
    return not any(isinstance(m, torch.fx.GraphModule) for m in module.modules())


def set_mode(module: torch.nn.Module, training: bool) -> None:
    if can_train_mode(module):
        module.train(training)


@torch.no_grad()
def reestimate_batchnorm(module: torch.nn.Module, x: np.ndarray, max_samples: int = 1000) -> int:
    """Recompute BatchNorm running statistics on calibration samples (BNT, 004:1448-1454).

    One forward pass over up to `max_samples` samples as a single batch, so the statistics
    are exactly that batch's. Works for TorchScript too, where `momentum` is a compile-time
    constant: the statistics start from zero, so after one update they hold `momentum *
    batch statistic`, which we divide back out. A traced module whose BatchNorm is frozen in
    eval mode does not update at all; it is left untouched. Returns the layers updated.
    """
    layers = batchnorm_layers(module)
    if not layers or not can_train_mode(module) or len(x) < 2:
        return 0
    saved = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in layers]
    was_training = module.training
    module.eval()
    for bn in layers:
        bn.train()
        bn.running_mean.zero_()
        bn.running_var.zero_()
        if getattr(bn, "num_batches_tracked", None) is not None:
            bn.num_batches_tracked.zero_()
    try:
        module(torch.from_numpy(x[:max_samples]))
    finally:
        module.train(was_training)
    if any(float(bn.running_var.abs().sum()) == 0.0 for bn in layers):
        for bn, (mean, var) in zip(layers, saved):  # frozen (traced) BatchNorm: restore
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
        return 0
    for bn in layers:
        momentum = getattr(bn, "momentum", 0.1)
        factor = momentum if momentum is not None else 1.0
        bn.running_mean.div_(factor)
        bn.running_var.div_(factor)
    return len(layers)


def finetune(
    module: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    epochs: float,
    masks: Masks | None = None,
    lr: float = 1e-3,
    seed: int = 0,
    on_step=None,
    description: str = "finetune",
    quiet: bool = False,
) -> None:
    """Adam with cross entropy; masks are re-applied after every step so pruned weights stay zero.

    `epochs` may be fractional (GMP splits its epochs between pruning steps). `on_step(step,
    total)` runs before each step so a schedule can change the masks.
    """
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    steps_per_epoch = max(1, int(np.ceil(len(x) / BATCH_SIZE)))
    total = max(1, int(round(epochs * steps_per_epoch)))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    set_mode(module, True)
    if len(x) < 2:
        raise UsageError(f"finetuning needs at least 2 training samples, got {len(x)}; add data or pass --finetune-epochs 0")
    step = 0
    with progress_bar(description, total, quiet=quiet) as advance:
        while step < total:
            order = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), BATCH_SIZE):
                if step >= total:
                    break
                if on_step is not None:
                    masks = on_step(step, total) or masks
                idx = order[start : start + BATCH_SIZE]
                if len(idx) < 2 and can_train_mode(module):
                    continue  # BatchNorm cannot train on a single sample
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(module(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                if masks:
                    apply_masks(module, masks)
                step += 1
                advance(1, loss=float(loss.detach()))
    set_mode(module, False)


@torch.no_grad()
def predict(module: torch.nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    set_mode(module, False)
    outs = [module(torch.from_numpy(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(outs).astype(np.float32)
