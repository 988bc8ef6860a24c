"""Kernel benchmark: exact instruction counts of our int8 kernels on five reference layers under QEMU.

For each layer, weight sparsity, target backend and weight format (dense, and the sparse formats
of kernels_c/include/ep_sparse_s8.h), this generates a C program with the layer's data as const
arrays, runs one kernel call per sparsity between marker functions (firmware/markers.c), checks
each output equals our dense portable kernel's (computed on the host), and records the exact
number of instructions executed. QEMU has no cycle model: instruction counts are the measure.

    make bench-kernels                       # everything; writes bench/results/kernels.json
    .venv/bin/python bench/kernels/run.py --layers a,d --targets cortex-m7 --quick

Weights: int8 from a normal distribution, pruned in the pattern each format is made for, as the
front half's pruning methods produce it, nested across sparsities (ties broken by a fixed-seed draw):
- dense and unstructured: magnitude pruning (the smallest |w| zeroed);
- block4: whole 1x4 blocks with the smallest L1 norm (4 consecutive weights of an output channel's
  (kh, kw, I) row; for depthwise, 4 adjacent channels at one tap);
- nm24: 2:4 along input channels (magnitude), then further by magnitude to the target sparsity;
  skipped below 50% and for layers whose input channels are not a multiple of 4;
- dead: whole output channels with the smallest L1 norm (round(sparsity * channels) of them).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # kernels_support: host kernel library and ctypes structs

from edgeprune.compile import quant as Q  # noqa: E402
from edgeprune.device.build import backend_build, build_program  # noqa: E402
from edgeprune.device.qemu import DEFAULT_MARKERS, run_arm64, run_cortex_m  # noqa: E402
from edgeprune.errors import EdgepruneError  # noqa: E402

SPARSITIES = (0.0, 0.5, 0.7, 0.9, 0.95)
QUICK_SPARSITIES = (0.0, 0.9)
BACKENDS = {"cortex-m7": ("portable", "dsp"), "arm64": ("portable", "neon", "neon_dot")}
ARM64_CPU = "cortex-a76"
DEFAULT_OUT = REPO / "bench" / "results" / "kernels.json"
WORK = REPO / "build" / "bench-kernels"

# Reference rates, MACs per instruction on layers a..e: CMSIS-NN at -O2 on Cortex-M7 under QEMU,
# and LiteRT's XNNPACK (dotprod) under qemu-aarch64 -cpu cortex-a76.
REFERENCE = {
    "cortex-m7": ("CMSIS-NN", dict(zip("abcde", (0.426, 0.487, 0.128, 0.482, 0.158)))),
    "arm64": ("XNNPACK", dict(zip("abcde", (8.49, 8.07, 1.15, 3.05, 1.50)))),
}


@dataclass(frozen=True)
class Layer:
    name: str
    op: str  # conv, depthwise, fc
    description: str
    in_shape: tuple[int, ...]  # NHWC, or (batches, in_features) for fc
    w_shape: tuple[int, ...]  # TFLite layout
    stride: int = 1
    padding: str = "SAME"

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.op == "fc":
            return (self.in_shape[0], self.w_shape[0])
        n, h, w, _ = self.in_shape
        k_h, k_w = self.w_shape[1:3]
        out_c = self.w_shape[3] if self.op == "depthwise" else self.w_shape[0]
        return (n, Q.conv_output_size(h, k_h, self.stride, 1, self.padding),
                Q.conv_output_size(w, k_w, self.stride, 1, self.padding), out_c)

    @property
    def pads(self) -> tuple[int, int]:
        _, h, w, _ = self.in_shape
        k_h, k_w = self.w_shape[1:3]
        _, out_h, out_w, _ = self.out_shape
        return (Q.conv_padding(h, k_h, self.stride, 1, out_h, self.padding),
                Q.conv_padding(w, k_w, self.stride, 1, out_w, self.padding))

    @property
    def macs(self) -> int:
        """Dense multiply-accumulates: every weight once per output position."""
        if self.op == "fc":
            return self.in_shape[0] * self.w_shape[0] * self.w_shape[1]
        n, out_h, out_w, out_c = self.out_shape
        k = self.w_shape[1] * self.w_shape[2] * (1 if self.op == "depthwise" else self.w_shape[3])
        return n * out_h * out_w * out_c * k

    @property
    def layout(self) -> str:
        return {"conv": "conv", "depthwise": "depthwise", "fc": "fc"}[self.op]

    @property
    def out_channels(self) -> int:
        return self.out_shape[-1]

    @property
    def fan_in(self) -> int:
        if self.op == "fc":
            return self.w_shape[1]
        return self.w_shape[1] * self.w_shape[2] * (1 if self.op == "depthwise" else self.w_shape[3])


LAYERS = {
    layer.name: layer
    for layer in [
        Layer("a", "conv", "conv 3x3 s1 SAME 16->16 @32x32", (1, 32, 32, 16), (16, 3, 3, 16)),
        Layer("b", "conv", "conv 1x1 64->64 @25x5", (1, 25, 5, 64), (64, 1, 1, 64)),
        Layer("c", "depthwise", "depthwise 3x3 s1 SAME 64ch @25x5", (1, 25, 5, 64), (1, 3, 3, 64)),
        Layer("d", "fc", "fully connected 256->128", (1, 256), (128, 256)),
        Layer("e", "conv", "conv 3x3 s2 SAME 3->8 @96x96", (1, 96, 96, 3), (8, 3, 3, 3), stride=2),
    ]
}


# ---------------------------------------------------------------- layer data


@dataclass
class LayerData:
    layer: Layer
    x: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    quant: tuple[int, int, int, int]  # input_offset, output_offset, activation_min, activation_max
    base_weights: np.ndarray
    order: np.ndarray  # weight indices, smallest magnitude first (the pruning order)


def layer_data(layer: Layer, seed: int = 0) -> LayerData:
    from kernels_support import random_quant

    rng = np.random.default_rng([seed, ord(layer.name)])
    in_scale, in_zp, f_scales, out_scale, out_zp = random_quant(rng, layer.out_channels, layer.fan_in)
    mult, shift = Q.per_channel_multipliers(in_scale, f_scales, out_scale)
    lo, hi = Q.activation_range("NONE", np.float32(out_scale), out_zp)
    w = np.clip(np.rint(rng.normal(0, 40, layer.w_shape)), -127, 127).astype(np.int8)
    order = np.argsort(np.abs(w.astype(np.int32)).reshape(-1) + rng.random(w.size) * 0.5, kind="stable")
    return LayerData(layer, rng.integers(-128, 128, layer.in_shape).astype(np.int8),
                     rng.integers(-3000, 3000, layer.out_channels).astype(np.int32), mult, shift,
                     (-in_zp, out_zp, lo, hi), w, order)


def pruned_weights(data: LayerData, sparsity: float, fmt: str) -> np.ndarray | None:
    """The layer's weights at `sparsity` for a format (None where the format cannot hold them)."""
    w = data.base_weights.copy()
    flat = w.reshape(-1)
    if fmt == "block4":
        return _prune_groups(w, sparsity, groups_of_4=True, depthwise=data.layer.op == "depthwise")
    if fmt == "dead":
        return _prune_groups(w, sparsity, groups_of_4=False, depthwise=data.layer.op == "depthwise")
    if fmt != "nm24":
        flat[data.order[: int(round(sparsity * w.size))]] = 0
        return w
    if sparsity < 0.5 or data.layer.op == "depthwise" or w.shape[-1] % 4:
        return None
    # 2:4 along input channels: the two smallest of each group of 4 go, then magnitude to target.
    rank = np.empty(w.size, np.int64)
    rank[data.order] = np.arange(w.size)
    groups = rank.reshape(-1, 4)
    drop = np.argsort(groups, axis=1)[:, :2]
    g = flat.reshape(-1, 4)
    np.put_along_axis(g, drop, 0, axis=1)
    extra = int(round(sparsity * w.size)) - int(np.count_nonzero(flat == 0))
    if extra > 0:
        alive = data.order[flat[data.order] != 0]
        flat[alive[:extra]] = 0
    return w


