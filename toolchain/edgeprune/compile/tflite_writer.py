"""Write small .tflite models with the `tflite` package's generated flatbuffer builders.

Used to make single-op int8 models for kernel tests (TFLite Micro is the oracle) and random
graphs for compiler tests. Not a converter: callers give exact tensors and quantization.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import flatbuffers
import numpy as np

from edgeprune.compile.tflite_reader import TENSOR_TYPES

_TYPE_CODES = {dtype: code for code, dtype in TENSOR_TYPES.items()}


@dataclass
class TensorSpec:
    shape: tuple[int, ...]
    dtype: type = np.int8
    scale: np.ndarray | float | None = None
    zero_point: np.ndarray | int | None = None
    quantized_dimension: int = 0
    data: np.ndarray | None = None  # constants only
    name: str = ""


@dataclass
class OpSpec:
    op: str  # builtin name, e.g. "CONV_2D"
    inputs: list[int]  # tensor indices, -1 for an omitted optional input
    outputs: list[int]
    options: Callable | None = None  # fn(builder) -> (options_type, offset)
    version: int = 1


@dataclass
class ModelSpec:
    tensors: list[TensorSpec]
    ops: list[OpSpec]
    inputs: list[int]
    outputs: list[int]
    description: str = "edgeprune test model"
    extra: dict = field(default_factory=dict)


def _int_vector(b: flatbuffers.Builder, values) -> int:
    return b.CreateNumpyVector(np.asarray(list(values), dtype=np.int32))


def write_tflite(spec: ModelSpec) -> bytes:
    import tflite as T

    b = flatbuffers.Builder(1024)
    # Buffers: 0 is the empty sentinel, then one per constant tensor.
    buffer_of: dict[int, int] = {}
    buffer_offsets = []
    T.BufferStart(b)
    buffer_offsets.append(T.BufferEnd(b))
    for i, t in enumerate(spec.tensors):
        if t.data is not None:
            raw = np.ascontiguousarray(t.data.astype(t.dtype)).view(np.uint8).reshape(-1)
            data = b.CreateNumpyVector(raw)
            T.BufferStart(b)
            T.BufferAddData(b, data)
            buffer_of[i] = len(buffer_offsets)
            buffer_offsets.append(T.BufferEnd(b))

    tensor_offsets = []
    for i, t in enumerate(spec.tensors):
        name = b.CreateString(t.name or f"t{i}")
        shape = _int_vector(b, t.shape)
        quant = None
        if t.scale is not None:
            scale = b.CreateNumpyVector(np.atleast_1d(np.asarray(t.scale, dtype=np.float32)))
            zp_values = np.atleast_1d(np.asarray(0 if t.zero_point is None else t.zero_point, dtype=np.int64))
            if zp_values.size == 1 and np.atleast_1d(t.scale).size > 1:
                zp_values = np.repeat(zp_values, np.atleast_1d(t.scale).size)
            zp = b.CreateNumpyVector(zp_values)
            T.QuantizationParametersStart(b)
            T.QuantizationParametersAddScale(b, scale)
            T.QuantizationParametersAddZeroPoint(b, zp)
            T.QuantizationParametersAddQuantizedDimension(b, t.quantized_dimension)
            quant = T.QuantizationParametersEnd(b)
        T.TensorStart(b)
        T.TensorAddShape(b, shape)
        T.TensorAddType(b, _TYPE_CODES[t.dtype])
        T.TensorAddBuffer(b, buffer_of.get(i, 0))
        T.TensorAddName(b, name)
        if quant is not None:
            T.TensorAddQuantization(b, quant)
        tensor_offsets.append(T.TensorEnd(b))

    codes: list[tuple[str, int]] = []
    op_offsets = []
    for op in spec.ops:
        key = (op.op, op.version)
        if key not in codes:
            codes.append(key)
        ins, outs = _int_vector(b, op.inputs), _int_vector(b, op.outputs)
        options = op.options(b) if op.options else None
        T.OperatorStart(b)
        T.OperatorAddOpcodeIndex(b, codes.index(key))
        T.OperatorAddInputs(b, ins)
        T.OperatorAddOutputs(b, outs)
        if options is not None:
            T.OperatorAddBuiltinOptionsType(b, options[0])
            T.OperatorAddBuiltinOptions(b, options[1])
        op_offsets.append(T.OperatorEnd(b))

    def table_vector(start, offsets):
        start(b, len(offsets))
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    tensors = table_vector(T.SubGraphStartTensorsVector, tensor_offsets)
    operators = table_vector(T.SubGraphStartOperatorsVector, op_offsets)
    g_in, g_out = _int_vector(b, spec.inputs), _int_vector(b, spec.outputs)
    g_name = b.CreateString("main")
    T.SubGraphStart(b)
    T.SubGraphAddTensors(b, tensors)
    T.SubGraphAddInputs(b, g_in)
    T.SubGraphAddOutputs(b, g_out)
    T.SubGraphAddOperators(b, operators)
    T.SubGraphAddName(b, g_name)
    subgraph = T.SubGraphEnd(b)

    code_offsets = []
    for name, version in codes:
        code = getattr(T.BuiltinOperator, name)
        T.OperatorCodeStart(b)
        T.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        T.OperatorCodeAddBuiltinCode(b, code)
        T.OperatorCodeAddVersion(b, version)
        code_offsets.append(T.OperatorCodeEnd(b))

    subgraphs = table_vector(T.ModelStartSubgraphsVector, [subgraph])
    opcodes = table_vector(T.ModelStartOperatorCodesVector, code_offsets)
    buffers = table_vector(T.ModelStartBuffersVector, buffer_offsets)
    desc = b.CreateString(spec.description)
    T.ModelStart(b)
    T.ModelAddVersion(b, 3)
    T.ModelAddOperatorCodes(b, opcodes)
    T.ModelAddSubgraphs(b, subgraphs)
    T.ModelAddDescription(b, desc)
    T.ModelAddBuffers(b, buffers)
    b.Finish(T.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


# Builtin options for the ops the kernels implement.
PADDING = {"SAME": 0, "VALID": 1}
ACTIVATION = {"NONE": 0, "RELU": 1, "RELU6": 3}


def conv2d_options(stride=(1, 1), dilation=(1, 1), padding="VALID", activation="NONE"):
    def build(b):
        import tflite as T

        T.Conv2DOptionsStart(b)
        T.Conv2DOptionsAddPadding(b, PADDING[padding])
        T.Conv2DOptionsAddStrideH(b, stride[0])
        T.Conv2DOptionsAddStrideW(b, stride[1])
        T.Conv2DOptionsAddDilationHFactor(b, dilation[0])
        T.Conv2DOptionsAddDilationWFactor(b, dilation[1])
        T.Conv2DOptionsAddFusedActivationFunction(b, ACTIVATION[activation])
        return T.BuiltinOptions.Conv2DOptions, T.Conv2DOptionsEnd(b)

    return build


def depthwise_options(stride=(1, 1), dilation=(1, 1), padding="VALID", activation="NONE", multiplier=1):
    def build(b):
        import tflite as T

        T.DepthwiseConv2DOptionsStart(b)
        T.DepthwiseConv2DOptionsAddPadding(b, PADDING[padding])
        T.DepthwiseConv2DOptionsAddStrideH(b, stride[0])
        T.DepthwiseConv2DOptionsAddStrideW(b, stride[1])
        T.DepthwiseConv2DOptionsAddDilationHFactor(b, dilation[0])
        T.DepthwiseConv2DOptionsAddDilationWFactor(b, dilation[1])
        T.DepthwiseConv2DOptionsAddDepthMultiplier(b, multiplier)
        T.DepthwiseConv2DOptionsAddFusedActivationFunction(b, ACTIVATION[activation])
        return T.BuiltinOptions.DepthwiseConv2DOptions, T.DepthwiseConv2DOptionsEnd(b)

    return build


def fully_connected_options(activation="NONE"):
    def build(b):
        import tflite as T

        T.FullyConnectedOptionsStart(b)
        T.FullyConnectedOptionsAddFusedActivationFunction(b, ACTIVATION[activation])
        return T.BuiltinOptions.FullyConnectedOptions, T.FullyConnectedOptionsEnd(b)

    return build


def pool2d_options(filter_size=(2, 2), stride=(2, 2), padding="VALID", activation="NONE"):
    """AVERAGE_POOL_2D and MAX_POOL_2D."""

    def build(b):
        import tflite as T

        T.Pool2DOptionsStart(b)
        T.Pool2DOptionsAddPadding(b, PADDING[padding])
        T.Pool2DOptionsAddStrideH(b, stride[0])
        T.Pool2DOptionsAddStrideW(b, stride[1])
        T.Pool2DOptionsAddFilterHeight(b, filter_size[0])
        T.Pool2DOptionsAddFilterWidth(b, filter_size[1])
        T.Pool2DOptionsAddFusedActivationFunction(b, ACTIVATION[activation])
        return T.BuiltinOptions.Pool2DOptions, T.Pool2DOptionsEnd(b)

    return build


def add_options(activation="NONE"):
    def build(b):
        import tflite as T

        T.AddOptionsStart(b)
        T.AddOptionsAddFusedActivationFunction(b, ACTIVATION[activation])
        return T.BuiltinOptions.AddOptions, T.AddOptionsEnd(b)

    return build


def mul_options(activation="NONE"):
    def build(b):
        import tflite as T

        T.MulOptionsStart(b)
        T.MulOptionsAddFusedActivationFunction(b, ACTIVATION[activation])
        return T.BuiltinOptions.MulOptions, T.MulOptionsEnd(b)

    return build


def reducer_options(keep_dims=False):
    """MEAN (and the other reductions); the axes are a constant int32 input tensor."""

    def build(b):
        import tflite as T

        T.ReducerOptionsStart(b)
        T.ReducerOptionsAddKeepDims(b, bool(keep_dims))
        return T.BuiltinOptions.ReducerOptions, T.ReducerOptionsEnd(b)

    return build


def concatenation_options(axis, activation="NONE"):
    def build(b):
        import tflite as T

        T.ConcatenationOptionsStart(b)
        T.ConcatenationOptionsAddAxis(b, axis)
        T.ConcatenationOptionsAddFusedActivationFunction(b, ACTIVATION[activation])
        return T.BuiltinOptions.ConcatenationOptions, T.ConcatenationOptionsEnd(b)

    return build


def reshape_options(new_shape):
    def build(b):
        import tflite as T

        shape = _int_vector(b, new_shape)
        T.ReshapeOptionsStart(b)
        T.ReshapeOptionsAddNewShape(b, shape)
        return T.BuiltinOptions.ReshapeOptions, T.ReshapeOptionsEnd(b)

    return build


def pad_options():
    """PAD: no fields; the paddings are a constant int32 [rank, 2] input tensor."""

    def build(b):
        import tflite as T

        T.PadOptionsStart(b)
        return T.BuiltinOptions.PadOptions, T.PadOptionsEnd(b)

    return build


def softmax_options(beta=1.0):
    def build(b):
        import tflite as T

        T.SoftmaxOptionsStart(b)
        T.SoftmaxOptionsAddBeta(b, float(beta))
        return T.BuiltinOptions.SoftmaxOptions, T.SoftmaxOptionsEnd(b)

    return build
