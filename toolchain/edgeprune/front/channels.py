"""Channel dependencies in an ONNX graph, and the physical removal of dead channels.

A *channel group* is a Conv/Gemm output channel together with everything that must change
when it goes away: the BatchNorm and depthwise parameters it flows through ("followers")
and the input slices of the layers that read it ("consumers"). The walk only crosses ops
that map a zero channel to a zero channel, so removing a dead channel changes no output.
Channels that reach an Add, Concat, a graph output or anything unknown are left alone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

# Ops that turn an all-zero channel into an all-zero channel at the same index.
_ZERO_PRESERVING = {"Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Dropout", "Identity"}


@dataclass
class ParamSlice:
    """Channel k of the group is `[k*repeat, (k+1)*repeat)` along `dim` of initializer `name`."""

    name: str
    dim: int
    repeat: int = 1
    must_be_zero: bool = True  # the channel is only dead if this slice is zero too


@dataclass
class ChannelGroup:
    producer: str  # node name
    weight: str  # producer weight initializer; channel = dim 0
    bias: str | None
    channels: int
    followers: list[ParamSlice] = field(default_factory=list)
    consumers: list[ParamSlice] = field(default_factory=list)
    depthwise_nodes: list[str] = field(default_factory=list)  # their `group` attribute shrinks too


@dataclass
class _Graph:
    """What the channel walk looks up: who reads each tensor, constants, inferred shapes."""

    readers: dict[str, list[onnx.NodeProto]]
    outputs: set[str]
    inits: dict[str, onnx.TensorProto]
    shapes: dict[str, list[int]]
    constants: dict[str, np.ndarray]

    @classmethod
    def of(cls, model: onnx.ModelProto) -> "_Graph":
        readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in model.graph.node:
            for name in node.input:
                readers[name].append(node)
        return cls(
            readers=readers,
            outputs={o.name for o in model.graph.output},
            inits={i.name: i for i in model.graph.initializer},
            shapes=_tensor_shapes(model),
            constants=_constant_values(model),
        )


def find_channel_groups(model: onnx.ModelProto) -> list[ChannelGroup]:
    g = _Graph.of(model)
    groups = []
    for node in model.graph.node:
        weight = _producer_weight(node, g.inits)
        if weight is None:
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in g.inits else None
        group = ChannelGroup(node.name, weight, bias, int(g.inits[weight].dims[0]))
        if _walk(g, group, node.output[0], 1) and group.consumers:
            groups.append(group)
    return groups


def _producer_weight(node, inits) -> str | None:
    if node.op_type == "Conv" and _attr(node, "group", 1) == 1 and node.input[1] in inits:
        return node.input[1]
    if (
        node.op_type == "Gemm"
        and _attr(node, "transB", 0) == 1
        and _attr(node, "transA", 0) == 0
        and node.input[1] in inits
    ):
        return node.input[1]
    return None


def _walk(g: _Graph, group: ChannelGroup, tensor: str, repeat: int) -> bool:
    """Follow `tensor` to every reader; False as soon as one path cannot carry the channels."""
    if tensor in g.outputs:
        return False
    for node in g.readers.get(tensor, []):
        if node.input[0] != tensor:
            return False  # read as a weight or a second operand: not a simple channel flow
        step = _step(g, group, node, tensor, repeat)
        if step is False:
            return False
        if step is not True and not _walk(g, group, *step):
            return False
    return True


def _step(g: _Graph, group: ChannelGroup, node, tensor: str, repeat: int) -> bool | tuple[str, int]:
    """One reader of the channels: True when it consumes them (and is recorded as a consumer),
    (next tensor, repeat) when they flow through it, False when it blocks removal."""
    op, out = node.op_type, node.output[0]
    if op in _ZERO_PRESERVING:
        return out, repeat
    if op == "Clip":
        low = g.constants.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        ok = low is not None and float(np.asarray(low).reshape(-1)[0]) <= 0.0 <= _clip_high(node, g.constants)
        return ok and (out, repeat)
    if op == "BatchNormalization":
        names = list(node.input[1:5])
        if repeat != 1 or not all(n in g.inits for n in names):
            return False
        group.followers += [ParamSlice(names[0], 0), ParamSlice(names[1], 0)]
        group.followers += [ParamSlice(n, 0, must_be_zero=False) for n in names[2:]]
        return out, repeat
    if op == "Pad":
        return _pad_keeps_channels(node, g.constants) and (out, repeat)
    if op == "ReduceMean":
        axes = _reduce_axes(node, g.constants, len(g.shapes.get(tensor, ())))
        return axes is not None and 0 not in axes and 1 not in axes and (out, repeat)
    if op == "Conv":
        w = node.input[1]
        if w not in g.inits or repeat != 1:
            return False
        dims = list(g.inits[w].dims)
        if _attr(node, "group", 1) == 1:
            group.consumers.append(ParamSlice(w, 1, must_be_zero=False))
            return True
        if _attr(node, "group", 1) == group.channels and dims[0] == group.channels and dims[1] == 1:
            # Depthwise, multiplier 1: the channel passes through; its bias must be zero.
            group.followers.append(ParamSlice(w, 0, must_be_zero=False))
            if len(node.input) > 2 and node.input[2]:
                if node.input[2] not in g.inits:
                    return False
                group.followers.append(ParamSlice(node.input[2], 0))
            group.depthwise_nodes.append(node.name)
            return out, repeat
        return False
    if op == "Gemm":
        w = node.input[1]
        if w not in g.inits or _attr(node, "transA", 0) != 0:
            return False
        dim = 1 if _attr(node, "transB", 0) == 1 else 0
        group.consumers.append(ParamSlice(w, dim, repeat, must_be_zero=False))
        return True
    if op == "MatMul":
        w = node.input[1]
        if w not in g.inits or len(g.inits[w].dims) != 2 or len(g.shapes.get(tensor, ())) != 2:
            return False
        group.consumers.append(ParamSlice(w, 0, repeat, must_be_zero=False))
        return True
    if op in ("Flatten", "Reshape"):
        if not _flattens_channels_first(node, tensor, g.shapes, group.channels):
            return False
        shape = g.shapes[tensor]
        return out, repeat * (int(np.prod(shape[2:])) if len(shape) > 2 else 1)
    return False


def dead_channels(model: onnx.ModelProto, group: ChannelGroup) -> np.ndarray:
    """Indices of channels whose producer weights, bias and zero-requiring followers are all zero."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name in _names(group)}
    dead = np.all(inits[group.weight].reshape(group.channels, -1) == 0, axis=1)
    if group.bias is not None:
        dead &= inits[group.bias].reshape(-1) == 0
    for f in group.followers:
        if f.must_be_zero:
            arr = np.moveaxis(inits[f.name], f.dim, 0).reshape(group.channels, -1)
            dead &= np.all(arr == 0, axis=1)
    return np.flatnonzero(dead)