def _prune_groups(w: np.ndarray, sparsity: float, groups_of_4: bool, depthwise: bool) -> np.ndarray:
    """Zero whole groups with the smallest L1 norm: 1x4 blocks, or output channels."""
    if depthwise:  # (1, kh, kw, C): channels are the rows, taps the columns
        rows = w.reshape(-1, w.shape[-1]).T.copy()
    else:  # (O, kh, kw, I) or (O, I)
        rows = w.reshape(w.shape[0], -1).copy()
    if groups_of_4:
        if depthwise:  # 4 adjacent channels at one tap
            cols = rows.T.reshape(rows.shape[1], -1, 4)  # (taps, C/4, 4)
            norms = np.abs(cols.astype(np.int32)).sum(axis=2)
        else:
            pad = (-rows.shape[1]) % 4
            cols = np.pad(rows, ((0, 0), (0, pad))).reshape(rows.shape[0], -1, 4)
            norms = np.abs(cols.astype(np.int32)).sum(axis=2)
    else:
        norms = np.abs(rows.astype(np.int32)).sum(axis=1)
    rng = np.random.default_rng(1)
    order = np.argsort(norms.reshape(-1) + rng.random(norms.size) * 0.5, kind="stable")
    dead = np.zeros(norms.size, bool)
    dead[order[: int(round(sparsity * norms.size))]] = True
    dead = dead.reshape(norms.shape)
    if not groups_of_4:
        rows[dead] = 0
    elif depthwise:
        cols[dead] = 0
        rows = cols.reshape(rows.shape[1], -1).T
    else:
        cols[dead] = 0
        rows = cols.reshape(rows.shape[0], -1)[:, : rows.shape[1]]
    if depthwise:
        return np.ascontiguousarray(rows.T).reshape(w.shape)
    return np.ascontiguousarray(rows).reshape(w.shape)


