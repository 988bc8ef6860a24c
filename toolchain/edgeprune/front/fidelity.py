"""Run the int8 model with LiteRT's reference kernels and compare it with the float model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgeprune.errors import EdgepruneError


@dataclass
class Fidelity:
    samples: int
    float_accuracy: float | None
    int8_accuracy: float | None
    agreement: float | None  # top-1 agreement between int8 and float
    max_logit_error: float  # max |dequantized int8 - float| over all outputs
    mean_logit_error: float
    per_class_recall_float: list[float] | None = None
    per_class_recall_int8: list[float] | None = None
    ece_float: float | None = None
    ece_int8: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def to_model_layout(x_nchw: np.ndarray, model_shape: tuple[int, ...]) -> np.ndarray:
    """PyTorch NCHW samples in the layout the TFLite input expects (NHWC for images)."""
    if tuple(model_shape[1:]) == tuple(x_nchw.shape[1:]):
        return x_nchw
    moved = np.moveaxis(x_nchw, 1, -1)
    if tuple(model_shape[1:]) == tuple(moved.shape[1:]):
        return moved
    raise EdgepruneError(f"the TFLite input has shape {tuple(model_shape)}, which does not match data samples of shape {x_nchw.shape[1:]}")


def from_model_layout(y_model: np.ndarray, torch_shape: tuple[int, ...]) -> np.ndarray:
    """TFLite outputs back in PyTorch layout (channels first) when the two differ."""
    if tuple(y_model.shape[1:]) == tuple(torch_shape[1:]) or y_model.ndim < 3:
        return y_model
    return np.moveaxis(y_model, -1, 1)


def litert_interpreter(tflite: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=tflite, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    return it


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype=np.int8) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def _invoke_each(tflite: bytes, x_nchw: np.ndarray, to_input) -> tuple[np.ndarray, dict]:
    """Run the model one sample at a time (the device batch); `to_input` maps a float sample
    to the model's input dtype. Returns the raw outputs and the output tensor's details."""
    it = litert_interpreter(tflite)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    x = to_model_layout(x_nchw, tuple(inp["shape"]))
    raw = np.empty((len(x), *out["shape"][1:]), dtype=out["dtype"])
    for i in range(len(x)):
        it.set_tensor(inp["index"], to_input(x[i : i + 1], inp))
        it.invoke()
        raw[i] = it.get_tensor(out["index"])[0]
    return raw, out


def run_int8(tflite: bytes, x_nchw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw int8 outputs and their dequantized values."""
    raw, out = _invoke_each(tflite, x_nchw, lambda x, inp: quantize(x, *inp["quantization"], inp["dtype"]))
    out_scale, out_zp = out["quantization"]
    return raw, (raw.astype(np.float32) - out_zp) * out_scale


def run_float(tflite: bytes, x_nchw: np.ndarray) -> np.ndarray:
    raw, _ = _invoke_each(tflite, x_nchw, lambda x, inp: x.astype(np.float32))
    return raw


def compare(float_out: np.ndarray, int8_out: np.ndarray, labels: np.ndarray | None) -> Fidelity:
    int8_out = from_model_layout(int8_out, float_out.shape)
    err = np.abs(int8_out - float_out)
    classifier = float_out.ndim == 2 and float_out.shape[1] > 1
    fid = Fidelity(len(float_out), None, None, None, float(err.max()), float(err.mean()))
    if not classifier:
        return fid
    pf, pq = float_out.argmax(1), int8_out.argmax(1)
    fid.agreement = float((pf == pq).mean())
    if labels is not None:
        fid.float_accuracy = float((pf == labels).mean())
        fid.int8_accuracy = float((pq == labels).mean())
        k = float_out.shape[1]
        fid.per_class_recall_float = per_class_recall(pf, labels, k)
        fid.per_class_recall_int8 = per_class_recall(pq, labels, k)
        fid.ece_float = expected_calibration_error(float_out, labels)
        fid.ece_int8 = expected_calibration_error(int8_out, labels)
    return fid


def per_class_recall(pred: np.ndarray, labels: np.ndarray, k: int) -> list[float]:
    return [float((pred[labels == c] == c).mean()) if np.any(labels == c) else float("nan") for c in range(k)]


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    conf, pred = p.max(1), p.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs((pred[sel] == labels[sel]).mean() - conf[sel].mean())
    return float(ece)
