"""Finetuning with masks held at zero, BatchNorm re-estimation, and float evaluation."""

from __future__ import annotations

import numpy as np
import torch

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

    Works for TorchScript too, where `momentum` is a compile-time constant: each batch starts
    from zeroed statistics, so after one update they hold `momentum * batch statistic`, which
    we divide back out and average over batches. Returns the number of layers updated.
    """
    layers = batchnorm_layers(module)
    if not layers or not can_train_mode(module):
        return 0
    x = x[:max_samples]
    sums = [(torch.zeros_like(bn.running_mean), torch.zeros_like(bn.running_var)) for bn in layers]
    was_training = module.training
    module.eval()
    for bn in layers:
        bn.train()
    n_seen = 0
    for start in range(0, len(x), 256):
        batch = torch.from_numpy(x[start : start + 256])
        if len(batch) < 2:
            continue
        for bn in layers:
            bn.running_mean.zero_()
            bn.running_var.zero_()
            if getattr(bn, "num_batches_tracked", None) is not None:
                bn.num_batches_tracked.zero_()
        module(batch)
        for bn, (m_sum, v_sum) in zip(layers, sums):
            factor = bn.momentum if bn.momentum is not None else 1.0
            m_sum += bn.running_mean / factor * len(batch)
            v_sum += bn.running_var / factor * len(batch)
        n_seen += len(batch)
    for bn, (m_sum, v_sum) in zip(layers, sums):
        if n_seen:
            bn.running_mean.copy_(m_sum / n_seen)
            bn.running_var.copy_(v_sum / n_seen)
    module.train(was_training)
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
