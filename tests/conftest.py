"""Shared, session-scoped fixtures: one trained digits model and each expensive compile once."""

from __future__ import annotations

import json

import pytest
from cli_support import run_cli


@pytest.fixture(scope="session")
def lib(tmp_path_factory):
    """kernels_c built for the host as a shared library (with sanitizers when EP_SANITIZE=1)."""
    from kernels_support import build_kernel_lib

    return build_kernel_lib(tmp_path_factory.mktemp("kernels") / "libep.so")


@pytest.fixture(scope="session")
def digits_cnn():
    """A trained DigitsCNN (nn.Module) and its test accuracy."""
    from edgeprune.examples import train_digits_cnn

    return train_digits_cnn(epochs=20, seed=0, quiet=True)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, digits_cnn):
    """The digits model saved in every supported format (and as an unsafe pickle)."""
    import torch

    from edgeprune.examples import save_torchscript

    module, _ = digits_cnn
    d = tmp_path_factory.mktemp("models")
    save_torchscript(module, d / "model.pt")
    torch.save(module.state_dict(), d / "model.pth")
    torch.save(module, d / "pickled.pt")
    torch.export.save(torch.export.export(module, (torch.zeros(1, 1, 8, 8),)), d / "model.pt2")
    return d


@pytest.fixture(scope="session")
def compile_once(tmp_path_factory, model_dir):
    """compile_once(name, *flags) runs `edgeprune compile --json` once per name for the session."""
    cache: dict[str, tuple[dict, object]] = {}

    def run(name: str, *flags: str, model: str | None = None):
        if name not in cache:
            out = tmp_path_factory.mktemp(f"build_{name}")
            result = run_cli("compile", model or model_dir / "model.pt", "--out", out, "--json", *flags)
            assert result.exit_code == 0, result.output
            cache[name] = (json.loads(result.stdout), out)
        return cache[name]

    return run
