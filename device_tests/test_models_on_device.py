"""Whole generated models on the emulated devices, bit-exact with TFLite Micro.

Random graphs (tests/test_codegen.py's generators: convs of every weight format, depthwise,
residual ADDs fused band by band, in-place convs, pooling, MEAN, FC, SOFTMAX/LOGISTIC and the
other ops) are compiled for each target, built into its firmware (or the arm64 runner) with that
target's kernels (DSP, MVE, NEON), run over the host-device protocol and compared with TFLite Micro
on the same int8 inputs. Host validation at compile time uses the portable kernels; this is where
the optimised ones meet whole models.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune.compile import backend as B
from edgeprune.device.firmware import build_firmware
from edgeprune.device.link import open_link
from edgeprune.targets import get_target
from test_codegen import random_model, random_model_ops, random_residual_model

SAMPLES = 6

MODELS = {
    "conv-dw-fc": lambda: random_model(11, sparsity=0.6),
    "nm24": lambda: random_model(12, sparsity=0.5, nm24=True),
    "residual": lambda: random_residual_model(13, sparsity=0.7),
    "residual-dense": lambda: random_residual_model(14, sparsity=0.0),
    "other-ops": lambda: random_model_ops(15),
}
TARGETS = ["cortex-m7", "cortex-m4", "cortex-m55", "arm64"]


@pytest.mark.parametrize("target", TARGETS)
def test_random_graphs_are_bitexact_on_the_device(tmp_path, target):
    failures = []
    for name, make in MODELS.items():
        model = make()
        folder = tmp_path / name
        B.compile_tflite(model, get_target(target), folder)
        fw = build_firmware(folder, target)
        graph = B.load_graph(model)
        shape = graph.tensors[graph.inputs[0]].shape
        x = np.random.default_rng(len(name)).integers(-128, 128, (SAMPLES, *shape)).astype(np.int8)
        expected = B.tflm_outputs(model, x, graph).reshape(SAMPLES, -1)
        with open_link(folder) as link:
            got = np.stack([np.frombuffer(link.infer(s.tobytes())[0], np.int8) for s in x])
        if not np.array_equal(got, expected):
            failures.append(f"{name} ({fw.backend}): {int(np.count_nonzero(got != expected))} of {got.size} outputs differ")
    assert not failures, f"{target}: " + "; ".join(failures)


def test_a_model_too_big_for_the_board_fails_at_link_time_in_one_line(tmp_path):
    """600 KB of FC weights: more than the Cortex-M4 board's 512 KiB of flash. The firmware link fails
    (as it would for the real part) and compile says so in one line, writing nothing."""
    from cli_support import run_cli
    from test_codegen import _Builder
    from edgeprune.compile.tflite_writer import fully_connected_options

    b = _Builder(np.random.default_rng(0))
    x = b.act((1, 1024))
    y = b.weighted("FULLY_CONNECTED", x, (600, 1024), (1, 600), 0, fully_connected_options(), 0.0, version=4)
    path = tmp_path / "big.tflite"
    path.write_bytes(b.model(x, y))
    result = run_cli("compile", path, "--target", "cortex-m4", "--format", "dense", "--out", tmp_path / "out")
    assert result.exit_code != 0 and not (tmp_path / "out").exists()
    assert result.stderr.count("\n") == 1, result.stderr
    assert "does not fit" in result.stderr and "flash" in result.stderr and "524288" in result.stderr, result.stderr


def test_a_model_with_tensors_bigger_than_a_default_frame_runs(tmp_path):
    """A 64x64x3 input (12 KiB): the firmware's frames grow to fit it (EP_PROTO_MAX_PAYLOAD)."""
    from test_codegen import _Builder
    from edgeprune.compile.tflite_writer import conv2d_options

    b = _Builder(np.random.default_rng(1))
    x = b.act((1, 64, 64, 3))
    y = b.weighted("CONV_2D", x, (4, 3, 3, 3), (1, 32, 32, 4), 0, conv2d_options((2, 2), padding="SAME"), 0.0)
    model = b.model(x, y)
    folder = tmp_path / "wide"
    B.compile_tflite(model, get_target("cortex-m7"), folder)
    build_firmware(folder, "cortex-m7")
    graph = B.load_graph(model)
    xs = np.random.default_rng(2).integers(-128, 128, (2, 1, 64, 64, 3)).astype(np.int8)
    with open_link(folder) as link:
        assert int(link.info()["max_payload"]) >= 64 * 64 * 3
        got = np.stack([np.frombuffer(link.infer(s.tobytes())[0], np.int8) for s in xs])
    assert np.array_equal(got, B.tflm_outputs(model, xs, graph).reshape(2, -1))


def test_sram_overflow_names_the_bytes_needed_when_ld_says_zero():
    """ld reports "overflowed by 0 bytes" when the stack reservation overlaps .bss; the bytes needed then
    come from the section ranges (here .bss ends 0x27ccf past the origin, plus an 8 KiB stack)."""
    import sys

    from edgeprune.device.firmware import BOARDS, FirmwareTooBig, _link

    err = ("ld: firmware.elf section `.bss' will not fit in region `RAM'\n"
           "ld: RAM overflow: static data + heap + stack exceed the board's SRAM\n"
           "ld: section .stack VMA [2001e000,2001ffff] overlaps section .bss VMA [20000090,20027ccf]\n"
           "ld: region `RAM' overflowed by 0 bytes\n")
    with pytest.raises(FirmwareTooBig) as e:
        _link([sys.executable, "-c", f"import sys; sys.stderr.write({err!r}); sys.exit(1)"], BOARDS["qemu-mps2-an386"], "firmware")
    assert str(e.value).startswith(f"model does not fit stm32f446 SRAM: needs {0x27cd0 + 0x2000} bytes, has 131072;")
