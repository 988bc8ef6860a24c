"""The static memory planner on random graphs, a residual block, and a digits-like CNN against TFLite Micro.

Random DAGs (chains, branches joined by ADD and CONCATENATION, dangling outputs, scratch buffers,
in-place reuse) must give plans where no two simultaneously live buffers overlap, checked twice:
from the plan's own buffers and from lifetimes re-derived from the graph.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune.compile import ir, passes
from edgeprune.compile.planner import ALIGN, plan_memory
from edgeprune.compile.tflite_reader import read_tflite
from edgeprune.compile.tflite_writer import (
    ModelSpec, OpSpec, TensorSpec, add_options, conv2d_options, fully_connected_options, pad_options, reducer_options,
    write_tflite,
)
from edgeprune.compile.tflm_arena import tflm_arena_report, tflm_runs
from kernels_support import random_quant


def _random_graph(rng, n_ops: int, chain: bool) -> ir.Graph:
    """A graph of (1, n) int8 tensors; op kinds only matter to passes.find_in_place (ADD, LOGISTIC)."""
    tensors: list[ir.TensorInfo] = []
    ops: list[ir.Op] = []

    def new(size: int) -> int:
        t = ir.TensorInfo(len(tensors), f"t{len(tensors)}", (1, size), np.dtype(np.int8),
                          np.array([0.1], np.float32), np.zeros(1, np.int64))
        tensors.append(t)
        return t.id

    def op(kind, inputs, out):
        ops.append(ir.Op(len(ops), kind, 1, inputs, [out], ir.NoOptions()))

    inputs = [new(int(rng.integers(1, 3000)))]
    if not chain and rng.random() < 0.3:
        inputs.append(new(int(rng.integers(1, 3000))))
    recent = list(inputs)
    for _ in range(n_ops):
        src = recent[-1] if chain else recent[-int(rng.integers(1, min(4, len(recent)) + 1))]
        r = rng.random()
        if r < 0.35:
            op("LOGISTIC", [src], new(tensors[src].size))  # same size: an in-place candidate
        elif r < 0.55 and not chain:
            other = recent[-int(rng.integers(1, min(5, len(recent)) + 1))]
            op("CONCATENATION", [src, other], new(tensors[src].size + tensors[other].size))
        elif r < 0.75:
            same = [t for t in recent[-6:] if tensors[t].size == tensors[src].size and t != src]
            other = same[-1] if same and not chain else src
            op("ADD", [src, other], new(tensors[src].size))
        else:
            op("AVERAGE_POOL_2D", [src], new(int(rng.integers(1, 3000))))
        recent.append(ops[-1].outputs[0])
    consumed = {t for o in ops for t in o.inputs}
    outputs = [recent[-1]] + [t for t in recent[:-1] if t not in consumed and t not in inputs]  # dangling branches
    return ir.Graph(tensors, ops, inputs, outputs)


@pytest.mark.parametrize("chain", [False, True])
def test_random_graphs_plan_without_overlaps(chain):
    rng = np.random.default_rng(20 + chain)
    worst = 0.0
    for case in range(150):
        g = _random_graph(rng, int(rng.integers(1, 30)), chain)
        scratch = {op.index: int(rng.integers(1, 2000)) for op in g.ops if rng.random() < 0.3}
        for in_place in ({}, passes.find_in_place(g)):
            plan = plan_memory(g, in_place=in_place, scratch_bytes=scratch)
            where = f"case {case} ({len(g.ops)} ops, {len(in_place)} in place, order {plan.order})"
            plan.validate(g)
            assert all(off % ALIGN == 0 for off in plan.offsets.values()), where
            assert set(plan.offsets) == {t for op in g.ops for t in op.inputs + op.outputs} | set(g.inputs), where
            assert set(plan.scratch_offsets) == set(scratch), where
            assert [(i, k) for i, k, _ in plan.timeline] == [(op.index, op.kind) for op in g.ops], where
            assert plan.arena_bytes >= plan.peak_live_bytes, where
            ratio = plan.arena_bytes / plan.peak_live_bytes
            worst = max(worst, ratio)
            if chain:
                assert ratio <= 1.25, f"{where}: arena {plan.arena_bytes} vs lower bound {plan.peak_live_bytes}"
    print(f"\n{'chains' if chain else 'DAGs'}: worst arena / peak live bytes {worst:.3f}")


def test_in_place_reuse_never_costs_memory_and_validate_catches_overlaps():
    rng = np.random.default_rng(22)
    saved = 0
    for case in range(60):
        g = _random_graph(rng, int(rng.integers(2, 25)), chain=False)
        plain, shared = plan_memory(g), plan_memory(g, in_place=passes.find_in_place(g))
        assert shared.peak_live_bytes <= plain.peak_live_bytes, f"case {case}"
        saved += plain.arena_bytes - shared.arena_bytes
        # Move one buffer onto another that is alive at the same time: validate must object.
        pairs = [(a, b) for a in plain.buffers for b in plain.buffers
                 if a is not b and a.start <= b.end and b.start <= a.end and a.offset != b.offset]
        if pairs:
            a, b = pairs[0]
            a.offset = b.offset
            with pytest.raises(AssertionError):
                plain.validate()
    assert saved > 0, "in-place reuse saved nothing on 60 random graphs"


def _act(shape, scale, zp):
    return TensorSpec(tuple(shape), scale=scale, zero_point=zp)


def _conv_tensors(rng, in_scale, w_shape, axis=0):
    n_out = w_shape[axis]
    _, _, f_scales, _, _ = random_quant(rng, n_out, int(np.prod(w_shape)) // n_out)
    w = rng.integers(-127, 128, w_shape).astype(np.int8)
    return [TensorSpec(w_shape, scale=f_scales, zero_point=np.zeros(n_out, np.int64), quantized_dimension=axis, data=w),
            TensorSpec((n_out,), np.int32, scale=(in_scale * f_scales).astype(np.float32), zero_point=np.zeros(n_out, np.int64),
                       data=rng.integers(-2000, 2000, n_out).astype(np.int32))]


def test_residual_block():
    """x -> conv -> conv -> add(x, .): the second conv overwrites its input band by band (two 1-row
    bands of 128 bytes), so two 1 KiB tensors are live instead of three."""
    rng = np.random.default_rng(23)
    t = [_act((1, 8, 8, 16), 0.05, -3), *_conv_tensors(rng, 0.05, (16, 3, 3, 16)), _act((1, 8, 8, 16), 0.1, -128),
         *_conv_tensors(rng, 0.1, (16, 3, 3, 16)), _act((1, 8, 8, 16), 0.08, 5), _act((1, 8, 8, 16), 0.1, 0)]
    ops = [OpSpec("CONV_2D", [0, 1, 2], [3], conv2d_options(padding="SAME", activation="RELU")),
           OpSpec("CONV_2D", [3, 4, 5], [6], conv2d_options(padding="SAME")), OpSpec("ADD", [0, 6], [7], add_options("RELU"))]
    model = write_tflite(ModelSpec(t, ops, [0], [7]))
    g = passes.simplify(ir.build_graph(read_tflite(model)))
    in_place = passes.find_in_place(g)
    assert in_place == {1: passes.InPlace(1, 3, 6, extra_bytes=256, band_rows=1),
                        2: passes.InPlace(2, 0, 7)}, "both ADD inputs die there; the first is taken"
    plan = plan_memory(g, in_place=in_place)
    plan.validate(g)
    assert plan.timeline == [(0, "CONV_2D", 2048), (1, "CONV_2D", 2048 + 256), (2, "ADD", 2048)]
    assert plan.arena_bytes == 2048 + 256 and plan.offsets[7] == plan.offsets[0] and plan.offsets[6] == plan.offsets[3]
    no_reuse = plan_memory(g)
    assert no_reuse.timeline[2] == (2, "ADD", 3072) and no_reuse.arena_bytes == 3072


def _digits_like(rng) -> bytes:
    """The digits CNN's shape as onnx2tf exports it: conv, PAD, conv stride 2, conv, MEAN, FULLY_CONNECTED."""
    s = [0.02, 0.05, 0.05, 0.04, 0.03, 0.03, 0.1]
    z = [-128, -128, -128, -128, -128, -128, 7]
    t = [_act((1, 8, 8, 1), s[0], z[0]), *_conv_tensors(rng, s[0], (16, 3, 3, 1)), _act((1, 8, 8, 16), s[1], z[1]),
         TensorSpec((4, 2), np.int32, data=np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32)),
         _act((1, 10, 10, 16), s[2], z[2]), *_conv_tensors(rng, s[2], (32, 3, 3, 16)), _act((1, 4, 4, 32), s[3], z[3]),
         *_conv_tensors(rng, s[3], (32, 3, 3, 32)), _act((1, 4, 4, 32), s[4], z[4]),
         TensorSpec((2,), np.int32, data=np.array([1, 2], np.int32)), _act((1, 32), s[5], z[5]),
         *_conv_tensors(rng, s[5], (10, 32)), _act((1, 10), s[6], z[6])]
    t[5].scale, t[5].zero_point = s[1], z[1]  # PAD keeps its input's quantization
    ops = [OpSpec("CONV_2D", [0, 1, 2], [3], conv2d_options(padding="SAME", activation="RELU"), version=3),
           OpSpec("PAD", [3, 4], [5], pad_options(), version=2),
           OpSpec("CONV_2D", [5, 6, 7], [8], conv2d_options((2, 2), activation="RELU"), version=3),
           OpSpec("CONV_2D", [8, 9, 10], [11], conv2d_options(padding="SAME", activation="RELU"), version=3),
           OpSpec("MEAN", [11, 12], [13], reducer_options(False), version=2),
           OpSpec("FULLY_CONNECTED", [13, 14, 15], [16], fully_connected_options(), version=5)]
    return write_tflite(ModelSpec(t, ops, [0], [16]))


