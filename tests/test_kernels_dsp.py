"""The Cortex-M DSP kernels (kernels_c/src/*_dsp.c) against the portable ones, bit for bit.

The DSP code is built for the host with -DEP_DSP_EMULATE, where ep_acle_host.h supplies the
ACLE intrinsics (SMLAD, SXTB16, ...) in plain C, so the same source the Cortex-M build compiles
runs here. The portable kernels are checked against TFLite Micro in test_kernels_c.py; here every
dsp variant must give exactly their output on random geometries (odd channel counts, 1x1 to 5x5
kernels, strides, dilations, SAME/VALID, batches), extreme quantization and the five bench layers.
"""

from __future__ import annotations

import ctypes
import subprocess

import numpy as np
import pytest

from edgeprune.compile import quant as Q
from kernels_support import KERNELS, ConvParams, Dims, build_kernel_lib, ptr, quant_struct, random_conv_case, random_quant

CASES = 300
i8, i32 = ctypes.c_int8, ctypes.c_int32
CANARY = 0x5A  # fills the bytes after the reported scratch size: the kernels must not touch them


@pytest.fixture(scope="module")
def dsp_lib(tmp_path_factory):
    """kernels_c with the DSP variants compiled in, intrinsics emulated in C."""
    lib = build_kernel_lib(tmp_path_factory.mktemp("kernels_dsp") / "libep_dsp.so", "-DEP_DSP_EMULATE")
    for fn in ("ep_conv2d_s8_scratch_size_dsp", "ep_depthwise_conv2d_s8_scratch_size_dsp",
               "ep_fully_connected_s8_scratch_size_dsp"):
        getattr(lib, fn).restype = ctypes.c_int32
    return lib


def _scratch(size):
    """A 4-byte aligned scratch buffer of `size` bytes followed by 64 canary bytes."""
    buf = np.full((size + 64 + 3) // 4, int.from_bytes(bytes([CANARY]) * 4, "little"), np.uint32)
    return buf, buf.view(np.uint8)


def _check_canary(raw, size, what):
    assert np.all(raw[size:size + 64] == CANARY), f"{what}: wrote past its {size}-byte scratch"


def _random_weights(rng, shape):
    w = rng.integers(-128, 128, shape).astype(np.int8)  # -128 too: legal int8, harder for 16-bit lanes
    w[rng.random(shape) < rng.uniform(0, 0.9)] = 0
    return w


def _quant(rng, out_c, fan_in, activation, keep, in_zp=None, big_shifts=False):
    in_scale, zp, f_scales, out_scale, out_zp = random_quant(rng, out_c, fan_in)
    q = quant_struct(in_scale, zp if in_zp is None else in_zp, f_scales, out_scale, out_zp, activation, keep)
    if big_shifts:  # shifts of -1..2 on some channels: the requantization's general form, not the one-shift one
        shift = keep[-1]
        pick = rng.random(out_c) < 0.5
        shift[pick] = rng.integers(-1, 3, int(pick.sum()))
    return q


def run_conv(lib, dsp_lib, c, rng, depthwise, in_zp=None, use_bias=True, big_shifts=False):
    """Runs one conv/depthwise case through portable and dsp; returns (portable, dsp, scratch size)."""
    n = c.get("batch", 1)
    in_shape, out_shape = (n, c["in_h"], c["in_w"], c["in_c"]), (n, c["out_h"], c["out_w"], c["out_c"])
    w_shape = (1, c["k_h"], c["k_w"], c["out_c"]) if depthwise else (c["out_c"], c["k_h"], c["k_w"], c["in_c"])
    fan_in = c["k_h"] * c["k_w"] * (1 if depthwise else c["in_c"])
    keep: list = []
    q = _quant(rng, c["out_c"], fan_in, c["activation"], keep, in_zp, big_shifts)
    w = _random_weights(rng, w_shape)
    bias = rng.integers(-3000, 3000, c["out_c"]).astype(np.int32)
    x = rng.integers(-128, 128, in_shape).astype(np.int8)
    params = ConvParams(c["s_h"], c["s_w"], c["d_h"], c["d_w"],
                        Q.conv_padding(c["in_h"], c["k_h"], c["s_h"], c["d_h"], c["out_h"], c["padding"]),
                        Q.conv_padding(c["in_w"], c["k_w"], c["s_w"], c["d_w"], c["out_w"], c["padding"]))
    dims = [Dims(*in_shape), Dims(*w_shape), Dims(*out_shape)]
    d = [ctypes.byref(v) for v in dims]
    b = ptr(bias, i32) if use_bias else None
    name = "ep_depthwise_conv2d_s8" if depthwise else "ep_conv2d_s8"
    size = getattr(dsp_lib, name + "_scratch_size_dsp")(*d)
    buf, raw = _scratch(size)
    outs = []
    for variant, lb, scratch in (("portable", lib, None), ("dsp", dsp_lib, buf.ctypes.data_as(ctypes.c_void_p))):
        got = np.zeros(out_shape, np.int8)
        args = (ctypes.byref(q), d[0], ptr(x, i8), d[1], ptr(w, i8), b, d[2], ptr(got, i8), scratch)
        fn = getattr(lb, f"{name}_{variant}")
        fn(ctypes.byref(params), c["mult"], *args) if depthwise else fn(ctypes.byref(params), *args)
        outs.append(got)
    _check_canary(raw, size, f"{name}_dsp {c}")
    return outs[0], outs[1], size


def run_fc(lib, dsp_lib, rng, batches, n_in, n_out, activation, in_zp=None, use_bias=True, big_shifts=False):
    keep: list = []
    q = _quant(rng, n_out, n_in, activation, keep, in_zp, big_shifts)
    w = _random_weights(rng, (n_out, n_in))
    bias = rng.integers(-3000, 3000, n_out).astype(np.int32)
    x = rng.integers(-128, 128, (batches, n_in)).astype(np.int8)
    size = dsp_lib.ep_fully_connected_s8_scratch_size_dsp(batches, n_in, n_out)
    buf, raw = _scratch(size)
    outs = []
    for variant, lb, scratch in (("portable", lib, None), ("dsp", dsp_lib, buf.ctypes.data_as(ctypes.c_void_p))):
        got = np.zeros((batches, n_out), np.int8)
        getattr(lb, f"ep_fully_connected_s8_{variant}")(ctypes.byref(q), batches, n_in, n_out, ptr(x, i8), ptr(w, i8),
                                                         ptr(bias, i32) if use_bias else None, ptr(got, i8), scratch)
        outs.append(got)
    _check_canary(raw, size, f"ep_fully_connected_s8_dsp {batches}x{n_in}->{n_out}")
    return outs[0], outs[1], size


def _wide_case(rng, depthwise):
    """random_conv_case with more channels (odd counts, multiples of 4 and of 2) and a batch."""
    c = random_conv_case(rng, depthwise)
    c["in_c"] = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 12, 16, 17, 33]))
    c["out_c"] = c["in_c"] * c["mult"] if depthwise else int(rng.choice([1, 2, 3, 5, 8, 11, 16, 24]))
    c["batch"] = int(rng.choice([1, 1, 1, 2, 3]))
    return c


