"""One progress display for long work (rich), silent under --json or -q."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, quiet: bool = False):
    """Yield `advance(n, **fields)`; total=None shows a spinner for work of unknown length."""
    if quiet or not sys.stderr.isatty() and not _forced():
        yield lambda n=1, **fields: None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
    with Progress(*columns, transient=True, console=_console()) as progress:
        task = progress.add_task(description, total=total, info="")

        def advance(n=1, **fields):
            info = " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            progress.update(task, advance=n, info=info)

        yield advance


def _forced() -> bool:
    import os

    return os.environ.get("EDGEPRUNE_PROGRESS") == "1"


def _console():
    from rich.console import Console

    return Console(stderr=True)
