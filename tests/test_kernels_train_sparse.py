"""Channel-sparse float32 training kernels (kernels_c/src/train_*_f32_sparse.c) against the dense ones.

The device keeps a pruned region's weights as their non-zeros only (ep_sparse_f32_t). On the same
weights, zeros included for the dense kernel, the sparse kernels must give the dense kernels'
outputs, input gradients and the selected channels' weight and bias gradients bit for bit: they
visit the non-zeros in the dense order, and a skipped zero term changes no float sum. The one
documented exception is the depthwise input gradient with a depth multiplier above 1, equal to
rounding. Each case draws a random layer and selection as test_kernels_train.py does, and a
sparsity between 0 and 1 (whole-zero channels included).
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from kernels_support import Dims, ptr
from test_kernels_train import _conv_case, _grad_output, _nan, _opt, _selection

CASES = 200
f32, i32 = ctypes.c_float, ctypes.c_int32


class SparseF32(ctypes.Structure):
    _fields_ = [("row_start", ctypes.POINTER(ctypes.c_int32)), ("index", ctypes.POINTER(ctypes.c_uint16)),
                ("values", ctypes.POINTER(ctypes.c_float))]


def encode_sparse(per_channel: np.ndarray):
    """(channels, channel_size) dense weights -> the arrays of ep_sparse_f32_t and the struct over them."""
    rows, cols = np.nonzero(per_channel)  # row-major: ascending position within each channel
    row_start = np.zeros(per_channel.shape[0] + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=per_channel.shape[0]), out=row_start[1:])
    index = cols.astype(np.uint16)
    values = per_channel[rows, cols].astype(np.float32)
    keep = (row_start, index, values)
    return SparseF32(ptr(row_start, i32), ptr(index, ctypes.c_uint16), ptr(values, f32)), keep


def _prune(rng, w):
    w = w.copy()
    w[rng.random(w.shape) < float(rng.choice([0.0, 0.5, 0.8, 0.95, 1.0]))] = 0.0
    return w


def _packed(dense_dw, mask, sel):
    """The dense kernel's per-channel weight gradients, kept at the selected channels' non-zeros."""
    return np.concatenate([dense_dw[j][mask[c]] for j, c in enumerate(sel)] or [np.zeros(0, np.float32)])


def _same(case, name, ours, ref, exact=True):
    if exact:
        assert np.array_equal(ours, ref), f"case {case}: {name} differs from the dense kernel"
    else:
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5, err_msg=f"case {case}: {name}")


def test_fully_connected_sparse_equals_dense(lib):
    rng = np.random.default_rng(20)
    for case in range(CASES):
        batch, n_in, n_out = int(rng.integers(1, 4)), int(rng.integers(1, 120)), int(rng.integers(1, 30))
        bias = bool(rng.random() < 0.85)
        x = rng.standard_normal((batch, n_in)).astype(np.float32)
        w = _prune(rng, rng.standard_normal((n_out, n_in)).astype(np.float32))
        b = rng.standard_normal(n_out).astype(np.float32)
        gy = _grad_output(rng, (batch, n_out))
        channels, sel, _ = _selection(rng, n_out)
        sparse, _keep = encode_sparse(w)
        mask = w != 0
        bp = ptr(b, f32) if bias else None

        y, ys = _nan((batch, n_out)), _nan((batch, n_out))
        lib.ep_fully_connected_f32(batch, n_in, n_out, ptr(x, f32), ptr(w, f32), bp, ptr(y, f32))
        lib.ep_fully_connected_f32_sparse(batch, n_in, n_out, ptr(x, f32), ctypes.byref(sparse), bp, ptr(ys, f32))
        _same(case, "output", ys, y)

        dx, dw, db = _nan(x.shape), _nan((len(sel), n_in)), _nan((len(sel),))
        lib.ep_fully_connected_f32_backward(batch, n_in, n_out, ptr(x, f32), ptr(w, f32), ptr(gy, f32), ptr(dx, f32),
                                            _opt(channels, i32), len(sel), ptr(dw, f32), _opt(db if bias else None, f32), 0)
        nnz = int(mask[sel].sum())
        dxs, dws, dbs = _nan(x.shape), _nan((nnz,)), _nan((len(sel),))
        lib.ep_fully_connected_f32_sparse_backward(batch, n_in, n_out, ptr(x, f32), ctypes.byref(sparse), ptr(gy, f32),
                                                   ptr(dxs, f32), _opt(channels, i32), len(sel), ptr(dws, f32),
                                                   _opt(dbs if bias else None, f32), 0)
        _same(case, "grad_input", dxs, dx)
        _same(case, "grad_values", dws, _packed(dw, mask, sel))
        if bias:
            _same(case, "grad_bias", dbs, db)


@pytest.mark.parametrize("depthwise", [False, True], ids=["conv2d", "depthwise"])
def test_conv_sparse_equals_dense(lib, depthwise):
    rng = np.random.default_rng(21 if depthwise else 22)
    P = ctypes.byref
    for case in range(CASES):
        c, bias, (in_shape, w_shape, out_shape), x, w, b, gy, params = _conv_case(rng, depthwise)
        w = _prune(rng, w)
        channels, sel, _ = _selection(rng, c["out_c"])
        xd, wd, od = Dims(*in_shape), Dims(*w_shape), Dims(*out_shape)
        per_channel = w[0].reshape(-1, c["out_c"]).T.copy() if depthwise else w.reshape(c["out_c"], -1)
        sparse, _keep = encode_sparse(per_channel)
        mask = per_channel != 0
        bp = ptr(b, f32) if bias else None
        head = (P(params), c["mult"]) if depthwise else (P(params),)
        name = "ep_depthwise_conv2d_f32" if depthwise else "ep_conv2d_f32"

        y, ys = _nan(out_shape), _nan(out_shape)
        getattr(lib, name)(*head, P(xd), ptr(x, f32), P(wd), ptr(w, f32), bp, P(od), ptr(y, f32))
        getattr(lib, name + "_sparse")(*head, P(xd), ptr(x, f32), P(wd), P(sparse), bp, P(od), ptr(ys, f32))
        _same(case, "output", ys, y)

        dx, dw, db = _nan(in_shape), _nan((len(sel), per_channel.shape[1])), _nan((len(sel),))
        getattr(lib, name + "_backward")(*head, P(xd), ptr(x, f32), P(wd), ptr(w, f32), P(od), ptr(gy, f32),
                                         ptr(dx, f32), _opt(channels, i32), len(sel), ptr(dw, f32),
                                         _opt(db if bias else None, f32), 0)
        nnz = int(mask[sel].sum())
        dxs, dws, dbs = _nan(in_shape), _nan((nnz,)), _nan((len(sel),))
        getattr(lib, name + "_sparse_backward")(*head, P(xd), ptr(x, f32), P(wd), P(sparse), P(od), ptr(gy, f32),
                                                ptr(dxs, f32), _opt(channels, i32), len(sel), ptr(dws, f32),
                                                _opt(dbs if bias else None, f32), 0)
        _same(case, "grad_input", dxs, dx, exact=not (depthwise and c["mult"] > 1))
        _same(case, "grad_values", dws, _packed(dw, mask, sel))
        if bias:
            _same(case, "grad_bias", dbs, db)


def test_sparse_backward_accumulates_sample_by_sample(lib):
    """accumulate != 0 adds to the packed gradients, as the device's one-sample-at-a-time batches need."""
    rng = np.random.default_rng(23)
    n_in, n_out = 17, 5
    x = rng.standard_normal((2, n_in)).astype(np.float32)
    w = _prune(np.random.default_rng(1), rng.standard_normal((n_out, n_in)).astype(np.float32))
    w[:, 0] = 1.0  # at least one weight per channel
    gy = rng.standard_normal((2, n_out)).astype(np.float32)
    sparse, _keep = encode_sparse(w)
    channels = np.array([3, 0], np.int32)
    nnz = int((w[channels] != 0).sum())
    whole, steps = _nan((nnz,)), _nan((nnz,))
    lib.ep_fully_connected_f32_sparse_backward(2, n_in, n_out, ptr(x, f32), ctypes.byref(sparse), ptr(gy, f32), None,
                                               ptr(channels, i32), 2, ptr(whole, f32), None, 0)
    for s in range(2):
        xs, gs = np.ascontiguousarray(x[s:s + 1]), np.ascontiguousarray(gy[s:s + 1])
        lib.ep_fully_connected_f32_sparse_backward(1, n_in, n_out, ptr(xs, f32), ctypes.byref(sparse), ptr(gs, f32),
                                                   None, ptr(channels, i32), 2, ptr(steps, f32), None, s)
    np.testing.assert_allclose(steps, whole, rtol=1e-6)
