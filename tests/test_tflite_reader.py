import numpy as np
import pytest

from edgeprune.compile.ir import build_graph
from edgeprune.compile.tflite_reader import read_tflite
from edgeprune.errors import UsageError


def test_reads_ops_tensors_and_quantization(compile_once):
    _, out = compile_once("magnitude80", "--target", "cortex-m7", "--data", "digits", "--sparsity", "0.8")
    model = read_tflite(out / "model.tflite")
    assert [op.op for op in model.operators] == ["CONV_2D", "PAD", "CONV_2D", "CONV_2D", "MEAN", "FULLY_CONNECTED"]
    conv = model.operators[0]
    w = model.tensors[conv.inputs[1]]
    assert w.dtype is np.int8 and w.shape == (16, 3, 3, 1)
    assert len(w.quantization.scale) == 16  # per-channel
    assert model.tensors[conv.inputs[2]].dtype is np.int32


@pytest.mark.slow
def test_mutated_files_are_rejected_or_read_never_crash(compile_once):
    _, out = compile_once("magnitude80", "--target", "cortex-m7", "--data", "digits", "--sparsity", "0.8")
    good = (out / "model.tflite").read_bytes()
    rng = np.random.default_rng(0)
    for trial in range(3000):
        buf = bytearray(good)
        if trial % 3 == 0:
            buf = buf[: rng.integers(0, len(buf))]
        for _ in range(rng.integers(1, 20)):
            if len(buf) > 8:
                buf[rng.integers(8, len(buf))] = rng.integers(0, 256)
        try:
            build_graph(read_tflite(bytes(buf)))  # the IR validates what the reader accepted
        except UsageError:
            pass


@pytest.mark.parametrize("data", [b"", b"TFL3", b"\x00" * 64, b"1234TFL3" + b"\xff" * 100])
def test_garbage_is_rejected(data):
    with pytest.raises(UsageError):
        read_tflite(data)
