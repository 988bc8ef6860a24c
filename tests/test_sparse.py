"""Sparse int8 weight formats: every format and op bit-exact with the dense portable kernels.

Each case draws a random layer (kernel size, stride, dilation, padding, channel counts including 1
and odd) and random pruned weights (unstructured, 1x4 blocks, 2:4, dead channels, dense rows),
encodes them with edgeprune.sparse, loads the blob with ep_sparse_s8_view() and runs the portable
and DSP (emulated on the host) sparse kernels against the dense portable kernel on the same weights.
"""

from __future__ import annotations

import ctypes
import subprocess

import numpy as np
import pytest

from edgeprune.compile import quant as Q
from edgeprune.sparse import FORMATS, encode, encode_nm, storage_bytes_by_format
from kernels_support import KERNELS, SANITIZE, ConvParams, Dims, ptr, quant_struct, random_quant

CASES = 400
I8, I32 = ctypes.c_int8, ctypes.c_int32


class SparseS8(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("format", "kind", "rows", "cols", "input_offset", "n_live", "n_count",
                                              "n_index", "n_values")] + [
        ("bias", ctypes.c_void_p), ("live", ctypes.c_void_p), ("count", ctypes.c_void_p),
        ("index", ctypes.c_void_p), ("values", ctypes.c_void_p)]


@pytest.fixture(scope="module")
def slib(tmp_path_factory):
    """The sparse kernels, their helpers and the dense portable kernels, DSP variants emulated in C."""
    src = KERNELS / "src"
    sources = sorted({*src.glob("*_s8_unstructured*.c"), *src.glob("*_s8_block4*.c"), *src.glob("*_s8_nm24*.c"),
                      *src.glob("*_s8_dead*.c"), src / "sparse_s8.c", src / "conv2d_s8.c",
                      src / "depthwise_conv2d_s8.c", src / "fully_connected_s8.c"})
    out = tmp_path_factory.mktemp("sparse") / "libsparse.so"
    flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"] if SANITIZE else []
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-DEP_DSP_EMULATE",
                    "-I", str(KERNELS / "include"), *flags, *map(str, sources), "-o", str(out)], check=True)
    lib = ctypes.CDLL(str(out))
    lib.ep_sparse_s8_view.restype = ctypes.c_int32
    lib.ep_sparse_s8_nbytes.restype = ctypes.c_int32
    for op in ("conv2d", "depthwise_conv2d", "fully_connected"):
        getattr(lib, f"ep_{op}_s8_sparse_scratch_size").restype = ctypes.c_int32
    return lib


def view(slib, enc):
    """The C struct over an aligned copy of the blob; asserts the C side counts the same bytes."""
    buf = np.frombuffer(enc.blob, np.uint8).copy()  # numpy buffers are 16-byte aligned
    s = SparseS8()
    used = slib.ep_sparse_s8_view(ptr(buf, ctypes.c_uint8), len(enc.blob), ctypes.byref(s))
    assert used == enc.nbytes == len(enc.blob) == slib.ep_sparse_s8_nbytes(ctypes.byref(s))
    return s, buf


def prune(rng, w: np.ndarray, layout: str) -> tuple[np.ndarray, str]:
    """Random pruning pattern: unstructured, 1x4 blocks, 2:4, with some dead channels and dense rows."""
    rows = w.reshape(-1, w.shape[-1]).T if layout == "depthwise" else w.reshape(w.shape[0], -1)
    rows = rows.copy()
    pattern = str(rng.choice(["random", "block", "nm", "dense"]))
    s = float(rng.choice([0.0, 0.3, 0.5, 0.7, 0.9, 0.97, 1.0]))
    if pattern == "random":
        rows[rng.random(rows.shape) < s] = 0
    elif pattern == "block":
        if layout == "depthwise":  # 4 adjacent channels at one tap
            g = (rows.shape[0] + 3) // 4
            keep = np.repeat(rng.random((g, rows.shape[1])) >= s, 4, axis=0)[:rows.shape[0]]
        else:
            g = (rows.shape[1] + 3) // 4
            keep = np.repeat(rng.random((rows.shape[0], g)) >= s, 4, axis=1)[:, :rows.shape[1]]
        rows[~keep] = 0
    elif pattern == "nm" and layout != "depthwise" and w.shape[-1] % 4 == 0:
        groups = rows.reshape(rows.shape[0], -1, 4)
        order = np.argsort(rng.random(groups.shape), axis=2)
        groups[order < 2] = 0  # zero 2 random positions of every group
        rows = groups.reshape(rows.shape)
    dead = rng.random(rows.shape[0]) < rng.choice([0.0, 0.3])
    rows[dead] = 0
    rows[rng.random(rows.shape[0]) < 0.1] = rng.integers(-127, 128, rows.shape[1])  # some dense rows
    out = rows.T.reshape(w.shape) if layout == "depthwise" else rows.reshape(w.shape)
    return np.ascontiguousarray(out, dtype=np.int8), pattern


