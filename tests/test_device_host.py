"""Host side of `edgeprune flash / run / bench` without an emulator: ELF sizes, input preparation,
the layer join, the JSON shapes and the one-line errors, with a fake device that answers like
the firmware (outputs from TFLite Micro, made-up instruction counts)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from cli_support import run_cli
from kernels_support import conv_tensors, random_quant, tflm

from edgeprune.compile.tflite_writer import ModelSpec, OpSpec, conv2d_options, write_tflite
from edgeprune.device import runner
from edgeprune.device.elf_sizes import elf_sizes, sizes_from_sections
from edgeprune.errors import EdgepruneError, UsageError

IN_SHAPE, OUT_SHAPE = (1, 4, 4, 2), (1, 4, 4, 3)  # NHWC; channels != H so NCHW and NHWC differ
HASH = "0123456789abcdef"
LAYER_COUNTS = [700, 300]  # the fake device's instructions for conv_2d_0 and mean_1


class FakeLink:
    """Answers info/infer/bench like the firmware would; `corrupt` flips one output of that sample."""

    def __init__(self, model_dir, corrupt: int | None = None, model_hash: str = HASH):
        self.model = (model_dir / "model.tflite").read_bytes()
        self.corrupt, self.hash, self.calls, self._regions = corrupt, model_hash, 0, []

    def info(self):
        return {"protocol": "1", "model_hash": self.hash, "board": "fake-board", "backend": "portable",
                "arena_bytes": "96", "layer_names": "conv_2d_0,mean_1", "stack_bytes": "16384"}

    def infer(self, x: bytes):
        out = tflm(self.model, np.frombuffer(x, np.int8).reshape(IN_SHAPE)).reshape(-1).copy()
        if self.calls == self.corrupt:
            out[0] ^= 1
        self.calls += 1
        self._regions.append(sum(LAYER_COUNTS) + 20)
        return out.tobytes(), None

    def bench(self, x: bytes):
        self._regions += LAYER_COUNTS
        return None, 1234

    def regions(self):
        return list(self._regions)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A compiled-model folder with a one-conv model: what runner.py reads, and an ELF to size."""
    d = tmp_path_factory.mktemp("fake_model")
    rng = np.random.default_rng(0)
    in_scale, in_zp, f_scales, out_scale, out_zp = random_quant(rng, 3, 9 * 2)
    tensors, _, _ = conv_tensors(rng, IN_SHAPE, (3, 3, 3, 2), OUT_SHAPE, in_scale, in_zp, f_scales, out_scale, out_zp, 0)
    op = OpSpec("CONV_2D", [0, 1, 2], [3], conv2d_options(padding="SAME"), version=3)
    (d / "model.tflite").write_bytes(write_tflite(ModelSpec(tensors, [op], [0], [3])))
    (d / "model.h").write_text(f'#define EP_MODEL_HASH "{HASH}" /* test */\n')
    report = {
        "target": "cortex-m7", "input_shape": [1, 2, 4, 4],
        "tflite": {"input": {"shape": list(IN_SHAPE), "dtype": "int8", "scale": in_scale, "zero_point": in_zp},
                   "output": {"shape": list(OUT_SHAPE), "dtype": "int8", "scale": out_scale, "zero_point": out_zp}},
        "model": {"layers": [{"name": "conv_2d_0", "index": 0, "op": "CONV_2D", "format": "dense", "macs": 864,
                              "nonzero_macs": 864, "instructions_estimate": 1000}]},
    }
    (d / "report.json").write_text(json.dumps(report))
    shutil.copyfile(_object_file(tmp_path_factory.mktemp("elf")), d / "firmware.elf")
    return d


