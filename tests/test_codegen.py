"""The compiler's back half: random small int8 graphs through format choice, planning, C generation,
host validation against TFLite Micro (bit-exact) and the fit check; the generated C built with -Werror
by the three compilers; forced sparse formats; one-line failures.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from edgeprune.compile import backend as B
from edgeprune.compile import ir, passes
from edgeprune.compile.planner import plan_memory
from edgeprune.compile.tflite_reader import read_tflite
from edgeprune.compile.tflite_writer import (
    ModelSpec, OpSpec, TensorSpec, add_options, concatenation_options, conv2d_options, depthwise_options,
    fully_connected_options, mul_options, pad_options, pool2d_options, reducer_options, reshape_options, softmax_options, write_tflite,
)
from edgeprune.errors import EdgepruneError
from edgeprune.targets import get_target
from cli_support import run_cli


class _Builder:
    """Appends tensors and ops to a ModelSpec; each activation gets a random int8 quantization."""

    def __init__(self, rng):
        self.rng, self.tensors, self.ops = rng, [], []

    def act(self, shape, scale=None, zp=None) -> int:
        scale = float(self.rng.uniform(0.02, 0.1)) if scale is None else scale
        zp = int(self.rng.integers(-20, 20)) if zp is None else zp
        self.tensors.append(TensorSpec(tuple(shape), scale=scale, zero_point=zp, name=f"t{len(self.tensors)}"))
        return len(self.tensors) - 1

    def const(self, data, scale, zp, axis=0, dtype=np.int8) -> int:
        data = np.asarray(data, dtype)
        scale = np.atleast_1d(np.asarray(scale, np.float32))
        self.tensors.append(TensorSpec(data.shape, dtype, scale=scale, zero_point=np.zeros(scale.size, np.int64),
                                       quantized_dimension=axis, data=data, name=f"c{len(self.tensors)}"))
        return len(self.tensors) - 1

    def weights(self, shape, axis, sparsity):
        w = self.rng.integers(-127, 128, shape).astype(np.int8)
        w[self.rng.random(shape) < sparsity] = 0
        return w

    def weighted(self, kind, x, w_shape, out_shape, axis, options, sparsity, version=3):
        n_out = w_shape[axis]
        w = self.weights(w_shape, axis, sparsity)
        in_scale = self.tensors[x].scale
        f_scales = self.rng.uniform(0.002, 0.01, n_out).astype(np.float32)
        fan_in = w.size // n_out
        wi = self.const(w, f_scales, 0, axis)
        bi = self.const(self.rng.integers(-2000, 2000, n_out), (in_scale * f_scales).astype(np.float32), 0,
                        dtype=np.int32)
        out_scale = float(in_scale * f_scales.mean() * 40 * np.sqrt(fan_in))
        y = self.act(out_shape, out_scale)
        self.ops.append(OpSpec(kind, [x, wi, bi], [y], options, version=version))
        return y

    def op(self, kind, inputs, out, options=None, version=1):
        self.ops.append(OpSpec(kind, inputs, [out], options, version=version))
        return out

    def model(self, x, y) -> bytes:
        return write_tflite(ModelSpec(self.tensors, self.ops, [x], [y]))


def random_model(seed: int, sparsity: float = 0.5, nm24: bool = False) -> bytes:
    """conv -> depthwise -> [residual ADD] -> pool or MEAN -> FC -> [SOFTMAX | LOGISTIC]."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    h, w = (int(v) for v in rng.integers(4, 10, 2))
    c_in, c1 = int(rng.integers(1, 4)), int(rng.choice([4, 8]))
    x = b.act((1, h, w, c_in))
    act = str(rng.choice(["NONE", "RELU", "RELU6"]))
    y = b.weighted("CONV_2D", x, (c1, 3, 3, c_in), (1, h, w, c1), 0, conv2d_options(padding="SAME", activation=act),
                   sparsity)
    if nm24:  # a 1x1 conv with 2:4 weights over 8 input channels
        c2 = 8
        wn = np.zeros((c2, 1, 1, c1), np.int8)
        for o in range(c2):
            for g in range(0, c1, 4):
                keep = rng.choice(4, 2, replace=False)
                wn[o, 0, 0, g + keep] = rng.integers(1, 127, 2)
        f_scales = rng.uniform(0.002, 0.01, c2).astype(np.float32)
        in_scale = b.tensors[y].scale
        wi = b.const(wn, f_scales, 0)
        bi = b.const(rng.integers(-500, 500, c2), (in_scale * f_scales).astype(np.float32), 0, dtype=np.int32)
        z = b.act((1, h, w, c2), float(in_scale * f_scales.mean() * 40 * np.sqrt(c1)))
        y = b.op("CONV_2D", [y, wi, bi], z, conv2d_options(), version=3)
        c1 = c2
    d = b.weighted("DEPTHWISE_CONV_2D", y, (1, 3, 3, c1), (1, h, w, c1), 3,
                   depthwise_options(padding="SAME", activation="RELU"), sparsity * 0.5)
    if rng.random() < 0.6:
        s = b.act((1, h, w, c1))
        d = b.op("ADD", [y, d], s, add_options())
    if rng.random() < 0.5:
        p = b.act((1, c1), b.tensors[d].scale, b.tensors[d].zero_point)
        p = b.op("MEAN", [d, b.const(np.array([1, 2], np.int32), [1.0], 0, dtype=np.int32)], p, reducer_options())
        feat = c1
    else:
        ph, pw = h // 2, w // 2
        p = b.act((1, ph, pw, c1), b.tensors[d].scale, b.tensors[d].zero_point)
        kind = str(rng.choice(["AVERAGE_POOL_2D", "MAX_POOL_2D"]))
        p = b.op(kind, [d], p, pool2d_options((2, 2), (2, 2)))
        feat = ph * pw * c1
        r = b.act((1, feat), b.tensors[p].scale, b.tensors[p].zero_point)
        p = b.op("RESHAPE", [p, b.const(np.array([1, feat], np.int32), [1.0], 0, dtype=np.int32)], r,
                 reshape_options([1, feat]))
    n_cls = int(rng.integers(3, 11))
    logits = b.weighted("FULLY_CONNECTED", p, (n_cls, feat), (1, n_cls), 0, fully_connected_options(), sparsity,
                        version=4)
    if rng.random() < 0.5:
        out = b.act((1, n_cls), 1.0 / 256, -128)
        out = b.op("SOFTMAX", [logits], out, softmax_options(1.0))
    else:
        out = b.act((1, n_cls), 1.0 / 256, -128)
        out = b.op("LOGISTIC", [logits], out)
    return b.model(x, out)


