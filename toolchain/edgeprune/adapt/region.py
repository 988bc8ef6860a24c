"""The trainable region of a deployed int8 .tflite, and its frozen int8 prefix.

The model is read with the compiler's reader and IR (never TensorFlow). The *frozen prefix* is every
op up to and including the first weighted layer (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED); the
*region* is everything after it: the remaining weighted layers (whose output channels are the
candidate neurons) and the plain ops between them. `trainable_from` (`adapt --trainable-from`) names
a later weighted layer to start the region at instead: the layers before it join the int8 prefix, so
they run as deployed and the device keeps no float32 copy of them.

- The prefix runs in int8 exactly as the device runs it: its ops are copied into a small .tflite
  (compile/tflite_writer.py) whose output is the region's input tensor, and TFLite Micro's Python
  interpreter (our bit-exact oracle, the same arithmetic as the generated C) runs it. Its int8 output
  is dequantized to float32 with that tensor's scale and zero point.
- The region runs in float32 from the dequantized int8 weights (the master copies); a weight that is
  zero in the int8 model is pruned and stays zero (`mask`). Layouts stay TFLite's (NHWC activations,
  OHWI / 1HWC / OI weights) so a fully connected layer flattens in the same order as on the device.

Region ops: the weighted layers (with their fused RELU / RELU6), MEAN over H and W, AVERAGE_POOL_2D
and MAX_POOL_2D without padding, RESHAPE, PAD, int8->int8 QUANTIZE (an identity in float), and a
final SOFTMAX or DEQUANTIZE (dropped: the loss is softmax cross-entropy on the last layer's logits).
The region must be a chain (each op reads the previous op's output); anything else is refused with
one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import UsageError

WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
PLAIN = ("MEAN", "AVERAGE_POOL_2D", "MAX_POOL_2D", "RESHAPE", "PAD", "PADV2", "QUANTIZE")
TAIL = ("SOFTMAX", "DEQUANTIZE", "RESHAPE", "QUANTIZE")  # allowed after the last weighted layer, dropped
ALIAS = ("RESHAPE", "QUANTIZE", "DEQUANTIZE")  # same values (in float), same buffer: no buffer of their own


@dataclass
class Layer:
    """One weighted layer of the region; its output channels are the candidate neurons."""

    name: str
    kind: str
    op_index: int
    weight: np.ndarray  # float32, TFLite layout: OHWI (conv), 1HWC (depthwise), OI (fully connected)
    bias: np.ndarray | None  # float32 (channels,)
    mask: np.ndarray  # bool, weight.shape: True where the int8 weight is non-zero
    activation: str  # NONE | RELU | RELU6
    in_shape: tuple[int, ...]  # activation shapes without batch (NHWC, or (features,))
    out_shape: tuple[int, ...]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)  # top, left (bottom/right follow from the output size)
    depth_multiplier: int = 1
    history_scale: float = 1.0  # symmetric int8 scale of the NEq history of this layer's outputs
    in_tensor: int = -1
    out_tensor: int = -1

    @property
    def channels(self) -> int:
        return int(self.out_shape[-1])

    @property
    def positions(self) -> int:
        """Output positions per sample (H*W for convs, 1 for fully connected)."""
        return int(np.prod(self.out_shape[:-1], dtype=np.int64)) if len(self.out_shape) > 1 else 1

    @property
    def channel_size(self) -> int:
        """Weights per output channel."""
        if self.kind == "DEPTHWISE_CONV_2D":
            return int(self.weight.shape[1] * self.weight.shape[2])
        return int(self.weight.size // self.weight.shape[0])

    def channel_nnz(self) -> np.ndarray:
        """Non-zero weights per output channel (int64, channels)."""
        if self.kind == "DEPTHWISE_CONV_2D":
            return self.mask.reshape(-1, self.mask.shape[-1]).sum(axis=0).astype(np.int64)
        return self.mask.reshape(self.mask.shape[0], -1).sum(axis=1).astype(np.int64)

    def channel_mask(self, channels) -> np.ndarray:
        """A bool array of weight.shape selecting the weights of the given output channels."""
        sel = np.zeros(self.channels, bool)
        sel[list(channels)] = True
        if self.kind == "DEPTHWISE_CONV_2D":
            return np.broadcast_to(sel, self.weight.shape).copy()
        return np.broadcast_to(sel.reshape((-1,) + (1,) * (self.weight.ndim - 1)), self.weight.shape).copy()


@dataclass
class Step:
    """One op of the region in execution order: a weighted layer (layer >= 0) or a plain op."""

    kind: str
    in_tensor: int
    out_tensor: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    layer: int = -1  # index into Region.layers
    params: dict = field(default_factory=dict)

    @property
    def out_size(self) -> int:
        return int(np.prod(self.out_shape, dtype=np.int64))

    @property
    def in_size(self) -> int:
        return int(np.prod(self.in_shape, dtype=np.int64))


@dataclass
class Region:
    layers: list[Layer]
    steps: list[Step]
    prefix_tflite: bytes  # the frozen prefix as a .tflite (int8 in, int8 out: the region's input)
    model_tflite: bytes  # the whole deployed model
    model_input_shape: tuple[int, ...]  # NHWC without batch
    model_input_dtype: np.dtype
    model_input_quant: tuple[float, int] | None  # (scale, zero point) when the model takes int8
    input_scale: float  # the region input's int8 quantization
    input_zero_point: int
    input_shape: tuple[int, ...]
    num_classes: int
    frozen: list[str]  # names of the frozen weighted layers
    prefix_macs: int = 0  # MACs per sample of the frozen prefix (non-zero weights)

    @property
    def layer_names(self) -> list[str]:
        return [lay.name for lay in self.layers]

    def forward_macs(self) -> int:
        """Region forward MACs per sample over non-zero weights."""
        return int(sum(int(lay.channel_nnz().sum()) * lay.positions for lay in self.layers))


def _short(kind: str) -> str:
    return {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "dwconv", "FULLY_CONNECTED": "fc"}[kind]


def load_region(model_dir: str | Path, trainable_from: str | None = None) -> Region:
    """The region of DIR/model.tflite (a compiled folder) or of a .tflite path; trainable_from: the name
    of its first trainable layer (default: the second weighted layer)."""
    path = Path(model_dir)
    if path.is_dir():
        path = path / "model.tflite"
    if not path.is_file():
        raise UsageError(f"{path} does not exist; pass the folder written by `edgeprune compile` (it holds model.tflite)")
    return region_from_tflite(path.read_bytes(), trainable_from)


def region_from_tflite(data: bytes, trainable_from: str | None = None) -> Region:
    from edgeprune.compile.ir import build_graph
    from edgeprune.compile.tflite_reader import read_tflite

    from edgeprune.compile.passes import fuse_pad_into_conv

    raw = build_graph(read_tflite(data))
    # The region's convs absorb a PAD before them, as the compiled model does: the device saves the
    # unpadded input for the weight gradients.
    g = fuse_pad_into_conv(raw)
    ops = g.ops
    weighted = [i for i, op in enumerate(ops) if op.kind in WEIGHTED]
    if len(weighted) < 2:
        raise UsageError(f"the model has {len(weighted)} weighted layer(s); adaptation trains every weighted layer but the first, so it needs at least 2")
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise UsageError("adaptation supports models with one input and one output")
    names = [f"{_short(ops[i].kind)}{k}" for k, i in enumerate(weighted)]  # conv0, conv1, ..., fc3
    frozen_count = _frozen_count(names, trainable_from)
    first = weighted[frozen_count - 1]  # the prefix's last op: the last frozen weighted layer
    raw_first = [i for i, op in enumerate(raw.ops) if op.kind in WEIGHTED][frozen_count - 1]
    # The region is a chain: every op after the prefix reads the previous op's output.
    for i in range(first + 1, len(ops)):
        acts = g.activation_inputs(ops[i])
        if len(acts) != 1 or acts[0] != ops[i - 1].outputs[0] or len(ops[i].outputs) != 1:
            raise UsageError(f"operator {ops[i].index} ({ops[i].kind}) does not simply read the previous op's output; "
                             "adaptation supports chains of ops (no residual ADD or concatenation) inside the trainable region")
    last = weighted[-1]
    for op in ops[first + 1:]:
        pos = ops.index(op)
        if op.kind in WEIGHTED:
            continue
        if pos > last:
            if op.kind not in TAIL:
                raise UsageError(f"operator {op.index} ({op.kind}) after the last weighted layer is not supported in adaptation "
                                 f"(only {', '.join(TAIL)} may follow the logits)")
        elif op.kind not in PLAIN:
            raise UsageError(f"operator {op.index} ({op.kind}) inside the trainable region is not supported in adaptation "
                             f"(supported between layers: {', '.join(PLAIN)})")
    layers, steps = [], []
    counter = 0
    for pos in range(first + 1, last + 1):
        op = ops[pos]
        tin, tout = g.activation_inputs(op)[0], op.outputs[0]
        ishape, oshape = g.tensors[tin].shape[1:], g.tensors[tout].shape[1:]
        if op.kind in WEIGHTED:
            counter += 1
            lay = _layer(g, op, names[weighted.index(pos)])
            steps.append(Step(op.kind, tin, tout, ishape, oshape, layer=len(layers)))
            layers.append(lay)
        else:
            steps.append(Step(op.kind, tin, tout, ishape, oshape, params=_plain_params(g, op)))
    inp = g.tensors[g.inputs[0]]
    model_q = None
    if inp.dtype == np.int8:
        model_q = (float(inp.scale[0]), int(inp.zero_point[0]))
    rin = g.tensors[ops[first].outputs[0]]
    logits = g.tensors[ops[last].outputs[0]]
    frozen = names[:frozen_count]
    prefix_macs = 0
    for op in ops[: first + 1]:
        if op.kind in WEIGHTED:
            w = g.tensors[op.inputs[1]].data
            out = g.tensors[op.outputs[0]].shape
            prefix_macs += int(np.count_nonzero(w)) * (int(np.prod(out[1:-1])) if len(out) > 2 else 1)
    return Region(
        layers=layers, steps=steps, prefix_tflite=_prefix_tflite(raw, raw.ops[: raw_first + 1]), model_tflite=data,
        model_input_shape=tuple(inp.shape[1:]), model_input_dtype=np.dtype(inp.dtype), model_input_quant=model_q,
        input_scale=float(rin.scale[0]), input_zero_point=int(rin.zero_point[0]), input_shape=tuple(rin.shape[1:]),
        num_classes=int(logits.shape[-1]), frozen=frozen, prefix_macs=prefix_macs,
    )


def _frozen_count(names: list[str], trainable_from: str | None) -> int:
    """How many weighted layers the prefix holds: all before `trainable_from` (default: the first)."""
    if trainable_from is None:
        return 1
    if trainable_from not in names[1:]:
        raise UsageError(f"--trainable-from {trainable_from}: the trainable region can start at "
                         f"{', '.join(names[1:])} (the weighted layers after the first, {names[0]}, which always stays int8)")
    return names.index(trainable_from)


def _dequantize(t) -> np.ndarray:
    q = np.asarray(t.data).astype(np.float64)
    scale, zp = np.asarray(t.scale, np.float64), np.asarray(t.zero_point, np.float64)
    if scale.size > 1:
        shape = [1] * q.ndim
        shape[t.quantized_axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q - zp) * scale).astype(np.float32)


def _layer(g, op, name: str) -> Layer:
    x, w = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
    b = g.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    out = g.tensors[op.outputs[0]]
    weight = _dequantize(w)
    mask = np.asarray(w.data) != 0  # int8 weights are symmetric (zero point 0)
    bias = None
    if b is not None:
        if b.scale is not None and b.scale.size:
            bias = _dequantize(b)
        else:
            bias = (np.asarray(b.data, np.float64) * float(x.scale[0]) * np.asarray(w.scale, np.float64)).astype(np.float32)
    o = op.options
    s, zp = float(out.scale[0]), int(out.zero_point[0])
    # The NEq history quantizes pre-activation outputs symmetrically over the deployed tensor's range.
    history_scale = max(abs(-128 - zp), abs(127 - zp)) * s / 127.0
    lay = Layer(name=name, kind=op.kind, op_index=op.index, weight=weight, bias=bias, mask=mask,
                activation=o.activation, in_shape=tuple(x.shape[1:]), out_shape=tuple(out.shape[1:]),
                history_scale=float(history_scale), in_tensor=op.inputs[0], out_tensor=op.outputs[0])
    if op.kind == "FULLY_CONNECTED":
        lay.in_shape = (int(w.shape[1]),)
        lay.out_shape = (int(w.shape[0]),)
        if int(np.prod(x.shape[1:])) != int(w.shape[1]) or int(np.prod(out.shape)) != int(w.shape[0]):
            raise UsageError(f"{name} (FULLY_CONNECTED at operator {op.index}) has a batch other than 1; adaptation needs batch-1 models")
    else:
        lay.stride = (o.stride_h, o.stride_w)
        lay.dilation = (o.dilation_h, o.dilation_w)
        lay.pad = g.conv_padding(op)
        if op.kind == "DEPTHWISE_CONV_2D":
            lay.depth_multiplier = o.depth_multiplier
    return lay


def _plain_params(g, op) -> dict:
    o = op.options
    if op.kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        ih, iw = g.tensors[op.inputs[0]].shape[1:3]
        oh, ow = g.tensors[op.outputs[0]].shape[1:3]
        if (oh - 1) * o.stride_h + o.filter_h > ih or (ow - 1) * o.stride_w + o.filter_w > iw:
            raise UsageError(f"operator {op.index} ({op.kind}) pads its input; adaptation supports pools without padding")
        if o.activation != "NONE":
            raise UsageError(f"operator {op.index} ({op.kind}) has a fused activation; adaptation does not support it")
        return {"filter": (o.filter_h, o.filter_w), "stride": (o.stride_h, o.stride_w)}
    if op.kind in ("PAD", "PADV2"):
        t = g.tensors[op.inputs[0]]
        value = 0.0
        if o.pad_value is not None:
            value = (o.pad_value - int(t.zero_point[0])) * float(t.scale[0])
        return {"paddings": o.paddings, "value": value}
    return {}


def _writer_options(op):
    from edgeprune.compile import tflite_writer as W

    o = op.options
    k = op.kind
    if k == "CONV_2D":
        return W.conv2d_options((o.stride_h, o.stride_w), (o.dilation_h, o.dilation_w), o.padding, o.activation)
    if k == "DEPTHWISE_CONV_2D":
        return W.depthwise_options((o.stride_h, o.stride_w), (o.dilation_h, o.dilation_w), o.padding, o.activation,
                                   o.depth_multiplier)
    if k == "FULLY_CONNECTED":
        return W.fully_connected_options(o.activation)
    if k in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return W.pool2d_options((o.filter_h, o.filter_w), (o.stride_h, o.stride_w), o.padding, o.activation)
    if k == "MEAN":
        return W.reducer_options(o.keep_dims)
    if k == "RESHAPE":
        return W.reshape_options(o.new_shape)
    if k in ("ADD",):
        return W.add_options(o.activation)
    if k in ("MUL",):
        return W.mul_options(o.activation)
    if k == "PAD":
        return W.pad_options()
    if k in ("QUANTIZE", "DEQUANTIZE"):
        return None
    raise UsageError(f"operator {op.index} ({k}) before the first weighted layer is not supported by adaptation's frozen prefix")


def _prefix_tflite(g, ops) -> bytes:
    """The ops up to the first weighted layer as their own .tflite, ending at the region's input."""
    from edgeprune.compile.tflite_writer import ModelSpec, OpSpec, TensorSpec, write_tflite

    ids: dict[int, int] = {}
    specs = []

    def tid(t: int) -> int:
        if t < 0:
            return -1
        if t not in ids:
            info = g.tensors[t]
            ids[t] = len(specs)
            specs.append(TensorSpec(
                shape=tuple(info.shape), dtype=np.dtype(info.dtype).type,
                scale=None if info.scale is None else np.asarray(info.scale),
                zero_point=None if info.zero_point is None else np.asarray(info.zero_point),
                quantized_dimension=info.quantized_axis, data=info.data, name=info.name))
        return ids[t]

    op_specs = [OpSpec(op.kind, [tid(t) for t in op.inputs], [tid(t) for t in op.outputs], _writer_options(op), op.version)
                for op in ops]
    return write_tflite(ModelSpec(specs, op_specs, [tid(g.inputs[0])], [tid(ops[-1].outputs[0])], "edgeprune adaptation prefix"))