def variants(fmt: str, op: str, layout: str) -> list[str]:
    names = [f"ep_{op}_s8_{fmt}", f"ep_{op}_s8_sparse"]
    if fmt in ("block4", "nm24", "dead") and not (layout == "depthwise" and fmt == "dead") or (fmt, op) == ("unstructured", "conv2d"):
        names.append(f"ep_{op}_s8_{fmt}_dsp")
    return names


def conv_case(rng, depthwise: bool) -> dict:
    while True:
        in_h, in_w = (int(v) for v in rng.integers(1, 10, 2))
        k_h, k_w = (int(v) for v in rng.choice([1, 1, 2, 3, 5], 2))
        s_h, s_w = (int(v) for v in rng.integers(1, 4, 2))
        d_h, d_w = (int(v) for v in rng.choice([1, 1, 2], 2))
        padding = str(rng.choice(["SAME", "VALID"]))
        out_h = Q.conv_output_size(in_h, k_h, s_h, d_h, padding)
        out_w = Q.conv_output_size(in_w, k_w, s_w, d_w, padding)
        if out_h > 0 and out_w > 0:
            break
    in_c = int(rng.choice([1, 3, 4, 5, 8, 12, 16, 33, 64]))
    mult = int(rng.choice([1, 1, 1, 2, 3])) if depthwise else 1
    out_c = in_c * mult if depthwise else int(rng.choice([1, 2, 3, 7, 8, 16]))
    return dict(in_h=in_h, in_w=in_w, in_c=in_c, out_c=out_c, k_h=k_h, k_w=k_w, s_h=s_h, s_w=s_w, d_h=d_h, d_w=d_w,
                padding=padding, out_h=out_h, out_w=out_w, activation=str(rng.choice(["NONE", "RELU", "RELU6"])),
                mult=mult, batches=int(rng.integers(1, 3)))