def random_model_ops(seed: int) -> bytes:
    """The other ops: PAD (before a pool, so not fused), CONCATENATION, MUL (broadcast), requantizing
    QUANTIZE, TANH, AVERAGE_POOL_2D, then FULLY_CONNECTED."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    h, w, c = (int(v) for v in rng.integers(3, 7, 3))
    x = b.act((1, h, w, c))
    y = b.weighted("CONV_2D", x, (c, 1, 1, c), (1, h, w, c), 0, conv2d_options(activation="RELU"), 0.3)
    s = b.tensors[y]
    cat = b.act((1, h, w, 2 * c), s.scale, s.zero_point)
    cat = b.op("CONCATENATION", [y, y], cat, concatenation_options(3))
    q = b.op("QUANTIZE", [cat], b.act((1, h, w, 2 * c)))
    t = b.op("TANH", [q], b.act((1, h, w, 2 * c), 1.0 / 128, 0))
    gate = b.const(rng.integers(-127, 128, (1, 1, 1, 2 * c)), [0.01], 0)
    m = b.op("MUL", [t, gate], b.act((1, h, w, 2 * c)), mul_options())
    pads = b.const(np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32), [1.0], 0, dtype=np.int32)
    ms = b.tensors[m]
    p = b.op("PAD", [m, pads], b.act((1, h + 2, w + 2, 2 * c), ms.scale, ms.zero_point), pad_options())
    oh, ow = (h + 2) // 2, (w + 2) // 2
    a = b.op("AVERAGE_POOL_2D", [p], b.act((1, oh, ow, 2 * c), ms.scale, ms.zero_point), pool2d_options((2, 2), (2, 2)))
    feat = oh * ow * 2 * c
    out = b.weighted("FULLY_CONNECTED", a, (5, feat), (1, 5), 0, fully_connected_options("RELU"), 0.5, version=4)
    return b.model(x, out)


def random_residual_model(seed: int, sparsity: float = 0.5) -> bytes:
    """A ResNet-like block with odd sizes, so the band code meets every border case:

    conv a -> conv b (stride 1 or 2) -> conv b2 (in place over b) -> ADD(b2, 1x1 skip conv of a)
    (the skip conv is fused with the ADD, band by band) -> depthwise 3x3 or 5x5 (in place)
    -> 1x1 conv (in place) -> MEAN -> FULLY_CONNECTED."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    h, w = (int(v) for v in rng.integers(5, 18, 2))
    c0, c1, c2 = int(rng.integers(1, 4)), int(rng.choice([4, 8])), int(rng.choice([4, 8, 12]))
    s = int(rng.choice([1, 2]))
    oh, ow = -(-h // s), -(-w // s)
    x = b.act((1, h, w, c0))
    a = b.weighted("CONV_2D", x, (c1, 3, 3, c0), (1, h, w, c1), 0, conv2d_options(padding="SAME", activation="RELU"),
                   sparsity)
    k = int(rng.choice([1, 3]))
    y = b.weighted("CONV_2D", a, (c2, k, k, c1), (1, oh, ow, c2), 0,
                   conv2d_options((s, s), padding="SAME", activation="RELU"), sparsity)
    y = b.weighted("CONV_2D", y, (c2, 3, 3, c2), (1, oh, ow, c2), 0, conv2d_options(padding="SAME"), sparsity)
    skip = b.weighted("CONV_2D", a, (c2, 1, 1, c1), (1, oh, ow, c2), 0, conv2d_options((s, s)), sparsity)
    y = b.op("ADD", [y, skip] if rng.random() < 0.5 else [skip, y], b.act((1, oh, ow, c2)), add_options("RELU"))
    kd = int(rng.choice([3, 5]))
    y = b.weighted("DEPTHWISE_CONV_2D", y, (1, kd, kd, c2), (1, oh, ow, c2), 3,
                   depthwise_options(padding="SAME", activation="RELU"), sparsity * 0.5)
    y = b.weighted("CONV_2D", y, (c2, 1, 1, c2), (1, oh, ow, c2), 0, conv2d_options(activation="RELU"), sparsity)
    p = b.act((1, c2), b.tensors[y].scale, b.tensors[y].zero_point)
    p = b.op("MEAN", [y, b.const(np.array([1, 2], np.int32), [1.0], 0, dtype=np.int32)], p, reducer_options())
    out = b.weighted("FULLY_CONNECTED", p, (5, c2), (1, 5), 0, fully_connected_options(), sparsity, version=4)
    return b.model(x, out)


HOST = get_target("host")


@pytest.mark.parametrize("seed", range(4))
def test_other_ops_are_bitexact_with_tflite_micro(seed):
    r = B.build_backend(random_model_ops(seed), HOST, fit=False)
    assert r.validation.bitexact, f"seed {seed}"
    ops = {l.op for l in r.layers}
    assert {"CONCATENATION", "QUANTIZE", "TANH", "MUL", "PAD", "AVERAGE_POOL_2D"} <= ops, f"seed {seed}: {ops}"


@pytest.mark.parametrize("seed", range(8))
def test_random_graphs_are_bitexact_with_tflite_micro(seed):
    model = random_model(seed, sparsity=float(np.random.default_rng(seed).uniform(0, 0.9)))
    r = B.build_backend(model, get_target("cortex-m7"), fit=True)
    assert r.validation.bitexact and r.validation.samples == B.EVAL_SAMPLES, f"seed {seed}"
    assert r.memory.arena_bytes > 0 and r.memory.flash_bytes >= r.memory.weights_bytes, f"seed {seed}: {r.memory}"


@pytest.mark.parametrize("seed", range(8))
def test_banded_convs_are_bitexact_with_tflite_micro(seed):
    """Convs in place and a skip conv fused with its residual ADD, run in bands: the same bits."""
    model = random_residual_model(seed, sparsity=float(np.random.default_rng(seed).uniform(0, 0.9)))
    r = B.build_backend(model, get_target("cortex-m7"), fit=False)
    assert r.validation.bitexact, f"seed {seed}"
    code = r.files["model.c"].split("int ep_model_invoke")[1]
    # b2, the depthwise and the 1x1 conv in place; the skip conv fused with the ADD (or in place
    # over its input when it keeps the shape, stride 1 and as many channels)
    assert code.count("ep_conv_bands(") == 4 and code.count(", then add_") + code.count("in place (") == 4, f"seed {seed}"
    g = passes.simplify(ir.build_graph(read_tflite(model)))
    timeline = r.memory_plan["timeline"]  # report.json's per-op live bytes
    assert len(timeline) == len(g.ops) and max(t["live_bytes"] for t in timeline) == r.memory_plan["peak_live_bytes"]
    assert sum(1 for t in timeline if t["reuse"] and "bands" in t["reuse"]) == 4, f"seed {seed}: {timeline}"
    unbanded = plan_memory(g, in_place={k: v for k, v in passes.find_in_place(g).items() if not v.band_rows})
    assert r.memory.arena_bytes - sum(l.scratch_bytes for l in r.layers) < unbanded.arena_bytes, f"seed {seed}"


def float_io_model(seed: int) -> bytes:
    """What converters write without int8 I/O: float32 in -> QUANTIZE -> int8 graph -> DEQUANTIZE -> float32 out."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    x = len(b.tensors)
    b.tensors.append(TensorSpec((1, 6, 6, 2), np.float32, name="float_input"))
    q = b.op("QUANTIZE", [x], b.act((1, 6, 6, 2)))
    y = b.weighted("CONV_2D", q, (4, 3, 3, 2), (1, 6, 6, 4), 0, conv2d_options(padding="SAME", activation="RELU"), 0.3)
    p = b.act((1, 4), b.tensors[y].scale, b.tensors[y].zero_point)
    p = b.op("MEAN", [y, b.const(np.array([1, 2], np.int32), [1.0], 0, dtype=np.int32)], p, reducer_options())
    logits = b.weighted("FULLY_CONNECTED", p, (3, 4), (1, 3), 0, fully_connected_options(), 0.0, version=4)
    out = len(b.tensors)
    b.tensors.append(TensorSpec((1, 3), np.float32, name="float_output"))
    b.op("DEQUANTIZE", [logits], out, version=2)
    return b.model(x, out)


@pytest.mark.parametrize("seed", range(3))
def test_float_io_model_compiles_to_int8_c(seed):
    """The boundary QUANTIZE/DEQUANTIZE are left to the caller (model.h gives their parameters); the
    rest is compared with TFLite Micro on the same values."""
    r = B.build_backend(float_io_model(seed), HOST, fit=False)
    assert r.validation.bitexact, f"seed {seed}"
    assert "EP_MODEL_INPUT_SCALE" in r.files["model.h"] and "ep_requantize_s8" not in r.files["model.c"]


@pytest.mark.parametrize("fmt", ["unstructured", "block4", "dead", "nm24", "dense"])
def test_forced_formats_stay_bitexact(fmt):
    model = random_model(100 + len(fmt), sparsity=0.7, nm24=(fmt == "nm24"))
    r = B.build_backend(model, get_target("cortex-m7"), format=fmt)
    assert r.validation.bitexact, fmt
    weighted = [l for l in r.layers if l.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert any(l.format == fmt for l in weighted), f"{fmt}: {[l.format for l in weighted]}"
    assert "ep_sparse_s8_view" in r.files["model.c"] or fmt == "dense"


def test_auto_format_prefers_sparse_when_very_sparse():
    r = B.build_backend(random_model(7, sparsity=0.95), get_target("cortex-m7"), validate=False, fit=False)
    formats = {l.format for l in r.layers if l.op == "CONV_2D"}
    assert formats and formats != {"dense"}, formats


COMPILERS = {
    "gcc": (),
    "arm-none-eabi-gcc": ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"),
    "aarch64-linux-gnu-gcc": ("-march=armv8.2-a+dotprod",),
}


@pytest.mark.parametrize("cc", list(COMPILERS))
def test_generated_folder_compiles_with_werror(tmp_path, cc):
    r = B.build_backend(random_model(3, sparsity=0.8), get_target("cortex-m7"), format="block4", validate=False,
                        fit=False)
    r.write_into(tmp_path)
    for name in ("model.c", "model.h", "CMakeLists.txt", "model.mk", "kernels/ep_kernels.h"):
        assert (tmp_path / name).exists(), name
    # model.c against the folder's own headers; the kernels themselves are built with the same flags
    # (and -Werror) by every compile (backend.kernel_objects) and in full by the Makefile test below.
    subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", *COMPILERS[cc], "-I", str(tmp_path),
                    "-I", str(tmp_path / "kernels"), "-c", str(tmp_path / "model.c")], check=True, cwd=tmp_path)
    B.kernel_objects(cc, COMPILERS[cc])
    text = r.files["model.c"]
    assert "ep_model_arena[EP_MODEL_ARENA_SIZE]" in text and "EP_MODEL_ALIGN16" in text
    assert "#define EP_MODEL_INPUT_SIZE" in r.files["model.h"]


def test_makefile_fragment_builds_the_folder(tmp_path):
    r = B.build_backend(random_model(4), HOST, validate=False, fit=False)
    r.write_into(tmp_path / "ep")
    (tmp_path / "main.c").write_text('#include "model.h"\nint main(void) { static int8_t x[EP_MODEL_INPUT_SIZE], '
                                     'y[EP_MODEL_OUTPUT_SIZE]; ep_model_init(); return ep_model_invoke(x, y); }\n')
    (tmp_path / "Makefile").write_text("include ep/model.mk\nCFLAGS += -std=c99 -O1 $(EDGEPRUNE_INCLUDES)\n"
                                       "app: main.c $(EDGEPRUNE_SRCS)\n\t$(CC) $(CFLAGS) $^ -o $@ $(EDGEPRUNE_LDLIBS)\n")
    subprocess.run(["make", "-s", "app"], check=True, cwd=tmp_path)
    assert subprocess.run([str(tmp_path / "app")]).returncode == 0


def test_too_big_model_fails_the_fit_check_in_one_line(tmp_path):
    rng = np.random.default_rng(0)
    b = _Builder(rng)
    x = b.act((1, 96, 96, 16))
    y = b.weighted("CONV_2D", x, (16, 3, 3, 16), (1, 96, 96, 16), 0, conv2d_options(padding="SAME"), 0.0)
    model = b.model(x, y)
    with pytest.raises(EdgepruneError) as e:
        B.build_backend(model, get_target("cortex-m4"), validate=False)
    msg = str(e.value)
    assert "\n" not in msg and "bytes of SRAM" in msg and "cortex-m4 has 131,072" in msg and "sparsity" in msg
    path = tmp_path / "big.tflite"
    path.write_bytes(model)
    result = run_cli("compile", path, "--target", "cortex-m4", "--out", tmp_path / "out")
    assert result.exit_code != 0 and not (tmp_path / "out").exists()
    assert result.stderr.count("\n") == 1 and "SRAM" in result.stderr


@pytest.mark.parametrize("blob, words", [
    (b"not a flatbuffer at all", ["tflite"]),
    (b"", ["tflite"]),
])
def test_malformed_tflite_is_one_line(tmp_path, blob, words):
    path = tmp_path / "bad.tflite"
    path.write_bytes(blob)
    result = run_cli("compile", path, "--target", "host", "--out", tmp_path / "out")
    assert result.exit_code != 0 and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out").exists()


def test_unsupported_op_is_one_line(tmp_path):
    rng = np.random.default_rng(1)
    b = _Builder(rng)
    x = b.act((1, 4, 4, 2))
    y = b.op("HARD_SWISH", [x], b.act((1, 4, 4, 2)))
    path = tmp_path / "hs.tflite"
    path.write_bytes(b.model(x, y))
    result = run_cli("compile", path, "--target", "host", "--out", tmp_path / "out")
    assert result.exit_code != 0 and result.stderr.count("\n") == 1 and "HARD_SWISH" in result.stderr, result.stderr


def test_cli_compiles_a_tflite_and_reports(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(random_model(5, sparsity=0.6))
    out = tmp_path / "out"
    result = run_cli("compile", path, "--target", "cortex-m7", "--format", "auto", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["validation"] == {"bitexact": True, "samples": B.EVAL_SAMPLES, "oracle": "tflite-micro",
                                     "inputs": "random (seed 0)"}
    mem = report["memory"]
    assert set(mem) == {"flash_bytes", "weights_bytes", "code_bytes", "sram_peak_bytes", "arena_bytes"}
    assert mem["flash_bytes"] == mem["weights_bytes"] + mem["code_bytes"]
    assert report["model"]["layers"] and all({"format", "weight_bytes", "instructions_estimate"} <= set(l)
                                             for l in report["model"]["layers"])
    for name in ("model.c", "model.h", "CMakeLists.txt", "model.mk", "model.tflite", "report.json"):
        assert (out / name).exists(), name


def test_a_mismatch_fails_in_one_line_and_writes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    path.write_bytes(random_model(6))
    real = B.tflm_outputs

    def off_by_one(model, inputs, graph=None):
        out = real(model, inputs, graph).copy()
        out[3].reshape(-1)[0] ^= 1
        return out

    monkeypatch.setattr(B, "tflm_outputs", off_by_one)
    result = run_cli("compile", path, "--target", "host", "--out", tmp_path / "out")
    assert result.exit_code != 0 and result.stderr.count("\n") == 1, result.stderr
    assert "sample 3 of 32" in result.stderr and "1 of" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_arm64_target_is_validated_with_its_neon_kernels_under_qemu():
    """arm64: scratch sizes from the NEON kernels (qemu probe), outputs checked on the NEON build too."""
    r = B.build_backend(random_model(2, sparsity=0.3), get_target("arm64"), format="dense")
    assert r.validation.bitexact and "arm64_validation" in r.timings_s
    assert any(l.scratch_bytes > 0 for l in r.layers if l.op == "CONV_2D")


def test_whole_model_format_choice_trades_a_little_speed_for_flash():
    """Two conv layers: mixing formats is fastest by a hair, one shared format saves a kernel's code."""
    from edgeprune.compile.formats import fit_flash

    options = {0: {"dense": (1000, 900), "block4": (500, 400), "unstructured": (520, 300)},
               1: {"dense": (2000, 1800), "block4": (1010, 800), "unstructured": (1000, 600)}}
    kinds = {0: "CONV_2D", 1: "CONV_2D"}
    code = {("CONV_2D", "dense"): 2000, ("CONV_2D", "block4"): 3000, ("CONV_2D", "unstructured"): 2500,
            ("sparse", "runtime"): 700}
    assert fit_flash(options, kinds, code) == {0: "unstructured", 1: "unstructured"}
    assert fit_flash(options, kinds, code, tolerance=0.0) == {0: "block4", 1: "unstructured"}, "no slack: fastest"
    slow = {i: {**o, "unstructured": (o["unstructured"][0] * 3, o["unstructured"][1])} for i, o in options.items()}
    assert fit_flash(slow, kinds, code) == {0: "block4", 1: "block4"}, "3x slower is outside the tolerance"


@pytest.mark.parametrize("seed", range(4))
def test_dead_channels_fold_into_their_consumers_exactly(seed):
    """A conv with all-zero output channels feeding a 1x1 conv and a VALID depthwise, then an FC: the
    constants those channels output move into the consumers' biases and their weights on them become
    zero; the outputs stay bit-exact with TFLite Micro."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    h, w, c = 6, 5, 8
    x = b.act((1, h, w, 2))
    a = b.weighted("CONV_2D", x, (c, 3, 3, 2), (1, h, w, c), 0, conv2d_options(padding="SAME", activation="RELU"), 0.2)
    dead = sorted(rng.choice(c, 3, replace=False))
    b.tensors[a - 2].data[dead] = 0  # the producer's weights: [a - 2] is its filter
    y = b.weighted("CONV_2D", a, (c, 1, 1, c), (1, h, w, c), 0, conv2d_options(activation="RELU"), 0.2)
    b.tensors[y - 2].data[dead[0]] = 0  # y's channel dead[0] is dead too: it feeds the depthwise
    d = b.weighted("DEPTHWISE_CONV_2D", y, (1, 3, 3, c), (1, h - 2, w - 2, c), 3, depthwise_options(), 0.2)
    r = b.act((1, (h - 2) * (w - 2) * c), b.tensors[d].scale, b.tensors[d].zero_point)
    r = b.op("RESHAPE", [d, b.const(np.array([1, (h - 2) * (w - 2) * c], np.int32), [1.0], 0, dtype=np.int32)], r,
             reshape_options([1, (h - 2) * (w - 2) * c]))
    out = b.weighted("FULLY_CONNECTED", r, (4, (h - 2) * (w - 2) * c), (1, 4), 0, fully_connected_options(), 0.3,
                     version=4)
    model = b.model(x, out)
    g = passes.simplify(ir.build_graph(read_tflite(model)))
    conv1x1, dw = g.ops[1], g.ops[2]
    assert not g.tensors[conv1x1.inputs[1]].data[..., dead].any(), f"seed {seed}: 1x1 conv still reads the dead channels"
    assert not g.tensors[dw.inputs[1]].data[..., dead[0]].any(), f"seed {seed}: the depthwise still reads channel {dead[0]}"
    r = B.build_backend(model, HOST, fit=False)
    assert r.validation.bitexact, f"seed {seed}"