# ---------------------------------------------------------------------------------------------
# Inputs and the int8 prefix


def model_inputs(region: Region, x: np.ndarray, what: str = "x") -> np.ndarray:
    """Float samples (N,C,H,W like the training data, or N,H,W,C like the model) as the model's NHWC input dtype."""
    want = tuple(region.model_input_shape)
    x = np.asarray(x)
    if tuple(x.shape[1:]) == want:
        nhwc = x
    elif x.ndim == 4 and len(want) == 3 and tuple(x.shape[1:]) == (want[2], want[0], want[1]):
        nhwc = x.transpose(0, 2, 3, 1)
    else:
        c = f" or {(want[2], want[0], want[1])} (C,H,W)" if len(want) == 3 else ""
        raise UsageError(f"{what} has samples of shape {tuple(x.shape[1:])} but the model takes {want} (H,W,C){c}")
    nhwc = np.ascontiguousarray(nhwc, dtype=np.float32)
    if region.model_input_quant is None:
        return nhwc
    scale, zp = region.model_input_quant
    # As `edgeprune run`/`compile` quantize inputs (api._quantize_inputs).
    return np.clip(np.round(nhwc / scale) + zp, -128, 127).astype(np.int8)


def _run_tflm(model: bytes, inputs: np.ndarray) -> np.ndarray:
    from tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(model, arena_size=512 * 1024)
    outs = []
    for sample in inputs:
        it.set_input(sample[None], 0)
        it.invoke()
        outs.append(np.array(it.get_output(0)).reshape(-1))
    return np.stack(outs)


