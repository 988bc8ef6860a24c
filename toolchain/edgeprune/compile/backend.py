"""The compiler's back half: int8 .tflite -> planned, generated, validated and size-checked C.

    report = compile_tflite(tflite_bytes, get_target("cortex-m7"), "build/", format="auto", eval_inputs=x)

Steps (build_backend): read and check the model (one-line errors), simplify, choose a weight format
per layer (formats.py), size each layer's scratch, plan the arena, generate model.c/model.h, then
- host validation: build the generated C with the host gcc (portable kernels) and run it on the
  evaluation inputs; every output must equal TFLite Micro's Python interpreter bit for bit;
- fit check: build it for the target with its cross compiler at -O2 (unused code dropped with
  --gc-sections), flash = .text + .rodata + .data, SRAM = .data + .bss (the arena and tables) +
  STACK_ESTIMATE_BYTES; compare with the target profile.
Either failure raises a one-line EdgepruneError and nothing is written.

Scratch sizes come from the kernels themselves: kernels_c is built once for the host into a cached
shared library (with EP_DSP_EMULATE, so the Cortex-M DSP variants' size functions exist too) and
each layer's ep_*_scratch_size is called through ctypes: the portable, DSP and MVE sizes exactly
(the MVE size functions are plain arithmetic, built on every target). For arm64 targets a small
probe built with the target's flags runs in qemu-aarch64 and reports the NEON sizes. ep_model_init
still checks every size on the device and reports EP_MODEL_ERROR_SCRATCH should one ever differ.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.compile import codegen, formats as F
from edgeprune.compile.ir import Graph, build_graph
from edgeprune.compile.passes import find_in_place, find_residual_adds, simplify
from edgeprune.compile.planner import plan_memory
from edgeprune.compile.tflite_reader import read_tflite
from edgeprune.device import build as device_build
from edgeprune.errors import EdgepruneError, UsageError, first_line

KERNELS = Path(__file__).resolve().parents[3] / "kernels_c"
STACK_ESTIMATE_BYTES = 2048  # ep_model_invoke plus the deepest kernel frame, with margin (-fstack-usage: < 300 B)
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")
EVAL_SAMPLES = 32  # random inputs when no evaluation data fits
MAX_EVAL_SAMPLES = 256  # evaluation data: up to this many samples
CROSS = {"dsp": "arm-none-eabi-gcc", "mve": "arm-none-eabi-gcc", "neon": "aarch64-linux-gnu-gcc",
         "neon_dot": "aarch64-linux-gnu-gcc", "portable": "gcc"}


@dataclass
class Validation:
    bitexact: bool
    samples: int
    oracle: str = "tflite-micro"
    inputs: str = "random"  # "eval data" or "random (seed 0)"


@dataclass
class Memory:
    flash_bytes: int
    weights_bytes: int
    code_bytes: int
    sram_peak_bytes: int
    arena_bytes: int


@dataclass
class BackendLayer:
    index: int  # operator index in the .tflite
    name: str
    op: str
    format: str
    weight_bytes: int
    instructions_estimate: int
    scratch_bytes: int


@dataclass
class BackendReport:
    memory: Memory
    validation: Validation
    layers: list[BackendLayer]
    timings_s: dict[str, float]
    files: dict[str, str] = field(default_factory=dict, repr=False)  # generated text files by name
    plan_order: str = ""
    memory_plan: dict = field(default_factory=dict)  # plan_summary(): timeline and reuses

    def to_dict(self) -> dict:
        return {"memory": asdict(self.memory), "validation": asdict(self.validation),
                "layers": [asdict(l) for l in self.layers], "timings_s": dict(self.timings_s),
                "memory_plan": self.memory_plan}

    def layer_fields(self) -> dict[int, dict]:
        """op index -> the per-layer report fields of weighted layers."""
        return {l.index: {"format": l.format, "weight_bytes": l.weight_bytes,
                          "instructions_estimate": l.instructions_estimate}
                for l in self.layers if l.format != "-"}

    def write_into(self, folder: Path) -> None:
        """model.c/.h, CMakeLists.txt, model.mk and the kernels they need (kernels/) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in self.files.items():
            (folder / name).write_text(text)
        copy_kernels(folder / "kernels")
        if self.memory_plan:
            from edgeprune.report import plot_memory_timeline

            plot_memory_timeline(self.memory_plan, folder / "memory.png")