@pytest.mark.parametrize("depthwise", [False, True], ids=["conv2d", "depthwise"])
def test_dsp_conv_ops_match_portable(lib, dsp_lib, depthwise):
    rng = np.random.default_rng(10 if depthwise else 11)
    for case in range(CASES):
        c = random_conv_case(rng, depthwise) if case % 2 else _wide_case(rng, depthwise)
        expected, got, _ = run_conv(lib, dsp_lib, c, rng, depthwise, use_bias=case % 7 != 0)
        assert np.array_equal(got, expected), f"case {case}: {c}, {np.count_nonzero(got != expected)} outputs differ"


def test_dsp_fully_connected_matches_portable(lib, dsp_lib):
    rng = np.random.default_rng(12)
    for case in range(CASES):
        batches, n_in, n_out = int(rng.integers(1, 4)), int(rng.integers(1, 300)), int(rng.integers(1, 40))
        activation = str(rng.choice(["NONE", "RELU", "RELU6"]))
        expected, got, _ = run_fc(lib, dsp_lib, rng, batches, n_in, n_out, activation, use_bias=case % 7 != 0)
        assert np.array_equal(got, expected), f"case {case}: {batches}x{n_in}->{n_out} {activation}, {np.count_nonzero(got != expected)} differ"


def test_dsp_depthwise_fast_path_geometries(lib, dsp_lib):
    """The planar-line fast path on purpose: wide and tall images (lines along x or along y), 3x3 and
    other kernels, strides, a dilation on either axis, SAME/VALID, channel counts with leftovers."""
    rng = np.random.default_rng(16)
    case = 0
    for in_h, in_w in ((3, 17), (17, 3), (9, 9), (1, 6), (6, 1)):
        for k_h, k_w in ((3, 3), (5, 2), (1, 3), (2, 5)):
            for (s_h, s_w), (d_h, d_w) in (((1, 1), (1, 1)), ((2, 1), (1, 2)), ((1, 3), (2, 1)), ((2, 2), (1, 1))):
                for padding in ("SAME", "VALID"):
                    out_h = Q.conv_output_size(in_h, k_h, s_h, d_h, padding)
                    out_w = Q.conv_output_size(in_w, k_w, s_w, d_w, padding)
                    if out_h <= 0 or out_w <= 0:
                        continue
                    in_c = int(rng.choice([4, 8, 10, 13]))
                    c = dict(in_h=in_h, in_w=in_w, in_c=in_c, out_c=in_c, k_h=k_h, k_w=k_w, s_h=s_h, s_w=s_w, d_h=d_h,
                             d_w=d_w, padding=padding, out_h=out_h, out_w=out_w, mult=1,
                             activation=("NONE", "RELU", "RELU6")[case % 3], batch=int(rng.choice([1, 2])))
                    expected, got, _ = run_conv(lib, dsp_lib, c, rng, True)
                    assert np.array_equal(got, expected), f"case {case}: {c}"
                    case += 1
    assert case > 100