@pytest.mark.parametrize("depthwise", [False, True], ids=["conv2d", "depthwise"])
def test_sparse_conv_matches_dense(slib, depthwise):
    rng = np.random.default_rng(10 + depthwise)
    layout, op = ("depthwise", "depthwise_conv2d") if depthwise else ("conv", "conv2d")
    checked = dict.fromkeys(FORMATS, 0)
    for case in range(CASES):
        c = conv_case(rng, depthwise)
        w_shape = (1, c["k_h"], c["k_w"], c["out_c"]) if depthwise else (c["out_c"], c["k_h"], c["k_w"], c["in_c"])
        in_shape = (c["batches"], c["in_h"], c["in_w"], c["in_c"])
        out_shape = (c["batches"], c["out_h"], c["out_w"], c["out_c"])
        w, pattern = prune(rng, rng.integers(-127, 128, w_shape).astype(np.int8), layout)
        bias = rng.integers(-3000, 3000, c["out_c"]).astype(np.int32)
        in_scale, in_zp, f_scales, out_scale, out_zp = random_quant(rng, c["out_c"], int(np.prod(w_shape[1:3])) * (1 if depthwise else c["in_c"]))
        keep: list = []
        q = quant_struct(in_scale, in_zp, f_scales, out_scale, out_zp, c["activation"], keep)
        params = ConvParams(c["s_h"], c["s_w"], c["d_h"], c["d_w"],
                            Q.conv_padding(c["in_h"], c["k_h"], c["s_h"], c["d_h"], c["out_h"], c["padding"]),
                            Q.conv_padding(c["in_w"], c["k_w"], c["s_w"], c["d_w"], c["out_w"], c["padding"]))
        x = rng.integers(-128, 128, in_shape).astype(np.int8)
        dims = [Dims(*in_shape), Dims(*w_shape), Dims(*out_shape)]
        ref = np.zeros(out_shape, np.int8)
        head = (ctypes.byref(params), c["mult"]) if depthwise else (ctypes.byref(params),)
        getattr(slib, f"ep_{op}_s8_portable")(*head, ctypes.byref(q), ctypes.byref(dims[0]), ptr(x, I8), ctypes.byref(dims[1]),
                                              ptr(w, I8), ptr(bias, I32), ctypes.byref(dims[2]), ptr(ref, I8), None)
        for fmt in FORMATS:
            try:
                enc = encode(fmt, w, bias, -in_zp, layout)
            except ValueError:
                assert fmt == "nm24", f"case {case}: {fmt} refused {pattern} weights"
                continue
            checked[fmt] += 1
            s, blob = view(slib, enc)
            size = getattr(slib, f"ep_{op}_s8_sparse_scratch_size")(ctypes.byref(s), ctypes.byref(dims[0]), ctypes.byref(dims[1]), ctypes.byref(dims[2]))
            for fn in variants(fmt, op, layout):
                scratch = np.full(size + 8, 0xA5, np.uint8)  # guard bytes: the kernel must stay inside its reported scratch
                got = np.zeros(out_shape, np.int8)
                getattr(slib, fn)(*head, ctypes.byref(q), ctypes.byref(dims[0]), ptr(x, I8), ctypes.byref(dims[1]),
                                  ctypes.byref(s), ctypes.byref(dims[2]), ptr(got, I8), ptr(scratch, ctypes.c_uint8))
                assert np.array_equal(got, ref), f"case {case} {fn} ({pattern}): {c}, {np.count_nonzero(got != ref)} outputs differ"
                assert np.all(scratch[size:] == 0xA5), f"case {case} {fn}: wrote past its scratch"
    assert all(checked[f] > (10 if f == "nm24" else 100) for f in FORMATS if not (depthwise and f == "nm24")), checked


def test_sparse_fully_connected_matches_dense(slib):
    rng = np.random.default_rng(12)
    checked = dict.fromkeys(FORMATS, 0)
    for case in range(CASES):
        batches = int(rng.integers(1, 4))
        n_in = int(rng.choice([1, 3, 4, 7, 16, 64, 100, 256, 700]))
        n_out = int(rng.choice([1, 2, 5, 8, 31]))
        activation = str(rng.choice(["NONE", "RELU", "RELU6"]))
        w, pattern = prune(rng, rng.integers(-127, 128, (n_out, n_in)).astype(np.int8), "fc")
        bias = rng.integers(-3000, 3000, n_out).astype(np.int32)
        in_scale, in_zp, f_scales, out_scale, out_zp = random_quant(rng, n_out, n_in)
        keep: list = []
        q = quant_struct(in_scale, in_zp, f_scales, out_scale, out_zp, activation, keep)
        x = rng.integers(-128, 128, (batches, n_in)).astype(np.int8)
        ref = np.zeros((batches, n_out), np.int8)
        slib.ep_fully_connected_s8_portable(ctypes.byref(q), batches, n_in, n_out, ptr(x, I8), ptr(w, I8), ptr(bias, I32),
                                            ptr(ref, I8), None)
        for fmt in FORMATS:
            try:
                enc = encode(fmt, w, bias, -in_zp, "fc")
            except ValueError:
                assert fmt == "nm24", f"case {case}: {fmt} refused {pattern} weights"
                continue
            checked[fmt] += 1
            s, blob = view(slib, enc)
            size = slib.ep_fully_connected_s8_sparse_scratch_size(ctypes.byref(s), batches)
            for fn in variants(fmt, "fully_connected", "fc"):
                scratch = np.full(size + 8, 0xA5, np.uint8)
                got = np.zeros((batches, n_out), np.int8)
                getattr(slib, fn)(ctypes.byref(q), batches, ptr(x, I8), ctypes.byref(s), ptr(got, I8), ptr(scratch, ctypes.c_uint8))
                assert np.array_equal(got, ref), f"case {case} {fn} ({pattern}): {batches}x{n_in}->{n_out}, {np.count_nonzero(got != ref)} differ"
                assert np.all(scratch[size:] == 0xA5), f"case {case} {fn}: wrote past its scratch"
    assert all(v > (10 if f == "nm24" else 100) for f, v in checked.items()), checked