def remove_dead_channels(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Slice every dead channel out of producers, followers and consumers.

    Returns the new model and the number of channels removed per producer node. A group keeps
    at least one channel so no tensor becomes empty.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    removed: dict[str, int] = {}
    for group in find_channel_groups(model):
        dead = dead_channels(model, group)
        if len(dead) == 0:
            continue
        if len(dead) == group.channels:
            dead = dead[1:]
        keep = np.setdiff1d(np.arange(group.channels), dead)
        _slice_initializer(model, ParamSlice(group.weight, 0), keep)
        if group.bias is not None:
            _slice_initializer(model, ParamSlice(group.bias, 0), keep)
        for s in group.followers + group.consumers:
            _slice_initializer(model, s, keep)
        for node in model.graph.node:
            if node.name in group.depthwise_nodes:
                for a in node.attribute:
                    if a.name == "group":
                        a.i = len(keep)
        removed[group.producer] = len(dead)
    if removed:
        del model.graph.value_info[:]  # shapes changed; consumers re-infer them
    return model, removed


def _names(group: ChannelGroup) -> set[str]:
    names = {group.weight} | {s.name for s in group.followers + group.consumers}
    if group.bias:
        names.add(group.bias)
    return names


def _slice_initializer(model, s: ParamSlice, keep: np.ndarray) -> None:
    for i, init in enumerate(model.graph.initializer):
        if init.name == s.name:
            arr = numpy_helper.to_array(init)
            idx = (keep[:, None] * s.repeat + np.arange(s.repeat)[None, :]).reshape(-1)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.take(arr, idx, axis=s.dim), s.name))
            return
    raise KeyError(s.name)


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _tensor_shapes(model) -> dict[str, list[int]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [int(d.dim_value) for d in dims]
    return shapes


def _constant_values(model) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(a.t)
    return values


def _clip_high(node, constants) -> float:
    if len(node.input) > 2 and node.input[2]:
        high = constants.get(node.input[2])
        return float(np.asarray(high).reshape(-1)[0]) if high is not None else -np.inf
    return np.inf


def _pad_keeps_channels(node, constants) -> bool:
    if _attr(node, "mode", b"constant") not in (b"constant", "constant"):
        return False
    pads = constants.get(node.input[1]) if len(node.input) > 1 else None
    if pads is None:
        return False
    pads = np.asarray(pads).reshape(-1)
    rank = len(pads) // 2
    if rank < 2 or pads[1] != 0 or pads[rank + 1] != 0 or pads[0] != 0 or pads[rank] != 0:
        return False
    if len(node.input) > 2 and node.input[2]:
        value = constants.get(node.input[2])
        return value is not None and float(np.asarray(value).reshape(-1)[0]) == 0.0
    return True


def _reduce_axes(node, constants, rank: int):
    """The reduced axes, normalized to be non-negative; None when unknown."""
    axes = _attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = constants.get(node.input[1])
        axes = None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]
    if axes is None or rank == 0:
        return None
    return {a % rank for a in axes}


def _flattens_channels_first(node, tensor, shapes, channels) -> bool:
    shape, out = shapes.get(tensor), shapes.get(node.output[0])
    if shape is None or out is None or len(shape) < 2 or shape[1] != channels:
        return False
    if node.op_type == "Flatten" and _attr(node, "axis", 1) != 1:
        return False
    return len(out) == 2 and out[0] == shape[0] and out[1] == int(np.prod(shape[1:]))