def test_dsp_conv_small_k_path(lib, dsp_lib):
    """CONV_2D with k_h * k_w * in_c not a multiple of 4 and few output channels (first layers such as
    3x3x3 -> 8): int16 weights in scratch, columns widened straight from the image rows when the
    window is inside it, gathered at the borders. Strides, dilations, SAME/VALID, odd pixel counts,
    batches, activations, shifts outside the one-shift range and extreme zero points."""
    rng = np.random.default_rng(18)
    case = 0
    for in_c, (k_h, k_w) in ((3, (3, 3)), (1, (3, 3)), (3, (1, 1)), (2, (1, 3)), (5, (3, 1)), (3, (5, 5)), (7, (1, 1)),
                             (1, (5, 5)), (6, (3, 3)), (3, (2, 3))):
        for (s_h, s_w), (d_h, d_w) in (((1, 1), (1, 1)), ((2, 2), (1, 1)), ((1, 2), (2, 1)), ((3, 1), (1, 2))):
            for padding in ("SAME", "VALID"):
                in_h, in_w = (int(v) for v in rng.integers(1, 14, 2))
                out_h = Q.conv_output_size(in_h, k_h, s_h, d_h, padding)
                out_w = Q.conv_output_size(in_w, k_w, s_w, d_w, padding)
                if out_h <= 0 or out_w <= 0:
                    continue
                out_c = int(rng.choice([1, 2, 3, 8, 11, 16]))
                c = dict(in_h=in_h, in_w=in_w, in_c=in_c, out_c=out_c, k_h=k_h, k_w=k_w, s_h=s_h, s_w=s_w, d_h=d_h,
                         d_w=d_w, padding=padding, out_h=out_h, out_w=out_w, mult=1,
                         activation=("NONE", "RELU", "RELU6")[case % 3], batch=int(rng.choice([1, 2, 3])))
                in_zp = (None, -128, 127)[case % 3]
                expected, got, _ = run_conv(lib, dsp_lib, c, rng, False, in_zp=in_zp, use_bias=case % 5 != 0,
                                            big_shifts=case % 4 == 1)
                assert np.array_equal(got, expected), (
                    f"case {case}: {c} in_zp {in_zp}, {np.count_nonzero(got != expected)} outputs differ")
                case += 1
    assert case > 60


def test_dsp_requantization_outside_the_one_shift_range(lib, dsp_lib):
    """Channels with shift -1..2 take ep_requantize_fast's general branch inside every kernel."""
    rng = np.random.default_rng(17)
    for case in range(60):
        depthwise = bool(case % 2)
        c = _wide_case(rng, depthwise)
        if case % 4 < 2:  # the 3x3 stride-1 depthwise path fuses requantization: cover it too
            c.update(k_h=3, k_w=3, s_h=1, s_w=1, d_h=1, d_w=1, padding="SAME", out_h=c["in_h"], out_w=c["in_w"])
        expected, got, _ = run_conv(lib, dsp_lib, c, rng, depthwise, big_shifts=True)
        assert np.array_equal(got, expected), f"case {case}: {c}"
        expected, got, _ = run_fc(lib, dsp_lib, rng, 2, int(rng.integers(1, 100)), int(rng.integers(1, 20)),
                                  str(rng.choice(["NONE", "RELU"])), big_shifts=True)
        assert np.array_equal(got, expected), f"fc case {case}"


@pytest.mark.parametrize("in_zp", [-128, 127, 0])
def test_dsp_extreme_zero_points(lib, dsp_lib, in_zp):
    """Input zero points at both ends of int8: padding is -offset, widened values reach +-255."""
    rng = np.random.default_rng(200 + in_zp)
    for case in range(40):
        depthwise = bool(case % 2)
        c = _wide_case(rng, depthwise)
        expected, got, _ = run_conv(lib, dsp_lib, c, rng, depthwise, in_zp=in_zp)
        assert np.array_equal(got, expected), f"case {case} zp {in_zp}: {c}"
        expected, got, _ = run_fc(lib, dsp_lib, rng, 2, int(rng.integers(1, 200)), int(rng.integers(1, 20)), "NONE", in_zp=in_zp)
        assert np.array_equal(got, expected), f"fc case {case} zp {in_zp}"