def test_storage_bytes_are_exact_and_shrink_with_sparsity():
    rng = np.random.default_rng(13)
    w = rng.integers(-127, 128, (64, 3, 3, 16)).astype(np.int8)
    w[rng.random(w.shape) < 0.9] = 0
    w[5] = 0  # a dead channel
    sizes = storage_bytes_by_format(w, "conv", np.zeros(64, np.int32), 3)
    assert sizes["dense"] == w.size + 4 * 64
    assert sizes["nm24"] is None  # 90% unstructured is not 2:4
    for fmt in ("unstructured", "block4", "dead"):
        enc = encode(fmt, w, np.zeros(64, np.int32), 3, "conv")
        assert sizes[fmt] == enc.nbytes == len(enc.blob)
        assert list(enc.live_channels) == [o for o in range(64) if o != 5]
        assert enc.describe()["nbytes"] == enc.nbytes and enc.describe()["live_rows"] == 63
    nnz = np.count_nonzero(w)
    # unstructured: 40-byte header, bias, live list and counts (each padded to 4 bytes), one delta and one value
    # per non-zero (no fillers: rows are shorter than 256)
    assert sizes["unstructured"] == 40 + 4 * 64 + 2 * (2 * 63 + 2) + 2 * ((nnz + 3) // 4 * 4)
    assert sizes["unstructured"] < sizes["dense"] / 3


def test_folded_bias_is_exact():
    w = np.array([[1, -2, 0, 3], [0, 0, 0, 0]], np.int8)
    enc = encode("dead", w, np.array([10, -7], np.int32), -5, "fc")
    assert list(enc.bias) == [10 - 5 * 2, -7]
    assert list(enc.live) == [0]


def test_deltas_bridge_long_gaps():
    w = np.zeros((1, 1000), np.int8)
    w[0, [0, 600, 999]] = [5, -6, 7]
    enc = encode("unstructured", w, None, 0, "fc")
    assert list(enc.index) == [0, 255, 255, 90, 255, 144] and list(enc.values) == [5, 0, 0, -6, 0, 7]
    blk = encode("block4", w, None, 0, "fc")  # blocks 0, 150, 249
    assert list(blk.index) == [0, 150, 99] and blk.values.size == 12


def test_nm24_layout():
    w = np.array([[0, 3, 0, -4, 5, 0, 0, 0]], np.int8)  # groups: positions (1,3) and (0, padded 1)
    enc = encode_nm(w, None, 0, "fc")
    assert list(enc.values) == [3, -4, 5, 0]
    assert list(enc.index) == [(1 | 3 << 2) | ((0 | 1 << 2) << 4)]


def test_encoders_reject_weights_that_do_not_fit():
    rng = np.random.default_rng(14)
    dense = rng.integers(1, 127, (4, 8)).astype(np.int8)
    with pytest.raises(ValueError, match="not 2:4"):
        encode("nm24", dense, None, 0, "fc")
    with pytest.raises(ValueError, match="divisible by 4"):
        encode("nm24", np.zeros((4, 3, 3, 6), np.int8), None, 0, "conv")
    with pytest.raises(ValueError, match="conv and fully connected"):
        encode("nm24", np.zeros((1, 3, 3, 8), np.int8), None, 0, "depthwise")
    with pytest.raises(ValueError, match="int8"):
        encode("unstructured", dense.astype(np.int16), None, 0, "fc")
    with pytest.raises(ValueError, match="format must be"):
        encode("csr", dense, None, 0, "fc")
    with pytest.raises(ValueError, match="layout"):
        encode("dead", dense, None, 0, "matrix")
    with pytest.raises(ValueError, match=r"\(1,H,W,C\)"):
        encode("dead", np.zeros((2, 3, 3, 8), np.int8), None, 0, "depthwise")
    with pytest.raises(ValueError, match="bias must have"):
        encode("dead", dense, np.zeros(3, np.int32), 0, "fc")
    with pytest.raises(ValueError, match="overflows int32"):
        encode("dead", dense, np.full(4, 2**31 - 1000, np.int64), 128, "fc")


def test_view_rejects_malformed_blobs(slib):
    w = np.zeros((3, 600), np.int8)
    w[0, [1, 500]] = [4, 9]
    w[2, 599] = -3
    good = encode("unstructured", w, None, 0, "fc").blob

    def parse(blob: bytes, size: int | None = None) -> int:
        buf = np.frombuffer(blob, np.uint8).copy()
        return slib.ep_sparse_s8_view(ptr(buf, ctypes.c_uint8), len(blob) if size is None else size, ctypes.byref(SparseS8()))

    assert parse(good) == len(good)
    assert parse(good, len(good) - 1) == -1  # truncated
    assert parse(b"XXXX" + good[4:]) == -1  # magic
    bad_format = bytearray(good)
    bad_format[4] = 9
    assert parse(bytes(bad_format)) == -1
    # a delta that walks past the row: row 2's last delta (255, 255, 89 to reach 599) raised to 255
    enc = encode("unstructured", w, None, 0, "fc")
    at = len(good) - (enc.values.size + 3) // 4 * 4 - (enc.index.size + 3) // 4 * 4 + enc.index.size - 1
    assert good[at] == 89
    corrupt = bytearray(good)
    corrupt[at] = 255
    assert parse(bytes(corrupt)) == -1


def odd_quant(rng, out_c: int, fan_in: int, activation: str, keep: list):
    """random_quant, sometimes with one channel whose multiplier takes the left-shift or shift -1 form (the
    DSP kernels then leave their fast requantization for the general one) and an activation range."""
    in_scale, in_zp, f_scales, out_scale, out_zp = random_quant(rng, out_c, fan_in)
    if rng.random() < 0.3:
        f_scales[int(rng.integers(out_c))] = out_scale / in_scale * float(rng.choice([0.3, 0.7, 1.5, 3.0]))
    return quant_struct(in_scale, in_zp, f_scales, out_scale, out_zp, activation, keep), in_zp


def test_dsp_multi_pixel_paths_match_dense(slib):
    """The DSP conv drivers' 4-pixel paths: a 1x1 kernel over contiguous pixels (one widening per group),
    groups of 4 interior pixels of a kernel row (I % 8 == 0), the per-pixel fallback at borders and in
    the last group, with 1x4-block and dead-row pruning at the sparsities the kernels are tuned for,
    and both requantization paths (all channels in the fast form with no activation, or not)."""
    rng = np.random.default_rng(21)
    fns = ("ep_conv2d_s8_block4_dsp", "ep_conv2d_s8_dead_dsp", "ep_conv2d_s8_unstructured_dsp")
    fmt_of = {"ep_conv2d_s8_block4_dsp": "block4", "ep_conv2d_s8_dead_dsp": "dead",
              "ep_conv2d_s8_unstructured_dsp": "unstructured"}
    for case in range(150):
        k = int(rng.choice([1, 1, 3, 3, 5]))
        stride, (d_h, d_w) = int(rng.choice([1, 1, 2])), (int(v) for v in rng.choice([1, 1, 2], 2))
        padding = str(rng.choice(["SAME", "VALID"])) if k > 1 else "VALID"
        in_h, in_w = int(rng.integers(k * d_h, 16)), int(rng.integers(k * d_w, 16))
        in_c, out_c = int(rng.choice([4, 8, 12, 16, 24, 64])), int(rng.integers(1, 20))
        out_h, out_w = Q.conv_output_size(in_h, k, stride, d_h, padding), Q.conv_output_size(in_w, k, stride, d_w, padding)
        batches = int(rng.integers(1, 3))
        w_shape, in_shape, out_shape = (out_c, k, k, in_c), (batches, in_h, in_w, in_c), (batches, out_h, out_w, out_c)
        rows = rng.integers(-127, 128, (out_c, k * k * in_c // 4, 4)).astype(np.int8)
        rows[rng.random(rows.shape[:2]) < float(rng.choice([0.0, 0.5, 0.7, 0.9, 1.0]))] = 0  # whole 1x4 blocks
        rows[rng.random(out_c) < 0.2] = 0  # dead rows
        w = rows.reshape(w_shape)
        bias = rng.integers(-3000, 3000, out_c).astype(np.int32)
        keep: list = []
        activation = str(rng.choice(["NONE", "NONE", "RELU"]))
        q, in_zp = odd_quant(rng, out_c, k * k * in_c, activation, keep)
        params = ConvParams(stride, stride, d_h, d_w, Q.conv_padding(in_h, k, stride, d_h, out_h, padding),
                            Q.conv_padding(in_w, k, stride, d_w, out_w, padding))
        x = rng.integers(-128, 128, in_shape).astype(np.int8)
        dims = [Dims(*in_shape), Dims(*w_shape), Dims(*out_shape)]
        ref = np.zeros(out_shape, np.int8)
        slib.ep_conv2d_s8_portable(ctypes.byref(params), ctypes.byref(q), ctypes.byref(dims[0]), ptr(x, I8),
                                   ctypes.byref(dims[1]), ptr(w, I8), ptr(bias, I32), ctypes.byref(dims[2]), ptr(ref, I8), None)
        for fn in fns:
            s, blob = view(slib, encode(fmt_of[fn], w, bias, -in_zp, "conv"))
            size = slib.ep_conv2d_s8_sparse_scratch_size(ctypes.byref(s), ctypes.byref(dims[0]), ctypes.byref(dims[1]),
                                                        ctypes.byref(dims[2]))
            scratch = np.full(size + 8, 0xA5, np.uint8)
            got = np.zeros(out_shape, np.int8)
            getattr(slib, fn)(ctypes.byref(params), ctypes.byref(q), ctypes.byref(dims[0]), ptr(x, I8), ctypes.byref(dims[1]),
                              ctypes.byref(s), ctypes.byref(dims[2]), ptr(got, I8), ptr(scratch, ctypes.c_uint8))
            where = f"case {case} {fn}: {in_shape} k{k} s{stride} d{d_h},{d_w} {padding} -> {out_c}, {activation}"
            assert np.array_equal(got, ref), f"{where}: {np.count_nonzero(got != ref)} outputs differ"
            assert np.all(scratch[size:] == 0xA5), f"{where}: wrote past its scratch"


def test_dsp_fully_connected_block_rows_match_dense(slib):
    """FULLY_CONNECTED DSP rows (two blocks per step, odd block counts, per-row requantization forms)."""
    rng = np.random.default_rng(22)
    for case in range(200):
        batches, n_in, n_out = int(rng.integers(1, 4)), int(rng.choice([4, 8, 20, 64, 256, 300])), int(rng.integers(1, 40))
        rows = rng.integers(-127, 128, (n_out, (n_in + 3) // 4, 4)).astype(np.int8)
        rows[rng.random(rows.shape[:2]) < float(rng.choice([0.0, 0.5, 0.7, 0.9, 1.0]))] = 0
        rows[rng.random(n_out) < 0.2] = 0
        w = np.ascontiguousarray(rows.reshape(n_out, -1)[:, :n_in])
        bias = rng.integers(-3000, 3000, n_out).astype(np.int32)
        keep: list = []
        activation = str(rng.choice(["NONE", "NONE", "RELU6"]))
        q, in_zp = odd_quant(rng, n_out, n_in, activation, keep)
        x = rng.integers(-128, 128, (batches, n_in)).astype(np.int8)
        ref = np.zeros((batches, n_out), np.int8)
        slib.ep_fully_connected_s8_portable(ctypes.byref(q), batches, n_in, n_out, ptr(x, I8), ptr(w, I8), ptr(bias, I32),
                                            ptr(ref, I8), None)
        for fmt in ("block4", "dead"):
            s, blob = view(slib, encode(fmt, w, bias, -in_zp, "fc"))
            size = slib.ep_fully_connected_s8_sparse_scratch_size(ctypes.byref(s), batches)
            scratch = np.full(size + 8, 0xA5, np.uint8)
            got = np.zeros((batches, n_out), np.int8)
            getattr(slib, f"ep_fully_connected_s8_{fmt}_dsp")(ctypes.byref(q), batches, ptr(x, I8), ctypes.byref(s),
                                                              ptr(got, I8), ptr(scratch, ctypes.c_uint8))
            where = f"case {case} {fmt}_dsp: {batches}x{n_in}->{n_out}, {activation}"
            assert np.array_equal(got, ref), f"{where}: {np.count_nonzero(got != ref)} outputs differ"
            assert np.all(scratch[size:] == 0xA5), f"{where}: wrote past its scratch"
