"""C code generation: a planned int8 graph as `model.h` / `model.c` that read as if written by hand.

The generated code has no interpreter and allocates nothing at run time:

- every constant (weights, biases, per-channel multipliers and shifts, sparse blobs) is a `static const`
  array in flash, 16-byte aligned through EP_MODEL_ALIGN16 (a one-line portable macro);
- all activations and scratch buffers live in one static arena of EP_MODEL_ARENA_SIZE bytes, at the
  offsets of the memory plan (planner.plan_memory); T<id> names tensor <id>'s place in it;
- `ep_model_init()` views the sparse blobs (ep_sparse_s8_view), builds the LOGISTIC/TANH lookup tables
  and checks that each layer's scratch slot is at least what this build's kernels ask for (the backend
  is chosen when the kernels are compiled, so the check runs on the device);
- `ep_model_invoke(input, output)` copies the input into the arena, makes one plain kernel call per
  layer (each after a comment naming op, shapes and weight format), and copies the output out.

RESHAPE ops are aliases (passes.simplify removed them) and generate nothing.
Only single-input, single-output models with int8 input and output are generated.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from edgeprune.compile import quant as Q
from edgeprune.compile import quant_activations as QA
from edgeprune.compile.ir import Graph, Op
from edgeprune.compile.planner import MemoryPlan, band_offset
from edgeprune.errors import UsageError

WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclass
class LayerCode:
    """What one op contributes to model.c."""

    name: str  # e.g. "conv_2d_3" (op kind and .tflite operator index)
    comment: str  # op, shapes, format
    constants: list[str]  # C definitions in flash
    call: list[str]  # statements in ep_model_invoke
    init: list[str]  # statements in ep_model_init
    statics: list[str]  # mutable file-scope state (sparse views, tables)
    functions: list[str] = field(default_factory=list)  # static helpers (band functions), after all constants


def layer_name(op: Op) -> str:
    return f"{op.kind.lower()}_{op.index}"


def check_io(graph: Graph) -> None:
    """One line for models this generator cannot express through ep_model_invoke's signature."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UsageError(f"the model has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
                         "generated C supports exactly one of each")
    for t, role in ((graph.inputs[0], "input"), (graph.outputs[0], "output")):
        if graph.tensors[t].dtype != np.int8:
            raise UsageError(f"the model's {role} is {np.dtype(graph.tensors[t].dtype).name}; generated C needs an "
                             "int8 input and output (quantize the model's I/O)")


# ---------------------------------------------------------------------------------------------
# Small C formatting helpers


def c_array(ctype: str, name: str, values, per_line: int = 16, align: bool = True) -> str:
    vals = np.asarray(values).reshape(-1)
    if vals.size == 0:
        vals = np.zeros(1, np.int64)  # C99 forbids empty arrays
    items = [str(int(v)) for v in vals]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    body = ",\n    ".join(lines)
    attr = " EP_MODEL_ALIGN16" if align else ""
    return f"static const {ctype} {name}[{vals.size}]{attr} = {{\n    {body}\n}};"


def c_int32_literal(v: int) -> str:
    v = int(v)
    return "INT32_MIN" if v == -(1 << 31) else str(v)


def c_struct(ctype: str, name: str, fields: dict) -> str:
    body = ", ".join(f".{k} = {c_int32_literal(v) if isinstance(v, (int, np.integer)) else v}" for k, v in fields.items())
    return f"static const {ctype} {name} = {{{body}}};"


def dims_fields(shape) -> dict:
    n, h, w, c = Q.dims4(shape)
    return dict(n=n, h=h, w=w, c=c)


