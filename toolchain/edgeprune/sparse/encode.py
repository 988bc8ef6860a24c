"""Encoders for the sparse int8 weight formats read by kernels_c (see kernels_c/include/ep_sparse_s8.h).

Weights arrive as int8 numpy arrays in TFLite layout: conv (O,H,W,I), depthwise (1,H,W,C), fully
connected (O,I). Each encoder returns a SparseWeights whose `blob` is the exact byte image the C side
reads with ep_sparse_s8_view(); `nbytes == len(blob)`. The input offset is folded into the bias, so
the kernels multiply raw inputs: bias' = bias + input_offset * sum(row), checked to fit in int32.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

FORMATS = ("unstructured", "block4", "nm24", "dead")
LAYOUTS = ("conv", "depthwise", "fc")

MAGIC = 0x31535045  # "EPS1"
_FORMAT_IDS = {"unstructured": 1, "block4": 2, "nm24": 3, "dead": 4}
_HEADER_WORDS = 10
_MAX_DELTA = 255  # uint8 deltas; longer gaps take filler entries with value 0
_INT32 = (-(1 << 31), (1 << 31) - 1)


def _round4(n: int) -> int:
    return (n + 3) & ~3


@dataclass(frozen=True)
class SparseWeights:
    """One encoded weight tensor: the sections the C struct points to, and the blob holding them all."""

    format: str
    layout: str
    shape: tuple[int, ...]  # the TFLite weight shape it came from
    rows: int  # output channels
    cols: int  # weights per row: kh*kw*I (conv), I (fc), kh*kw taps (depthwise)
    input_offset: int
    bias: np.ndarray  # int32 [rows], input offset folded in
    live: np.ndarray  # uint16: live rows ascending (depthwise block4: live groups of 4 channels)
    count: np.ndarray  # uint16: entries or blocks per live row (unstructured, block4), else empty
    index: np.ndarray  # uint8: deltas, taps or packed 2-bit positions
    values: np.ndarray  # int8, including fillers and zero padding
    blob: bytes

    @property
    def nbytes(self) -> int:
        return len(self.blob)

    @property
    def live_channels(self) -> np.ndarray:
        """Output channels with at least one non-zero weight."""
        if self.format == "block4" and self.layout == "depthwise":
            ch = (self.live.astype(np.int64)[:, None] * 4 + np.arange(4)).reshape(-1)
            return ch[ch < self.rows]
        return self.live.astype(np.int64)

    @property
    def stored_values(self) -> int:
        """int8 weights the kernel multiplies per output pixel (zero fillers and padding included)."""
        return int(self.values.size)

    def describe(self) -> dict:
        """The uniform summary a cost model needs: shape of the work and exact storage."""
        return {"format": self.format, "layout": self.layout, "rows": self.rows, "cols": self.cols,
                "live_rows": int(self.live_channels.size), "stored_values": self.stored_values,
                "index_bytes": int(self.index.size), "nbytes": self.nbytes}


def _as_matrix(weights: np.ndarray, layout: str) -> np.ndarray:
    """The (rows, cols) view every format describes."""
    w = np.asarray(weights)
    if w.dtype != np.int8:
        raise ValueError(f"weights must be int8, got {w.dtype}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    want = {"conv": 4, "depthwise": 4, "fc": 2}[layout]
    if w.ndim != want or 0 in w.shape:
        raise ValueError(f"{layout} weights must be a non-empty {want}-D array, got shape {w.shape}")
    if layout == "depthwise":
        if w.shape[0] != 1:
            raise ValueError(f"depthwise weights must be (1,H,W,C), got {w.shape}")
        m = w.reshape(-1, w.shape[3]).T  # (C, taps)
    else:
        m = w.reshape(w.shape[0], -1)
    if m.shape[0] > 65535 or m.shape[1] > 65535:
        raise ValueError(f"at most 65535 rows and columns, got {m.shape}")
    return np.ascontiguousarray(m)


def _folded_bias(m: np.ndarray, bias, input_offset: int) -> np.ndarray:
    rows = m.shape[0]
    b = np.zeros(rows, np.int64) if bias is None else np.asarray(bias).astype(np.int64)
    if b.shape != (rows,):
        raise ValueError(f"bias must have {rows} entries, got shape {b.shape}")
    if not -(1 << 31) <= int(input_offset) < (1 << 31):
        raise ValueError(f"input_offset {input_offset} does not fit in int32")
    folded = b + int(input_offset) * m.astype(np.int64).sum(axis=1)
    if folded.min() < _INT32[0] or folded.max() > _INT32[1]:
        raise ValueError("bias + input_offset * sum(weights) overflows int32")
    return folded.astype(np.int32)


def _blob(fmt: str, layout: str, rows: int, cols: int, input_offset: int, sections) -> bytes:
    bias, live, count, index, values = sections
    kind = 1 if layout == "depthwise" else 0
    header = struct.pack("<10i", MAGIC, _FORMAT_IDS[fmt], kind, rows, cols, int(input_offset),
                         live.size, count.size, index.size, values.size)
    out = bytearray(header)
    for arr in (bias.astype("<i4"), live.astype("<u2"), count.astype("<u2"), index.astype(np.uint8), values.astype(np.int8)):
        raw = arr.tobytes()
        out += raw + bytes(_round4(len(raw)) - len(raw))
    return bytes(out)


def _make(fmt, layout, weights, m, input_offset, bias, live, count, index, values) -> SparseWeights:
    live = np.asarray(live, np.uint16)
    count = np.asarray(count, np.int64)
    if count.size and count.max() > 65535:
        raise ValueError("a row needs more than 65535 entries")
    count = count.astype(np.uint16)
    index = np.asarray(index, np.uint8)
    values = np.asarray(values, np.int8)
    blob = _blob(fmt, layout, m.shape[0], m.shape[1], input_offset, (bias, live, count, index, values))
    return SparseWeights(fmt, layout, tuple(np.asarray(weights).shape), m.shape[0], m.shape[1], int(input_offset),
                         bias, live, count, index, values, blob)


def _deltas(positions: np.ndarray, values: np.ndarray) -> tuple[list[int], list[int]]:
    """uint8 deltas from column 0, with (255, 0) fillers bridging longer gaps."""
    d_out: list[int] = []
    v_out: list[int] = []
    prev = 0
    for p, v in zip(positions.tolist(), values.tolist()):
        gap = p - prev
        while gap > _MAX_DELTA:
            d_out.append(_MAX_DELTA)
            v_out.append(0)
            gap -= _MAX_DELTA
        d_out.append(gap)
        v_out.append(v)
        prev = p
    return d_out, v_out


def encode_unstructured(weights, bias=None, input_offset: int = 0, layout: str = "conv") -> SparseWeights:
    """Per live row, (uint8 delta, int8 value) for each non-zero (conv, fc); (tap, value) for depthwise."""
    m = _as_matrix(weights, layout)
    if layout == "depthwise" and m.shape[1] > 256:
        raise ValueError(f"depthwise unstructured takes at most 256 taps, got {m.shape[1]}")
    folded = _folded_bias(m, bias, input_offset)
    live, count, index, values = [], [], [], []
    for r in range(m.shape[0]):
        pos = np.flatnonzero(m[r])
        if pos.size == 0:
            continue
        if layout == "depthwise":
            d, v = pos.tolist(), m[r, pos].tolist()
        else:
            d, v = _deltas(pos, m[r, pos])
        live.append(r)
        count.append(len(v))
        index += d
        values += v
    return _make("unstructured", layout, weights, m, input_offset, folded, live, count, index, values)


def encode_block_sparse(weights, bias=None, input_offset: int = 0, layout: str = "conv") -> SparseWeights:
    """1x4 blocks: 4 consecutive columns of a row (conv, fc), or 4 adjacent channels at one tap (depthwise)."""
    m = _as_matrix(weights, layout)
    folded = _folded_bias(m, bias, input_offset)
    live, count, index, values = [], [], [], []
    if layout == "depthwise":
        if m.shape[1] > 256:
            raise ValueError(f"depthwise block4 takes at most 256 taps, got {m.shape[1]}")
        c = m.shape[0]
        padded = np.zeros((_round4(c), m.shape[1]), np.int8)
        padded[:c] = m
        for g in range(padded.shape[0] // 4):
            blk = padded[4 * g:4 * g + 4]  # (4, taps)
            taps = np.flatnonzero(np.any(blk != 0, axis=0))
            if taps.size == 0:
                continue
            live.append(g)
            count.append(taps.size)
            index += taps.tolist()
            values += blk[:, taps].T.reshape(-1).tolist()
    else:
        rows, cols = m.shape
        padded = np.zeros((rows, _round4(cols)), np.int8)
        padded[:, :cols] = m
        blocks = padded.reshape(rows, -1, 4)
        for r in range(rows):
            nz = np.flatnonzero(np.any(blocks[r] != 0, axis=1))
            if nz.size == 0:
                continue
            d, _ = _deltas(nz, np.zeros(nz.size, np.int64))
            # fillers stand for zero blocks at the intermediate positions
            block_ids, prev = [], 0
            for step in d:
                prev += step
                block_ids.append(prev)
            live.append(r)
            count.append(len(d))
            index += d
            values += blocks[r, block_ids].reshape(-1).tolist()
    return _make("block4", layout, weights, m, input_offset, folded, live, count, index, values)


def encode_nm(weights, bias=None, input_offset: int = 0, layout: str = "conv", n: int = 2, m_group: int = 4) -> SparseWeights:
    """N:M 2:4 along input channels: 2 int8 values and two 2-bit positions per group of 4 columns."""
    if (n, m_group) != (2, 4):
        raise ValueError(f"only 2:4 is implemented, got {n}:{m_group}")
    if layout == "depthwise":
        raise ValueError("nm24 is for conv and fully connected weights (N:M runs along input channels)")
    m = _as_matrix(weights, layout)
    in_c = np.asarray(weights).shape[-1]
    if in_c % 4:
        raise ValueError(f"nm24 needs input channels divisible by 4, got {in_c}")
    groups = m.reshape(m.shape[0], -1, 4)
    nnz = np.count_nonzero(groups, axis=2)
    if nnz.max() > 2:
        r, g = np.argwhere(nnz > 2)[0]
        raise ValueError(f"weights are not 2:4 sparse: row {r}, group {g} has {nnz[r, g]} non-zeros")
    folded = _folded_bias(m, bias, input_offset)
    n_groups = groups.shape[1]
    v_stride, i_stride = _round4(2 * n_groups), (n_groups + 1) // 2
    live, index, values = [], [], []
    for r in range(m.shape[0]):
        if nnz[r].sum() == 0:
            continue
        vals = np.zeros(v_stride, np.int8)
        nib = np.zeros(2 * i_stride, np.uint8)
        for g in range(n_groups):
            pos = np.flatnonzero(groups[r, g]).tolist()
            for p in range(4):  # pad to two positions with zero weights
                if len(pos) == 2:
                    break
                if p not in pos:
                    pos.append(p)
            p0, p1 = sorted(pos)
            vals[2 * g], vals[2 * g + 1] = groups[r, g, p0], groups[r, g, p1]
            nib[g] = p0 | (p1 << 2)
        live.append(r)
        index += (nib[0::2] | (nib[1::2] << 4)).tolist()
        values += vals.tolist()
    return _make("nm24", layout, weights, m, input_offset, folded, live, [], index, values)


def encode_dead_channels(weights, bias=None, input_offset: int = 0, layout: str = "conv") -> SparseWeights:
    """Dense rows (stride rounded up to 4 bytes) for the live output channels only."""
    m = _as_matrix(weights, layout)
    folded = _folded_bias(m, bias, input_offset)
    live = np.flatnonzero(np.any(m != 0, axis=1))
    rows = np.zeros((live.size, _round4(m.shape[1])), np.int8)
    rows[:, :m.shape[1]] = m[live]
    return _make("dead", layout, weights, m, input_offset, folded, live, [], [], rows.reshape(-1))


_ENCODERS = {"unstructured": encode_unstructured, "block4": encode_block_sparse, "nm24": encode_nm,
             "dead": encode_dead_channels}


def encode(format: str, weights, bias=None, input_offset: int = 0, layout: str = "conv") -> SparseWeights:
    """Encode `weights` (TFLite layout) in one of FORMATS; ValueError when they do not fit the format."""
    if format not in _ENCODERS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    return _ENCODERS[format](weights, bias, input_offset, layout)


def storage_bytes_by_format(weights, layout: str = "conv", bias=None, input_offset: int = 0) -> dict[str, int | None]:
    """Exact bytes per format (None where the weights do not fit it), and "dense": int8 weights + int32 bias."""
    m = _as_matrix(weights, layout)
    out: dict[str, int | None] = {"dense": m.size + 4 * m.shape[0]}
    for fmt in FORMATS:
        try:
            out[fmt] = encode(fmt, weights, bias, input_offset, layout).nbytes
        except ValueError:
            out[fmt] = None
    return out
