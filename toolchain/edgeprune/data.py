"""Datasets: the built-in digits and user `.npz` files, validated and split the same way every time."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import UsageError

SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """Samples in PyTorch layout (N, C, H, W) float32; labels int64 or None.

    `train` feeds calibration and finetuning, `val` checks finetuning, `test` is the
    evaluation split for accuracy and int8-vs-float agreement.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_val: np.ndarray
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None

    @property
    def has_labels(self) -> bool:
        return self.y_train is not None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int | None:
        if self.y_train is None:
            return None
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1


def load_digits_dataset() -> Dataset:
    """scikit-learn's 1,797 real 8x8 handwritten digits as 1x8x8 in [0, 1], split 60/20/20."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    return _split("digits", x, y, fractions=(0.6, 0.2))


def load_npz_dataset(path: str | Path) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"data file {path} does not exist; pass --data digits or an .npz with 'x' (N,C,H,W) and optional 'y'")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise UsageError(f"cannot read {path} as an .npz archive ({e}); save it with numpy.savez(path, x=..., y=...)") from None
    if "x" not in arrays:
        raise UsageError(f"{path} has no array 'x' (found: {', '.join(sorted(arrays)) or 'none'}); save the inputs as x=(N,C,H,W) float32")
    x = validate_inputs(arrays["x"], f"{path}:x")
    y = None
    if "y" in arrays:
        y = arrays["y"]
        if y.ndim != 1 or len(y) != len(x):
            raise UsageError(f"{path}:y has shape {y.shape} but must be ({len(x)},): one integer label per sample of x")
        if not np.issubdtype(y.dtype, np.integer):
            if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
                y = y.astype(np.int64)
            else:
                raise UsageError(f"{path}:y has dtype {y.dtype}; labels must be integers (class indices)")
        y = y.astype(np.int64)
        if y.min() < 0:
            raise UsageError(f"{path}:y has negative labels; labels must be class indices 0..K-1")
    if y is None:
        # Without labels nothing is trained: calibrate and check agreement on all samples.
        return Dataset(path.stem, x, None, x[:0], None, x, None)
    return _split(path.stem, x, y, fractions=(0.7, 0.15))


def validate_inputs(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype.kind not in "fiu":
        raise UsageError(f"{what} has dtype {x.dtype}; inputs must be float32 arrays shaped (N,C,H,W)")
    if x.ndim < 2 or x.shape[0] == 0:
        raise UsageError(f"{what} has shape {x.shape}; inputs must be shaped (N,C,H,W) (or (N,F) for vector models) with N >= 1")
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0][0])
        raise UsageError(f"{what} contains {int(bad.sum())} NaN or infinite values (first in sample {first}); clean the data before calibrating")
    return x


def load_dataset(spec: str) -> Dataset:
    """`digits` for the built-in set, otherwise a path to an .npz file."""
    if spec == "digits":
        return load_digits_dataset()
    if not spec.endswith(".npz"):
        raise UsageError(f"unknown data '{spec}'; pass --data digits or a path to an .npz file with 'x' and optional 'y'")
    return load_npz_dataset(spec)


def _split(name: str, x: np.ndarray, y: np.ndarray, fractions: tuple[float, float]) -> Dataset:
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(x))
    n_train = int(round(fractions[0] * len(x)))
    n_val = int(round(fractions[1] * len(x)))
    if len(x) < 3:
        raise UsageError(f"{name} has {len(x)} labelled samples; need at least 3 to split into train, val and test")
    n_train = max(1, min(n_train, len(x) - 2))
    n_val = max(1, min(n_val, len(x) - n_train - 1))
    tr, va, te = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    return Dataset(name, x[tr], y[tr], x[va], y[va], x[te], y[te])
