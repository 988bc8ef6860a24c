"""Pruning (METHODS.md section 2): masks over conv and linear weights, computed by magnitude.

Every method produces a `Masks` mapping from parameter name to a boolean keep-mask. Masks are
applied by multiplying, so pruned weights are exactly zero, and re-applied after each
finetuning step so they stay zero.

Sparsity targets count all conv and linear weights, including layers kept dense with
--keep-first-last: the other layers prune harder so the whole model reaches the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgeprune.errors import UsageError

Masks = dict[str, torch.Tensor]

METHODS = ("magnitude", "gmp", "block", "nm", "channel", "none")
SCOPES = ("global", "layer", "erk")


@dataclass(frozen=True)
class PrunableLayer:
    name: str  # parameter name, e.g. "features.0.weight"
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def kind(self) -> str:
        return "conv" if len(self.shape) == 4 else "linear"


def prunable_layers(module: torch.nn.Module) -> list[PrunableLayer]:
    """Conv (4-D) and linear (2-D) weights in registration order; biases and norms stay dense."""
    return [
        PrunableLayer(name, tuple(p.shape))
        for name, p in module.named_parameters()
        if name.endswith("weight") and p.dim() in (2, 4)
    ]


def parameters_by_name(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return dict(module.named_parameters())


@torch.no_grad()
def apply_masks(module: torch.nn.Module, masks: Masks) -> None:
    params = parameters_by_name(module)
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].dtype))


def layer_densities(
    layers: list[PrunableLayer], sparsity: float, scope: str, dense: set[str]
) -> dict[str, float] | None:
    """Per-layer density for `layer` and `erk` scopes (None for `global`, which thresholds jointly)."""
    total = sum(l.size for l in layers)
    free = [l for l in layers if l.name not in dense]
    budget = (1.0 - sparsity) * total - sum(l.size for l in layers if l.name in dense)
    free_size = sum(l.size for l in free)
    if not free or budget < 0:
        raise UsageError(
            f"sparsity {sparsity:.2f} is unreachable with the first and last layers dense; lower --sparsity or drop --keep-first-last"
        )
    if scope == "global":
        return None
    if scope == "layer":
        d = min(1.0, budget / free_size)
        return {l.name: d for l in free}
    # ERK (Evci et al.): density proportional to (sum of dims) / (product of dims), capped at 1.
    raw = {l.name: sum(l.shape) / l.size for l in free}
    capped: dict[str, float] = {}
    while True:
        rest = [l for l in free if l.name not in capped]
        if not rest:
            return capped
        rest_budget = budget - sum(l.size for l in free if l.name in capped)
        eps = rest_budget / sum(raw[l.name] * l.size for l in rest)
        over = [l for l in rest if eps * raw[l.name] > 1.0 + 1e-12]
        if not over:
            return {**capped, **{l.name: eps * raw[l.name] for l in rest}}
        for l in over:
            capped[l.name] = 1.0


@torch.no_grad()
def magnitude_masks(
    module: torch.nn.Module, sparsity: float, scope: str = "global", dense: set[str] = frozenset()
) -> Masks:
    """Keep the largest-magnitude weights so that `sparsity` of all conv/linear weights are zero."""
    if not 0.0 <= sparsity < 1.0:
        raise UsageError(f"--sparsity {sparsity} must be in [0, 1)")
    if scope not in SCOPES:
        raise UsageError(f"unknown --scope {scope}; choose {', '.join(SCOPES)}")
    layers = prunable_layers(module)
    params = parameters_by_name(module)
    densities = layer_densities(layers, sparsity, scope, dense)
    masks: Masks = {}
    if densities is None:
        free = [l for l in layers if l.name not in dense]
        scores = torch.cat([params[l.name].detach().abs().reshape(-1) for l in free])
        n_zero = int(round(sparsity * sum(l.size for l in layers)))
        flat = _keep_largest(scores, scores.numel() - n_zero)
        offset = 0
        for l in free:
            masks[l.name] = flat[offset : offset + l.size].reshape(l.shape)
            offset += l.size
    else:
        for l in layers:
            if l.name in densities:
                w = params[l.name].detach().abs().reshape(-1)
                density = min(1.0, densities[l.name])
                masks[l.name] = _keep_largest(w, int(round(density * l.size))).reshape(l.shape)
    for l in layers:
        masks.setdefault(l.name, torch.ones(l.shape, dtype=torch.bool))
    return masks


def _keep_largest(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Exactly `keep` True entries at the largest scores (ties broken by position, deterministic)."""
    keep = max(0, min(keep, scores.numel()))
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    if keep:
        order = torch.argsort(scores, descending=True, stable=True)
        mask[order[:keep]] = True
    return mask


