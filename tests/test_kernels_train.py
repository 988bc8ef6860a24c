"""Float32 training kernels (kernels_c/src/train_*.c) against PyTorch autograd and torch.optim.SGD.

Each case draws a random layer (kernel size, stride, dilation, asymmetric padding, depth
multiplier, batch 1-3) and a random selection of output channels (none, one, all as NULL, all
shuffled, or an unsorted subset), runs our forward and backward passes in float32 and the same
layer in float64 autograd on the same float32 values, and bounds the relative error
max|ours - torch| / max|torch| of the outputs, the input gradient and the selected channels'
weight and bias gradients (packed in selection order). Some cases accumulate the batch one
sample at a time, as a microcontroller with room for one input activation would; outputs the
case does not want are NULL, and so are the inputs the kernel then must not read.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from kernels_support import ConvParams, Dims, ptr

CASES = 300
TOL = 1e-5
f32, i32 = ctypes.c_float, ctypes.c_int32


class Layout(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("channels", "channel_size", "channel_stride", "element_stride")]


class SGDParams(ctypes.Structure):
    _fields_ = [("lr", ctypes.c_float), ("momentum", ctypes.c_float), ("weight_decay", ctypes.c_float)]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The reference ops are tiny: one thread avoids thread hand-offs, which dominate on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tlib(lib):
    """The kernel library with the return types ctypes cannot guess."""
    for name in ("fully_connected", "conv2d", "depthwise_conv2d"):
        for suffix in ("grad_bytes", "macs", "backward_macs"):
            getattr(lib, f"ep_{name}_f32_{suffix}").restype = ctypes.c_int64
        getattr(lib, f"ep_{name}_f32_layout").restype = Layout
    return lib


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    if ref.size == 0:
        return 0.0
    return float(np.max(np.abs(ours - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def _selection(rng, out_c):
    """(channels array or None for NULL, selected indices): empty, one, all, shuffled all, or subset."""
    kind = str(rng.choice(["empty", "one", "null", "all_shuffled", "subset", "subset"]))
    if kind == "null":
        return None, np.arange(out_c), kind
    n = {"empty": 0, "one": 1, "all_shuffled": out_c}.get(kind, int(rng.integers(0, out_c + 1)))
    sel = rng.permutation(out_c)[:n].astype(np.int32)
    return sel, sel, kind


def _conv_geometry(rng, depthwise):
    """Random geometry with independent top/bottom and left/right padding (covers SAME and VALID)."""
    while True:
        in_h, in_w = (int(v) for v in rng.integers(1, 11, 2))
        k_h, k_w = (int(v) for v in rng.choice([1, 2, 3, 5], 2))
        s_h, s_w = (int(v) for v in rng.integers(1, 4, 2))
        d_h, d_w = (int(v) for v in rng.choice([1, 1, 2, 3], 2))
        pads = [int(rng.integers(0, (k - 1) * d + 1)) for k, d in ((k_h, d_h), (k_h, d_h), (k_w, d_w), (k_w, d_w))]
        out_h = (in_h + pads[0] + pads[1] - d_h * (k_h - 1) - 1) // s_h + 1
        out_w = (in_w + pads[2] + pads[3] - d_w * (k_w - 1) - 1) // s_w + 1
        if out_h > 0 and out_w > 0:
            break
    in_c = int(rng.integers(1, 7))
    mult = int(rng.choice([1, 1, 2, 3])) if depthwise else 1
    out_c = in_c * mult if depthwise else int(rng.integers(1, 9))
    return dict(batch=int(rng.integers(1, 4)), in_h=in_h, in_w=in_w, in_c=in_c, out_c=out_c, mult=mult, k_h=k_h,
                k_w=k_w, s_h=s_h, s_w=s_w, d_h=d_h, d_w=d_w, pads=pads, out_h=out_h, out_w=out_w)


def _conv_case(rng, depthwise):
    """A random conv2d or depthwise layer: (geometry, has bias, (input, weight, output) shapes, float32
    input, weights, bias, dL/dy, its ConvParams)."""
    c = _conv_geometry(rng, depthwise)
    bias = bool(rng.random() < 0.85)
    in_shape = (c["batch"], c["in_h"], c["in_w"], c["in_c"])
    out_shape = (c["batch"], c["out_h"], c["out_w"], c["out_c"])
    w_shape = (1, c["k_h"], c["k_w"], c["out_c"]) if depthwise else (c["out_c"], c["k_h"], c["k_w"], c["in_c"])
    x = rng.standard_normal(in_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(c["out_c"]).astype(np.float32)
    gy = _grad_output(rng, out_shape)
    pt, _, pl, _ = c["pads"]
    params = ConvParams(c["s_h"], c["s_w"], c["d_h"], c["d_w"], pt, pl)
    return c, bias, (in_shape, w_shape, out_shape), x, w, b, gy, params


def _grad_output(rng, shape):
    """dL/dy with some exact zeros, as after a ReLU (the kernels skip those)."""
    g = rng.standard_normal(shape).astype(np.float32)
    g[rng.random(shape) < 0.3] = 0.0
    return g


def _nan(shape):
    return np.full(shape, np.nan, np.float32)  # any element a kernel forgets to write fails the test


def _torch_grads(fn, x, w, b, gy, bias):
    """Outputs and gradients of fn in float64 autograd on the float32 values."""
    tx, tw = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    tb = torch.tensor(b, dtype=torch.float64, requires_grad=True) if bias else None
    y = fn(tx, tw, tb)
    y.backward(torch.tensor(gy, dtype=torch.float64))
    return y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), (tb.grad.numpy() if bias else None)


def _run_backward(call, x, gy, per_channel, n, rng, bias):
    """Our backward pass, either whole-batch or one sample at a time with accumulate; NULL outputs at random.

    call(x, gy, grad_input, grad_filter, grad_bias, accumulate) runs the kernel on a batch slice.
    Returns (mode, grad_input or None, grad_filter or None, grad_bias or None)."""
    want_dx, want_dw, want_db = (bool(rng.random() < p) for p in (0.85, 0.9, 0.9 if bias else 0.0))
    dx = _nan(x.shape) if want_dx else None
    dw = _nan((n, *per_channel)) if want_dw else None
    db = _nan((n,)) if want_db else None
    batch = x.shape[0]
    if batch > 1 and rng.random() < 0.3:
        for s in range(batch):
            dxs = _nan(x[s:s + 1].shape) if want_dx else None
            call(np.ascontiguousarray(x[s:s + 1]), np.ascontiguousarray(gy[s:s + 1]), dxs, dw, db, int(s > 0))
            if want_dx:
                dx[s] = dxs[0]
        return "per-sample", dx, dw, db
    call(x, gy, dx, dw, db, 0)
    return "batch", dx, dw, db


def _opt(a, ctype):
    return None if a is None else ptr(a, ctype)


def _check(case, c, kind, mode, pairs):
    for name, ours, ref in pairs:
        if ours is None:
            continue
        err = rel_err(ours, ref)
        assert err < TOL, f"case {case} ({kind} selection, {mode}): {name} rel err {err:.2e}; {c}"


def test_fully_connected_matches_autograd(tlib):
    rng = np.random.default_rng(10)
    for case in range(CASES):
        batch, n_in, n_out = int(rng.integers(1, 4)), int(rng.integers(1, 200)), int(rng.integers(1, 40))
        bias = bool(rng.random() < 0.85)
        x = rng.standard_normal((batch, n_in)).astype(np.float32)
        w = rng.standard_normal((n_out, n_in)).astype(np.float32)
        b = rng.standard_normal(n_out).astype(np.float32)
        gy = _grad_output(rng, (batch, n_out))
        channels, sel, kind = _selection(rng, n_out)

        y = _nan((batch, n_out))
        tlib.ep_fully_connected_f32(batch, n_in, n_out, ptr(x, f32), ptr(w, f32), ptr(b, f32) if bias else None, ptr(y, f32))

        def call(xs, gys, dx, dw, db, acc):  # input is read only for dw, the filter only for dx: NULL otherwise
            tlib.ep_fully_connected_f32_backward(xs.shape[0], n_in, n_out, _opt(xs if dw is not None else None, f32),
                                                 _opt(w if dx is not None else None, f32), ptr(gys, f32),
                                                 _opt(dx, f32), _opt(channels, i32), len(sel), _opt(dw, f32),
                                                 _opt(db, f32), acc)

        mode, dx, dw, db = _run_backward(call, x, gy, (n_in,), len(sel), rng, bias)
        ty, tdx, tdw, tdb = _torch_grads(F.linear, x, w, b, gy, bias)
        c = dict(batch=batch, n_in=n_in, n_out=n_out, bias=bias)
        _check(case, c, kind, mode, [("output", y, ty), ("grad_input", dx, tdx), ("grad_filter", dw, tdw[sel]),
                                     ("grad_bias", db, tdb[sel] if bias else None)])


@pytest.mark.parametrize("depthwise", [False, True], ids=["conv2d", "depthwise"])
def test_conv_matches_autograd(tlib, depthwise):
    rng = np.random.default_rng(11 if depthwise else 12)
    for case in range(CASES):
        c, bias, (in_shape, w_shape, out_shape), x, w, b, gy, params = _conv_case(rng, depthwise)
        channels, sel, kind = _selection(rng, c["out_c"])
        wd, od = Dims(*w_shape), Dims(*out_shape)
        P = ctypes.byref

        y = _nan(out_shape)
        bp = ptr(b, f32) if bias else None
        if depthwise:
            tlib.ep_depthwise_conv2d_f32(P(params), c["mult"], P(Dims(*in_shape)), ptr(x, f32), P(wd), ptr(w, f32), bp,
                                         P(od), ptr(y, f32))
        else:
            tlib.ep_conv2d_f32(P(params), P(Dims(*in_shape)), ptr(x, f32), P(wd), ptr(w, f32), bp, P(od), ptr(y, f32))

        def call(xs, gys, dx, dw, db, acc):  # input is read only for dw, the filter only for dx: NULL otherwise
            xd, gd = Dims(*xs.shape), Dims(*gys.shape)
            args = (P(xd), _opt(xs if dw is not None else None, f32), P(wd), _opt(w if dx is not None else None, f32),
                    P(gd), ptr(gys, f32), _opt(dx, f32), _opt(channels, i32),
                    len(sel), _opt(dw, f32), _opt(db, f32), acc)
            if depthwise:
                tlib.ep_depthwise_conv2d_f32_backward(P(params), c["mult"], *args)
            else:
                tlib.ep_conv2d_f32_backward(P(params), *args)

        per_channel = (c["k_h"], c["k_w"]) if depthwise else w_shape[1:]
        mode, dx, dw, db = _run_backward(call, x, gy, per_channel, len(sel), rng, bias)

        # torch: NHWC -> NCHW, OHWI -> OIHW, depthwise (1,H,W,C*M) -> (C*M,1,H,W) with groups = C.
        pads = (c["pads"][2], c["pads"][3], c["pads"][0], c["pads"][1])

        def fn(tx, tw, tb):
            tw = tw[0].permute(2, 0, 1).unsqueeze(1) if depthwise else tw.permute(0, 3, 1, 2)
            xp = F.pad(tx.permute(0, 3, 1, 2), pads)
            out = F.conv2d(xp, tw, tb, stride=(c["s_h"], c["s_w"]), dilation=(c["d_h"], c["d_w"]),
                           groups=c["in_c"] if depthwise else 1)
            return out.permute(0, 2, 3, 1)

        ty, tdx, tdw, tdb = _torch_grads(fn, x, w, b, gy, bias)
        tdw = tdw[0].transpose(2, 0, 1)[sel] if depthwise else tdw[sel]
        c.update(bias=bias)
        _check(case, c, kind, mode, [("output", y, ty), ("grad_input", dx, tdx), ("grad_filter", dw, tdw),
                                     ("grad_bias", db, tdb[sel] if bias else None)])


def test_relu_forward_and_backward(tlib):
    rng = np.random.default_rng(13)
    x = rng.standard_normal(1000).astype(np.float32)
    x[::7] = 0.0  # torch's gradient at exactly 0 is 0
    g = rng.standard_normal(1000).astype(np.float32)
    y, dx = _nan(x.shape), _nan(x.shape)
    tlib.ep_relu_f32(x.size, ptr(x, f32), ptr(y, f32))
    tlib.ep_relu_f32_backward(x.size, ptr(x, f32), ptr(g, f32), ptr(dx, f32))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.relu(tx)
    ty.backward(torch.tensor(g))
    assert np.array_equal(y, ty.detach().numpy()) and np.array_equal(dx, tx.grad.numpy())
    dy = g.copy()  # in place, as a training loop would
    tlib.ep_relu_f32_backward(x.size, ptr(y, f32), ptr(dy, f32), ptr(dy, f32))
    assert np.array_equal(dy, tx.grad.numpy())


def _layer_for_sgd(rng, tlib):
    """A random layer's full weight tensor, bias and parameter layout."""
    kind = str(rng.choice(["fully_connected", "conv2d", "depthwise_conv2d"]))
    if kind == "fully_connected":
        n_in, n_out = int(rng.integers(1, 50)), int(rng.integers(1, 20))
        shape, layout = (n_out, n_in), tlib.ep_fully_connected_f32_layout(n_in, n_out)
    else:
        k_h, k_w, c = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 12))
        shape = (1, k_h, k_w, c) if kind == "depthwise_conv2d" else (c, k_h, k_w, int(rng.integers(1, 6)))
        layout = getattr(tlib, f"ep_{kind}_f32_layout")(ctypes.byref(Dims(*shape)))
    return kind, rng.standard_normal(shape).astype(np.float32), layout


