"""The compiler's typed IR: an int8 TFLite graph as tensors, ops in execution order and typed options.

`build_graph(read_tflite(...))` turns the reader's raw tables into this IR and rejects, with one
line naming what and where, everything the code generator cannot run: unsupported ops, dynamic
shapes, int16 or float activations (float32 is allowed only at a QUANTIZE input or a DEQUANTIZE
output, the model's float boundary). Passes (passes.py) and the memory planner (planner.py) work on
`Graph` only, never on the flatbuffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np

from edgeprune.compile.quant import conv_padding
from edgeprune.compile.tflite_reader import TFLiteModel
from edgeprune.errors import UsageError

PADDINGS = {0: "SAME", 1: "VALID"}
ACTIVATIONS = {0: "NONE", 1: "RELU", 3: "RELU6"}  # RELU_N1_TO_1 (2), TANH (4), SIGN_BIT (5) are not fused by our kernels


@dataclass
class TensorInfo:
    id: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: np.ndarray | None = None  # float32: one value, or one per channel along `quantized_axis`
    zero_point: np.ndarray | None = None  # int64, same length as scale
    quantized_axis: int = 0
    data: np.ndarray | None = None  # constants only (they live in flash, never in the arena)

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def per_channel(self) -> bool:
        return self.scale is not None and self.scale.size > 1

    def same_quantization(self, other: TensorInfo) -> bool:
        """Equal dtype, scales and zero points (what makes a requantization an identity)."""
        if self.dtype != other.dtype or (self.scale is None) != (other.scale is None):
            return False
        if self.scale is None:
            return True
        return bool(np.array_equal(self.scale, other.scale) and np.array_equal(self.zero_point, other.zero_point))


# Typed builtin options, one dataclass per op family. Fields use the kernels' vocabulary.
@dataclass(frozen=True)
class Conv2DOptions:
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    padding: str = "SAME"
    activation: str = "NONE"
    explicit_padding: tuple[int, int] | None = None  # (top, left), set when passes.fuse_pad_into_conv absorbed a PAD


@dataclass(frozen=True)
class DepthwiseConv2DOptions:
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    padding: str = "SAME"
    activation: str = "NONE"
    depth_multiplier: int = 1
    explicit_padding: tuple[int, int] | None = None  # (top, left), as for Conv2DOptions


@dataclass(frozen=True)
class FullyConnectedOptions:
    activation: str = "NONE"
    keep_num_dims: bool = False


@dataclass(frozen=True)
class Pool2DOptions:
    filter_h: int = 1
    filter_w: int = 1
    stride_h: int = 1
    stride_w: int = 1
    padding: str = "SAME"
    activation: str = "NONE"


@dataclass(frozen=True)
class ElementwiseOptions:
    """ADD and MUL."""

    activation: str = "NONE"


@dataclass(frozen=True)
class ReducerOptions:
    """MEAN: the axes come from the constant second input, normalised to 0..rank-1 and sorted."""

    axes: tuple[int, ...] = ()
    keep_dims: bool = False


@dataclass(frozen=True)
class SoftmaxOptions:
    beta: float = 1.0


@dataclass(frozen=True)
class ConcatenationOptions:
    axis: int = 0  # normalised to 0..rank-1
    activation: str = "NONE"


@dataclass(frozen=True)
class ReshapeOptions:
    new_shape: tuple[int, ...] = ()  # the output tensor's shape (the options' NewShape may hold a -1)


@dataclass(frozen=True)
class PadOptions:
    """PAD and PADV2: paddings from the constant second input; PADV2's value from its third."""

    paddings: tuple[tuple[int, int], ...] = ()
    pad_value: int | None = None  # PADV2's int8 constant; None for PAD (pads with the zero point)


@dataclass(frozen=True)
class NoOptions:
    """QUANTIZE, DEQUANTIZE, LOGISTIC, TANH: nothing beyond the tensors' quantization."""


