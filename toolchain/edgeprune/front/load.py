"""Safe model loading.

TorchScript, ExportedProgram and state_dict files are read without running Python code from
the file. A whole pickled module can run arbitrary code when loaded, so it is refused unless
the user passes --trust-pickle.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from edgeprune.errors import UsageError, first_line

SAFE_FORMATS = (
    "TorchScript .pt (torch.jit.save), ExportedProgram .pt2 (torch.export.save), "
    "a state_dict .pth with --arch package.module:Class, or .onnx"
)


@dataclass
class LoadedModel:
    """A model ready for the front half. `kind` decides how it is exported to ONNX."""

    path: Path
    kind: str  # "torchscript" | "exported" | "module" | "onnx"
    module: object | None = None  # torch.nn.Module (or ScriptModule / GraphModule)
    onnx_model: object | None = None  # onnx.ModelProto when kind == "onnx"
    input_shape: tuple[int, ...] | None = None  # (C, H, W) without batch, when the file says

    @property
    def is_torch(self) -> bool:
        return self.kind != "onnx"


def load_model(path: str | Path, arch: str | None = None, trust_pickle: bool = False) -> LoadedModel:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _load_onnx(path)
    if suffix == ".pt2":
        return _load_exported_program(path, trust_pickle)
    if arch is not None:
        return _load_state_dict(path, arch)
    if _is_torchscript(path):
        return _load_torchscript(path)
    if trust_pickle:
        return _load_pickled_module(path)
    if _is_torch_zip(path) or _looks_like_pickle(path):
        if _holds_only_tensors(path):
            raise UsageError(
                f"{path} is a state_dict; pass --arch package.module:Class so edgeprune can build the module and load the weights"
            )
        raise UsageError(
            f"{path} is a pickled Python module, which can run arbitrary code when loaded; "
            f"save it as {SAFE_FORMATS}, or pass --trust-pickle if you trust its source"
        )
    raise UsageError(f"{path} is not a model file edgeprune can read; use {SAFE_FORMATS}")


def _is_torch_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.split("/", 1)[-1] == "constants.pkl" for n in names) and any("/code/" in n for n in names)


def _holds_only_tensors(path: Path) -> bool:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(obj, dict)


def _load_torchscript(path: Path) -> LoadedModel:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise UsageError(f"cannot load TorchScript model {path}: {first_line(e)}") from None
    module.eval()
    return LoadedModel(path, "torchscript", module=module)


@contextlib.contextmanager
def _weights_only_unless(trusted: bool):
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    if not trusted:
        os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _load_exported_program(path: Path, trust_pickle: bool) -> LoadedModel:
    try:
        # torch.export.load retries a failed weights-only load with full unpickling; the
        # environment switch turns that retry off unless the user trusts the file.
        with _weights_only_unless(trust_pickle):
            program = torch.export.load(str(path))
    except Exception as e:
        hint = "" if trust_pickle else " (it may hold pickled code, which is refused without --trust-pickle)"
        raise UsageError(f"cannot load ExportedProgram {path}: {first_line(e)}{hint}") from None
    shape = None
    args = program.example_inputs[0] if program.example_inputs else ()
    if len(args) == 1 and hasattr(args[0], "shape"):
        shape = tuple(int(d) for d in args[0].shape[1:])
    module = program.module()
    if shape is not None and not _accepts_batch(module, shape):
        module = SingleSampleLoop(module)
    return LoadedModel(path, "exported", module=module, input_shape=shape)


def _accepts_batch(module, shape) -> bool:
    try:
        with torch.no_grad():
            module(torch.zeros((2, *shape)))
        return True
    except Exception:
        return False


def _single_sample_loop_class():
    class SingleSampleLoop(torch.nn.Module):
        """Runs a program exported with a fixed batch of 1 over a batch, one sample at a time.

        Finetuning and evaluation need batches; the program's own graph (`inner`) is what gets
        exported to ONNX.
        """

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return torch.cat([self.inner(x[i : i + 1]) for i in range(x.shape[0])])

    return SingleSampleLoop


def SingleSampleLoop(inner):  # noqa: N802 - builds the torch class lazily so importing load.py stays light
    return _single_sample_loop_class()(inner)


def _load_state_dict(path: Path, arch: str) -> LoadedModel:
    cls = _import_arch(arch)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(
            f"{path} is not a plain state_dict ({first_line(e)}); save model.state_dict() with torch.save, "
            "or pass --trust-pickle for a whole pickled module you trust"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"{path} holds a {type(state).__name__}, not a state_dict; save model.state_dict() with torch.save")
    try:
        module = cls()
    except TypeError as e:
        raise UsageError(f"--arch {arch}: the class must be constructible without arguments ({e})") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UsageError(f"{path} does not match --arch {arch}: {first_line(e)}") from None
    module.eval()
    return LoadedModel(path, "module", module=module)


def _load_pickled_module(path: Path) -> LoadedModel:
    try:
        module = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UsageError(f"cannot load pickled module {path}: {first_line(e)}") from None
    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"{path} holds a {type(module).__name__}, not a torch.nn.Module; for a state_dict pass --arch")
    module.eval()
    return LoadedModel(path, "module", module=module)


def _load_onnx(path: Path) -> LoadedModel:
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:
        raise UsageError(f"{path} is not a valid ONNX model: {first_line(e)}") from None
    shape = None
    dims = onnx_graph_input(model).type.tensor_type.shape.dim
    if len(dims) >= 2 and all(d.HasField("dim_value") for d in dims[1:]):
        shape = tuple(int(d.dim_value) for d in dims[1:])
    return LoadedModel(path, "onnx", onnx_model=model, input_shape=shape)


def onnx_graph_input(model):
    """The one real input of an ONNX graph (initializers may also be listed as inputs)."""
    consts = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise UsageError(f"the model has {len(inputs)} inputs; edgeprune compiles single-input models")
    return inputs[0]


def _import_arch(arch: str):
    module_name, sep, class_name = arch.partition(":")
    if not sep or not module_name or not class_name:
        raise UsageError(f"--arch '{arch}' must look like package.module:Class")
    try:
        mod = importlib.import_module(module_name)
    except Exception as e:
        raise UsageError(f"--arch {arch}: cannot import {module_name} ({first_line(e)}); is it on PYTHONPATH?") from None
    try:
        return getattr(mod, class_name)
    except AttributeError:
        raise UsageError(f"--arch {arch}: module {module_name} has no class {class_name}") from None
