"""arm64 NEON variants of the sparse int8 kernels, bit-exact on emulated arm64 cores.

Random layers (fixed seeds) with weights pruned in the pattern of each format (magnitude zeros for
unstructured, whole 1x4 blocks for block4, 2:4 for nm24, whole output channels for dead) are encoded
with edgeprune.sparse; the expected outputs come from the host's dense portable kernels. The checker
device_tests/variants/check_sparse_variants.c is cross-compiled with all of kernels_c twice and runs
every case through the dispatcher and each arm64 variant: a dot-product build under
`qemu-aarch64 -cpu max` and a plain Armv8.0 build under `-cpu cortex-a53` (which has no SDOT).
"""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeprune.compile import quant as Q
from edgeprune.sparse import encode
from kernels_support import KERNELS, ConvParams, Dims, build_kernel_lib, ptr, quant_struct, random_quant

HERE = Path(__file__).resolve().parent
CHECKER = HERE / "variants" / "check_sparse_variants.c"
SYSROOT = "/usr/aarch64-linux-gnu"
TOOLS = ("aarch64-linux-gnu-gcc", "qemu-aarch64")
BUILDS = {"neon_dot": ("-march=armv8.2-a+dotprod", "max"), "neon": ("-march=armv8-a", "cortex-a53")}
CONV, DEPTHWISE, FC = 1, 2, 3
FORMATS = ("unstructured", "block4", "nm24", "dead")
I8, I32 = ctypes.c_int8, ctypes.c_int32

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS) or not Path(SYSROOT).is_dir(),
                                reason=f"needs {', '.join(TOOLS)} and the arm64 libc in {SYSROOT} (make setup)")