def test_digits_like_chain_needs_less_than_tflite_micro():
    model = _digits_like(np.random.default_rng(24))
    g = passes.simplify(ir.build_graph(read_tflite(model)))
    assert [op.kind for op in g.ops] == ["CONV_2D", "CONV_2D", "CONV_2D", "MEAN", "FULLY_CONNECTED"], "PAD fused"
    plan = plan_memory(g, in_place=passes.find_in_place(g))
    plan.validate(g)
    unfused = plan_memory(ir.build_graph(read_tflite(model)))
    tflm = tflm_arena_report(model)
    assert tflm_runs(model, tflm.minimal_arena) and not tflm_runs(model, tflm.minimal_arena - 16)
    print(f"\nours: arena {plan.arena_bytes} B (without PAD fusion {unfused.arena_bytes} B), timeline {plan.timeline}"
          f"\nTFLite Micro: minimal arena {tflm.minimal_arena} B, planned head {tflm.head_bytes} B, tail {tflm.tail_bytes} B")
    assert plan.arena_bytes < tflm.minimal_arena
    assert plan.arena_bytes <= tflm.head_bytes, "the activation plan alone is no larger than TFLM's head"
    assert plan.arena_bytes == plan.peak_live_bytes == 1024 + 512, "the fused conv: 8x8x16 in, 4x4x32 out"


@pytest.mark.slow
def test_exported_digits_model_plan_vs_tflite_micro(compile_once):
    """The real onnx2tf export of the digits CNN: passes, plan, and TFLM's minimal arena side by side."""
    _, out = compile_once("magnitude80", "--target", "cortex-m7", "--data", "digits", "--sparsity", "0.8")
    model = (out / "model.tflite").read_bytes()
    g = passes.simplify(ir.build_graph(read_tflite(model)))
    assert "PAD" not in [op.kind for op in g.ops], "onnx2tf's explicit PAD is fused into the next conv"
    plan = plan_memory(g, in_place=passes.find_in_place(g))
    plan.validate(g)
    tflm = tflm_arena_report(model)
    print(f"\ndigits export: ours {plan.arena_bytes} B (peak live {plan.peak_live_bytes} B), TFLite Micro minimal arena "
          f"{tflm.minimal_arena} B, head {tflm.head_bytes} B; dead channels "
          f"{ {i: len(d.channels) for i, d in passes.find_dead_channels(g).items()} }")
    assert plan.arena_bytes < tflm.minimal_arena and plan.arena_bytes <= tflm.head_bytes
