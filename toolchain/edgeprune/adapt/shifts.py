"""Shifted streams for adaptation experiments, made deterministically from the digits held-out split
(data.load_digits_dataset().x_test: never the training data).

- severe: each image rotated by a random angle of 20-30 degrees either way (bilinear, zero fill),
  then its strokes thickened by a 2x2 grey dilation;
- mild: a Gaussian blur (sigma 0.8).
`adaptation_and_eval(shift)` splits the shifted held-out samples into two disjoint halves: the
adaptation set and the evaluation set.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edgeprune.fileio import write_bytes_atomic

SHIFTS = ("severe", "mild")
SHIFT_SEED = 1234


def shift_images(x: np.ndarray, shift: str, seed: int = SHIFT_SEED) -> np.ndarray:
    """x: (N,1,H,W) in [0, 1]; returns the shifted copy, float32."""
    from scipy import ndimage

    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift}; choose one of {', '.join(SHIFTS)}")
    rng = np.random.default_rng(seed)
    out = np.empty_like(x, dtype=np.float32)
    for i, img in enumerate(x):
        im = img[0].astype(np.float64)
        if shift == "severe":
            angle = rng.uniform(20.0, 30.0) * rng.choice([-1.0, 1.0])
            im = ndimage.rotate(im, angle, reshape=False, order=1, mode="constant", cval=0.0)
            im = ndimage.grey_dilation(im, size=(2, 2))
        else:
            im = ndimage.gaussian_filter(im, sigma=0.8)
        out[i, 0] = np.clip(im, 0.0, 1.0)
    return out


def adaptation_and_eval(shift: str, seed: int = SHIFT_SEED):
    """((x_adapt, y_adapt), (x_eval, y_eval)): the shifted held-out split, halved disjointly."""
    from edgeprune.data import load_digits_dataset

    d = load_digits_dataset()
    xs = shift_images(d.x_test, shift, seed)
    order = np.random.default_rng([seed, 1]).permutation(len(xs))
    a, e = order[: len(xs) // 2], order[len(xs) // 2:]
    return (xs[a], d.y_test[a]), (xs[e], d.y_test[e])


def write_npz(shift: str, out_dir: str | Path, seed: int = SHIFT_SEED) -> tuple[Path, Path]:
    """Write <shift>_adapt.npz and <shift>_eval.npz into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (xa, ya), (xe, ye) = adaptation_and_eval(shift, seed)
    pa, pe = out_dir / f"{shift}_adapt.npz", out_dir / f"{shift}_eval.npz"
    for path, x, y in ((pa, xa, ya), (pe, xe, ye)):
        buf = io.BytesIO()
        np.savez(buf, x=x, y=y)
        write_bytes_atomic(path, buf.getvalue())  # never a half-written .npz
    return pa, pe
