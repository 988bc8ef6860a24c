"""Graph passes over the IR: small pure functions, each returning a new Graph or a finding.

Every rewrite here preserves every output bit of TFLite Micro's execution of the same model:

- `drop_noop_reshapes`: RESHAPE moves no data in a row-major layout, so its output becomes an alias
  of its input's buffer and the op disappears.
- `drop_identity_quantize`: an int8 -> int8 QUANTIZE with equal scale and zero point. TFLM's
  requantization with multiplier 1.0 (2^30, shift 1) returns its input exactly, so it is an alias too.
- `fuse_pad_into_conv`: a PAD (or PADV2 whose constant is the zero point) of H and W only, read only
  by a CONV_2D or DEPTHWISE_CONV_2D. TFLM's conv skips out-of-bounds taps, and a tap on a pad pixel
  adds (zero_point - zero_point) * w = 0, so the conv on the unpadded input with the PAD's top/left
  amounts as its pad_h/pad_w is bit-identical, and the padded tensor (often the largest buffer of an
  onnx2tf export) never exists. Pooling is not fused: AVERAGE_POOL divides by the in-bounds count
  and MAX_POOL would see the pad value, so both differ at the borders.

Fused activations: we do not fuse standalone RELU/RELU6 ops. TFLite's converters already fold them
into the preceding op's fused activation, RELU is not in our op set (build_graph rejects it), and
fusing a chain of requantizations (e.g. QUANTIZE int8 -> int8 after an op) would replace two
roundings by one, which changes bits. The only activation work left is the clamp each kernel does.

Analyses (no rewrite): `find_in_place` lists ops allowed to write their output over a dying input
(element-wise ops, and stride-1 convs run in bands of rows), `find_residual_adds` the convs whose
output can flow band by band through the residual ADD after them, both for the memory planner;
`find_dead_channels` lists output channels whose weights are all zero.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from edgeprune.compile import quant as Q
from edgeprune.compile.ir import Graph, Op, PadOptions

# Ops whose output element i depends only on input element i (same shape), so the output may
# overwrite the input when the input dies at the op.
ELEMENTWISE_IN_PLACE = ("ADD", "MUL", "LOGISTIC", "TANH", "QUANTIZE", "RESHAPE")
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _replace_ops(graph: Graph, ops: list[Op], aliases: dict[int, int] | None = None) -> Graph:
    return Graph(graph.tensors, ops, list(graph.inputs), list(graph.outputs),
                 dict(graph.aliases) if aliases is None else aliases)


def _alias_away(graph: Graph, keep) -> Graph:
    """Drop ops for which keep(op) is False, aliasing their single output to their single input's buffer."""
    ops, aliases = [], dict(graph.aliases)
    for op in graph.ops:
        if keep(op):
            ops.append(op)
        else:
            aliases[op.outputs[0]] = op.inputs[0]
    return _replace_ops(graph, ops, aliases)


def drop_noop_reshapes(graph: Graph) -> Graph:
    """Every RESHAPE: its output aliases its input (TFLM copies the bytes unchanged, in order); the op is removed."""
    return _alias_away(graph, lambda op: op.kind != "RESHAPE")


def drop_identity_quantize(graph: Graph) -> Graph:
    """int8 -> int8 QUANTIZE with equal scale and zero point: an exact identity in TFLM, so an alias."""

    def keep(op: Op) -> bool:
        if op.kind != "QUANTIZE":
            return True
        a, b = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
        return not (a.dtype == np.int8 and a.same_quantization(b))

    return _alias_away(graph, keep)


