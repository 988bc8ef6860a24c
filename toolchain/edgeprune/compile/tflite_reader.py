"""Read a .tflite flatbuffer into plain dataclasses, with the `tflite` package's generated schema.

No TensorFlow import: the compiler and the reports read models with this module only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import UsageError

# TFLite TensorType codes -> numpy dtypes.
TENSOR_TYPES = {
    0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64,
    6: np.bool_, 7: np.int16, 9: np.int8, 10: np.float64, 12: np.uint64, 15: np.uint32, 16: np.uint16,
}


@dataclass
class Quantization:
    scale: np.ndarray  # float32, one per tensor or per channel
    zero_point: np.ndarray  # int64
    axis: int = 0


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: type
    quantization: Quantization | None
    data: np.ndarray | None = None  # constant tensors only

    @property
    def is_constant(self) -> bool:
        return self.data is not None


@dataclass
class Operator:
    index: int
    op: str  # builtin name, e.g. "CONV_2D"
    version: int
    inputs: list[int]  # tensor indices, -1 for an omitted optional input
    outputs: list[int]
    # Builtin options as {field: value} with the schema's field names ("StrideH", "NewShape"); {} when absent.
    options: dict = field(default_factory=dict)


@dataclass
class TFLiteModel:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    size_bytes: int = 0
    description: str = ""
    op_counts: dict[str, int] = field(default_factory=dict)


_BUILTIN_NAMES: dict[int, str] | None = None


def _builtin_name(code: int) -> str:
    global _BUILTIN_NAMES
    if _BUILTIN_NAMES is None:
        import tflite

        _BUILTIN_NAMES = {
            v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)
        }
    return _BUILTIN_NAMES.get(code, f"BUILTIN_{code}")


def read_tflite(source: str | Path | bytes) -> TFLiteModel:
    """Parse a .tflite file (path or bytes). Malformed input raises UsageError, never crashes."""
    if isinstance(source, (str, Path)):
        buf = Path(source).read_bytes()
        what = str(source)
    else:
        buf = bytes(source)
        what = "the model"
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise UsageError(f"{what} is not a TFLite flatbuffer (missing the TFL3 identifier); export an int8 .tflite first")
    try:
        return _parse(buf)
    except UsageError:
        raise
    except Exception as e:  # flatbuffers raises many kinds on corrupt offsets
        raise UsageError(f"{what} is a malformed TFLite flatbuffer ({type(e).__name__}); re-export the model") from None


def _parse(buf: bytes) -> TFLiteModel:
    import tflite

    model = tflite.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() < 1:
        raise UsageError("the .tflite model has no subgraph")
    graph = model.Subgraphs(0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        codes.append((max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()), oc.Version()))

    tensors = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        dtype = TENSOR_TYPES.get(t.Type())
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        quant = None
        q = t.Quantization()
        if q is not None and q.ScaleLength() > 0:
            quant = Quantization(
                scale=q.ScaleAsNumpy().astype(np.float32),
                zero_point=q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else np.zeros(q.ScaleLength(), np.int64),
                axis=int(q.QuantizedDimension()),
            )
        data = None
        b = t.Buffer()
        if 0 < b < model.BuffersLength() and dtype is not None:
            raw = _buffer_bytes(model.Buffers(b), buf)
            if raw is not None and len(raw):
                count = int(np.prod(shape)) if shape else 1
                if len(raw) != count * np.dtype(dtype).itemsize:
                    raise UsageError(f"tensor {i} ('{t.Name().decode(errors='replace')}') has {len(raw)} bytes of data for shape {shape}")
                data = np.frombuffer(raw, dtype=dtype).reshape(shape)
        tensors.append(Tensor(i, (t.Name() or b"").decode(errors="replace"), shape, dtype, quant, data))

    ops = []
    counts: dict[str, int] = {}
    for i in range(graph.OperatorsLength()):
        o = graph.Operators(i)
        idx = o.OpcodeIndex()
        if idx >= len(codes):
            raise UsageError(f"operator {i} refers to opcode {idx}, but the model has {len(codes)}")
        code, version = codes[idx]
        name = _builtin_name(code)
        ins = [int(v) for v in o.InputsAsNumpy()] if o.InputsLength() else []
        outs = [int(v) for v in o.OutputsAsNumpy()] if o.OutputsLength() else []
        for v in ins + outs:
            if v >= len(tensors) or v < -1:
                raise UsageError(f"operator {i} ({name}) refers to tensor {v}, but the model has {len(tensors)}")
        ops.append(Operator(i, name, version, ins, outs, _builtin_options(o)))
        counts[name] = counts.get(name, 0) + 1
    inputs = [int(v) for v in graph.InputsAsNumpy()]
    outputs = [int(v) for v in graph.OutputsAsNumpy()]
    desc = (model.Description() or b"").decode(errors="replace")
    return TFLiteModel(tensors, ops, inputs, outputs, len(buf), desc, counts)


_OPTION_CLASSES: dict[int, str] | None = None
_OPTION_FIELDS: dict[str, list[tuple[str, bool]]] = {}


def _builtin_options(o) -> dict:
    """Every scalar and vector field of an operator's builtin options table, read generically."""
    global _OPTION_CLASSES
    import inspect

    import tflite

    if _OPTION_CLASSES is None:
        _OPTION_CLASSES = {v: k for k, v in vars(tflite.BuiltinOptions).items() if not k.startswith("_") and isinstance(v, int)}
    kind = _OPTION_CLASSES.get(o.BuiltinOptionsType())
    table = o.BuiltinOptions()
    if kind is None or table is None or not hasattr(tflite, kind):
        return {}
    cls = getattr(tflite, kind)
    if kind not in _OPTION_FIELDS:  # (name, is_vector) of the accessors taking no argument
        names = [m for m in vars(cls) if m[0].isupper() and not m.startswith("GetRootAs") and m != "Init"
                 and not m.endswith(("Length", "IsNone", "BufferHasIdentifier"))]
        _OPTION_FIELDS[kind] = [
            (m[: -len("AsNumpy")], True) if m.endswith("AsNumpy") else (m, False)
            for m in names
            if m.endswith("AsNumpy") or (f"{m}AsNumpy" not in names and len(inspect.signature(getattr(cls, m)).parameters) == 1)
        ]
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    values = {}
    for name, is_vector in _OPTION_FIELDS[kind]:
        if is_vector:
            values[name] = None if getattr(opts, f"{name}IsNone")() else [v.item() for v in getattr(opts, f"{name}AsNumpy")()]
        else:
            values[name] = getattr(opts, name)()
    return values


def _buffer_bytes(buffer, whole: bytes) -> bytes | None:
    offset, size = buffer.Offset(), buffer.Size()
    if offset > 1 and size > 0:  # data stored after the flatbuffer (models over 2 GB)
        if offset + size > len(whole):
            raise UsageError("a buffer points past the end of the file")
        return whole[offset : offset + size]
    if buffer.DataLength() == 0:
        return None
    return buffer.DataAsNumpy().tobytes()