def prefix_int8(region: Region, inputs: np.ndarray) -> np.ndarray:
    """The frozen prefix's int8 output for model inputs (bit-exact: TFLite Micro), (N,) + region input shape."""
    return _run_tflm(region.prefix_tflite, inputs).reshape((len(inputs),) + tuple(region.input_shape)).astype(np.int8)


def dequantize_input(region: Region, q: np.ndarray) -> np.ndarray:
    return ((q.astype(np.float32) - region.input_zero_point) * np.float32(region.input_scale)).astype(np.float32)


def deployed_logits(region: Region, inputs: np.ndarray) -> np.ndarray:
    """The whole deployed int8 model's outputs (TFLite Micro), for accuracy before adaptation."""
    return _run_tflm(region.model_tflite, inputs)


# ---------------------------------------------------------------------------------------------
# Float32 forward (PyTorch)


def torch_params(region: Region):
    """Float32 master copies as torch tensors: [(weight, bias or None)] per layer."""
    import torch

    return [(torch.tensor(lay.weight), None if lay.bias is None else torch.tensor(lay.bias)) for lay in region.layers]


def _conv(lay: Layer, x, w, b):
    import torch.nn.functional as F

    # x: (N,H,W,C) -> NCHW. Explicit top/left padding; bottom/right as the output size implies.
    xc = x.permute(0, 3, 1, 2)
    kh, kw = lay.weight.shape[1], lay.weight.shape[2]
    ih, iw = lay.in_shape[0], lay.in_shape[1]
    oh, ow = lay.out_shape[0], lay.out_shape[1]
    bottom = (oh - 1) * lay.stride[0] + lay.dilation[0] * (kh - 1) + 1 - ih - lay.pad[0]
    right = (ow - 1) * lay.stride[1] + lay.dilation[1] * (kw - 1) + 1 - iw - lay.pad[1]
    xc = F.pad(xc, (lay.pad[1], right, lay.pad[0], bottom))
    if lay.kind == "CONV_2D":
        y = F.conv2d(xc, w.permute(0, 3, 1, 2), b, stride=lay.stride, dilation=lay.dilation)
    else:  # depthwise: (1,H,W,C*M) -> (C*M,1,H,W), channel oc = ic*M + m is torch's grouping
        y = F.conv2d(xc, w.permute(3, 0, 1, 2), b, stride=lay.stride, dilation=lay.dilation, groups=lay.in_shape[2])
    return y.permute(0, 2, 3, 1)