Options = Union[Conv2DOptions, DepthwiseConv2DOptions, FullyConnectedOptions, Pool2DOptions, ElementwiseOptions,
                ReducerOptions, SoftmaxOptions, ConcatenationOptions, ReshapeOptions, PadOptions, NoOptions]


@dataclass
class Op:
    index: int  # the operator's index in the .tflite, stable through passes (its step is its position in Graph.ops)
    kind: str  # builtin name, e.g. "CONV_2D"
    version: int
    inputs: list[int]  # tensor ids, -1 for an omitted optional input
    outputs: list[int]
    options: Options = field(default_factory=NoOptions)


@dataclass
class Graph:
    tensors: list[TensorInfo]
    ops: list[Op]  # in execution order
    inputs: list[int]
    outputs: list[int]
    # Tensors that share another tensor's buffer (a dropped RESHAPE or identity QUANTIZE): id -> id it aliases.
    aliases: dict[int, int] = field(default_factory=dict)

    def buffer_of(self, tid: int) -> int:
        """The tensor whose buffer `tid` lives in (itself unless a pass made it an alias)."""
        while tid in self.aliases:
            tid = self.aliases[tid]
        return tid

    def activation_inputs(self, op: Op) -> list[int]:
        return [t for t in op.inputs if t >= 0 and not self.tensors[t].is_constant]

    def op(self, index: int) -> Op:
        return next(op for op in self.ops if op.index == index)

    def producers(self) -> dict[int, int]:
        """tensor id -> position in `ops` of the op writing it."""
        return {t: i for i, op in enumerate(self.ops) for t in op.outputs}

    def consumers(self) -> dict[int, list[int]]:
        """tensor id -> positions in `ops` of the ops reading it (each op once)."""
        out: dict[int, list[int]] = {}
        for i, op in enumerate(self.ops):
            for t in dict.fromkeys(op.inputs):
                if t >= 0:
                    out.setdefault(t, []).append(i)
        return out

    def conv_padding(self, op: Op) -> tuple[int, int]:
        """(top, left) padding of a CONV_2D / DEPTHWISE_CONV_2D, as the kernels' pad_h and pad_w take it."""
        o = op.options
        if o.explicit_padding is not None:
            return o.explicit_padding
        _, in_h, in_w, _ = self.tensors[op.inputs[0]].shape
        _, out_h, out_w, _ = self.tensors[op.outputs[0]].shape
        w = self.tensors[op.inputs[1]].shape  # OHWI, or 1HWC for depthwise
        return (conv_padding(in_h, w[1], o.stride_h, o.dilation_h, out_h, o.padding),
                conv_padding(in_w, w[2], o.stride_w, o.dilation_w, out_w, o.padding))


SUPPORTED_OPS = (
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D", "ADD", "MUL", "MEAN",
    "SOFTMAX", "CONCATENATION", "RESHAPE", "PAD", "PADV2", "QUANTIZE", "DEQUANTIZE", "LOGISTIC", "TANH",
)
# The float boundary: QUANTIZE may read float32, DEQUANTIZE may write it; every other activation is int8.
_FLOAT_IN = {"QUANTIZE"}
_FLOAT_OUT = {"DEQUANTIZE"}
_WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
_CONST_SECOND_INPUT = {"MEAN", "PAD", "PADV2"}  # axes / paddings must be known at compile time


def _where(op, model_op) -> str:
    return f"{op} (version {model_op.version}) at operator {model_op.index}"


def _unsupported(what: str) -> UsageError:
    return UsageError(f"{what}; edgeprune compiles int8 models with {', '.join(SUPPORTED_OPS)}")