def _object_file(tmp):
    """A relocatable ELF with known section sizes (host gcc)."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    src = tmp / "sizes.c"
    src.write_text("char zeros[1000];\nchar init[300] = {1};\nconst char table[500] = {1};\n"
                   "int f(int i) { return zeros[i] + init[i] + table[i]; }\n")
    subprocess.run(["gcc", "-O2", "-fno-common", "-c", str(src), "-o", str(tmp / "sizes.o")], check=True)
    return tmp / "sizes.o"


@pytest.fixture
def fake_device(monkeypatch, model_dir):
    """Replace the emulator with FakeLink; returns the dict of keyword arguments to give it."""
    opts: dict = {}
    opened: list = []

    def open_device(model, device="qemu", count_instructions=False, program=False):
        runner.parse_device(device)
        opened.append(count_instructions)
        return FakeLink(model.path, **{k: v for k, v in opts.items() if k != "opened"})

    monkeypatch.setattr(runner, "open_device", open_device)
    opts["opened"] = opened
    yield opts
    opts.pop("opened")


# ---- ELF sizes -----------------------------------------------------------------------------------

def test_elf_sizes_classify_sections_by_flags():
    a, w, x = 0x2, 0x1, 0x4
    s = sizes_from_sections([
        (".text", "SHT_PROGBITS", a | x, 1000), (".rodata", "SHT_PROGBITS", a, 400), (".data", "SHT_PROGBITS", a | w, 60),
        (".bss", "SHT_NOBITS", a | w, 4500), (".heap", "SHT_NOBITS", a | w, 131072), (".stack", "SHT_NOBITS", a | w, 16384),
        (".comment", "SHT_PROGBITS", 0, 77), (".debug_info", "SHT_PROGBITS", 0, 9999),
    ])
    assert (s.flash_bytes, s.sram_bytes) == (1460, 4560)
    assert (s.text_bytes, s.rodata_bytes, s.data_bytes, s.bss_bytes) == (1000, 400, 60, 4500)
    assert (s.heap_bytes, s.stack_region_bytes) == (131072, 16384)


def test_elf_sizes_of_a_real_object(tmp_path):
    s = elf_sizes(_object_file(tmp_path))
    assert s.bss_bytes >= 1000 and s.data_bytes >= 300 and s.rodata_bytes >= 500 and s.text_bytes > 0
    assert s.sram_bytes == s.data_bytes + s.bss_bytes
    assert s.flash_bytes == s.text_bytes + s.rodata_bytes + s.data_bytes


def test_elf_sizes_errors(tmp_path):
    (tmp_path / "x.elf").write_bytes(b"not an elf")
    for p in (tmp_path / "x.elf", tmp_path / "missing.elf"):
        with pytest.raises(EdgepruneError) as e:
            elf_sizes(p)
        assert "\n" not in str(e.value)


# ---- inputs --------------------------------------------------------------------------------------

def test_prepare_inputs_layouts_and_quantization(model_dir):
    m = runner.load_model_dir(model_dir)
    assert (m.input_shape, m.torch_shape, m.output_size) == ((4, 4, 2), (2, 4, 4), 48)
    rng = np.random.default_rng(3)
    x8 = rng.integers(-128, 128, (5, 4, 4, 2)).astype(np.int8)
    assert np.array_equal(runner.prepare_inputs(x8, m), x8)  # int8 NHWC: as is
    assert np.array_equal(runner.prepare_inputs(x8[0], m), x8[:1])  # one sample
    assert np.array_equal(runner.prepare_inputs(x8.transpose(0, 3, 1, 2), m), x8)  # int8 NCHW
    # Float NCHW (PyTorch's layout) is transposed and quantized: q = round(x / scale) + zp, clipped.
    real = (x8.astype(np.float64) - m.input_zero_point) * m.input_scale
    for xf in (real.transpose(0, 3, 1, 2).astype(np.float32), real.astype(np.float32)):
        assert np.array_equal(runner.prepare_inputs(xf, m), x8)
    big = np.full((1, 2, 4, 4), 1e6, np.float32)
    assert np.all(runner.prepare_inputs(big, m) == 127) and np.all(runner.prepare_inputs(-big, m) == -128)


@pytest.mark.parametrize("x, words", [
    (np.zeros((3, 4, 4, 2), np.uint8), "uint8"),
    (np.zeros((3, 4, 4, 2), np.int32), "int32"),
    (np.zeros((3, 8, 8), np.float32), "(N, 2, 4, 4) or (N, 4, 4, 2)"),
    (np.zeros((3, 32), np.int8), "shape (3, 32)"),
    (np.zeros((0, 2, 4, 4), np.float32), "no samples"),
    (np.full((1, 2, 4, 4), np.nan, np.float32), "NaN"),
])
def test_prepare_inputs_errors(model_dir, x, words):
    with pytest.raises(UsageError) as e:
        runner.prepare_inputs(x, runner.load_model_dir(model_dir))
    assert words in str(e.value) and "\n" not in str(e.value)


def test_parse_device():
    assert runner.parse_device("qemu") == ("qemu", None)
    assert runner.parse_device("pyocd") == ("pyocd", None)
    assert runner.parse_device("pyocd:0670FF") == ("pyocd", "0670FF")
    for bad in ("jlink", "qemu:x", "pyocd:", ""):
        if bad:
            with pytest.raises(UsageError):
                runner.parse_device(bad)


def test_join_layers_keys_report_by_operator_index():
    report = {"model": {"layers": [{"name": "conv_2d_1", "index": 2, "op": "CONV_2D", "format": "block4", "macs": 99}]}}
    rows = runner.join_layers(["conv_2d_2", "mean_4"], [10, 5], [None, None], report)
    assert rows[0] | {} == rows[0] and rows[0]["name"] == "conv_2d_1" and rows[0]["c_name"] == "conv_2d_2"
    assert (rows[0]["format"], rows[0]["macs"], rows[0]["instructions"]) == ("block4", 99, 10)
    assert (rows[1]["name"], rows[1]["op"], rows[1]["format"], rows[1]["macs"]) == ("mean_4", "MEAN", "-", 0)


# ---- run, bench, flash through a fake device -----------------------------------------------------

def test_run_json_bitexact_and_out(model_dir, fake_device, tmp_path):
    x = np.random.default_rng(4).uniform(-1, 1, (6, 2, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(6) % 3)
    r = run_cli("run", model_dir, "--input", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                "--out", tmp_path / "y_dev.npy", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert {"device": "qemu:fake-board", "samples": 6, "bitexact": True, "mismatches": 0}.items() <= d.items()
    assert d["quantized_inputs"] and 0 <= d["accuracy"] <= 1
    saved = np.load(tmp_path / "y_dev.npy")
    assert saved.dtype == np.int8 and saved.shape == (6, 4, 4, 3)
    x8 = runner.prepare_inputs(x, runner.load_model_dir(model_dir))
    assert np.array_equal(saved[2], tflm((model_dir / "model.tflite").read_bytes(), x8[2:3])[0])
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_run_mismatch_exits_non_zero(model_dir, fake_device, tmp_path):
    fake_device["corrupt"] = 2
    np.save(tmp_path / "x.npy", np.zeros((4, 4, 4, 2), np.int8))
    r = run_cli("run", model_dir, "--input", tmp_path / "x.npy", "--json")
    assert r.exit_code == 1
    d = json.loads(r.stdout)
    assert (d["bitexact"], d["mismatches"], d["first_mismatch"], d["max_abs_diff"]) == (False, 1, 2, 1)
    r = run_cli("run", model_dir, "--input", tmp_path / "x.npy")
    assert r.exit_code == 1 and "MISMATCH: 1 of 4 samples" in r.stdout


def test_run_stale_firmware_is_one_line(model_dir, fake_device, tmp_path):
    fake_device["model_hash"] = "ffffffffffffffff"
    np.save(tmp_path / "x.npy", np.zeros((1, 4, 4, 2), np.int8))
    r = run_cli("run", model_dir, "--input", tmp_path / "x.npy")
    assert r.exit_code != 0 and "stale" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize("make_input, words", [
    (lambda p: np.save(p, np.zeros((2, 7), np.float32)), "shape (2, 7)"),
    (lambda p: np.save(p, np.zeros((2, 4, 4, 2), np.int64)), "int64"),
    (lambda p: p.write_text("hello"), "not a .npy"),
    (lambda p: None, "does not exist"),
])
def test_run_bad_inputs_give_one_line(model_dir, fake_device, tmp_path, make_input, words):
    p = tmp_path / "x.npy"
    make_input(p)
    r = run_cli("run", model_dir, "--input", p)
    assert r.exit_code == 2, r.output
    assert words in r.stderr and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


def test_bad_folder_and_device_give_one_line(model_dir, tmp_path):
    for args, words in ((("bench", tmp_path), "no report.json"), (("flash", tmp_path / "nope"), "not a folder"),
                        (("bench", model_dir, "--device", "jlink"), "unknown --device")):
        r = run_cli(*args)
        assert r.exit_code == 2 and words in r.stderr and r.stderr.count("\n") == 1, (args, r.output)


def test_bench_json_shape_and_plot(model_dir, fake_device, tmp_path):
    r = run_cli("bench", model_dir, "--json", "--plot", tmp_path / "b.png")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert fake_device["opened"] == [True]  # counting instructions under QEMU
    assert d["device"] == "qemu:fake-board" and d["total_instructions"] == sum(LAYER_COUNTS) + 20
    assert [(l["name"], l["op"], l["format"], l["macs"], l["instructions"]) for l in d["layers"]] == [
        ("conv_2d_0", "CONV_2D", "dense", 864, 700), ("mean_1", "MEAN", "-", 0, 300)]
    for key in ("flash_bytes", "sram_bytes", "stack_bytes"):
        assert isinstance(d[key], int)
    assert d["stack_bytes"] == 1234 and d["sram_bytes"] >= 1300 and d["flash_bytes"] >= 800
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = run_cli("bench", model_dir)  # the table, and the chart in DIR by default
    assert r.exit_code == 0 and "conv_2d_0" in r.stdout and "peak stack 1,234 B" in r.stdout
    assert (model_dir / "bench.png").exists()
    np.save(tmp_path / "bad.npy", np.zeros((2, 3), np.float32))  # --input: its first sample is measured
    r = run_cli("bench", model_dir, "--input", tmp_path / "bad.npy")
    assert r.exit_code == 2 and "inputs have shape (2, 3)" in r.stderr
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4, 2), np.int8))
    assert run_cli("bench", model_dir, "--input", tmp_path / "x.npy", "--no-plot").exit_code == 0


def test_flash_reports_board_and_hash(model_dir, fake_device):
    r = run_cli("flash", model_dir)
    assert r.exit_code == 0, r.output
    assert f"model {HASH}" in r.stdout and "no persistent flash" in r.stdout
    d = json.loads(run_cli("flash", model_dir, "--json").stdout)
    assert (d["board"], d["arena_bytes"], d["persistent"]) == ("fake-board", 96, False)


def test_pyocd_missing_is_one_line(model_dir):
    try:
        import pyocd  # noqa: F401
        pytest.skip("pyocd is installed")
    except ImportError:
        pass
    r = run_cli("flash", model_dir, "--device", "pyocd")
    assert r.exit_code == 1 and r.stderr == "error: pyOCD is not installed: pip install 'edgeprune[boards]'\n"


def test_pyocd_without_a_board_is_one_line(model_dir, monkeypatch):
    """With pyOCD installed but no probe connected (a stand-in pyocd that finds none)."""
    import sys
    import types

    class ConnectHelper:
        @staticmethod
        def session_with_chosen_probe(**kwargs):
            return None

    fakes = {"pyocd": types.ModuleType("pyocd"), "pyocd.core": types.ModuleType("pyocd.core"),
             "pyocd.core.helpers": types.ModuleType("pyocd.core.helpers"), "pyocd.flash": types.ModuleType("pyocd.flash"),
             "pyocd.flash.file_programmer": types.ModuleType("pyocd.flash.file_programmer"),
             "serial": types.ModuleType("serial"), "serial.tools": types.ModuleType("serial.tools"),
             "serial.tools.list_ports": types.ModuleType("serial.tools.list_ports")}
    fakes["pyocd.core.helpers"].ConnectHelper = ConnectHelper
    fakes["pyocd.flash.file_programmer"].FileProgrammer = object
    fakes["serial.tools"].list_ports = fakes["serial.tools.list_ports"]
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    r = run_cli("flash", model_dir, "--device", "pyocd")
    assert r.exit_code == 1 and r.stderr.startswith("error: no board found: connect a board") and r.stderr.count("\n") == 1
    r = run_cli("bench", model_dir, "--device", "pyocd:0670FF")
    assert r.exit_code == 1 and "no board with probe id 0670FF" in r.stderr


def test_pyocd_refuses_an_emulator_build(model_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    (d / "firmware.json").write_text(json.dumps({"elf": "firmware.elf", "board": "qemu-mps2-an500"}))
    r = run_cli("flash", d, "--device", "pyocd")
    assert r.exit_code == 2 and "built for the emulator (qemu-mps2-an500)" in r.stderr and r.stderr.count("\n") == 1
