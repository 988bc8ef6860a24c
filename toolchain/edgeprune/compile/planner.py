"""Static memory planning: one arena, a fixed 16-byte-aligned offset for every activation buffer.

A buffer is a non-constant tensor together with the tensors that share its memory: aliases left by
passes (a dropped RESHAPE) and in-place outputs (passes.find_in_place). It lives from the step of
its first producer (step 0 for graph inputs) to the step of its last reader (the last step for
graph outputs). Each op's scratch is a buffer alive during that op only, and holds the band buffer
of a conv run in bands (in place, or fused with its residual ADD, whose output then has no buffer
at all: passes.find_residual_adds). Constants stay in flash.

Placement follows TFLM's GreedyMemoryPlanner (take buffers in some order, put each at the lowest
offset where it overlaps nothing placed and alive at the same time) with best-fit gaps, and tries a
handful of orders, keeping the smallest arena. The lower bound is the largest sum of live bytes at
any step (the timeline's peak); on chains the greedy plan reaches it or comes close.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from edgeprune.compile.ir import Graph
from edgeprune.compile.passes import InPlace, ResidualAdd

ALIGN = 16


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Buffer:
    key: str  # "t<root tensor id>" or "scratch<op index>"
    tensors: tuple[int, ...]  # tensor ids stored here (empty for scratch)
    size: int  # bytes, aligned
    start: int  # first step (position in graph.ops) alive
    end: int  # last step alive, inclusive
    offset: int = -1


@dataclass
class MemoryPlan:
    arena_bytes: int
    offsets: dict[int, int]  # tensor id -> byte offset in the arena (every non-constant tensor)
    scratch_offsets: dict[int, int]  # op index -> offset of its scratch buffer
    timeline: list[tuple[int, str, int]]  # (op index, op kind, live bytes during that op)
    buffers: list[Buffer] = field(default_factory=list)
    in_place: dict[int, InPlace] = field(default_factory=dict)  # the in-place reuses the plan applied
    residual_adds: dict[int, ResidualAdd] = field(default_factory=dict)  # convs fused with their ADD (no buffer)
    order: str = ""  # the placement order that won

    @property
    def peak_live_bytes(self) -> int:
        """The lower bound on any arena for these lifetimes (the timeline's peak)."""
        return max((live for _, _, live in self.timeline), default=0)

    def validate(self, graph: Graph | None = None) -> None:
        """Assert no two simultaneously live buffers overlap (and, given the graph, re-derive the
        tensors' lifetimes independently and check them too)."""
        for b in self.buffers:
            assert b.offset % ALIGN == 0 and b.size % ALIGN == 0, f"{b.key} is not {ALIGN}-byte aligned"
            assert 0 <= b.offset and b.offset + b.size <= self.arena_bytes, f"{b.key} lies outside the arena"
        for i, a in enumerate(self.buffers):
            for b in self.buffers[i + 1:]:
                if a.start <= b.end and b.start <= a.end:
                    assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (
                        f"{a.key} [{a.offset}, +{a.size}) steps {a.start}-{a.end} overlaps "
                        f"{b.key} [{b.offset}, +{b.size}) steps {b.start}-{b.end}")
        if graph is not None:
            self._validate_tensors(graph)

    def _validate_tensors(self, graph: Graph) -> None:
        spans = {}  # tensor id -> (start, end, offset, bytes)
        last = len(graph.ops) - 1
        for step, op in enumerate(graph.ops):
            for t in op.inputs + op.outputs:
                if t >= 0 and not graph.tensors[t].is_constant:
                    s, _ = spans.get(t, (0 if t in graph.inputs else step, step))
                    spans[t] = (s, step)
        for t in graph.outputs:
            spans[t] = (spans.get(t, (0, last))[0], last)
        for r in self.residual_adds.values():
            spans.pop(r.conv_output, None)  # never stored: each band goes straight into the ADD
        steps = {op.index: step for step, op in enumerate(graph.ops)}
        shared = {(graph.buffer_of(p.input), graph.buffer_of(p.output)): steps[p.op_index] for p in self.in_place.values()}
        ids = sorted(spans)
        for t in ids:
            assert t in self.offsets, f"tensor {t} has no offset"
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                (sa, ea), (sb, eb) = spans[a], spans[b]
                if not (sa <= eb and sb <= ea) or graph.buffer_of(a) == graph.buffer_of(b):
                    continue
                oa, ob = self.offsets[a], self.offsets[b]
                na, nb = graph.tensors[a].nbytes, graph.tensors[b].nbytes
                if oa + na <= ob or ob + nb <= oa:
                    continue
                ra, rb = graph.buffer_of(a), graph.buffer_of(b)
                step = shared.get((ra, rb), shared.get((rb, ra)))
                assert step is not None and max(sa, sb) == min(ea, eb) == step, (
                    f"tensors {a} and {b} are alive together (steps {sa}-{ea}, {sb}-{eb}) and overlap in the arena")


class _Sets:
    """Union-find over tensor ids: tensors sharing one buffer."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def band_offset(scratch: int) -> int:
    """Where an op's band buffer starts inside its scratch slot: after the kernel's own scratch."""
    return _align(scratch)


def _buffers(graph: Graph, in_place: dict[int, InPlace], scratch_bytes: dict[int, int],
             residual_adds: dict[int, ResidualAdd]) -> list[Buffer]:
    sets = _Sets()
    for t, root in graph.aliases.items():
        sets.union(t, root)
    for p in in_place.values():
        sets.union(p.input, p.output)
    spans: dict[int, list[int]] = {}  # tensor id -> [start, end]
    for step, op in enumerate(graph.ops):
        for t in op.inputs + op.outputs:
            if t >= 0 and not graph.tensors[t].is_constant:
                span = spans.setdefault(t, [0 if t in graph.inputs else step, step])
                span[1] = step
    last = max(len(graph.ops) - 1, 0)
    for t in list(graph.inputs) + list(graph.outputs):
        if not graph.tensors[t].is_constant:
            spans.setdefault(t, [0, last])
    for t in graph.outputs:
        if t in spans:
            spans[t][1] = last
    for r in residual_adds.values():
        del spans[r.conv_output]
    groups: dict[int, list[int]] = {}
    for t in spans:
        groups.setdefault(sets.find(t), []).append(t)
    buffers = []
    for root, members in sorted(groups.items()):
        buffers.append(Buffer(
            f"t{root}", tuple(sorted(members)), _align(max(graph.tensors[t].nbytes for t in members)),
            min(spans[t][0] for t in members), max(spans[t][1] for t in members)))
    step_of = {op.index: step for step, op in enumerate(graph.ops)}
    extra = {p.op_index: p.extra_bytes for p in in_place.values() if p.extra_bytes}
    extra.update({r.conv_index: r.band_bytes for r in residual_adds.values()})
    for index in sorted(set(scratch_bytes) | set(extra)):
        size = band_offset(scratch_bytes.get(index, 0)) + extra.get(index, 0)
        if size > 0:
            step = step_of[index]
            buffers.append(Buffer(f"scratch{index}", (), _align(size), step, step))
    return buffers


def _place(buffers: list[Buffer], order: list[int], cap: int = 0) -> tuple[int, list[int]]:
    """Greedy placement in the given order; returns (arena bytes, offset per buffer).

    cap == 0: best-fit gap from the bottom (TFLM's planner uses first fit). cap > 0: ping-pong for
    chains: a buffer goes to the end opposite to the largest live buffer already placed (as high as
    fits below `cap`, or as low as fits), so an op's input and output sit at opposite ends; one that
    fits nowhere below cap goes on top.
    """
    offsets = [-1] * len(buffers)
    went_high = [False] * len(buffers)
    placed: list[int] = []
    arena = 0
    for i in order:
        b = buffers[i]
        live = [j for j in placed if buffers[j].start <= b.end and b.start <= buffers[j].end]
        busy = sorted((offsets[j], offsets[j] + buffers[j].size) for j in live)
        gaps, cursor = [], 0  # free (lo, hi) ranges between busy ones, then the open top
        for lo, hi in busy:
            if lo - cursor >= b.size:
                gaps.append((cursor, lo))
            cursor = max(cursor, hi)
        if cap and live and not went_high[max(live, key=lambda j: buffers[j].size)]:
            # all sizes and cap are multiples of ALIGN, so hi - size is aligned
            high = [min(hi, cap) - b.size for lo, hi in gaps + [(cursor, cap)] if min(hi, cap) - lo >= b.size]
            offsets[i] = max(high, default=-1)
            went_high[i] = offsets[i] >= 0
        if offsets[i] < 0 and gaps:
            offsets[i] = gaps[0][0] if cap else min(gaps, key=lambda g: (g[1] - g[0], g[0]))[0]
        elif offsets[i] < 0:
            offsets[i] = cursor
        placed.append(i)
        arena = max(arena, offsets[i] + b.size)
    return arena, offsets


def plan_memory(graph: Graph, in_place: dict[int, InPlace] | None = None,
                scratch_bytes: dict[int, int] | None = None, tries: int = 8,
                residual_adds: dict[int, ResidualAdd] | None = None) -> MemoryPlan:
    """Offsets for every activation and scratch buffer of `graph` (after passes.simplify, typically).

    in_place: passes.find_in_place(graph), or None/{} for no in-place reuse. scratch_bytes: op index
    -> bytes of scratch its kernel needs (the ep_*_scratch_size functions). residual_adds:
    passes.find_residual_adds(graph, in_place): those convs' outputs get no buffer, their ADDs write
    over the skip tensor, and the band buffer joins the conv's scratch (after band_offset(scratch)).
    """
    in_place = dict(in_place or {})
    residual_adds = dict(residual_adds or {})
    for r in residual_adds.values():
        in_place[r.add_index] = InPlace(r.add_index, r.skip, r.add_output)
    buffers = _buffers(graph, in_place, dict(scratch_bytes or {}), residual_adds)
    n = len(buffers)
    orders = {
        "size": sorted(range(n), key=lambda i: (-buffers[i].size, buffers[i].start)),
        "lifetime": sorted(range(n), key=lambda i: (-(buffers[i].end - buffers[i].start), -buffers[i].size)),
        "area": sorted(range(n), key=lambda i: (-buffers[i].size * (buffers[i].end - buffers[i].start + 1), i)),
        "start": sorted(range(n), key=lambda i: (buffers[i].start, -buffers[i].size)),
    }
    rng = random.Random(0)
    for k in range(tries):  # size order with random tie-breaks and swaps of near-equal sizes
        keyed = sorted(range(n), key=lambda i: (-buffers[i].size * rng.uniform(0.8, 1.25), rng.random()))
        orders[f"shuffle{k}"] = keyed
    best = None
    for name, order in orders.items():
        arena, offsets = _place(buffers, order)
        if best is None or arena < best[0]:
            best = (arena, offsets, name)
    lower = max((sum(b.size for b in buffers if b.start <= step <= b.end) for step in range(len(graph.ops))), default=0)
    if best is not None and best[0] > lower:
        arena, offsets = _place(buffers, orders["start"], cap=lower)
        if arena < best[0]:
            best = (arena, offsets, "pingpong")
    arena, offsets, name = best if best else (0, [], "")
    for b, off in zip(buffers, offsets):
        b.offset = off
    tensor_offsets = {t: b.offset for b in buffers for t in b.tensors}
    scratch = {int(b.key[len("scratch"):]): b.offset for b in buffers if b.key.startswith("scratch")}
    timeline = [(op.index, op.kind, sum(b.size for b in buffers if b.start <= step <= b.end))
                for step, op in enumerate(graph.ops)]
    return MemoryPlan(arena, tensor_offsets, scratch, timeline, buffers, in_place, residual_adds, name)