def fuse_pad_into_conv(graph: Graph) -> Graph:
    """PAD -> CONV_2D / DEPTHWISE_CONV_2D becomes one conv with explicit (top, left) padding (see module doc)."""
    consumers = graph.consumers()
    pads = {op.outputs[0]: op for op in graph.ops if op.kind in ("PAD", "PADV2")}
    fused: dict[int, Op] = {}  # pad op index -> the conv that absorbed it
    new_ops = []
    for op in graph.ops:
        pad = pads.get(op.inputs[0]) if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D") else None
        if pad is not None and _pad_fusible(graph, pad, op, consumers):
            (top, _), (left, _) = pad.options.paddings[1], pad.options.paddings[2]
            base_top, base_left = graph.conv_padding(op)  # the conv's own SAME padding on the padded input
            options = dataclasses.replace(op.options, explicit_padding=(top + base_top, left + base_left))
            op = Op(op.index, op.kind, op.version, [pad.inputs[0]] + op.inputs[1:], list(op.outputs), options)
            fused[pad.index] = op
        new_ops.append(op)
    return _replace_ops(graph, [op for op in new_ops if op.index not in fused])


def _pad_fusible(graph: Graph, pad: Op, conv: Op, consumers) -> bool:
    opts: PadOptions = pad.options
    inner, padded = graph.tensors[pad.inputs[0]], graph.tensors[pad.outputs[0]]
    if len(inner.shape) != 4 or len(opts.paddings) != 4 or opts.paddings[0] != (0, 0) or opts.paddings[3] != (0, 0):
        return False  # only spatial padding of an NHWC tensor
    if not inner.same_quantization(padded) or inner.dtype != np.int8:
        return False  # the conv's input offset must be the same zero point
    if opts.pad_value is not None and opts.pad_value != int(padded.zero_point[0]):
        return False  # PADV2 with another constant: those taps would not contribute zero
    if padded.id in graph.outputs or len(consumers.get(padded.id, [])) != 1 or padded.id in graph.aliases.values():
        return False
    return True


def int8_io(graph: Graph) -> Graph:
    """A float32 graph input read only by a QUANTIZE becomes that QUANTIZE's int8 output, and a float32
    graph output written by a DEQUANTIZE becomes that DEQUANTIZE's int8 input: the generated C takes
    and returns int8 (model.h gives the scale and zero point to convert with), so models converted
    with float I/O compile too. The caller quantizes exactly as the dropped QUANTIZE would."""
    consumers = graph.consumers()
    drop, inputs, outputs = set(), list(graph.inputs), list(graph.outputs)
    for k, t in enumerate(graph.inputs):
        readers = consumers.get(t, [])
        if graph.tensors[t].dtype == np.float32 and len(readers) == 1 and graph.ops[readers[0]].kind == "QUANTIZE":
            q = graph.ops[readers[0]]
            if graph.tensors[q.outputs[0]].dtype == np.int8 and q.outputs[0] not in graph.outputs:
                drop.add(q.index)
                inputs[k] = q.outputs[0]
    producers = {t: op for op in graph.ops for t in op.outputs}
    for k, t in enumerate(graph.outputs):
        op = producers.get(t)
        if graph.tensors[t].dtype == np.float32 and op is not None and op.kind == "DEQUANTIZE":
            if graph.tensors[op.inputs[0]].dtype == np.int8 and op.inputs[0] not in graph.inputs:
                drop.add(op.index)
                outputs[k] = op.inputs[0]
    if not drop:
        return graph
    return Graph(graph.tensors, [op for op in graph.ops if op.index not in drop], inputs, outputs, dict(graph.aliases))


def simplify(graph: Graph) -> Graph:
    """All bit-preserving rewrites, in order (int8_io changes the I/O types only)."""
    return fold_dead_channels(fuse_pad_into_conv(drop_identity_quantize(drop_noop_reshapes(int8_io(graph)))))


# ---------------------------------------------------------------------------------------------
# In place


@dataclass(frozen=True)
class InPlace:
    """Op `op_index` may write `output` over `input`'s buffer; `extra_bytes` of scratch make it legal.

    band_rows > 0: a CONV_2D / DEPTHWISE_CONV_2D run in bands of that many output rows through a
    band buffer of extra_bytes (kernels_c's ep_conv_bands)."""

    op_index: int
    input: int
    output: int
    extra_bytes: int = 0
    band_rows: int = 0