def forward(region: Region, params, x, capture: bool = False):
    """Float32 region forward from dequantized region inputs (N, *input_shape): logits (N, classes),
    and with capture=True also each layer's output after bias and before the activation."""
    import torch
    import torch.nn.functional as F

    pre = []
    for st in region.steps:
        if st.layer >= 0:
            lay = region.layers[st.layer]
            w, b = params[st.layer]
            if lay.kind == "FULLY_CONNECTED":
                y = F.linear(x.reshape(len(x), -1), w, b)
            else:
                y = _conv(lay, x, w, b)
            if capture:
                pre.append(y)
            if lay.activation == "RELU":
                y = torch.relu(y)
            elif lay.activation == "RELU6":
                y = torch.clamp(y, 0.0, 6.0)
            x = y
        elif st.kind == "MEAN":
            x = x.mean(dim=(1, 2), keepdim=True).reshape((len(x),) + st.out_shape)
        elif st.kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            fn = F.avg_pool2d if st.kind == "AVERAGE_POOL_2D" else F.max_pool2d
            x = fn(x.permute(0, 3, 1, 2), st.params["filter"], st.params["stride"]).permute(0, 2, 3, 1)
        elif st.kind in ("PAD", "PADV2"):
            pads = st.params["paddings"]
            flat = []
            for lo, hi in reversed(pads[1:]):  # F.pad lists the last dimension first; batch is not padded
                flat += [lo, hi]
            x = F.pad(x, tuple(flat), value=st.params["value"])
        else:  # RESHAPE, QUANTIZE: same values
            x = x.reshape((len(x),) + st.out_shape)
    logits = x.reshape(len(x), -1)
    return (logits, pre) if capture else logits
