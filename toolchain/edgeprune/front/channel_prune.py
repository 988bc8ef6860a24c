"""Structured pruning: drop whole output channels by L1 norm.

Which channels can go, and what else must change with them, comes from the module's own
graph: it is exported once to ONNX without BatchNorm folding so parameter names survive,
and `find_channel_groups` follows each channel to its readers. Pruning zeroes a channel's
weights, bias and BatchNorm affine parameters (so it outputs exact zeros); the physical
removal happens on the exported ONNX with `remove_dead_channels`, for any input format.
"""

from __future__ import annotations

import copy
import io
import warnings

import onnx
import torch

from edgeprune.errors import UsageError, first_line
from edgeprune.front.channels import ChannelGroup, find_channel_groups
from edgeprune.front.prune import Masks


def module_channel_groups(module: torch.nn.Module, input_shape: tuple[int, ...]) -> list[ChannelGroup]:
    if any(isinstance(m, torch.fx.GraphModule) for m in module.modules()):
        raise UsageError(
            "channel pruning needs a TorchScript model or a state_dict with --arch (an ExportedProgram has no BatchNorm modules left to prune); "
            "use --prune magnitude, gmp or nm for .pt2 files"
        )
    probe = copy.deepcopy(module)  # exporting in training mode would touch BatchNorm statistics
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # Batch 2: BatchNorm in training mode refuses a single value per channel.
            torch.onnx.export(
                probe,
                (torch.zeros((2, *input_shape)),),
                buf,
                dynamo=False,
                training=torch.onnx.TrainingMode.TRAINING,
                do_constant_folding=False,
            )
        except Exception as e:
            raise UsageError(f"channel pruning could not trace the model's channel structure ({first_line(e)}); use --prune magnitude or nm") from None
    params = dict(module.named_parameters())
    groups = find_channel_groups(onnx.load_from_string(buf.getvalue()))
    return [g for g in groups if g.weight in params]


@torch.no_grad()
def channel_masks(
    module: torch.nn.Module, groups: list[ChannelGroup], fraction: float, dense: set[str] = frozenset()
) -> tuple[Masks, dict[str, int]]:
    """Masks removing round(fraction * C) lowest-L1 output channels of every prunable group."""
    if not 0.0 <= fraction < 1.0:
        raise UsageError(f"--sparsity {fraction} must be in [0, 1) (the fraction of channels to remove)")
    params = dict(module.named_parameters())
    masks: Masks = {}
    removed: dict[str, int] = {}
    for g in groups:
        if g.weight in dense:
            continue
        w = params[g.weight].detach()
        n_remove = min(int(round(fraction * g.channels)), g.channels - 1)
        if n_remove == 0:
            continue
        l1 = w.reshape(g.channels, -1).abs().sum(dim=1)
        drop = torch.argsort(l1, stable=True)[:n_remove]
        keep = torch.ones(g.channels, dtype=torch.bool)
        keep[drop] = False
        masks[g.weight] = _channel_mask(w.shape, 0, keep)
        if g.bias is not None and g.bias in params:
            masks[g.bias] = keep.clone()
        for f in g.followers:
            if f.must_be_zero and f.name in params:
                masks[f.name] = _channel_mask(params[f.name].shape, f.dim, keep)
        removed[g.weight] = n_remove
    return masks, removed


def _channel_mask(shape, dim: int, keep: torch.Tensor) -> torch.Tensor:
    view = [1] * len(shape)
    view[dim] = -1
    return keep.reshape(view).expand(shape).clone()
