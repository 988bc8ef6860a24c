"""Run the edgeprune CLI in-process from tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from click.testing import CliRunner

from edgeprune.cli import main


def run_cli(*args):
    """Run the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