def shape_str(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


# ---------------------------------------------------------------------------------------------


class Generator:
    def __init__(self, graph: Graph, plan: MemoryPlan, formats: dict, sparse: dict, scratch: dict[int, int]):
        self.g, self.plan, self.formats, self.sparse, self.scratch = graph, plan, formats, sparse, scratch

    def t(self, tid: int) -> str:
        return f"T{self.g.buffer_of(tid)}"

    def scratch_ptr(self, op: Op) -> str:
        return f"SCRATCH_{op.index}" if self.scratch.get(op.index, 0) > 0 else "NULL"

    # -- weighted layers -------------------------------------------------------------------
    def weighted(self, op: Op, n: str) -> LayerCode:
        g = self.g
        inp, w, out = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
        bias_id = op.inputs[2] if len(op.inputs) > 2 else -1
        n_out = w.shape[-1] if op.kind == "DEPTHWISE_CONV_2D" else w.shape[0]
        bias = g.tensors[bias_id].data.astype(np.int64).reshape(-1) if bias_id >= 0 else np.zeros(n_out, np.int64)
        mult, shift = Q.per_channel_multipliers(float(inp.scale[0]), np.broadcast_to(w.scale, (n_out,)),
                                                float(out.scale[0]))
        lo, hi = Q.activation_range(op.options.activation, np.float32(out.scale[0]), int(out.zero_point[0]))
        in_offset = -int(inp.zero_point[0])
        fmt = self.formats.get(op.index, "dense")
        consts = [c_array("int32_t", f"{n}_multiplier", mult, 8), c_array("int32_t", f"{n}_shift", shift, 16),
                  c_struct("ep_quant_t", f"{n}_quant", dict(
                      input_offset=in_offset, output_offset=int(out.zero_point[0]), activation_min=lo,
                      activation_max=hi, multiplier=f"{n}_multiplier", shift=f"{n}_shift"))]
        init, statics, functions = [], [], []
        sparse = self.sparse.get(op.index)
        if sparse is None:
            consts.insert(0, c_array("int8_t", f"{n}_weights", w.data, 16))
            consts.insert(1, c_array("int32_t", f"{n}_bias", bias, 8))
            weights_arg = f"{n}_weights, {n}_bias"
        else:
            consts.insert(0, c_array("uint8_t", f"{n}_blob", np.frombuffer(sparse.blob, np.uint8), 16))
            statics.append(f"static ep_sparse_s8_t {n}_sparse; /* viewed from {n}_blob by ep_model_init */")
            init.append(f"if (ep_sparse_s8_view({n}_blob, (int32_t)sizeof({n}_blob), &{n}_sparse) < 0) {{\n"
                        f"        return EP_MODEL_ERROR_WEIGHTS;\n    }}")
            weights_arg = f"&{n}_sparse"
        s = self.scratch_ptr(op)
        suffix = "" if sparse is None else f"_sparse_{fmt}"  # one format's function: only its kernels link
        call = []
        if op.kind == "FULLY_CONNECTED":
            in_features, out_features = int(w.shape[1]), int(w.shape[0])
            batches = inp.size // in_features
            comment = f"FULLY_CONNECTED {batches}x{in_features} -> {batches}x{out_features}, {fmt}"
            if sparse is None:
                call.append(f"ep_fully_connected_s8(&{n}_quant, {batches}, {in_features}, {out_features}, "
                            f"{self.t(inp.id)}, {weights_arg}, {self.t(out.id)}, {s});")
            else:
                call.append(f"ep_fully_connected_s8{suffix}(&{n}_quant, {batches}, {self.t(inp.id)}, {weights_arg}, "
                            f"{self.t(out.id)}, {s});")
            check = (f"ep_fully_connected_s8_sparse_scratch_size(&{n}_sparse, {batches})" if sparse is not None else
                     f"ep_fully_connected_s8_scratch_size({batches}, {in_features}, {out_features})")
        else:
            o = op.options
            pad_h, pad_w = g.conv_padding(op)
            consts.append(c_struct("ep_conv_params_t", f"{n}_params", dict(
                stride_h=o.stride_h, stride_w=o.stride_w, dilation_h=o.dilation_h, dilation_w=o.dilation_w,
                pad_h=pad_h, pad_w=pad_w)))
            for role, shape in (("input", inp.shape), ("filter", w.shape), ("output", out.shape)):
                consts.append(c_struct("ep_dims_t", f"{n}_{role}_dims", dims_fields(shape)))
            k = f"{w.shape[1]}x{w.shape[2]}"
            if op.kind == "CONV_2D":
                comment = (f"CONV_2D {k} stride {o.stride_h}, {shape_str(inp.shape)} -> {shape_str(out.shape)}, "
                           f"{o.activation.lower()}, {fmt}")
                fn, indent = "ep_conv2d_s8", 17

                def kernel_call(params, in_dims, in_ptr, out_dims, out_ptr):
                    return (f"ep_conv2d_s8{suffix}({params}, &{n}_quant, {in_dims}, {in_ptr},\n"
                            f"{' ' * (indent + len(suffix))}&{n}_filter_dims, {weights_arg}, {out_dims}, {out_ptr}, {s});")
            else:
                comment = (f"DEPTHWISE_CONV_2D {k} stride {o.stride_h}, x{o.depth_multiplier}, {shape_str(inp.shape)} -> "
                           f"{shape_str(out.shape)}, {o.activation.lower()}, {fmt}")
                fn, indent = "ep_depthwise_conv2d_s8", 27

                def kernel_call(params, in_dims, in_ptr, out_dims, out_ptr):
                    return (f"ep_depthwise_conv2d_s8{suffix}({params}, {o.depth_multiplier}, &{n}_quant, {in_dims}, "
                            f"{in_ptr},\n{' ' * (indent + len(suffix))}&{n}_filter_dims, {weights_arg}, {out_dims}, "
                            f"{out_ptr}, {s});")
            banded = self.banded(op, n, kernel_call, comment)
            if banded is None:
                call.append(kernel_call(f"&{n}_params", f"&{n}_input_dims", self.t(inp.id), f"&{n}_output_dims",
                                        self.t(out.id)))
            else:
                comment, band_fn, band_call = banded
                functions.append(band_fn)
                call.append(band_call)
            dims = f"&{n}_input_dims, &{n}_filter_dims, &{n}_output_dims"
            check = (f"{fn}_sparse_scratch_size(&{n}_sparse, {dims})" if sparse is not None else
                     f"{fn}_scratch_size({dims})")
        init.append(f"if ({check} > {self.scratch.get(op.index, 0)}) {{\n        return EP_MODEL_ERROR_SCRATCH;\n    }}")
        return LayerCode(n, comment, consts, call, init, statics, functions)

    def banded(self, op: Op, n: str, kernel_call, comment: str):
        """(comment, band function, call) for a conv run in bands (in place, or fused with its
        residual ADD: see ep_conv_bands), or None for a plain call."""
        g, plan = self.g, self.plan
        in_place, residual = plan.in_place.get(op.index), plan.residual_adds.get(op.index)
        if residual is None and (in_place is None or not in_place.band_rows):
            return None
        inp = g.tensors[op.inputs[0]]
        lines = [kernel_call("&band->params", "&band->input_dims", f"{self.t(inp.id)} + band->input_offset",
                             "&band->output_dims", "output")]
        if residual is not None:
            add = next(a for a in g.ops if a.index == residual.add_index)
            skip = f"{self.t(residual.skip)} + band->output_offset"
            a, b = ("output", skip) if add.inputs[0] == residual.conv_output else (skip, "output")
            add_name = layer_name(add)
            lines.append(f"ep_add_s8(&{add_name}_params, &band->output_dims, {a}, &band->output_dims, {b},\n"
                         f"              &band->output_dims, {skip});")
            rows, target = residual.band_rows, "NULL"
            comment += f", then {add_name} over {self.t(residual.skip)} ({rows}-row bands)"
            what = f"one band of output rows, added to {self.t(residual.skip)} by {add_name}"
        else:
            rows, target = in_place.band_rows, self.t(inp.id)
            comment += f", in place ({rows}-row bands)"
            what = "one band of output rows"
        body = "\n    ".join(lines)
        fn = f"/* {n}: {what} (see ep_conv_bands). */\nstatic void {n}_band(const ep_conv_band_t *band, int8_t *output)\n{{\n    {body}\n}}"
        call = (f"ep_conv_bands(&{n}_params, &{n}_input_dims, &{n}_filter_dims, &{n}_output_dims,\n"
                f"                  {rows}, {n}_band, BAND_{op.index}, {target});")
        return comment, fn, call

    # -- the other ops ---------------------------------------------------------------------
    def other(self, op: Op, n: str) -> LayerCode:
        g = self.g
        k = op.kind
        inp, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        i, o = self.t(inp.id), self.t(out.id)
        opts = op.options
        consts, call, init, statics = [], [], [], []
        comment = f"{k} {shape_str(inp.shape)} -> {shape_str(out.shape)}"
        if k in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            p = Q.pool_params(inp.shape[1:3], (opts.filter_h, opts.filter_w), (opts.stride_h, opts.stride_w),
                              opts.padding, opts.activation, float(out.scale[0]), int(out.zero_point[0]))
            consts += [c_struct("ep_pool_params_t", f"{n}_params", p),
                       c_struct("ep_dims_t", f"{n}_input_dims", dims_fields(inp.shape)),
                       c_struct("ep_dims_t", f"{n}_output_dims", dims_fields(out.shape))]
            fn = "ep_average_pool2d_s8" if k == "AVERAGE_POOL_2D" else "ep_max_pool2d_s8"
            comment = f"{k} {opts.filter_h}x{opts.filter_w} stride {opts.stride_h}, {shape_str(inp.shape)} -> {shape_str(out.shape)}"
            call.append(f"{fn}(&{n}_params, &{n}_input_dims, {i}, &{n}_output_dims, {o});")
        elif k in ("ADD", "MUL"):
            a, b = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
            args = (float(a.scale[0]), int(a.zero_point[0]), float(b.scale[0]), int(b.zero_point[0]),
                    float(out.scale[0]), int(out.zero_point[0]), opts.activation)
            p, ctype, fn = ((Q.add_params(*args), "ep_add_params_t", "ep_add_s8") if k == "ADD"
                            else (Q.mul_params(*args), "ep_mul_params_t", "ep_mul_s8"))
            consts.append(c_struct(ctype, f"{n}_params", p))
            if any(r.add_index == op.index for r in self.plan.residual_adds.values()):
                comment = f"{k} fused into the conv before it"
                return LayerCode(n, comment, consts, call, init, statics)  # the conv's band function calls it
            ptrs = []
            for j, t in enumerate((a, b)):
                consts.append(c_struct("ep_dims_t", f"{n}_input{j + 1}_dims", dims_fields(t.shape)))
                if t.is_constant:
                    consts.append(c_array("int8_t", f"{n}_input{j + 1}", t.data, 16))
                    ptrs.append(f"{n}_input{j + 1}")
                else:
                    ptrs.append(self.t(t.id))
            consts.append(c_struct("ep_dims_t", f"{n}_output_dims", dims_fields(out.shape)))
            comment = f"{k} {shape_str(a.shape)} + {shape_str(b.shape)} -> {shape_str(out.shape)}".replace(
                "+", "*" if k == "MUL" else "+")
            call.append(f"{fn}(&{n}_params, &{n}_input1_dims, {ptrs[0]}, &{n}_input2_dims, {ptrs[1]}, "
                        f"&{n}_output_dims, {o});")
        elif k == "MEAN":
            _, h, w, _ = inp.shape
            p = Q.mean_params(float(inp.scale[0]), int(inp.zero_point[0]), float(out.scale[0]),
                              int(out.zero_point[0]), h * w)
            consts += [c_struct("ep_mean_params_t", f"{n}_params", p),
                       c_struct("ep_dims_t", f"{n}_input_dims", dims_fields(inp.shape))]
            call.append(f"ep_mean_s8(&{n}_params, &{n}_input_dims, {i}, {o});")
        elif k == "SOFTMAX":
            p = QA.softmax_params(float(inp.scale[0]), opts.beta, float(out.scale[0]), int(out.zero_point[0]))
            consts.append(c_struct("ep_softmax_s8_params_t", f"{n}_params", dict(
                input_multiplier=p.input_multiplier, input_left_shift=p.input_left_shift, diff_min=p.diff_min)))
            depth = int(inp.shape[-1])
            call.append(f"ep_softmax_s8(&{n}_params, {inp.size // depth}, {depth}, {i}, {o});")
        elif k in ("LOGISTIC", "TANH"):
            p = (QA.logistic_params(float(inp.scale[0]), int(inp.zero_point[0]), int(out.zero_point[0]))
                 if k == "LOGISTIC" else QA.tanh_params(float(inp.scale[0]), int(inp.zero_point[0])))
            consts.append(c_struct("ep_logistic_tanh_s8_params_t", f"{n}_params", dict(
                input_zero_point=p.input_zero_point, input_range_radius=p.input_range_radius,
                input_multiplier=p.input_multiplier, input_left_shift=p.input_left_shift)))
            statics.append(f"static int8_t {n}_table[256]; /* built once by ep_model_init */")
            init.append(f"ep_{k.lower()}_s8_table(&{n}_params, {n}_table);")
            comment += ", 256-entry table"
            call.append(f"ep_table_lookup_s8({n}_table, {inp.size}, {i}, {o});")
        elif k == "CONCATENATION":
            ins = [g.tensors[t] for t in op.inputs]
            outer, sizes = Q.concatenation_sizes([t.shape for t in ins], opts.axis)
            consts.append(c_array("int32_t", f"{n}_copy_sizes", sizes, 8, align=False))
            ptrs = []
            for j, t in enumerate(ins):
                if t.is_constant:
                    consts.append(c_array("int8_t", f"{n}_input{j}", t.data, 16))
                    ptrs.append(f"{n}_input{j}")
                else:
                    ptrs.append(self.t(t.id))
            consts.append(f"static const int8_t *const {n}_inputs[{len(ptrs)}] = {{{', '.join(ptrs)}}};")
            comment = (f"CONCATENATION axis {opts.axis}, {' + '.join(shape_str(t.shape) for t in ins)} -> "
                       f"{shape_str(out.shape)}")
            call.append(f"ep_concatenation_s8({len(ptrs)}, {n}_inputs, {n}_copy_sizes, {outer}, {o});")
        elif k in ("PAD", "PADV2"):
            pads = Q.pad_paddings(opts.paddings)
            value = int(out.zero_point[0]) if opts.pad_value is None else opts.pad_value
            consts += [c_array("int32_t", f"{n}_paddings", pads, 8, align=False),
                       c_struct("ep_dims_t", f"{n}_input_dims", dims_fields(inp.shape))]
            call.append(f"ep_pad_s8(&{n}_input_dims, {i}, {n}_paddings, {value}, {o});")
        elif k == "QUANTIZE":
            if inp.dtype != np.int8:
                raise UsageError(f"QUANTIZE at operator {op.index} reads a float tensor inside the graph; "
                                 "generated C runs int8 graphs")
            p = Q.requantize_params(float(inp.scale[0]), int(inp.zero_point[0]), float(out.scale[0]),
                                    int(out.zero_point[0]))
            call.append(f"ep_requantize_s8({i}, {inp.size}, {p['input_zero_point']}, {p['multiplier']}, "
                        f"{p['shift']}, {p['output_zero_point']}, {o});")
        elif k == "RESHAPE":
            if g.buffer_of(inp.id) != g.buffer_of(out.id):
                call.append(f"ep_reshape_s8({i}, {o}, {inp.size});")
        else:  # DEQUANTIZE: only at the float boundary, which check_io rejects
            raise UsageError(f"{k} at operator {op.index} is not supported inside generated C (int8 graphs only)")
        return LayerCode(n, comment, consts, call, init, statics)


def generate_c(graph: Graph, plan: MemoryPlan, layer_formats: dict | None = None, sparse_weights: dict | None = None,
               scratch_bytes: dict[int, int] | None = None, source: str = "model.tflite",
               target: str = "") -> dict[str, str]:
    """model.h and model.c for `graph` (after passes.simplify) placed by `plan`.

    layer_formats: op index -> format name ("dense" or a sparse format); sparse_weights: op index ->
    the encoded SparseWeights for sparse layers; scratch_bytes: op index -> the scratch each layer's
    slot in the arena holds (what the plan was made with)."""
    check_io(graph)
    formats = {k: (v.format if hasattr(v, "format") else v) for k, v in (layer_formats or {}).items()}
    gen = Generator(graph, plan, formats, dict(sparse_weights or {}), dict(scratch_bytes or {}))
    layers = [gen.weighted(op, layer_name(op)) if op.kind in WEIGHTED else gen.other(op, layer_name(op))
              for op in graph.ops]
    layers = [l for l in layers if l.call or l.init or l.constants]
    inp, out = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    source_c = _source(graph, plan, gen, layers, inp, out, source)
    model_hash = hashlib.sha256(source_c.encode()).hexdigest()[:16]  # what the device runs: code and constants
    return {"model.h": _header(graph, plan, inp, out, sum(1 for l in layers if l.call), source, target, model_hash), "model.c": source_c}


def _header(graph, plan, inp, out, n_layers, source, target, model_hash) -> str:
    return f"""/* Generated by edgeprune from {source}{f' for {target}' if target else ''}. Do not edit.
 *
 *     ep_model_init();                    once, at start-up
 *     ep_model_invoke(input, output);     per inference: 0 on success
 *
 * Input: int8 {shape_str(inp.shape)}, real = EP_MODEL_INPUT_SCALE * (q - EP_MODEL_INPUT_ZERO_POINT).
 * Output: int8 {shape_str(out.shape)}, real = EP_MODEL_OUTPUT_SCALE * (q - EP_MODEL_OUTPUT_ZERO_POINT).
 * All memory is static: EP_MODEL_ARENA_SIZE bytes of activations, the rest const in flash.
 */
#ifndef EP_MODEL_H_
#define EP_MODEL_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define EP_MODEL_INPUT_SIZE {inp.size}
#define EP_MODEL_OUTPUT_SIZE {out.size}
#define EP_MODEL_ARENA_SIZE {max(plan.arena_bytes, 16)}
#define EP_MODEL_INPUT_SCALE {float(inp.scale[0])!r}f
#define EP_MODEL_INPUT_ZERO_POINT {int(inp.zero_point[0])}
#define EP_MODEL_OUTPUT_SCALE {float(out.scale[0])!r}f
#define EP_MODEL_OUTPUT_ZERO_POINT {int(out.zero_point[0])}
#define EP_MODEL_NUM_LAYERS {n_layers}
#define EP_MODEL_HASH "{model_hash}" /* first 16 hex digits of model.c's SHA-256 */

/* ep_model_invoke's results. */
#define EP_MODEL_OK 0
#define EP_MODEL_ERROR_NOT_INITIALISED (-1)
#define EP_MODEL_ERROR_WEIGHTS (-2)  /* a sparse weight blob failed to parse */
#define EP_MODEL_ERROR_SCRATCH (-3)  /* this build's kernels need more scratch than was planned */

/* Views the sparse weights, builds lookup tables, checks scratch sizes. Call once before invoking. */
void ep_model_init(void);

/* Runs the model on EP_MODEL_INPUT_SIZE int8 values, writes EP_MODEL_OUTPUT_SIZE int8 values. */
int ep_model_invoke(const int8_t *input, int8_t *output);

/* Layer names in execution order (op kind and .tflite operator index), for per-layer benchmarks. */
extern const char *const ep_model_layer_names[EP_MODEL_NUM_LAYERS];

/* Optional per-layer hooks: compile model.c with -DEP_MODEL_LAYER_HOOKS and define both; each layer
 * (0 .. EP_MODEL_NUM_LAYERS - 1) runs between ep_model_layer_begin(i) and ep_model_layer_end(i). */
void ep_model_layer_begin(int32_t layer);
void ep_model_layer_end(int32_t layer);

#ifdef __cplusplus
}}
#endif

#endif /* EP_MODEL_H_ */
"""


def _source(graph, plan, gen, layers, inp, out, source) -> str:
    parts = [f"""/* Generated by edgeprune from {source}. Do not edit. See model.h. */
#include "model.h"

#include <stddef.h>
#include <string.h>

#include "ep_kernels.h"

/* Constants in flash, 16-byte aligned for the vector kernels. */
#if defined(__GNUC__) || defined(__clang__) || defined(__ICCARM__) || defined(__ARMCC_VERSION)
#define EP_MODEL_ALIGN16 __attribute__((aligned(16)))
#else
#define EP_MODEL_ALIGN16
#endif

/* Per-layer hooks (model.h), compiled in only for benchmarks. */
#ifdef EP_MODEL_LAYER_HOOKS
#define EP_LAYER_BEGIN(layer) ep_model_layer_begin(layer)
#define EP_LAYER_END(layer) ep_model_layer_end(layer)
#else
#define EP_LAYER_BEGIN(layer) ((void)0)
#define EP_LAYER_END(layer) ((void)0)
#endif

/* The arena: every activation and scratch buffer, at the memory plan's offsets. */
static int8_t ep_model_arena[EP_MODEL_ARENA_SIZE] EP_MODEL_ALIGN16;
"""]
    tensor_lines = []
    for tid in sorted({graph.buffer_of(t) for t in plan.offsets}):
        if tid in plan.offsets:
            t = graph.tensors[tid]
            tensor_lines.append(f"#define T{tid} (ep_model_arena + {plan.offsets[tid]}) /* {shape_str(t.shape)} "
                                f"{_safe_comment(t.name)} */")
    bands = {p.op_index: p.extra_bytes for p in plan.in_place.values() if p.band_rows}
    bands.update({r.conv_index: r.band_bytes for r in plan.residual_adds.values()})
    for index, off in sorted(plan.scratch_offsets.items()):
        if gen.scratch.get(index, 0) > 0:
            tensor_lines.append(f"#define SCRATCH_{index} (ep_model_arena + {off}) /* {gen.scratch[index]} bytes */")
        if index in bands:
            tensor_lines.append(f"#define BAND_{index} (ep_model_arena + {off + band_offset(gen.scratch.get(index, 0))}) "
                                f"/* {bands[index]} bytes of output rows */")
    parts.append("\n".join(tensor_lines) + "\n")
    for l in layers:
        if l.constants or l.statics:
            parts.append(f"/* {l.name}: {l.comment} */\n" + "\n".join(l.constants + l.statics) + "\n")
    for l in layers:
        parts.extend(f + "\n" for f in l.functions)
    names = ",\n    ".join(f'"{l.name}"' for l in layers if l.call)
    parts.append(f"const char *const ep_model_layer_names[EP_MODEL_NUM_LAYERS] = {{\n    {names}\n}};\n")
    init_body = "\n".join(f"    /* {l.name} */\n    " + "\n    ".join(l.init) for l in layers if l.init)
    parts.append(f"""static int ep_model_status = EP_MODEL_ERROR_NOT_INITIALISED;

static int ep_model_prepare(void)
{{
{init_body}
    return EP_MODEL_OK;
}}

void ep_model_init(void)
{{
    ep_model_status = ep_model_prepare();
}}
""")
    calls = "\n".join(f"    /* {l.name}: {l.comment} */\n    EP_LAYER_BEGIN({i});\n    " + "\n    ".join(l.call)
                      + f"\n    EP_LAYER_END({i});" for i, l in enumerate(l for l in layers if l.call))
    in_t, out_t = gen.t(inp.id), gen.t(out.id)
    parts.append(f"""int ep_model_invoke(const int8_t *input, int8_t *output)
{{
    if (ep_model_status != EP_MODEL_OK) {{
        return ep_model_status;
    }}
    memcpy({in_t}, input, EP_MODEL_INPUT_SIZE);
{calls}
    memcpy(output, {out_t}, EP_MODEL_OUTPUT_SIZE);
    return EP_MODEL_OK;
}}
""")
    return "\n".join(parts)


def _safe_comment(s: str) -> str:
    s = s.replace("*/", "* /").replace("/*", "/ *")
    s = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in s)
    return f"'{s[:60]}'"
