import onnx
import pytest
import torch

from edgeprune.errors import UsageError
from edgeprune.front.load import load_model


def _runs(loaded):
    out = loaded.module(torch.zeros(3, 1, 8, 8))
    assert out.shape == (3, 10)


def test_torchscript_loads(model_dir):
    m = load_model(model_dir / "model.pt")
    assert m.kind == "torchscript"
    _runs(m)


def test_exported_program_loads_with_its_input_shape(model_dir):
    m = load_model(model_dir / "model.pt2")
    assert m.kind == "exported" and m.input_shape == (1, 8, 8)
    _runs(m)  # exported with batch 1, still runs batches


def test_state_dict_loads_with_arch(model_dir):
    m = load_model(model_dir / "model.pth", arch="edgeprune.examples:DigitsCNN")
    assert m.kind == "module"
    _runs(m)


def test_state_dict_without_arch_asks_for_it(model_dir):
    with pytest.raises(UsageError, match="--arch"):
        load_model(model_dir / "model.pth")


def test_state_dict_with_wrong_arch(model_dir, tmp_path):
    with pytest.raises(UsageError, match="cannot import"):
        load_model(model_dir / "model.pth", arch="no_such_package.models:Net")


def test_pickled_module_is_refused_by_default(model_dir):
    with pytest.raises(UsageError, match="arbitrary code.*--trust-pickle"):
        load_model(model_dir / "pickled.pt")


def test_pickled_module_loads_when_trusted(model_dir):
    m = load_model(model_dir / "pickled.pt", trust_pickle=True)
    _runs(m)


def test_onnx_loads_with_its_input_shape(model_dir, tmp_path):
    from edgeprune.front.convert import export_onnx

    proto = export_onnx(load_model(model_dir / "model.pt"), (1, 8, 8))
    onnx.save(proto, tmp_path / "m.onnx")
    m = load_model(tmp_path / "m.onnx")
    assert m.kind == "onnx" and m.input_shape == (1, 8, 8)


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04broken zip"])
def test_garbage_files_are_rejected_cleanly(tmp_path, content):
    for name in ("m.pt", "m.onnx", "m.pt2"):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UsageError):
            load_model(tmp_path / name)
