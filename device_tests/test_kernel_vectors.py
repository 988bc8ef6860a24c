"""The dispatched kernels of each device build against TFLite Micro, bit for bit, under QEMU.

One vector file (device_support.generate_cases: 600 CONV_2D, DEPTHWISE_CONV_2D and
FULLY_CONNECTED cases, 40 of each other op the runner knows, all with TFLM's outputs) runs
through device_tests/vectors/run_vectors.c built for each target, which also prints the backend
it dispatched to: a build that silently fell back to another backend fails here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from device_support import OP_NAMES, RUNNER, parse_runner_output, write_vectors
from edgeprune.device.build import backend_build, build_program, defined_symbols, kernel_library
from edgeprune.device.qemu import run_arm64, run_cortex_m

# (target, backend the build must dispatch to, QEMU cpu for arm64).
BUILDS = [
    ("cortex-m7", "dsp", None),
    ("cortex-m4", "dsp", None),
    ("cortex-m55", "mve", None),
    ("arm64", "neon_dot", "max"),
    ("arm64", "neon", "cortex-a53"),
]
OPS = ("conv2d", "depthwise_conv2d", "fully_connected")


def missing_variants(target: str, backend: str) -> list[str]:
    """The backend's kernel functions that kernels_c does not define yet for this build."""
    build, defines = backend_build(target, backend)
    have = defined_symbols(kernel_library(build, defines), build)
    wanted = [f"ep_{op}_s8_{backend}" for op in OPS] + [f"ep_{op}_s8_scratch_size_{backend}" for op in OPS]
    return [s for s in wanted if s not in have]


def run_runner(target: str, backend: str, cpu: str | None, vectors, out_dir):
    build, defines = backend_build(target, backend)
    exe = build_program(build, [RUNNER], out_dir / f"run_vectors-{build.name}-{backend}.elf", defines=defines)
    if build.bare_metal:
        return run_cortex_m(exe, build.machine, args=[str(vectors)], timeout=120)
    return run_arm64(exe, cpu=cpu, args=[str(vectors)], timeout=120)


def check_run(result, vectors_cases, backend: str, where: str):
    backend_seen, ops, mismatches = parse_runner_output(result.stdout)
    by_id = {c.id: c for c in vectors_cases}
    detail = [f"{line}\n    {by_id[int(line.split()[4].rstrip(':'))].description}" for line in mismatches[:10]]
    assert result.exit_code == 0, f"{where}: exit {result.exit_code}\n" + "\n".join(detail) + result.stderr[-2000:]
    assert backend_seen == backend, f"{where}: the build dispatched to {backend_seen}, expected {backend}"
    expected_counts = Counter(OP_NAMES[c.op] for c in vectors_cases)
    assert {k: v[0] for k, v in ops.items() if v[0]} == expected_counts, f"{where}: not every case ran: {ops}"
    assert not mismatches


@pytest.mark.parametrize("target,backend,cpu", BUILDS, ids=[f"{t}-{b}" for t, b, _ in BUILDS])
def test_kernels_bit_exact_on_device(vector_file, device_build_dir, target, backend, cpu):
    vectors, cases = vector_file
    where = f"{target} ({backend}{', -cpu ' + cpu if cpu else ''})"
    missing = missing_variants(target, backend)
    if missing:
        # The variant files are still being written: check the device build with the portable
        # kernels meanwhile, then report the backend itself as not there yet.
        result = run_runner(target, "portable", cpu, vectors, device_build_dir)
        check_run(result, cases, "portable", where + " portable fallback")
        pytest.xfail(f"{backend} variants not in kernels_c yet ({', '.join(missing[:3])}...); "
                     f"the portable build passed {len(cases)} cases on {where}")
    check_run(run_runner(target, backend, cpu, vectors, device_build_dir), cases, backend, where)


def test_runner_reports_a_wrong_expectation(vector_file, device_build_dir, tmp_path):
    """One corrupted expected byte must fail the run and name the op and case."""
    _, cases = vector_file
    bad = [replace(c, arrays=list(c.arrays)) for c in cases[:3]]  # the session's cases stay intact
    wrong = bad[1].arrays[-1].copy()
    wrong.reshape(-1)[0] ^= 1
    bad[1].arrays[-1] = wrong
    path = write_vectors(tmp_path / "bad.epv", bad)
    result = run_runner("cortex-m7", "dsp", None, path, device_build_dir)
    _, _, mismatches = parse_runner_output(result.stdout)
    assert result.exit_code == 1, result.stdout + result.stderr
    assert len(mismatches) == 1 and f"case {bad[1].id}:" in mismatches[0], mismatches