_HOST_LIB = None


def host_library():
    global _HOST_LIB
    if _HOST_LIB is None:
        from kernels_support import build_kernel_lib

        WORK.mkdir(parents=True, exist_ok=True)
        path = WORK / f"host-libep-{os.getpid()}.so"
        _HOST_LIB = build_kernel_lib(path)
        path.unlink()  # stays mapped while loaded
    return _HOST_LIB


def expected_output(data: LayerData, w: np.ndarray) -> np.ndarray:
    """Our dense portable kernel's output, computed on the host."""
    from kernels_support import ConvParams, Dims, Quant, ptr

    lib, layer = host_library(), data.layer
    i8, i32 = ctypes.c_int8, ctypes.c_int32
    q = Quant(*data.quant, ptr(data.multiplier, i32), ptr(data.shift, i32))
    out = np.zeros(layer.out_shape, np.int8)
    if layer.op == "fc":
        lib.ep_fully_connected_s8_portable(ctypes.byref(q), layer.in_shape[0], layer.w_shape[1], layer.w_shape[0],
                                           ptr(data.x, i8), ptr(w, i8), ptr(data.bias, i32), ptr(out, i8), None)
        return out
    params = ConvParams(layer.stride, layer.stride, 1, 1, *layer.pads)
    dims = [Dims(*layer.in_shape), Dims(*layer.w_shape), Dims(*layer.out_shape)]
    args = (ctypes.byref(dims[0]), ptr(data.x, i8), ctypes.byref(dims[1]), ptr(w, i8), ptr(data.bias, i32),
            ctypes.byref(dims[2]), ptr(out, i8), None)
    if layer.op == "depthwise":
        lib.ep_depthwise_conv2d_s8_portable(ctypes.byref(params), 1, ctypes.byref(q), *args)
    else:
        lib.ep_conv2d_s8_portable(ctypes.byref(params), ctypes.byref(q), *args)
    return out


# ---------------------------------------------------------------- C program