@dataclass(frozen=True)
class ResidualAdd:
    """A conv whose only reader is the next op, an ADD with a same-shape `skip` tensor that dies there.

    The conv runs in bands of `band_rows` output rows into a band buffer of `band_bytes`, and each
    band goes straight through the ADD, whose output overwrites `skip` (the ADD is element-wise): the
    conv's output tensor never exists. Same kernels, same arithmetic, so the same bits. The peak of
    a residual block drops from three full tensors to two plus a band."""

    conv_index: int
    add_index: int
    conv_output: int
    skip: int
    add_output: int
    band_rows: int
    band_bytes: int


def last_uses(graph: Graph) -> dict[int, int]:
    """Buffer (root tensor id) -> position in graph.ops of its last reader; graph outputs live to the end."""
    last: dict[int, int] = {}
    for i, op in enumerate(graph.ops):
        for t in op.inputs + op.outputs:
            if t >= 0 and not graph.tensors[t].is_constant:
                last[graph.buffer_of(t)] = i
    for t in graph.outputs:
        last[graph.buffer_of(t)] = len(graph.ops)
    return last


def band_rows(out_h: int, pad_top: int) -> int:
    """Rows per band: about a sixteenth of the layer (so the band buffer is small next to the tensor
    it saves and the per-call overhead stays negligible), never fewer than the top padding."""
    return max(1, pad_top, -(-out_h // 16))


def _bandable(graph: Graph, op: Op) -> bool:
    if op.kind not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return False
    inp, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    return len(out.shape) == 4 and out.shape[0] == 1 and inp.dtype == out.dtype == np.int8


def find_in_place(graph: Graph) -> dict[int, InPlace]:
    """Ops (by Op.index) that may overwrite a dying input with their output.

    Element-wise ops (ELEMENTWISE_IN_PLACE) when an int8 input has the output's shape (not broadcast)
    and its buffer is read by no later op and is no graph output. CONV_2D and DEPTHWISE_CONV_2D
    with stride 1 whose output has the input's shape (TinyEngine's in-place depthwise, and 1x1
    pointwise convs): they run in bands (ep_conv_bands) and a band is copied over the input rows it
    covers once no later band reads them, so the scratch is one band (no top padding) or two.
    """
    last = last_uses(graph)
    found = {}
    for step, op in enumerate(graph.ops):
        out = graph.tensors[op.outputs[0]]
        if len(op.outputs) != 1 or out.dtype != np.int8:
            continue
        candidates = [t for t in graph.activation_inputs(op) if graph.tensors[t].dtype == np.int8]
        if op.kind in ELEMENTWISE_IN_PLACE:
            for t in candidates:
                if graph.tensors[t].shape == out.shape or (op.kind == "RESHAPE" and graph.tensors[t].size == out.size):
                    if last.get(graph.buffer_of(t)) == step:
                        found[op.index] = InPlace(op.index, t, out.id)
                        break
        elif _bandable(graph, op):
            o = op.options
            t = op.inputs[0]
            inp = graph.tensors[t]
            if (o.stride_h == o.stride_w == 1 and inp.shape == out.shape and t not in graph.outputs
                    and last.get(graph.buffer_of(t)) == step):
                top, _ = graph.conv_padding(op)
                _, h, w, c = out.shape
                rows = band_rows(h, top)
                if (2 if top else 1) * rows < h:  # otherwise the bands cost as much as the tensor
                    found[op.index] = InPlace(op.index, t, out.id, (2 if top else 1) * rows * w * c, rows)
    return found


def find_residual_adds(graph: Graph, in_place: dict[int, InPlace]) -> dict[int, ResidualAdd]:
    """Convs (by Op.index) followed by the ADD that consumes them, fusable band by band (ResidualAdd).

    Needs: the conv's output read only by that ADD, which comes next; the ADD's other input (the
    skip) int8, of the same shape, not a graph output, dying at the ADD and not the conv's own input
    (the conv reads its input across bands while the ADD overwrites the skip). Convs already in
    place are left alone."""
    last = last_uses(graph)
    consumers = graph.consumers()
    found = {}
    for step, op in enumerate(graph.ops[:-1]):
        add = graph.ops[step + 1]
        if op.index in in_place or not _bandable(graph, op) or add.kind != "ADD" or len(add.inputs) != 2:
            continue
        y = op.outputs[0]
        if y in graph.outputs or consumers.get(y, []) != [step + 1] or y not in add.inputs:
            continue
        skip = add.inputs[1] if add.inputs[0] == y else add.inputs[0]
        s, out = graph.tensors[skip], graph.tensors[add.outputs[0]]
        if (skip == y or s.is_constant or s.dtype != np.int8 or s.shape != out.shape
                or graph.tensors[y].shape != out.shape or y in graph.aliases.values()
                or out.dtype != np.int8 or skip in graph.outputs or last.get(graph.buffer_of(skip)) != step + 1
                or graph.buffer_of(skip) == graph.buffer_of(op.inputs[0])):
            continue
        _, h, w, c = graph.tensors[y].shape
        rows = band_rows(h, 0)
        found[op.index] = ResidualAdd(op.index, add.index, y, skip, add.outputs[0], rows, rows * w * c)
    return found


# ---------------------------------------------------------------------------------------------
# Dead channels


@dataclass(frozen=True)
class DeadChannels:
    """Output channels of a weighted op whose weights are all zero.

    Each such channel outputs one constant everywhere: clamp(output_zp + requantize(bias)), since
    the accumulator is just the bias. `values` holds it per channel (int8). The `dead` sparse format
    of kernels_c skips computing them and stores only these constants.

    Folding a constant channel into the consumers (adding (value - zp_in) * sum of its weights to
    their bias and deleting the channel) is exact only where every output position of the consumer
    sees every tap of that channel: a FULLY_CONNECTED, or a CONV_2D / DEPTHWISE_CONV_2D without
    padding (VALID, or 1x1 kernels). Elsewhere border taps are skipped and the contribution varies,
    and after any requantizing op (ADD, MEAN, pooling) the constant would pass through another
    rounding. `exact_fold_consumers` lists the consumers where it is exact; fold_dead_channels folds
    it there (the channel stays in the tensor: removing it would change the layout for every reader).
    """

    op_index: int
    channels: tuple[int, ...]
    values: tuple[int, ...]
    exact_fold_consumers: tuple[int, ...]


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """TFLM's MultiplyByQuantizedMultiplier on int32 values (double rounding), element-wise in int64.

    Python mirror of ep_fixedpoint.h's helper for compile-time constants only (never run on device).
    """
    x, m, s = (np.asarray(v, np.int64) for v in (x, multiplier, shift))
    left = np.where(s > 0, s, 0)
    right = np.where(s > 0, 0, -s)
    a = x << left
    a = ((a - INT32_MIN) % (1 << 32)) + INT32_MIN  # int32 wrap, as the C code's 32-bit shift result
    ab = a * m
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))  # C division truncates toward zero
    high = np.where((a == INT32_MIN) & (m == INT32_MIN), INT32_MAX, high)
    mask = (np.int64(1) << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + (remainder > threshold)


def find_dead_channels(graph: Graph) -> dict[int, DeadChannels]:
    """Per CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (by Op.index) with all-zero output channels."""
    consumers = graph.consumers()
    found = {}
    for op in graph.ops:
        if op.kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        w = graph.tensors[op.inputs[1]]
        axis = w.data.ndim - 1 if op.kind == "DEPTHWISE_CONV_2D" else 0
        flat = np.moveaxis(w.data, axis, 0).reshape(w.data.shape[axis], -1)
        dead = np.flatnonzero(~flat.any(axis=1))
        if dead.size == 0:
            continue
        inp, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
        n_out = flat.shape[0]
        bias_id = op.inputs[2] if len(op.inputs) > 2 else -1
        bias = graph.tensors[bias_id].data.astype(np.int64) if bias_id >= 0 else np.zeros(n_out, np.int64)
        w_scales = np.broadcast_to(w.scale, (n_out,))
        mult, shift = Q.per_channel_multipliers(float(inp.scale[0]), w_scales, float(out.scale[0]))
        lo, hi = Q.activation_range(op.options.activation, np.float32(out.scale[0]), int(out.zero_point[0]))
        acc = multiply_by_quantized_multiplier(bias[dead], mult[dead], shift[dead]) + int(out.zero_point[0])
        values = np.clip(acc, lo, hi)
        folds = tuple(graph.ops[i].index for i in consumers.get(out.id, []) if _fold_exact(graph, graph.ops[i]))
        found[op.index] = DeadChannels(op.index, tuple(int(c) for c in dead), tuple(int(v) for v in values), folds)
    return found


def fold_dead_channels(graph: Graph) -> Graph:
    """Folds each dead channel's constant into the consumers where that is exact (DeadChannels'
    exact_fold_consumers): their bias absorbs sum(w[o, taps, c]) * (value - input zero point), in the
    int32 accumulator's own units, and their weights on that input channel become zero, so the
    consumer no longer reads the channel (its sparse format skips those weights). The producer still
    writes the constant (other readers may need it). Every output bit stays the same; a fold that
    would overflow the int32 bias is skipped. New weight and bias tensors are appended (constants may
    be shared)."""
    tensors, ops = list(graph.tensors), list(graph.ops)
    position = {op.index: i for i, op in enumerate(ops)}
    for producer, dead in find_dead_channels(graph).items():
        out = graph.tensors[graph.op(producer).outputs[0]]
        channels = out.shape[-1]
        for index in dead.exact_fold_consumers:
            q = ops[position[index]]
            if len(q.inputs) < 3 or q.inputs[2] < 0:
                continue  # no bias to fold into
            x, w, b = (tensors[t] for t in q.inputs[:3])
            if graph.buffer_of(q.inputs[0]) != graph.buffer_of(out.id) or x.size != out.size:
                continue
            weights, bias = w.data.astype(np.int64), b.data.astype(np.int64).reshape(-1)
            zp = int(x.zero_point[0])
            for c, value in zip(dead.channels, dead.values):
                if q.kind == "FULLY_CONNECTED":
                    cols = np.arange(c, weights.shape[1], channels)  # NHWC flattened: channel c every C features
                    bias = bias + weights[:, cols].sum(axis=1) * (value - zp)
                    weights[:, cols] = 0
                elif q.kind == "CONV_2D":
                    bias = bias + weights[..., c].sum(axis=(1, 2)) * (value - zp)
                    weights[..., c] = 0
                else:  # DEPTHWISE_CONV_2D: output channels c*M .. c*M+M-1 read input channel c
                    m = weights.shape[-1] // channels
                    sl = slice(c * m, (c + 1) * m)
                    bias[sl] = bias[sl] + weights[..., sl].sum(axis=(0, 1, 2)) * (value - zp)
                    weights[..., sl] = 0
            if np.any(bias < INT32_MIN) or np.any(bias > INT32_MAX):
                continue
            new_w = dataclasses.replace(w, id=len(tensors), data=weights.astype(w.data.dtype))
            tensors.append(new_w)
            new_b = dataclasses.replace(b, id=len(tensors), data=bias.astype(np.int32).reshape(b.data.shape))
            tensors.append(new_b)
            ops[position[index]] = Op(q.index, q.kind, q.version, [q.inputs[0], new_w.id, new_b.id, *q.inputs[3:]],
                                      list(q.outputs), q.options)
    return Graph(tensors, ops, list(graph.inputs), list(graph.outputs), dict(graph.aliases))


def _fold_exact(graph: Graph, consumer: Op) -> bool:
    if consumer.kind == "FULLY_CONNECTED":
        return True
    if consumer.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        w = graph.tensors[consumer.inputs[1]].shape
        return consumer.options.explicit_padding is None and (consumer.options.padding == "VALID" or w[1] == w[2] == 1)
    return False