def _channel_index(layout):
    """index[oc, k]: flat position of channel oc's k-th weight."""
    oc = np.arange(layout.channels)[:, None]
    k = np.arange(layout.channel_size)[None, :]
    return oc * layout.channel_stride + k * layout.element_stride


def test_sgd_matches_torch_optim(tlib):
    rng = np.random.default_rng(14)
    for case in range(CASES):
        kind, w, layout = _layer_for_sgd(rng, tlib)
        index = _channel_index(layout)
        assert np.array_equal(np.sort(index.ravel()), np.arange(w.size)), f"{kind}: layout must cover the tensor once"
        has_bias = bool(rng.random() < 0.8)
        b = rng.standard_normal(layout.channels).astype(np.float32)
        channels, sel, sel_kind = _selection(rng, layout.channels)
        n = len(sel)
        lr = float(rng.choice([0.1, 0.01, 0.003]))
        momentum = float(rng.choice([0.0, 0.0, 0.9, 0.5]))
        weight_decay = float(rng.choice([0.0, 1e-4, 0.05]))
        sgd = SGDParams(lr, momentum, weight_decay)
        mw = np.zeros((n, layout.channel_size), np.float32) if momentum else None
        mb = np.zeros(n, np.float32) if momentum else None

        # torch trains the packed selected rows only: what our packed gradients describe.
        pw = torch.tensor(w.ravel()[index[sel]], requires_grad=True)
        pb = torch.tensor(b[sel], requires_grad=True)
        opt = torch.optim.SGD([pw, pb] if has_bias else [pw], lr=lr, momentum=momentum, weight_decay=weight_decay)
        w0, b0 = w.copy(), b.copy()
        for step in range(3):
            gw = rng.standard_normal((n, layout.channel_size)).astype(np.float32)
            gb = rng.standard_normal(n).astype(np.float32)
            tlib.ep_sgd_update_f32(ctypes.byref(sgd), ctypes.byref(layout), _opt(channels, i32), n, ptr(w, f32),
                                   ptr(gw, f32), _opt(mw, f32), ptr(b, f32) if has_bias else None, ptr(gb, f32),
                                   _opt(mb, f32))
            pw.grad, pb.grad = torch.tensor(gw), torch.tensor(gb)
            opt.step()
            what = f"case {case} step {step}: {kind} {sel_kind} selection of {n}/{layout.channels}, {sgd.lr, momentum, weight_decay}"
            assert rel_err(w.ravel()[index[sel]], pw.detach().numpy()) < TOL, what
            if has_bias:
                assert rel_err(b[sel], pb.detach().numpy()) < TOL, what
        rest = np.setdiff1d(np.arange(layout.channels), sel)
        assert np.array_equal(w.ravel()[index[rest]].view(np.int32), w0.ravel()[index[rest]].view(np.int32)), what
        assert np.array_equal(b[rest].view(np.int32), b0[rest].view(np.int32)), what
        if not has_bias:
            assert np.array_equal(b.view(np.int32), b0.view(np.int32)), what