# ---------------------------------------------------------------------------------------------
# kernels_c sources, cached builds


def kernel_sources() -> list[Path]:
    """The inference kernels (the float training kernels are not needed by generated models)."""
    return [p for p in device_build.kernel_sources() if not p.name.startswith("train_")]


def _cache_dir() -> Path:
    """Compiled kernel objects, next to the kernels_c they come from (EDGEPRUNE_CACHE overrides)."""
    return Path(os.environ.get("EDGEPRUNE_CACHE") or KERNELS.parent / "build" / "compile-cache")


def kernel_objects(cc: str, flags: tuple[str, ...]) -> list[Path]:
    """kernels_c's inference kernels compiled with cc and flags, cached (device.build.cached_objects)."""
    all_flags = (*CFLAGS, *flags, "-ffunction-sections", "-fdata-sections", "-I", str(KERNELS / "include"))
    return device_build.cached_objects(cc, all_flags, kernel_sources(), _cache_dir() / Path(cc).name,
                                       device_build.kernel_headers())


def _ensure(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(cmd, capture_output=True, **kw)
    except FileNotFoundError:
        raise EdgepruneError(f"{what}: {cmd[0]} not found (run `make setup`)") from None
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip().splitlines()
        first = next((l for l in err if "error" in l), err[0] if err else f"exit code {r.returncode}")
        raise EdgepruneError(f"{what} failed: {first[:300]}")
    return r


_SCRATCH_LIB: dict[str, ctypes.CDLL] = {}


def scratch_library() -> ctypes.CDLL:
    """kernels_c as a host shared library with the DSP variants emulated, for the scratch size functions."""
    flags = ("-fPIC", "-DEP_DSP_EMULATE")
    objs = kernel_objects("gcc", flags)
    key = hashlib.sha256("".join(o.name for o in objs).encode()).hexdigest()[:16]
    if key not in _SCRATCH_LIB:
        path = _cache_dir() / f"libep-scratch-{key}.so"  # the objects' names carry their sources, headers and flags
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            _run(["gcc", "-shared", *map(str, objs), "-lm", "-o", str(tmp)], "linking the kernels library")
            os.replace(tmp, path)
        _SCRATCH_LIB[key] = ctypes.CDLL(str(path))
    return _SCRATCH_LIB[key]


class _Dims(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("n", "h", "w", "c")]


class _Sparse(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("format", "kind", "rows", "cols", "input_offset", "n_live", "n_count",
                                              "n_index", "n_values")] + [(n, ctypes.c_void_p) for n in (
                                                  "bias", "live", "count", "index", "values")]


def scratch_sizes(graph: Graph, layer_formats: dict, backend: str, lib: ctypes.CDLL | None = None) -> dict[int, int]:
    """op index -> scratch bytes for each weighted layer: the largest the host-callable variants ask for
    (portable, DSP for Cortex-M targets, MVE too for the M55), from the kernels' own ep_*_scratch_size functions."""
    lib = lib or scratch_library()
    i32 = ctypes.c_int32
    out = {}
    for op in graph.ops:
        lf = layer_formats.get(op.index)
        if lf is None:
            continue
        inp, w, o = (graph.tensors[t] for t in (op.inputs[0], op.inputs[1], op.outputs[0]))
        sizes = []
        if lf.encoded is not None:
            blob = ctypes.create_string_buffer(lf.encoded.blob, len(lf.encoded.blob))
            view = _Sparse()
            if lib.ep_sparse_s8_view(blob, i32(len(lf.encoded.blob)), ctypes.byref(view)) < 0:
                raise EdgepruneError(f"layer {op.index}: the {lf.format} encoder wrote a blob the kernels reject")
            if op.kind == "FULLY_CONNECTED":
                sizes.append(lib.ep_fully_connected_s8_sparse_scratch_size(ctypes.byref(view), i32(inp.size // w.shape[1])))
            else:
                fn = "ep_conv2d_s8" if op.kind == "CONV_2D" else "ep_depthwise_conv2d_s8"
                d = [_Dims(*codegen.Q.dims4(s)) for s in (inp.shape, w.shape, o.shape)]
                sizes.append(getattr(lib, fn + "_sparse_scratch_size")(ctypes.byref(view), *map(ctypes.byref, d)))
        else:
            suffixes = {"dsp": ["", "_dsp"], "mve": ["", "_dsp", "_mve"]}.get(backend, [""])
            for sfx in suffixes:
                if op.kind == "FULLY_CONNECTED":
                    f = getattr(lib, "ep_fully_connected_s8_scratch_size" + sfx)
                    sizes.append(f(i32(inp.size // w.shape[1]), i32(w.shape[1]), i32(w.shape[0])))
                else:
                    fn = "ep_conv2d_s8" if op.kind == "CONV_2D" else "ep_depthwise_conv2d_s8"
                    d = [_Dims(*codegen.Q.dims4(s)) for s in (inp.shape, w.shape, o.shape)]
                    sizes.append(getattr(lib, fn + "_scratch_size" + sfx)(*map(ctypes.byref, d)))
        out[op.index] = max(0, *sizes)
    return out


PROBE_C = r"""/* Scratch sizes of this build's kernels, one line per query on stdin:
 *   conv|dwconv n h w c  n h w c  n h w c  BLOB|-      (input, filter, output dims)
 *   fc batches in out BLOB|-
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ep_kernels.h"

static int load(const char *path, ep_sparse_s8_t *w, void **mem)
{
    FILE *f = fopen(path, "rb");
    long n;
    if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET) != 0) return -1;
    *mem = aligned_alloc(16, ((size_t)n + 15) / 16 * 16);
    if (!*mem || fread(*mem, 1, (size_t)n, f) != (size_t)n) return -1;
    fclose(f);
    return ep_sparse_s8_view(*mem, (int32_t)n, w) < 0 ? -1 : 0;
}

int main(void)
{
    char kind[16], blob[4096];
    while (scanf("%15s", kind) == 1) {
        ep_sparse_s8_t w;
        void *mem = NULL;
        long size;
        if (strcmp(kind, "fc") == 0) {
            int b, i, o;
            if (scanf("%d %d %d %4095s", &b, &i, &o, blob) != 4) return 1;
            if (strcmp(blob, "-") == 0) {
                size = ep_fully_connected_s8_scratch_size(b, i, o);
            } else {
                if (load(blob, &w, &mem) != 0) return 1;
                size = ep_fully_connected_s8_sparse_scratch_size(&w, b);
            }
        } else {
            ep_dims_t d[3];
            for (int k = 0; k < 3; ++k) {
                if (scanf("%d %d %d %d", &d[k].n, &d[k].h, &d[k].w, &d[k].c) != 4) return 1;
            }
            if (scanf("%4095s", blob) != 1) return 1;
            const int conv = strcmp(kind, "conv") == 0;
            if (strcmp(blob, "-") == 0) {
                size = conv ? ep_conv2d_s8_scratch_size(&d[0], &d[1], &d[2])
                            : ep_depthwise_conv2d_s8_scratch_size(&d[0], &d[1], &d[2]);
            } else {
                if (load(blob, &w, &mem) != 0) return 1;
                size = conv ? ep_conv2d_s8_sparse_scratch_size(&w, &d[0], &d[1], &d[2])
                            : ep_depthwise_conv2d_s8_sparse_scratch_size(&w, &d[0], &d[1], &d[2]);
            }
        }
        free(mem);
        printf("%ld\n", size);
    }
    return 0;
}
"""
ARM64_PROBE_FLAGS = ("-march=armv8.2-a+dotprod",)


def arm64_scratch_sizes(graph: Graph, layer_formats: dict, flags: tuple[str, ...]) -> dict[int, int]:
    """The arm64 kernels' scratch sizes, from a probe built with aarch64-linux-gnu-gcc and run in qemu-aarch64."""
    objs = kernel_objects("aarch64-linux-gnu-gcc", flags)
    with tempfile.TemporaryDirectory(prefix="edgeprune-probe-") as work:
        work = Path(work)
        (work / "probe.c").write_text(PROBE_C)
        exe = work / "probe"
        _run(["aarch64-linux-gnu-gcc", "-std=c11", "-O1", *flags, "-static", "-I", str(KERNELS / "include"),
              str(work / "probe.c"), *map(str, objs), "-lm", "-o", str(exe)], "building the arm64 scratch probe")
        lines, order = [], []
        for op in graph.ops:
            lf = layer_formats.get(op.index)
            if lf is None:
                continue
            inp, w, o = (graph.tensors[t] for t in (op.inputs[0], op.inputs[1], op.outputs[0]))
            blob = "-"
            if lf.encoded is not None:
                blob = str(work / f"w{op.index}.bin")
                Path(blob).write_bytes(lf.encoded.blob)
            if op.kind == "FULLY_CONNECTED":
                lines.append(f"fc {inp.size // w.shape[1]} {w.shape[1]} {w.shape[0]} {blob}")
            else:
                dims = " ".join(" ".join(map(str, codegen.Q.dims4(s))) for s in (inp.shape, w.shape, o.shape))
                lines.append(f"{'conv' if op.kind == 'CONV_2D' else 'dwconv'} {dims} {blob}")
            order.append(op.index)
        r = _run(["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", str(exe)], "running the arm64 scratch probe",
                 input="\n".join(lines).encode() + b"\n", timeout=120)
    return dict(zip(order, (int(v) for v in r.stdout.split())))


# ---------------------------------------------------------------------------------------------
# The pipeline


def load_graph(tflite_bytes: bytes) -> Graph:
    try:
        model = read_tflite(tflite_bytes)
    except EdgepruneError:
        raise
    except Exception as e:  # the reader should already say it in one line; never a traceback
        raise UsageError(f"not a valid .tflite model: {first_line(e)}") from None
    graph = simplify(build_graph(model))
    codegen.check_io(graph)
    return graph


def plan_summary(graph: Graph, plan) -> dict:
    """report.json's "memory_plan": the arena, the live bytes during each op (the timeline), and which
    ops reuse memory (in place, banded, fused with a residual ADD)."""
    names = {op.index: codegen.layer_name(op) for op in graph.ops}
    def bands(rows: int) -> str:
        return f"bands of {rows} row{'s' if rows != 1 else ''}"

    reuse = {p.op_index: (f"in place, {bands(p.band_rows)}" if p.band_rows else "in place") for p in plan.in_place.values()}
    for r in plan.residual_adds.values():
        reuse[r.conv_index] = f"{bands(r.band_rows)} through {names[r.add_index]}"
        reuse[r.add_index] = f"fused into {names[r.conv_index]}, in place over its skip input"
    return {"arena_bytes": plan.arena_bytes, "peak_live_bytes": plan.peak_live_bytes, "order": plan.order,
            "timeline": [{"op": names[i], "kind": kind, "live_bytes": live, "reuse": reuse.get(i)}
                         for i, kind, live in plan.timeline]}


def build_backend(tflite_bytes: bytes, target, format: str = "auto", eval_inputs: np.ndarray | None = None,
                  source: str = "model.tflite", validate: bool = True, fit: bool = True,
                  check_limits: bool = True, log=lambda msg: None) -> BackendReport:
    """Everything but writing: plan, generate, validate on the host, check the fit. Raises on failure.

    fit: measure flash and SRAM with the target's compiler; check_limits: and compare them with the
    target's profile (off when the firmware link that follows checks them, as on the board)."""
    t0 = time.perf_counter()
    lib = scratch_library()  # built once per kernels_c version and cached: part of the C build, not the back half
    times: dict[str, float] = {"kernels_build": round(time.perf_counter() - t0, 3)}
    t0 = time.perf_counter()

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        times[name] = round(now - since, 3)
        return now

    graph = load_graph(tflite_bytes)
    layer_formats = F.choose_formats(graph, target, format, code_bytes=kernel_code_bytes(target))
    t = lap("formats", t0)
    scratch = scratch_sizes(graph, layer_formats, target.backend, lib)
    if target.backend in ("neon", "neon_dot"):
        probe_t = time.perf_counter()
        arm64 = arm64_scratch_sizes(graph, layer_formats, tuple(target.cflags))
        scratch = {k: max(v, arm64.get(k, 0)) for k, v in scratch.items()}
        times["arm64_scratch_probe"] = round(time.perf_counter() - probe_t, 3)  # a C build and a qemu run
        t += time.perf_counter() - probe_t
    t = lap("scratch", t)
    in_place = find_in_place(graph)
    plan = plan_memory(graph, in_place, scratch, residual_adds=find_residual_adds(graph, in_place))
    plan.validate(graph)
    sparse = {i: lf.encoded for i, lf in layer_formats.items() if lf.encoded is not None}
    files = codegen.generate_c(graph, plan, layer_formats, sparse, scratch, source=Path(source).name, target=target.name)
    files["CMakeLists.txt"] = cmake_lists(target)
    files["model.mk"] = makefile_fragment()
    t = lap("plan_codegen", t)
    times["back_half"] = round(sum(times[k] for k in ("formats", "scratch", "plan_codegen")), 3)
    inputs, origin = _eval_inputs(graph, eval_inputs)
    validation = Validation(False, 0, inputs=origin)
    with tempfile.TemporaryDirectory(prefix="edgeprune-c-") as work:
        work = Path(work)
        for name in ("model.c", "model.h"):
            (work / name).write_text(files[name])
        if validate:
            validation = host_validate(work, tflite_bytes, graph, inputs, origin)
            t = lap("host_validation", t)
            if target.backend in ("neon", "neon_dot"):  # the target's own kernels, under qemu-aarch64
                validation = host_validate(work, tflite_bytes, graph, inputs, origin, arm64_flags=tuple(target.cflags))
                t = lap("arm64_validation", t)
        weights = sum(lf.weight_bytes for lf in layer_formats.values()) + _other_constant_bytes(graph)
        memory = Memory(0, weights, 0, plan.arena_bytes + STACK_ESTIMATE_BYTES, plan.arena_bytes)
        if fit:
            memory = measure_memory(work, target, weights, plan.arena_bytes)
            if check_limits:
                check_fit(memory, target)
            t = lap("fit_check", t)
    log(f"generated C: arena {plan.arena_bytes:,} B ({plan.order} plan), flash {memory.flash_bytes:,} B, "
        f"validation {'bit-exact' if validation.bitexact else 'skipped'} on {validation.samples} samples; {times}")
    layers = []
    for op in graph.ops:
        lf = layer_formats.get(op.index)
        layers.append(BackendLayer(op.index, codegen.layer_name(op), op.kind, lf.format if lf else "-",
                                   lf.weight_bytes if lf else 0, lf.instructions_estimate if lf else 0,
                                   scratch.get(op.index, 0)))
    return BackendReport(memory, validation, layers, times, files, plan.order, plan_summary(graph, plan))


def compile_tflite(tflite_bytes: bytes, target, out_dir, format: str = "auto", eval_inputs: np.ndarray | None = None,
                   source: str = "model.tflite", extra_report: dict | None = None) -> BackendReport:
    """build_backend, then write model.tflite, the generated folder and report.json atomically into out_dir."""
    from edgeprune import report as rep
    from edgeprune.fileio import staged_directory

    result = build_backend(tflite_bytes, target, format, eval_inputs, source)
    with staged_directory(Path(out_dir)) as stage:
        (stage / "model.tflite").write_bytes(tflite_bytes)
        result.write_into(stage)
        report = {"target": target.name, "source": str(source), **(extra_report or {}), **result.to_dict()}
        (stage / "report.json").write_text(rep.to_json(report))
    return result


def _other_constant_bytes(graph: Graph) -> int:
    """Constant inputs of non-weighted ops (ADD/MUL/CONCATENATION operands) stored in flash."""
    return sum(graph.tensors[t].nbytes for op in graph.ops if op.kind not in F.WEIGHTED
               for t in op.inputs if t >= 0 and graph.tensors[t].is_constant
               and op.kind in ("ADD", "MUL", "CONCATENATION"))


def _eval_inputs(graph: Graph, given) -> tuple[np.ndarray, str]:
    shape = graph.tensors[graph.inputs[0]].shape
    size = int(np.prod(shape))
    if given is not None:
        x = np.asarray(given)
        if x.dtype == np.int8 and x.ndim >= 1 and x[0].size == size:
            return x[:MAX_EVAL_SAMPLES].reshape(-1, *shape), "eval data"
    rng = np.random.default_rng(0)
    return rng.integers(-128, 128, (EVAL_SAMPLES, *shape)).astype(np.int8), "random (seed 0)"


# ---------------------------------------------------------------------------------------------
# Host validation

RUNNER_C = r"""/* Host runner: int8 samples on stdin, outputs on stdout. */
#include <stdio.h>

#include "model.h"

int main(void)
{
    static int8_t input[EP_MODEL_INPUT_SIZE], output[EP_MODEL_OUTPUT_SIZE];
    ep_model_init();
    while (fread(input, 1, sizeof input, stdin) == sizeof input) {
        const int status = ep_model_invoke(input, output);
        if (status != EP_MODEL_OK) {
            fprintf(stderr, "ep_model_invoke returned %d\n", status);
            return 2;
        }
        fwrite(output, 1, sizeof output, stdout);
    }
    return 0;
}
"""


def tflm_outputs(tflite_bytes: bytes, inputs: np.ndarray, graph: Graph | None = None) -> np.ndarray:
    """TFLite Micro's outputs for int8 `inputs`. A model with float I/O (passes.int8_io) gets the
    inputs dequantized with `graph`'s int8 input parameters, which its QUANTIZE maps back to the
    same int8 values, and its float outputs are requantized exactly (DEQUANTIZE is (q - zp) * scale)."""
    from tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(tflite_bytes, arena_size=max(1 << 20, 16 * len(tflite_bytes)))
    float_in = it.get_input_details(0)["dtype"] == np.float32
    float_out = it.get_output_details(0)["dtype"] == np.float32
    if (float_in or float_out) and graph is None:
        raise EdgepruneError("a model with float input or output needs its graph to be compared in int8")
    if float_in:
        t = graph.tensors[graph.inputs[0]]
        inputs = ((inputs.astype(np.float32) - np.float32(t.zero_point[0])) * np.float32(t.scale[0])).astype(np.float32)
    outs = []
    for x in inputs:
        it.set_input(x, 0)
        it.invoke()
        outs.append(np.array(it.get_output(0), copy=True))
    out = np.stack(outs)
    if float_out:
        t = graph.tensors[graph.outputs[0]]
        out = np.clip(np.round(out / np.float32(t.scale[0])) + int(t.zero_point[0]), -128, 127).astype(np.int8)
    return out


def host_validate(work: Path, tflite_bytes: bytes, graph: Graph, inputs: np.ndarray, origin: str,
                  arm64_flags: tuple[str, ...] | None = None) -> Validation:
    """Build model.c with the host gcc (portable kernels), or with arm64_flags for arm64 run in qemu-aarch64,
    run it on `inputs` and compare every output with TFLite Micro's."""
    cc, flags, where = ("gcc", (), "the host") if arm64_flags is None else (
        "aarch64-linux-gnu-gcc", arm64_flags + ("-static",), "arm64 (qemu-aarch64)")
    objs = kernel_objects(cc, tuple(f for f in flags if f != "-static"))
    (work / "runner.c").write_text(RUNNER_C)
    exe = work / ("model_host" if arm64_flags is None else "model_arm64")
    _run([cc, *CFLAGS, *flags, "-I", str(work), "-I", str(KERNELS / "include"), str(work / "model.c"),
          str(work / "runner.c"), *map(str, objs), "-lm", "-o", str(exe)], f"building the generated C for {where}")
    cmd = [str(exe)] if arm64_flags is None else ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", str(exe)]
    r = _run(cmd, f"running the generated C on {where}", input=inputs.tobytes(), timeout=300)
    out_shape = graph.tensors[graph.outputs[0]].shape
    got = np.frombuffer(r.stdout, np.int8).reshape(len(inputs), *out_shape)
    expected = tflm_outputs(tflite_bytes, inputs, graph).reshape(got.shape)
    for i, (g, e) in enumerate(zip(got, expected)):
        if not np.array_equal(g, e):
            raise EdgepruneError(f"validation on {where} failed: sample {i} of {len(inputs)} ({origin}): "
                                 f"{int(np.count_nonzero(g != e))} of {g.size} outputs differ from TFLite Micro")
    return Validation(True, len(inputs), inputs=origin)


# ---------------------------------------------------------------------------------------------
# Fit check


def kernel_code_bytes(target) -> dict[tuple[str, str], int]:
    """(op, format) -> flash bytes of the kernel code that layer format links on `target`, plus
    ("sparse", "runtime") for the blob viewer every sparse layer needs: .text + .rodata of the
    target's cached kernel objects (the variant the build's backend dispatches to)."""
    from elftools.elf.elffile import ELFFile

    sizes = {}
    for obj in kernel_objects(CROSS.get(target.backend, "gcc"), tuple(target.cflags)):
        with open(obj, "rb") as f:
            n = sum(s["sh_size"] for s in ELFFile(f).iter_sections()
                    if s["sh_flags"] & 2 and s.name.startswith((".text", ".rodata")))
        sizes[obj.name.rsplit("-", 1)[0]] = n  # objects are named <source stem>-<hash>.o
    suffixes = {"dsp": ("_dsp",), "mve": ("_mve", "_dsp"), "neon_dot": ("_neon_dot",), "neon": ("_neon",)}.get(
        target.backend, ())
    code = {("sparse", "runtime"): sizes.get("sparse_s8", 0)}
    for op, stem in (("CONV_2D", "conv2d_s8"), ("DEPTHWISE_CONV_2D", "depthwise_conv2d_s8"),
                     ("FULLY_CONNECTED", "fully_connected_s8")):
        for fmt in ("dense",) + F.FORMATS:
            base = stem if fmt == "dense" else f"{stem}_{fmt}"
            variant = next((base + sfx for sfx in suffixes if base + sfx in sizes), base)
            code[(op, fmt)] = sizes.get(variant, 0)
    return code


def measure_memory(work: Path, target, weights_bytes: int, arena_bytes: int) -> Memory:
    """Build model.c + the kernels it reaches for the target at -O2 and read the ELF's section sizes."""
    from elftools.elf.elffile import ELFFile

    cc = CROSS.get(target.backend, "gcc")
    flags = tuple(target.cflags)
    objs = kernel_objects(cc, flags)
    elf = work / f"model_{target.name}.elf"
    _run([cc, *CFLAGS, *flags, "-ffunction-sections", "-fdata-sections", "-I", str(work), "-I", str(KERNELS / "include"),
          str(work / "model.c"), *map(str, objs), "-nostdlib", "-nostartfiles", "-Wl,--gc-sections",
          "-Wl,-e,ep_model_invoke", "-Wl,-u,ep_model_init", "-Wl,--unresolved-symbols=ignore-all", "-o", str(elf)],
         f"building the generated C for {target.name}")
    text = data = bss = 0
    with open(elf, "rb") as f:
        for s in ELFFile(f).iter_sections():
            if not s["sh_flags"] & 2:  # SHF_ALLOC
                continue
            name = s.name
            if s["sh_type"] == "SHT_NOBITS":
                bss += s["sh_size"]
            elif name.startswith((".data", ".sdata")):
                data += s["sh_size"]
            elif name.startswith((".text", ".rodata")):
                text += s["sh_size"]
    flash = text + data
    return Memory(flash, weights_bytes, max(0, flash - weights_bytes), data + bss + STACK_ESTIMATE_BYTES, arena_bytes)


def check_fit(memory: Memory, target) -> None:
    help_ = "try more sparsity, channel pruning or a larger target"
    if target.sram_bytes is not None and memory.sram_peak_bytes > target.sram_bytes:
        raise EdgepruneError(f"model needs {memory.sram_peak_bytes:,} bytes of SRAM (arena {memory.arena_bytes:,} + "
                             f"tables and stack), {target.name} has {target.sram_bytes:,}: {help_}")
    if target.flash_bytes is not None and memory.flash_bytes > target.flash_bytes:
        raise EdgepruneError(f"model needs {memory.flash_bytes:,} bytes of flash (weights {memory.weights_bytes:,} + "
                             f"code {memory.code_bytes:,}), {target.name} has {target.flash_bytes:,}: {help_}")


# ---------------------------------------------------------------------------------------------
# Build files for the user's project


def copy_kernels(dest: Path) -> None:
    """kernels_c's inference sources and headers, flat, so the output folder builds on its own."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in kernel_sources() + sorted((KERNELS / "src").glob("*.h")) + sorted((KERNELS / "include").glob("*.h")):
        shutil.copyfile(p, dest / p.name)


def cmake_lists(target) -> str:
    flags = " ".join(target.cflags)
    return f"""# Generated by edgeprune. add_subdirectory() this folder and link edgeprune_model.
# Target flags used by edgeprune's checks ({target.name}): {flags or '(none)'}
# They select the kernels' backend (see kernels/ep_backend.h); set them in your toolchain file.
cmake_minimum_required(VERSION 3.13)
project(edgeprune_model C)

file(GLOB EDGEPRUNE_KERNEL_SOURCES ${{CMAKE_CURRENT_LIST_DIR}}/kernels/*.c)
add_library(edgeprune_model STATIC ${{CMAKE_CURRENT_LIST_DIR}}/model.c ${{EDGEPRUNE_KERNEL_SOURCES}})
target_include_directories(edgeprune_model PUBLIC ${{CMAKE_CURRENT_LIST_DIR}} ${{CMAKE_CURRENT_LIST_DIR}}/kernels)
if(NOT MSVC)
  target_link_libraries(edgeprune_model PUBLIC m)
endif()
set_target_properties(edgeprune_model PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON)
if(CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(edgeprune_model PRIVATE -O2 -ffunction-sections -fdata-sections)
endif()
""" + (ANDROID_DOTPROD if target.backend == "neon_dot" else "")


# The NDK builds arm64-v8a as plain Armv8.0-A, which would select the `neon` kernels: phones with
# the dot product (Armv8.2-A and later) need the flag; OFF for Cortex-A53/A73-class phones.
ANDROID_DOTPROD = """
# Android NDK (arm64-v8a) or any arm64 toolchain: the SDOT kernels (neon_dot) need Armv8.2-A + dotprod.
option(EDGEPRUNE_DOTPROD "Use the Armv8.2-A dot-product kernels on arm64" ON)
if(EDGEPRUNE_DOTPROD AND (ANDROID_ABI STREQUAL "arm64-v8a" OR CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$"))
  target_compile_options(edgeprune_model PRIVATE -march=armv8.2-a+dotprod)
endif()
"""


def makefile_fragment() -> str:
    return """# Generated by edgeprune. In your Makefile:
#   EDGEPRUNE_DIR := path/to/this/folder
#   include $(EDGEPRUNE_DIR)/model.mk
#   SRCS += $(EDGEPRUNE_SRCS)
#   CFLAGS += $(EDGEPRUNE_INCLUDES)
#   LDLIBS += $(EDGEPRUNE_LDLIBS)
# (Android NDK: LOCAL_SRC_FILES += $(EDGEPRUNE_SRCS), LOCAL_C_INCLUDES += the two folders.)
EDGEPRUNE_DIR ?= $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
EDGEPRUNE_SRCS := $(EDGEPRUNE_DIR)/model.c $(wildcard $(EDGEPRUNE_DIR)/kernels/*.c)
EDGEPRUNE_INCLUDES := -I$(EDGEPRUNE_DIR) -I$(EDGEPRUNE_DIR)/kernels
EDGEPRUNE_LDLIBS := -lm
"""