def prune(rng, w: np.ndarray, fmt: str, sparsity: float, layout: str) -> np.ndarray:
    """Zeros in the pattern `fmt` needs, about `sparsity` of the weights, smallest magnitudes first."""
    m = (w.reshape(-1, w.shape[-1]).T if layout == "depthwise" else w.reshape(w.shape[0], -1)).astype(np.int64)
    rows, cols = m.shape
    if fmt == "unstructured":
        m[np.abs(m) + rng.random(m.shape) <= np.quantile(np.abs(m) + rng.random(m.shape), sparsity)] = 0
    elif fmt == "block4":
        if layout == "depthwise":  # 4 adjacent channels at one tap
            pad = np.zeros(((rows + 3) // 4 * 4, cols), np.int64)
            pad[:rows] = m
            norm = np.abs(pad).reshape(-1, 4, cols).sum(axis=1) + rng.random((pad.shape[0] // 4, cols))
            keep = np.repeat(norm > np.quantile(norm, sparsity), 4, axis=0)[:rows]
        else:
            pad = np.zeros((rows, (cols + 3) // 4 * 4), np.int64)
            pad[:, :cols] = m
            norm = np.abs(pad).reshape(rows, -1, 4).sum(axis=2) + rng.random((rows, pad.shape[1] // 4))
            keep = np.repeat(norm > np.quantile(norm, sparsity), 4, axis=1)[:, :cols]
        m[~keep] = 0
    elif fmt == "nm24" and cols % 4:
        pass  # not 2:4-able (encode refuses it)
    elif fmt == "nm24":  # the 2 smallest of every 4, then more random zeros past 50%
        g = m.reshape(rows, -1, 4)
        order = np.argsort(np.abs(g) + rng.random(g.shape), axis=2)
        np.put_along_axis(g, order[:, :, :2], 0, axis=2)
        m = g.reshape(rows, cols)
        if sparsity > 0.5:
            nz = m != 0
            m[nz & (rng.random(m.shape) < (sparsity - 0.5) / 0.5)] = 0
    else:  # dead: whole output channels
        dead = np.argsort(np.abs(m).sum(axis=1) + rng.random(rows))[:int(round(sparsity * rows))]
        m[dead] = 0
    out = m.T.reshape(w.shape) if layout == "depthwise" else m.reshape(w.shape)
    return np.ascontiguousarray(out, dtype=np.int8)


def write_vectors(path: Path, cases: list) -> Path:
    """The file check_sparse_variants.c reads (format in its header comment)."""
    out = bytearray(b"EPSV" + struct.pack("<I", len(cases)))
    for c in cases:
        out += struct.pack(f"<III{len(c['params'])}i", c["op"], c["id"], len(c["params"]), *c["params"])
        for a in c["arrays"]:
            data = bytes(a) if isinstance(a, (bytes, bytearray)) else np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
            out += struct.pack("<I", len(data)) + data + bytes(-len(data) % 4)
    path.write_bytes(bytes(out))
    return path


def conv_case(lib, rng, case_id: int, fmt: str, sparsity: float, op: int, g: dict) -> dict | None:
    """One CONV_2D / DEPTHWISE_CONV_2D case of geometry g, expected output from the dense portable kernel."""
    dw = op == DEPTHWISE
    layout = "depthwise" if dw else "conv"
    in_shape = (g["n"], g["in_h"], g["in_w"], g["in_c"])
    out_shape = (g["n"], g["out_h"], g["out_w"], g["out_c"])
    w_shape = (1, g["k_h"], g["k_w"], g["out_c"]) if dw else (g["out_c"], g["k_h"], g["k_w"], g["in_c"])
    w = prune(rng, rng.integers(-127, 128, w_shape).astype(np.int8), fmt, sparsity, layout)
    bias = rng.integers(-3000, 3000, g["out_c"]).astype(np.int32)
    fan_in = g["k_h"] * g["k_w"] * (1 if dw else g["in_c"])
    in_scale, in_zp, f_scales, out_scale, out_zp = random_quant(rng, g["out_c"], fan_in)
    try:
        enc = encode(fmt, w, bias, -in_zp, layout)
    except ValueError:
        return None
    keep: list = []
    q = quant_struct(in_scale, in_zp, f_scales, out_scale, out_zp, g["activation"], keep)
    mult, shift = keep
    if rng.random() < 0.1:  # non-negative shifts: the left-shift path of the requantization
        shift = rng.integers(-2, 3, shift.shape).astype(np.int32)
        mult = mult.copy()
        q.shift, q.multiplier = ptr(shift, I32), ptr(mult, I32)
    pad_h = Q.conv_padding(g["in_h"], g["k_h"], g["s_h"], g["d_h"], g["out_h"], g["padding"])
    pad_w = Q.conv_padding(g["in_w"], g["k_w"], g["s_w"], g["d_w"], g["out_w"], g["padding"])
    params = ConvParams(g["s_h"], g["s_w"], g["d_h"], g["d_w"], pad_h, pad_w)
    x = rng.integers(-128, 128, in_shape).astype(np.int8)
    ref = np.zeros(out_shape, np.int8)
    dims = [Dims(*in_shape), Dims(*w_shape), Dims(*out_shape)]
    head = (ctypes.byref(params), g["mult"]) if dw else (ctypes.byref(params),)
    getattr(lib, "ep_depthwise_conv2d_s8_portable" if dw else "ep_conv2d_s8_portable")(
        *head, ctypes.byref(q), ctypes.byref(dims[0]), ptr(x, I8), ctypes.byref(dims[1]), ptr(w, I8), ptr(bias, I32),
        ctypes.byref(dims[2]), ptr(ref, I8), None)
    params_list = [*in_shape, g["k_h"], g["k_w"], g["out_h"], g["out_w"], g["out_c"], g["s_h"], g["s_w"], g["d_h"],
                   g["d_w"], pad_h, pad_w, g["mult"], q.input_offset, q.output_offset, q.activation_min,
                   q.activation_max]
    return dict(op=op, id=case_id, params=params_list, arrays=[x, enc.blob, mult, shift, ref],
                desc=dict(fmt=fmt, sparsity=sparsity, **g))


def fc_case(lib, rng, case_id: int, fmt: str, sparsity: float, batches: int, n_in: int, n_out: int,
            activation: str) -> dict | None:
    w = prune(rng, rng.integers(-127, 128, (n_out, n_in)).astype(np.int8), fmt, sparsity, "fc")
    bias = rng.integers(-3000, 3000, n_out).astype(np.int32)
    in_scale, in_zp, f_scales, out_scale, out_zp = random_quant(rng, n_out, n_in)
    try:
        enc = encode(fmt, w, bias, -in_zp, "fc")
    except ValueError:
        return None
    keep: list = []
    q = quant_struct(in_scale, in_zp, f_scales, out_scale, out_zp, activation, keep)
    mult, shift = keep
    x = rng.integers(-128, 128, (batches, n_in)).astype(np.int8)
    ref = np.zeros((batches, n_out), np.int8)
    lib.ep_fully_connected_s8_portable(ctypes.byref(q), batches, n_in, n_out, ptr(x, I8), ptr(w, I8), ptr(bias, I32),
                                       ptr(ref, I8), None)
    return dict(op=FC, id=case_id, params=[batches, q.input_offset, q.output_offset, q.activation_min, q.activation_max],
                arrays=[x, enc.blob, mult, shift, ref],
                desc=dict(fmt=fmt, sparsity=sparsity, batches=batches, n_in=n_in, n_out=n_out, activation=activation))


def geometry(rng, dw: bool) -> dict:
    while True:
        k_h, k_w = (int(v) for v in rng.choice([1, 1, 3, 3, 5, 2], 2))
        s_h, s_w = (int(v) for v in rng.choice([1, 1, 2, 3], 2))
        d_h, d_w = (int(v) for v in rng.choice([1, 1, 1, 2], 2))
        in_h, in_w = (int(v) for v in rng.integers(1, 12, 2))
        padding = str(rng.choice(["SAME", "VALID"]))
        out_h = Q.conv_output_size(in_h, k_h, s_h, d_h, padding)
        out_w = Q.conv_output_size(in_w, k_w, s_w, d_w, padding)
        if out_h > 0 and out_w > 0:
            break
    in_c = int(rng.choice([1, 3, 4, 5, 8, 12, 16, 17, 32, 48]))
    mult = int(rng.choice([1, 1, 1, 2])) if dw else 1
    out_c = in_c * mult if dw else int(rng.choice([1, 3, 8, 15, 16, 17, 32, 33]))
    return dict(n=int(rng.choice([1, 1, 2])), in_h=in_h, in_w=in_w, in_c=in_c, out_c=out_c, k_h=k_h, k_w=k_w, s_h=s_h,
                s_w=s_w, d_h=d_h, d_w=d_w, padding=padding, out_h=out_h, out_w=out_w, mult=mult,
                activation=str(rng.choice(["NONE", "RELU", "RELU6"])))


def layer(in_hw, in_c, out_c, k, s, padding="SAME") -> dict:
    out_h = Q.conv_output_size(in_hw[0], k, s, 1, padding)
    out_w = Q.conv_output_size(in_hw[1], k, s, 1, padding)
    return dict(n=1, in_h=in_hw[0], in_w=in_hw[1], in_c=in_c, out_c=out_c, k_h=k, k_w=k, s_h=s, s_w=s, d_h=1, d_w=1,
                padding=padding, out_h=out_h, out_w=out_w, mult=1, activation="NONE")


# The bench layers: (a) conv 3x3 s1 16->16 @32x32, (b) conv 1x1 64->64 @25x5, (c) depthwise 3x3 64ch @25x5,
# (d) FC 256->128, (e) conv 3x3 s2 3->8 @96x96.
BENCH_LAYERS = {
    "a": (CONV, layer((32, 32), 16, 16, 3, 1)),
    "b": (CONV, layer((25, 5), 64, 64, 1, 1)),
    "c": (DEPTHWISE, layer((25, 5), 64, 64, 3, 1)),
    "d": (FC, dict(batches=1, n_in=256, n_out=128)),
    "e": (CONV, layer((96, 96), 3, 8, 3, 2)),
}


def bench_case(lib, rng, case_id: int, name: str, fmt: str, sparsity: float) -> dict | None:
    op, g = BENCH_LAYERS[name]
    if op == FC:
        return fc_case(lib, rng, case_id, fmt, sparsity, g["batches"], g["n_in"], g["n_out"], "NONE")
    return conv_case(lib, rng, case_id, fmt, sparsity, op, g)


def generate(lib, n_conv=260, n_dw=60, n_fc=160) -> list:
    rng = np.random.default_rng(2026)
    cases: list = []
    sparsities = [0.0, 0.5, 0.7, 0.9, 0.95, 1.0]
    for i in range(n_conv + n_dw):
        op = CONV if i < n_conv else DEPTHWISE
        g = geometry(rng, op == DEPTHWISE)
        fmt = FORMATS[i % 4]
        if fmt == "nm24" and (op == DEPTHWISE or g["in_c"] % 4):
            fmt = "block4"
        c = conv_case(lib, rng, len(cases), fmt, float(rng.choice(sparsities)), op, g)
        assert c is not None, (fmt, g)
        cases.append(c)
    for i in range(n_fc):
        fmt = FORMATS[i % 4]
        n_in = int(rng.choice([1, 3, 4, 7, 16, 20, 64, 100, 256, 700]))
        if fmt == "nm24" and n_in % 4:
            fmt = "dead"
        c = fc_case(lib, rng, len(cases), fmt, float(rng.choice(sparsities)), int(rng.integers(1, 4)), n_in,
                    int(rng.choice([1, 2, 5, 8, 31, 64])), str(rng.choice(["NONE", "RELU", "RELU6"])))
        cases.append(c)
    for i in range(24):  # dead with at most 4 live channels and in_c % 16 == 0: the few-channel path
        g = geometry(rng, False)
        g["in_c"] = int(rng.choice([16, 32]))
        g["out_c"] = int(rng.choice([1, 3, 16, 17, 40]))
        live = int(rng.integers(0, 5))
        c = conv_case(lib, rng, len(cases), "dead", 1.0 - min(live, g["out_c"]) / g["out_c"], CONV, g)
        assert c is not None, g
        cases.append(c)
    for name in ("a", "b", "d"):  # the bench layers at 90%, every format
        for fmt in FORMATS:
            c = bench_case(lib, rng, len(cases), name, fmt, 0.9)
            if c is not None:
                cases.append(c)
    return cases


def build_checkers(out_dir: Path) -> dict:
    """The checker with all of kernels_c, once per build in BUILDS (compiled in parallel)."""
    sources = sorted(str(p) for p in (KERNELS / "src").glob("*.c"))
    procs = {}
    for build, (march, _) in BUILDS.items():
        exe = out_dir / f"check_sparse_{build}"
        cmd = ["aarch64-linux-gnu-gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", march, "-I",
               str(KERNELS / "include"), str(CHECKER), *sources, "-lm", "-o", str(exe)]
        procs[build] = (exe, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    exes = {}
    for build, (exe, proc) in procs.items():
        log = proc.communicate()[0]
        assert proc.returncode == 0, f"{build} build failed:\n{log}"
        exes[build] = exe
    return exes


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    return build_kernel_lib(tmp_path_factory.mktemp("sparse_host") / "libep.so")


@pytest.fixture(scope="module")
def vectors(host_lib, tmp_path_factory):
    cases = generate(host_lib)
    return write_vectors(tmp_path_factory.mktemp("sparse_vectors") / "sparse.epsv", cases), cases


@pytest.fixture(scope="module")
def checkers(tmp_path_factory):
    return build_checkers(tmp_path_factory.mktemp("sparse_checkers"))


@pytest.mark.parametrize("build", list(BUILDS))
def test_arm64_sparse_variants_bit_exact(build, vectors, checkers):
    path, cases = vectors
    cpu = BUILDS[build][1]
    run = subprocess.run(["qemu-aarch64", "-L", SYSROOT, "-cpu", cpu, str(checkers[build]), str(path)],
                         capture_output=True, text=True, timeout=300)
    lines = run.stdout.strip().splitlines()
    assert lines and lines[-1].startswith(f"{build}: {len(cases)} cases"), run.stdout + run.stderr
    failed = [ln for ln in lines[:-1] if ln.startswith("case ")]
    detail = "\n".join(f"{ln}\n    {cases[int(ln.split()[1])]['desc']}" for ln in failed[:10])
    assert run.returncode == 0 and not failed, f"{build} under -cpu {cpu}:\n{detail}\n{lines[-1]}"