def build_graph(model: TFLiteModel) -> Graph:
    """The IR of a parsed .tflite, validated: anything we cannot compile raises a one-line UsageError."""
    tensors = []
    for t in model.tensors:
        q = t.quantization
        if t.dtype is None:
            dtype = None
        else:
            dtype = np.dtype(t.dtype)
        tensors.append(TensorInfo(
            id=t.index, name=t.name, shape=tuple(int(d) for d in t.shape), dtype=dtype,
            scale=None if q is None else np.asarray(q.scale, np.float32),
            zero_point=None if q is None else np.asarray(q.zero_point, np.int64),
            quantized_axis=0 if q is None else int(q.axis), data=t.data,
        ))
    if not model.operators:
        raise UsageError("the model has no operators; nothing to compile")
    ops = []
    for mo in model.operators:
        if mo.op not in SUPPORTED_OPS:
            raise _unsupported(f"unsupported op {_where(mo.op, mo)}")
        ops.append(Op(mo.index, mo.op, mo.version, list(mo.inputs), list(mo.outputs), NoOptions()))
    graph = Graph(tensors, ops, list(model.inputs), list(model.outputs))
    for op, mo in zip(ops, model.operators):
        _check_tensors(graph, op, mo)
        op.options = _options(graph, op, mo)
    _check_order(graph)
    return graph