def _layer(in_h, in_w, in_c, out_c, k, s, depthwise=False):
    out_h, out_w = Q.conv_output_size(in_h, k, s, 1, "SAME"), Q.conv_output_size(in_w, k, s, 1, "SAME")
    return dict(in_h=in_h, in_w=in_w, in_c=in_c, out_c=out_c, k_h=k, k_w=k, s_h=s, s_w=s, d_h=1, d_w=1, padding="SAME",
                out_h=out_h, out_w=out_w, activation="RELU", mult=1)


BENCH_LAYERS = {
    "a_conv3x3_16to16_32x32": (_layer(32, 32, 16, 16, 3, 1), False),
    "b_conv1x1_64to64_25x5": (_layer(25, 5, 64, 64, 1, 1), False),
    "c_depthwise3x3_64ch_25x5": (_layer(25, 5, 64, 64, 3, 1, depthwise=True), True),
    "e_conv3x3s2_3to8_96x96": (_layer(96, 96, 3, 8, 3, 2), False),
}


@pytest.mark.parametrize("name", list(BENCH_LAYERS))
def test_dsp_bench_layers_match_portable(lib, dsp_lib, name):
    c, depthwise = BENCH_LAYERS[name]
    expected, got, size = run_conv(lib, dsp_lib, c, np.random.default_rng(14), depthwise)
    assert np.array_equal(got, expected), f"{name}: {np.count_nonzero(got != expected)} outputs differ"
    assert size <= 1024, f"{name}: {size} bytes of scratch"


def test_dsp_bench_fully_connected_256_to_128(lib, dsp_lib):
    expected, got, size = run_fc(lib, dsp_lib, np.random.default_rng(15), 1, 256, 128, "NONE")
    assert np.array_equal(got, expected)
    assert size == 512


def test_default_host_build_has_no_dsp_code(lib):
    """Without EP_DSP_EMULATE the dsp files compile to nothing on the host."""
    assert not hasattr(lib, "ep_conv2d_s8_dsp")
    assert not hasattr(lib, "ep_fully_connected_s8_dsp")


FIXEDPOINT_CHECK = r"""
#include <stdio.h>
#include "ep_fixedpoint.h"
static unsigned long long s = 88172645463325252ull;
static uint32_t r32(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return (uint32_t)s; }
int main(void)
{
    long bad = 0;
    const int32_t edge[] = {INT32_MIN, INT32_MIN + 1, -(1 << 30) - 1, -(1 << 30), -65536, -1, 0, 1, 65535,
                            1 << 30, (1 << 30) + 1, INT32_MAX - 1, INT32_MAX};
    for (int i = 0; i < 13; ++i)
        for (int j = 0; j < 13; ++j)
            bad += ep_saturating_rounding_doubling_high_mul(edge[i], edge[j]) !=
                   ep_saturating_rounding_doubling_high_mul_fast(edge[i], edge[j]);
    for (long k = 0; k < 3000000; ++k) {
        int32_t a = (int32_t)r32(), m = (int32_t)r32();
        switch (k & 3) {
        case 0: a >>= r32() & 31; break;                                        /* small accumulators */
        case 1: m = 1 << 30; a = (int32_t)(r32() >> (r32() & 31)) * (k & 4 ? -1 : 1); break; /* exact ties */
        case 2: m = (int32_t)(0x40000000u + (r32() >> 2)); a >>= r32() & 15; break; /* real multipliers */
        default: break;
        }
        int32_t shift = (int32_t)(r32() % 36) - 31;                              /* [-31, 4] */
        bad += ep_saturating_rounding_doubling_high_mul(a, m) != ep_saturating_rounding_doubling_high_mul_fast(a, m);
        if (ep_rshift_form_applies(m, shift))
            bad += ep_multiply_by_quantized_multiplier(a, m, shift) != ep_multiply_by_quantized_multiplier_rshift(a, m, -shift);
        const int32_t zp = (int32_t)(r32() % 256) - 128, lo = k & 8 ? zp : -128;
        bad += ep_requantize(a, m, shift, zp, lo, 127) != ep_requantize_fast(a, m, shift, zp, lo, 127);
    }
    printf("%ld\n", bad);
    return bad != 0;
}
"""


def test_fast_fixedpoint_helpers_equal_the_reference(tmp_path):
    """ep_requantize_fast and the helpers under it give ep_requantize's results, ties and extremes included."""
    src, exe = tmp_path / "check.c", tmp_path / "check"
    src.write_text(FIXEDPOINT_CHECK)
    flags = ["-fsanitize=undefined", "-fno-sanitize-recover=all"]
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", *flags, "-I", str(KERNELS / "src"),
                    str(src), "-o", str(exe)], check=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "0", run.stdout + run.stderr
