import numpy as np
import pytest

from edgeprune.data import load_dataset, load_digits_dataset
from edgeprune.errors import UsageError


def test_digits_are_real_8x8_images_scaled_to_unit_range():
    d = load_digits_dataset()
    assert d.sample_shape == (1, 8, 8)
    assert d.x_train.dtype == np.float32
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 1797
    assert d.num_classes == 10


def test_digits_split_is_fixed():
    a, b = load_digits_dataset(), load_digits_dataset()
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)


def test_npz_with_labels_is_split_and_without_labels_is_used_whole(tmp_path):
    x = np.random.default_rng(0).random((50, 3, 4, 4), dtype=np.float32)
    np.savez(tmp_path / "l.npz", x=x, y=np.arange(50) % 5)
    np.savez(tmp_path / "u.npz", x=x)
    labelled, unlabelled = load_dataset(str(tmp_path / "l.npz")), load_dataset(str(tmp_path / "u.npz"))
    assert labelled.has_labels and len(labelled.x_train) == 35
    assert not unlabelled.has_labels and len(unlabelled.x_test) == 50


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"z": np.zeros((3, 1, 8, 8), np.float32)}, "no array 'x'"),
        ({"x": np.zeros(10, np.float32)}, "has shape (10,)"),
        ({"x": np.full((4, 1, 2, 2), np.nan, np.float32)}, "NaN"),
        ({"x": np.zeros((4, 1, 2, 2), np.float32), "y": np.zeros(3, np.int64)}, "one integer label per sample"),
        ({"x": np.zeros((4, 1, 2, 2), np.float32), "y": np.array([0.5, 1, 2, 3])}, "must be integers"),
    ],
)
def test_bad_npz_gives_clear_error(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(str(tmp_path / "bad.npz"))


def test_not_an_npz(tmp_path):
    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(UsageError, match="cannot read"):
        load_dataset(str(tmp_path / "x.npz"))