def _check_tensors(graph: Graph, op: Op, mo) -> None:
    where = _where(op.kind, mo)
    if not op.outputs or any(t < 0 for t in op.outputs) or not graph.activation_inputs(op):
        raise UsageError(f"{where} has no activation input or output; the model is not a plain inference graph")
    for t in op.inputs + op.outputs:
        if t < 0:
            continue
        info = graph.tensors[t]
        if info.dtype is None:
            raise _unsupported(f"tensor {t} ('{info.name}') of {where} has a data type edgeprune cannot run")
        if info.is_constant:
            continue
        if any(d <= 0 for d in info.shape):
            raise UsageError(f"tensor {t} ('{info.name}') of {where} has a dynamic or empty shape {list(info.shape)}; "
                             "export the model with fixed input sizes")
        allowed = {np.dtype(np.int8)}
        if (t in op.inputs and op.kind in _FLOAT_IN) or (t in op.outputs and op.kind in _FLOAT_OUT):
            allowed.add(np.dtype(np.float32))
        if info.dtype not in allowed:
            raise _unsupported(f"{np.dtype(info.dtype).name} tensor {t} ('{info.name}') at {where}; "
                               "only int8 activations (float32 at a QUANTIZE input or DEQUANTIZE output) are supported")
        if info.dtype == np.int8 and (info.scale is None or info.per_channel):
            raise _unsupported(f"int8 tensor {t} ('{info.name}') of {where} lacks per-tensor quantization")
    if op.kind in _WEIGHTED:
        w = op.inputs[1] if len(op.inputs) > 1 else -1
        if w < 0 or not graph.tensors[w].is_constant or graph.tensors[w].dtype != np.int8:
            raise _unsupported(f"{where} needs constant int8 weights (hybrid or float layers are not compiled)")
        b = op.inputs[2] if len(op.inputs) > 2 else -1
        if b >= 0 and (not graph.tensors[b].is_constant or graph.tensors[b].dtype != np.int32):
            raise _unsupported(f"{where} needs a constant int32 bias")
    rank4 = {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN"}
    if op.kind in rank4 and len(graph.tensors[op.inputs[0]].shape) != 4:
        raise _unsupported(f"{where} has a rank-{len(graph.tensors[op.inputs[0]].shape)} input; it needs NHWC (rank 4)")
    if op.kind in _CONST_SECOND_INPUT and (len(op.inputs) < 2 or op.inputs[1] < 0 or not graph.tensors[op.inputs[1]].is_constant):
        raise _unsupported(f"{where} needs its {'axes' if op.kind == 'MEAN' else 'paddings'} as a constant tensor")


def _check_order(graph: Graph) -> None:
    """Every op reads only graph inputs, constants or outputs of earlier ops (TFLite's execution order)."""
    ready = set(graph.inputs) | {t.id for t in graph.tensors if t.is_constant}
    for op in graph.ops:
        for t in op.inputs:
            if t >= 0 and t not in ready:
                raise UsageError(f"operator {op.index} ({op.kind}) reads tensor {t} before anything writes it")
        ready.update(op.outputs)
    for t in graph.outputs:
        if t not in ready:
            raise UsageError(f"graph output tensor {t} is never written")


def _activation(code: int, where: str) -> str:
    if code not in ACTIVATIONS:
        raise _unsupported(f"fused activation {code} of {where} is not supported (NONE, RELU, RELU6 are)")
    return ACTIVATIONS[code]


def _padding(code: int, where: str) -> str:
    if code not in PADDINGS:
        raise UsageError(f"{where} has an unknown padding code {code}")
    return PADDINGS[code]


def _options(graph: Graph, op: Op, mo) -> Options:
    o, where = mo.options, _where(op.kind, mo)
    kind = op.kind
    if kind == "CONV_2D":
        return Conv2DOptions(o.get("StrideH", 1), o.get("StrideW", 1), o.get("DilationHFactor", 1),
                             o.get("DilationWFactor", 1), _padding(o.get("Padding", 0), where),
                             _activation(o.get("FusedActivationFunction", 0), where))
    if kind == "DEPTHWISE_CONV_2D":
        return DepthwiseConv2DOptions(o.get("StrideH", 1), o.get("StrideW", 1), o.get("DilationHFactor", 1),
                                      o.get("DilationWFactor", 1), _padding(o.get("Padding", 0), where),
                                      _activation(o.get("FusedActivationFunction", 0), where), o.get("DepthMultiplier", 1))
    if kind == "FULLY_CONNECTED":
        if o.get("WeightsFormat", 0) != 0:
            raise _unsupported(f"shuffled FULLY_CONNECTED weights at {where}")
        return FullyConnectedOptions(_activation(o.get("FusedActivationFunction", 0), where), bool(o.get("KeepNumDims", False)))
    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return Pool2DOptions(o.get("FilterHeight", 1), o.get("FilterWidth", 1), o.get("StrideH", 1), o.get("StrideW", 1),
                             _padding(o.get("Padding", 0), where), _activation(o.get("FusedActivationFunction", 0), where))
    if kind in ("ADD", "MUL"):
        return ElementwiseOptions(_activation(o.get("FusedActivationFunction", 0), where))
    if kind == "MEAN":
        rank = len(graph.tensors[op.inputs[0]].shape)
        axes = [int(a) for a in np.asarray(graph.tensors[op.inputs[1]].data).reshape(-1)]
        if any(not -rank <= a < rank for a in axes):
            raise UsageError(f"{where} reduces over axes {axes} of a rank-{rank} tensor")
        axes = tuple(sorted({a % rank for a in axes}))
        if axes != (1, 2):
            raise _unsupported(f"{where} averages over axes {list(axes)}; only MEAN over H and W (axes 1, 2) is supported")
        return ReducerOptions(axes, bool(o.get("KeepDims", False)))
    if kind == "SOFTMAX":
        return SoftmaxOptions(float(o.get("Beta", 1.0)))
    if kind == "CONCATENATION":
        rank = len(graph.tensors[op.outputs[0]].shape)
        axis = int(o.get("Axis", 0))
        if not -rank <= axis < rank:
            raise UsageError(f"{where} concatenates along axis {axis} of a rank-{rank} tensor")
        return ConcatenationOptions(axis % rank, _activation(o.get("FusedActivationFunction", 0), where))
    if kind == "RESHAPE":
        out, inp = graph.tensors[op.outputs[0]], graph.tensors[op.inputs[0]]
        if out.size != inp.size:
            raise UsageError(f"{where} reshapes {list(inp.shape)} into {list(out.shape)}")
        return ReshapeOptions(out.shape)
    if kind in ("PAD", "PADV2"):
        pads = np.asarray(graph.tensors[op.inputs[1]].data).reshape(-1, 2)
        if (pads < 0).any():
            raise UsageError(f"{where} has negative paddings")
        value = None
        if kind == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
            const = graph.tensors[op.inputs[2]]
            if const.data is None:
                raise _unsupported(f"{where} needs a constant pad value")
            value = int(np.asarray(const.data).reshape(-1)[0])
        return PadOptions(tuple((int(a), int(b)) for a, b in pads), value)
    return NoOptions()