def _flops(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def test_budget_costs(tlib):
    """Gradient RAM equals the packed buffers the backward passes write; MACs match torch's flop counter."""
    P = ctypes.byref
    # Fully connected 64 -> 10, batch 2, 3 channels selected.
    assert tlib.ep_fully_connected_f32_grad_bytes(64, 3, 1, 0) == 4 * 3 * (64 + 1)
    assert tlib.ep_fully_connected_f32_grad_bytes(64, 3, 0, 1) == 2 * 4 * 3 * 64
    full = _flops(F.linear, torch.zeros(2, 64), torch.zeros(10, 64)) // 2
    assert tlib.ep_fully_connected_f32_macs(2, 64, 10) == full
    assert tlib.ep_fully_connected_f32_backward_macs(2, 64, 10, 3, 0) == full * 3 // 10
    assert tlib.ep_fully_connected_f32_backward_macs(2, 64, 10, 3, 1) == full * 3 // 10 + full

    x = torch.zeros(1, 6, 9, 9, requires_grad=True)
    w = torch.zeros(8, 6, 3, 3, requires_grad=True)
    wd, od = Dims(8, 3, 3, 6), Dims(1, 5, 5, 8)  # stride 2, padding 1
    full = _flops(lambda: F.conv2d(x, w, stride=2, padding=1))
    assert tlib.ep_conv2d_f32_macs(P(wd), P(od), 8) == full // 2
    with FlopCounterMode(display=False) as counter:  # all channels: backward = 2x forward (METHODS 5)
        F.conv2d(x, w, stride=2, padding=1).sum().backward()
    assert tlib.ep_conv2d_f32_backward_macs(P(wd), P(od), 8, 1) == (counter.get_total_flops() - full) // 2
    assert tlib.ep_conv2d_f32_backward_macs(P(wd), P(od), 2, 0) == full // 2 * 2 // 8
    assert tlib.ep_conv2d_f32_grad_bytes(P(wd), 2, 1, 1) == 2 * 4 * 2 * (3 * 3 * 6 + 1)

    # Depthwise 3x3, 6 channels x multiplier 2 (torch's backward formula miscounts groups: forward only).
    wd, od = Dims(1, 3, 3, 12), Dims(1, 5, 5, 12)
    full = _flops(lambda: F.conv2d(x, torch.zeros(12, 1, 3, 3), stride=2, padding=1, groups=6)) // 2
    assert tlib.ep_depthwise_conv2d_f32_macs(P(wd), P(od), 12) == full
    assert tlib.ep_depthwise_conv2d_f32_backward_macs(P(wd), P(od), 3, 1) == full * 3 // 12 + full
    assert tlib.ep_depthwise_conv2d_f32_grad_bytes(P(wd), 3, 1, 0) == 4 * 3 * (9 + 1)
    assert tlib.ep_depthwise_conv2d_f32_grad_bytes(P(wd), 0, 1, 1) == 0


def test_partial_training_steps_match_torch(tlib):
    """conv -> relu -> depthwise -> relu -> fully connected, trained on a few channels per layer.

    The example of use: the forward pass keeps each layer's input (ReLU backward reads the saved
    ReLU outputs, so the pre-activations need not be kept), the backward pass crosses every layer
    (the first one's input gradient is skipped), each layer computes only its selected channels'
    gradients, and SGD with momentum updates those rows. Torch does the same with the other rows'
    gradients zeroed (no weight decay, so zero-gradient rows stay put).
    """
    rng = np.random.default_rng(15)
    P = ctypes.byref
    B, H, W, C0, C1, M, K = 2, 7, 6, 3, 5, 2, 4
    C2 = C1 * M
    x = rng.standard_normal((B, H, W, C0)).astype(np.float32)
    target = rng.standard_normal((B, K)).astype(np.float32)
    conv_w = (rng.standard_normal((C1, 3, 3, C0)) * 0.3).astype(np.float32)
    conv_b = (rng.standard_normal(C1) * 0.1).astype(np.float32)
    dw_w = (rng.standard_normal((1, 3, 3, C2)) * 0.3).astype(np.float32)
    dw_b = (rng.standard_normal(C2) * 0.1).astype(np.float32)
    H2, W2 = 4, 3  # depthwise stride 2, padding 1
    F_in = H2 * W2 * C2
    fc_w = (rng.standard_normal((K, F_in)) * 0.1).astype(np.float32)
    fc_b = np.zeros(K, np.float32)
    sel = {"conv": np.array([4, 1], np.int32), "dw": np.array([7, 0, 3], np.int32), "fc": np.array([2], np.int32)}
    sgd = SGDParams(0.05, 0.9, 0.0)

    conv_p, dw_p = ConvParams(1, 1, 1, 1, 1, 1), ConvParams(2, 2, 1, 1, 1, 1)
    d_x, d_a1, d_a2 = Dims(B, H, W, C0), Dims(B, H, W, C1), Dims(B, H2, W2, C2)
    d_cw, d_dw = Dims(*conv_w.shape), Dims(*dw_w.shape)
    layouts = {"conv": tlib.ep_conv2d_f32_layout(P(d_cw)), "dw": tlib.ep_depthwise_conv2d_f32_layout(P(d_dw)),
               "fc": tlib.ep_fully_connected_f32_layout(F_in, K)}
    params = {"conv": (conv_w, conv_b), "dw": (dw_w, dw_b), "fc": (fc_w, fc_b)}
    per_channel = {"conv": 9 * C0, "dw": 9, "fc": F_in}
    grads = {k: (np.zeros((len(s), per_channel[k]), np.float32), np.zeros(len(s), np.float32)) for k, s in sel.items()}
    moms = {k: (np.zeros_like(g[0]), np.zeros_like(g[1])) for k, g in grads.items()}

    # torch, float64: the same network in NCHW.
    t = {k: [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in v] for k, v in params.items()}
    opt = torch.optim.SGD([p for v in t.values() for p in v], lr=sgd.lr, momentum=sgd.momentum)
    tx, tt = torch.tensor(x, dtype=torch.float64).permute(0, 3, 1, 2), torch.tensor(target, dtype=torch.float64)

    initial = {k: [a.copy() for a in v] for k, v in params.items()}
    for step in range(3):
        a1 = np.empty((B, H, W, C1), np.float32)
        a2 = np.empty((B, H2, W2, C2), np.float32)
        y = np.empty((B, K), np.float32)
        tlib.ep_conv2d_f32(P(conv_p), P(d_x), ptr(x, f32), P(d_cw), ptr(conv_w, f32), ptr(conv_b, f32), P(d_a1), ptr(a1, f32))
        tlib.ep_relu_f32(a1.size, ptr(a1, f32), ptr(a1, f32))
        tlib.ep_depthwise_conv2d_f32(P(dw_p), M, P(d_a1), ptr(a1, f32), P(d_dw), ptr(dw_w, f32), ptr(dw_b, f32), P(d_a2),
                                     ptr(a2, f32))
        tlib.ep_relu_f32(a2.size, ptr(a2, f32), ptr(a2, f32))
        tlib.ep_fully_connected_f32(B, F_in, K, ptr(a2, f32), ptr(fc_w, f32), ptr(fc_b, f32), ptr(y, f32))
        loss = 0.5 * float(np.sum((y.astype(np.float64) - target) ** 2))

        g_y = (y - target).astype(np.float32)  # dL/dy of the squared error
        g_a2, g_a1 = np.empty_like(a2), np.empty_like(a1)
        gf, gb = grads["fc"]
        tlib.ep_fully_connected_f32_backward(B, F_in, K, ptr(a2, f32), ptr(fc_w, f32), ptr(g_y, f32), ptr(g_a2, f32),
                                             ptr(sel["fc"], i32), len(sel["fc"]), ptr(gf, f32), ptr(gb, f32), 0)
        tlib.ep_relu_f32_backward(a2.size, ptr(a2, f32), ptr(g_a2, f32), ptr(g_a2, f32))
        gf, gb = grads["dw"]
        tlib.ep_depthwise_conv2d_f32_backward(P(dw_p), M, P(d_a1), ptr(a1, f32), P(d_dw), ptr(dw_w, f32), P(d_a2),
                                              ptr(g_a2, f32), ptr(g_a1, f32), ptr(sel["dw"], i32), len(sel["dw"]),
                                              ptr(gf, f32), ptr(gb, f32), 0)
        tlib.ep_relu_f32_backward(a1.size, ptr(a1, f32), ptr(g_a1, f32), ptr(g_a1, f32))
        gf, gb = grads["conv"]
        tlib.ep_conv2d_f32_backward(P(conv_p), P(d_x), ptr(x, f32), P(d_cw), ptr(conv_w, f32), P(d_a1), ptr(g_a1, f32),
                                    None, ptr(sel["conv"], i32), len(sel["conv"]), ptr(gf, f32), ptr(gb, f32), 0)
        for k in params:
            (w, b), (gf, gb), (mw, mb) = params[k], grads[k], moms[k]
            tlib.ep_sgd_update_f32(P(sgd), P(layouts[k]), ptr(sel[k], i32), len(sel[k]), ptr(w, f32), ptr(gf, f32),
                                   ptr(mw, f32), ptr(b, f32), ptr(gb, f32), ptr(mb, f32))

        cw, cb = t["conv"]
        h = F.relu(F.conv2d(tx, cw.permute(0, 3, 1, 2), cb, padding=1))
        dwt, dwb = t["dw"]
        h = F.relu(F.conv2d(h, dwt[0].permute(2, 0, 1).unsqueeze(1), dwb, stride=2, padding=1, groups=C1))
        fw, fb = t["fc"]
        ty = F.linear(h.permute(0, 2, 3, 1).reshape(B, -1), fw, fb)
        t_loss = 0.5 * ((ty - tt) ** 2).sum()
        opt.zero_grad()
        t_loss.backward()
        with torch.no_grad():  # only the selected channels train
            for k, (tw, tb) in t.items():
                keep = torch.zeros(layouts[k].channels, dtype=torch.bool)
                keep[torch.tensor(sel[k], dtype=torch.long)] = True
                rows = tw.grad[0].permute(2, 0, 1) if k == "dw" else tw.grad  # depthwise channels are the last axis
                rows[~keep] = 0
                tb.grad[~keep] = 0
        opt.step()
        assert abs(loss - t_loss.item()) <= 1e-5 * t_loss.item(), f"step {step}: loss {loss} vs {t_loss.item()}"
        for k in params:
            for ours, ref in zip(params[k], t[k]):
                err = rel_err(ours, ref.detach().numpy())
                assert err < TOL, f"step {step}: {k} parameters rel err {err:.2e}"
    for k in params:  # the selected channels did train
        assert not np.array_equal(params[k][0], initial[k][0]) and not np.array_equal(params[k][1], initial[k][1]), k
