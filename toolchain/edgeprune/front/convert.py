"""PyTorch -> ONNX -> int8 TFLite (onnx2tf) -> C array.

onnx2tf runs in a child process: it imports TensorFlow (seconds, gigabytes) and prints a lot,
and the rest of edgeprune must not depend on either. Its known traps are handled here: it
overwrites its input file (we hand it a copy), calls `onnxsim` from PATH (we put this
interpreter's bin folder first), and for 3-channel images downloads sample data (we place a
file of that name in its working folder, so it never touches the network).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx

from edgeprune.errors import EdgepruneError, first_line
from edgeprune.front.load import LoadedModel, onnx_graph_input

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
ONNX2TF_TIMEOUT_S = 1800
CALIBRATION_SAMPLES = 500
_ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def export_onnx(model: LoadedModel, input_shape: tuple[int, ...]) -> onnx.ModelProto:
    """A single-file ONNX model with batch 1 (the device batch), BatchNorm folded."""
    if model.kind == "onnx":
        return model.onnx_model
    import torch

    example = (torch.zeros((1, *input_shape)),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if model.kind == "exported":
                # A fixed-batch program runs inside SingleSampleLoop; export the program itself.
                proto = _export_dynamo(getattr(model.module, "inner", model.module), example)
            else:
                buf = io.BytesIO()
                # The TorchScript-based exporter is the one that accepts ScriptModules.
                torch.onnx.export(
                    model.module, example, buf, dynamo=False, opset_version=OPSET,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                )
                proto = onnx.load_from_string(buf.getvalue())
        except EdgepruneError:
            raise
        except Exception as e:
            raise EdgepruneError(f"ONNX export failed: {first_line(e)}; check that the model runs on input shape {(1, *input_shape)}") from None
    return proto


def _export_dynamo(module, example) -> onnx.ModelProto:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        # The dynamo exporter prints its progress on stdout, which must stay clean for --json.
        with contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(module, example, dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False)
        program.save(str(path))
        # The dynamo exporter writes weights to a side .data file: load them back in.
        return onnx.load(str(path), load_external_data=True)


def onnx_to_int8_tflite(
    proto: onnx.ModelProto, calibration_nchw: np.ndarray, workdir: Path
) -> tuple[bytes, bytes]:
    """Full-integer int8 TFLite (int8 input and output, per-channel weights) and its float32 twin.

    Returns (int8 .tflite bytes, float32 .tflite bytes). The float32 model has the same
    layers in the same order, which lets the report compare float and int8 weights one to one.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "input.onnx"
    onnx.save(proto, str(src))
    input_name = onnx_graph_input(proto).name
    calib = calibration_nchw[:CALIBRATION_SAMPLES].astype(np.float32)
    if calib.ndim == 4:
        calib = calib.transpose(0, 2, 3, 1)  # onnx2tf calibrates in NHWC
        if calib.shape[-1] == 3:
            _place_sample_images(workdir)
    np.save(workdir / "calibration.npy", calib)
    neutral = "[" * calib.ndim + "0" + "]" * calib.ndim
    unit = "[" * calib.ndim + "1" + "]" * calib.ndim
    out = workdir / "tf"
    cmd = [
        sys.executable, "-m", "onnx2tf", "-i", src.name, "-o", out.name, "-oiqt", "-qt", "per-channel",
        "-cind", input_name, "calibration.npy", neutral, unit, "-n",
    ]
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["CUDA_VISIBLE_DEVICES"] = ""
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=ONNX2TF_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise EdgepruneError(f"onnx2tf did not finish within {ONNX2TF_TIMEOUT_S} s; try a smaller model or fewer calibration samples") from None
    log = proc.stdout + proc.stderr
    int8 = out / "input_full_integer_quant.tflite"
    fp32 = out / "input_float32.tflite"
    if proc.returncode != 0 or not int8.is_file():
        # The work folder is deleted as the error propagates: keep the log where the user can read it.
        fd, kept = tempfile.mkstemp(prefix="edgeprune-onnx2tf-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(log)
        raise EdgepruneError(f"onnx2tf could not convert the model: {_onnx2tf_error(log)} (full log: {kept})")
    return int8.read_bytes(), fp32.read_bytes()


def _place_sample_images(workdir: Path) -> None:
    # onnx2tf loads this file for a dry run of 3-channel models, and downloads it when it is
    # missing. Deterministic noise of the expected shape keeps it offline.
    rng = np.random.default_rng(0)
    np.save(workdir / _ONNX2TF_SAMPLE, rng.random((20, 128, 128, 3), dtype=np.float32))


def _onnx2tf_error(log: str) -> str:
    lines = [l.strip() for l in log.splitlines() if "ERROR" in l or "Error" in l]
    text = lines[-1] if lines else (log.strip().splitlines() or ["no output"])[-1]
    return text.replace("\x1b[31m", "").replace("\x1b[0m", "")[:300]


def c_array_sources(tflite: bytes, symbol: str = "g_model_data") -> tuple[str, str]:
    """model_data.h / model_data.c holding the flatbuffer for TFLite Micro users.

    16-byte alignment: TFLM requires the flatbuffer to be aligned for its tensor data.
    """
    guard = "EDGEPRUNE_MODEL_DATA_H_"
    header = (
        f"/* Generated by edgeprune: the int8 TFLite flatbuffer ({len(tflite)} bytes). */\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n"
        f"#define {symbol.upper()}_LEN {len(tflite)}u\n\n"
        f"extern const unsigned char {symbol}[];\n"
        f"extern const unsigned int {symbol}_len;\n\n"
        "#ifdef __cplusplus\n}\n#endif\n\n"
        f"#endif /* {guard} */\n"
    )
    rows = []
    for i in range(0, len(tflite), 12):
        rows.append("    " + ", ".join(f"0x{b:02x}" for b in tflite[i : i + 12]) + ",")
    source = (
        "/* Generated by edgeprune: the int8 TFLite flatbuffer, aligned for TFLite Micro. */\n"
        '#include "model_data.h"\n\n'
        "#if defined(__GNUC__) || defined(__clang__)\n#define EP_ALIGN16 __attribute__((aligned(16)))\n"
        "#elif defined(_MSC_VER)\n#define EP_ALIGN16 __declspec(align(16))\n#else\n#define EP_ALIGN16\n#endif\n\n"
        f"EP_ALIGN16 const unsigned char {symbol}[{symbol.upper()}_LEN] = {{\n" + "\n".join(rows) + "\n};\n\n"
        f"const unsigned int {symbol}_len = {symbol.upper()}_LEN;\n"
    )
    return header, source
