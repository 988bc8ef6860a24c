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


def test_state_dict_with_unknown_arch(model_dir):
    with pytest.raises(UsageError, match="cannot import"):
        load_model(model_dir / "model.pth", arch="no_such_package.models:Net")


def test_state_dict_that_does_not_fit_the_arch(tmp_path):
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "linear.pth")
    with pytest.raises(UsageError, match="does not match --arch"):
        load_model(tmp_path / "linear.pth", arch="edgeprune.examples:DigitsCNN")


def _exported_program_carrying_code(tmp_path, marker):
    """A valid .pt2 whose sample inputs are a pickle that would create `marker` when loaded."""
    import io
    import pathlib
    import pickle
    import zipfile

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (pathlib.Path(marker),))

    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),)), good)
    wrapped = io.BytesIO()
    torch.save((1,), wrapped)
    with zipfile.ZipFile(io.BytesIO(wrapped.getvalue())) as inner:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for n in inner.namelist():
                z.writestr(n, pickle.dumps((Payload(),), protocol=2) if n.endswith("data.pkl") else inner.read(n))
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info, buf.getvalue() if "sample_inputs" in info.filename else src.read(info.filename))
    return evil


def test_exported_program_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    evil = _exported_program_carrying_code(tmp_path, marker)
    with pytest.raises(UsageError, match="--trust-pickle"):
        load_model(evil)
    assert not marker.exists()


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