@torch.no_grad()
def nm_masks(module: torch.nn.Module, n: int, m: int, dense: set[str] = frozenset()) -> tuple[Masks, list[str]]:
    """N:M sparsity: in every group of M consecutive *input-channel* weights, at most N are non-zero.

    Groups run along the input channels at a fixed (output channel, kernel position), which is
    the innermost axis of TFLite's (O, H, W, I) layout, so the pattern survives export and the
    kernels can use it. Layers whose input count is not a multiple of M stay dense; their names
    are returned so the report can say why.
    """
    if not 0 < n < m:
        raise UsageError(f"--nm {n}:{m} must have 0 < N < M (N non-zeros kept in every M consecutive weights)")
    params = parameters_by_name(module)
    masks: Masks = {}
    skipped = []
    for l in prunable_layers(module):
        w = params[l.name].detach()
        fan_in = w.shape[1]
        if l.name in dense or fan_in % m != 0:
            masks[l.name] = torch.ones(l.shape, dtype=torch.bool)
            if l.name not in dense:
                skipped.append(l.name)
            continue
        # Move input channels last, group them by M, keep the N largest of each group.
        w_last = w.movedim(1, -1) if w.dim() == 4 else w
        groups = w_last.abs().reshape(-1, m)
        top = torch.topk(groups, n, dim=1, sorted=False).indices
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, top, True)
        keep = keep.reshape(w_last.shape)
        masks[l.name] = keep.movedim(-1, 1) if w.dim() == 4 else keep
    return masks, skipped


@torch.no_grad()
def block_masks(
    module: torch.nn.Module, sparsity: float, block: int = 4, dense: set[str] = frozenset()
) -> tuple[Masks, list[str]]:
    """Block sparsity: groups of `block` consecutive input-channel weights (at one output channel and
    kernel position) are kept or zeroed together, the groups with the smallest L1 norm first, ranked
    across all layers.

    These are the 1x4 blocks of the kernels' `block4` format: one 32-bit word of weights feeds one
    SMLAD pair or one SDOT lane, so block-pruned layers run faster than magnitude-pruned ones at the
    same sparsity. `sparsity` counts all conv/linear weights, as magnitude pruning does. Layers whose
    input count is not a multiple of `block` stay dense; their names are returned.
    """
    if not 0.0 <= sparsity < 1.0:
        raise UsageError(f"--sparsity {sparsity} must be in [0, 1)")
    params = parameters_by_name(module)
    layers = prunable_layers(module)
    scores, owners, skipped = [], [], []
    for l in layers:
        w = params[l.name].detach()
        if l.name in dense or w.shape[1] % block != 0:
            if l.name not in dense:
                skipped.append(l.name)
            continue
        w_last = w.movedim(1, -1) if w.dim() == 4 else w  # input channels innermost, as in TFLite
        scores.append(w_last.abs().reshape(-1, block).sum(dim=1))
        owners.append((l, w_last.shape))
    n_blocks = sum(s.numel() for s in scores)
    n_zero = min(n_blocks, int(round(sparsity * sum(l.size for l in layers) / block)))
    keep = _keep_largest(torch.cat(scores) if scores else torch.zeros(0), n_blocks - n_zero)
    masks: Masks = {}
    offset = 0
    for (l, shape), s in zip(owners, scores):
        kept = keep[offset : offset + s.numel()].repeat_interleave(block).reshape(shape)
        offset += s.numel()
        masks[l.name] = kept.movedim(-1, 1) if len(shape) == 4 else kept
    for l in layers:
        masks.setdefault(l.name, torch.ones(l.shape, dtype=torch.bool))
    return masks, skipped


def gmp_sparsity(step: int, n_steps: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's cubic schedule: s_t = s_f + (s_i - s_f) * (1 - t / n)^3 for t in [0, n]."""
    t = min(max(step, 0), n_steps)
    return final + (initial - final) * (1.0 - t / n_steps) ** 3


def parse_nm(text: str) -> tuple[int, int]:
    try:
        n, m = (int(v) for v in text.split(":"))
    except ValueError:
        raise UsageError(f"--nm '{text}' must look like N:M, e.g. 2:4") from None
    return n, m


def mask_sparsity(masks: Masks) -> float:
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / max(total, 1)