def _c_array(decl: str, values, suffix: str = "") -> str:
    vals = [f"{v}{suffix}" for v in np.asarray(values).reshape(-1).tolist()]
    lines = [", ".join(vals[i:i + 24]) for i in range(0, len(vals), 24)]
    return f"{decl} = {{\n    " + ",\n    ".join(lines) + "\n};\n"


def program_source(data: LayerData, fmt: str, runs: list[tuple[float, np.ndarray, np.ndarray]]) -> str:
    """A C program running the layer once per (sparsity, weights, expected) between the markers."""
    from edgeprune.sparse import encode

    layer = data.layer
    out = [
        f"/* Generated by bench/kernels/run.py: layer {layer.name} ({layer.description}), format {fmt}. */",
        "#include <stdint.h>", "#include <stdio.h>", "#include <stdlib.h>", "#include <string.h>", "",
        '#include "ep_kernels.h"', '#include "markers.h"', "",
        _c_array(f"static const int8_t input[{data.x.size}]", data.x),
        _c_array(f"static const int32_t multiplier[{layer.out_channels}]", data.multiplier),
        _c_array(f"static const int32_t shift[{layer.out_channels}]", data.shift),
    ]
    if fmt == "dense":
        out.append(_c_array(f"static const int32_t bias[{layer.out_channels}]", data.bias))
    entries = []
    for k, (_, w, expected) in enumerate(runs):
        if fmt == "dense":
            out.append(_c_array(f"static const int8_t weights_{k}[{w.size}]", w))
            size = w.size
        else:
            blob = encode(fmt, w, data.bias, data.quant[0], layer.layout).blob
            words = np.frombuffer(blob, "<u4")
            out.append(_c_array(f"static const uint32_t weights_{k}[{words.size}]", words, "u"))
            size = len(blob)
        out.append(_c_array(f"static const int8_t expected_{k}[{expected.size}]", expected))
        entries.append(f"{{weights_{k}, {size}, expected_{k}}}")
    n_out = int(np.prod(layer.out_shape))
    out += [
        f"static int8_t output[{n_out}];", "",
        "static const struct { const void *weights; int32_t size; const int8_t *expected; } runs[] = {",
        "    " + ",\n    ".join(entries), "};", "",
        "int main(void)", "{",
        "    const ep_quant_t q = {%d, %d, %d, %d, multiplier, shift};" % data.quant,
    ]
    if layer.op == "fc":
        b, n_in, n_o = layer.in_shape[0], layer.w_shape[1], layer.w_shape[0]
        scratch = (f"ep_fully_connected_s8_scratch_size({b}, {n_in}, {n_o})" if fmt == "dense"
                   else f"ep_fully_connected_s8_sparse_scratch_size(&view, {b})")
        call = (f"ep_fully_connected_s8(&q, {b}, {n_in}, {n_o}, input, runs[i].weights, bias, output, scratch)"
                if fmt == "dense" else f"ep_fully_connected_s8_sparse(&q, {b}, input, &view, output, scratch)")
    else:
        out += [
            "    const ep_dims_t in_d = {%d, %d, %d, %d};" % layer.in_shape,
            "    const ep_dims_t f_d = {%d, %d, %d, %d};" % layer.w_shape,
            "    const ep_dims_t out_d = {%d, %d, %d, %d};" % layer.out_shape,
            "    const ep_conv_params_t cp = {%d, %d, 1, 1, %d, %d};" % (layer.stride, layer.stride, *layer.pads),
        ]
        op = "depthwise_conv2d" if layer.op == "depthwise" else "conv2d"
        mult = "1, " if layer.op == "depthwise" else ""
        if fmt == "dense":
            scratch = f"ep_{op}_s8_scratch_size(&in_d, &f_d, &out_d)"
            call = f"ep_{op}_s8(&cp, {mult}&q, &in_d, input, &f_d, runs[i].weights, bias, &out_d, output, scratch)"
        else:
            scratch = f"ep_{op}_s8_sparse_scratch_size(&view, &in_d, &f_d, &out_d)"
            call = f"ep_{op}_s8_sparse(&cp, {mult}&q, &in_d, input, &f_d, &view, &out_d, output, scratch)"
    out += [
        "    int failed = 0;",
        "    for (int i = 0; i < (int)(sizeof runs / sizeof runs[0]); ++i) {",
    ]
    if fmt != "dense":
        out += [
            "        ep_sparse_s8_t view;",
            "        if (ep_sparse_s8_view(runs[i].weights, runs[i].size, &view) < 0) {",
            '            printf("run %d: malformed sparse blob\\n", i);',
            "            return 2;",
            "        }",
        ]
    out += [
        f"        const int32_t scratch_bytes = {scratch};",
        "        void *scratch = scratch_bytes > 0 ? malloc((size_t)scratch_bytes) : NULL;",
        "        if (scratch_bytes > 0 && !scratch) {",
        '            printf("run %d: no memory for %ld bytes of scratch\\n", i, (long)scratch_bytes);',
        "            return 2;",
        "        }",
        "        memset(output, 0, sizeof output);",
        "        ep_region_begin();",
        f"        {call};",
        "        ep_region_end();",
        "        if (memcmp(output, runs[i].expected, sizeof output) != 0) {",
        '            printf("MISMATCH run %d\\n", i);',
        "            failed = 1;",
        "        }",
        "        free(scratch);",
        "    }",
        '    printf("%s\\n", failed ? "FAIL" : "PASS");',
        "    return failed;",
        "}",
    ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- running


def formats_available() -> list[str]:
    try:
        from edgeprune.sparse import FORMATS
    except ImportError:
        return ["dense"]
    return ["dense", *FORMATS]


def bench_program(layer: Layer, target: str, backend: str, fmt: str, sparsities, work: Path = WORK,
                  data: LayerData | None = None) -> list[dict]:
    """Build and run one program (all sparsities of one layer, target, backend and format)."""
    data = data or layer_data(layer)
    runs = []
    for s in sparsities:
        w = pruned_weights(data, s, fmt)
        if w is None:
            continue
        if fmt != "dense":
            from edgeprune.sparse import encode

            try:
                encode(fmt, w, data.bias, data.quant[0], layer.layout)
            except ValueError:
                continue  # these weights do not fit the format
        runs.append((s, w, expected_output(data, w)))
    if not runs:
        return []
    build, defines = backend_build(target, backend)
    d = work / f"{target}-{backend}"
    d.mkdir(parents=True, exist_ok=True)
    src = d / f"layer_{layer.name}_{fmt}.c"
    src.write_text(program_source(data, fmt, runs))
    exe = build_program(build, [src], d / f"layer_{layer.name}_{fmt}.elf", defines=defines)
    if build.bare_metal:
        result = run_cortex_m(exe, build.machine, timeout=900, count_between=DEFAULT_MARKERS)
    else:
        result = run_arm64(exe, cpu=ARM64_CPU, timeout=900, count_between=DEFAULT_MARKERS)
    where = f"layer {layer.name} {target}/{backend} {fmt}"
    if result.exit_code != 0 or "PASS" not in result.stdout:
        raise EdgepruneError(f"{where}: exit {result.exit_code}: {(result.stdout + result.stderr).strip()[-300:]}")
    if len(result.regions) != len(runs):
        raise EdgepruneError(f"{where}: expected {len(runs)} counted regions, got {len(result.regions)}")
    return [dict(layer=layer.name, target=target, backend=backend, format=fmt, sparsity=float(s), macs=layer.macs,
                 instructions=int(n)) for (s, _, _), n in zip(runs, result.regions)]


def write_json_atomic(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(records, indent=1) + "\n")
    os.replace(tmp, path)


def format_table(records: list[dict]) -> str:
    dense = {(r["layer"], r["target"], r["backend"], r["sparsity"]): r["instructions"]
             for r in records if r["format"] == "dense"}
    head = (f"{'layer':5} {'target':9} {'backend':8} {'format':12} {'sparsity':>8} {'MACs':>9} {'instructions':>12} "
            f"{'MACs/inst':>9} {'inst/dense':>10} {'ref':>8} {'ref MACs/inst':>13} {'speed/ref':>9}")
    lines = [head, "-" * len(head)]

    def key(r):
        backends = BACKENDS.get(r["target"], ())
        rank = backends.index(r["backend"]) if r["backend"] in backends else len(backends)
        return r["layer"], r["target"], rank, r["format"] != "dense", r["format"], r["sparsity"]

    for r in sorted(records, key=key):
        rate = r["macs"] / r["instructions"]
        d = dense.get((r["layer"], r["target"], r["backend"], r["sparsity"]))
        ref_name, refs = REFERENCE.get(r["target"], ("", {}))
        ref = refs.get(r["layer"])
        ratio = f"{r['instructions'] / d:.3f}" if d else "-"
        ref_rate, speed = (f"{ref:.3f}", f"{rate / ref:.2f}x") if ref else ("-", "-")
        lines.append(
            f"{r['layer']:5} {r['target']:9} {r['backend']:8} {r['format']:12} {r['sparsity']:8.2f} {r['macs']:9d} "
            f"{r['instructions']:12d} {rate:9.3f} {ratio:>10} {ref_name:>8} {ref_rate:>13} {speed:>9}")
    return "\n".join(lines)


def _csv(value: str, allowed, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise SystemExit(f"error: unknown {what} {', '.join(bad)}; choose from {', '.join(allowed)}")
    return items


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", default="abcde", help="layers to run, e.g. a,d (default: all of a..e)")
    p.add_argument("--targets", default="cortex-m7,arm64", help="cortex-m7 and/or arm64")
    p.add_argument("--backends", default=None, help="restrict to these backends (default: all of each target)")
    p.add_argument("--formats", default=None, help="dense and/or sparse formats (default: all available)")
    p.add_argument("--sparsities", default=None, help="comma-separated weight sparsities (default: 0,0.5,0.7,0.9,0.95)")
    p.add_argument("--quick", action="store_true", help=f"sparsities {', '.join(map(str, QUICK_SPARSITIES))} only")
    p.add_argument("--jobs", type=int, default=2, help="programs built and run at once (default 2)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON (default bench/results/kernels.json)")
    p.add_argument("--work", type=Path, default=WORK, help="generated programs (default build/bench-kernels)")
    a = p.parse_args(argv)

    layers = _csv(a.layers if "," in a.layers else ",".join(a.layers), LAYERS, "layer")
    targets = _csv(a.targets, BACKENDS, "target")
    all_formats = formats_available()
    formats = _csv(a.formats, all_formats, "format") if a.formats else all_formats
    sparsities = ([float(s) for s in a.sparsities.split(",")] if a.sparsities
                  else list(QUICK_SPARSITIES if a.quick else SPARSITIES))
    jobs = [(LAYERS[l], t, b, f) for l in layers for t in targets for b in BACKENDS[t] for f in formats
            if a.backends is None or b in a.backends.split(",")]
    if not jobs:
        raise SystemExit("error: nothing to run with these options")

    datas = {l: layer_data(LAYERS[l]) for l in layers}
    host_library()
    records: list[dict] = []
    start = time.monotonic()
    done = 0

    def one(job):
        layer, t, b, f = job
        t0 = time.monotonic()
        recs = bench_program(layer, t, b, f, sparsities, work=a.work, data=datas[layer.name])
        return job, recs, time.monotonic() - t0

    print(f"kernel bench: {len(jobs)} programs, sparsities {sparsities}", file=sys.stderr)
    try:
        with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
            for (layer, t, b, f), recs, secs in pool.map(one, jobs):
                done += 1
                records += recs
                note = f"{len(recs)} runs" if recs else "format does not apply"
                print(f"[{done:3d}/{len(jobs)}] layer {layer.name} {t:9} {b:8} {f:12} {note:22} {secs:5.1f} s "
                      f"({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)
    except EdgepruneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_json_atomic(a.out, records)
    print(format_table(records))
    print(f"\n{len(records)} records written to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
