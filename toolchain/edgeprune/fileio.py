"""Atomic outputs: a reader never sees a half-written file or output folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_directory(out_dir: Path, commit_marker: str = "report.json"):
    """Yield a temporary folder next to `out_dir`; on success its files replace those in `out_dir`.

    Each file is moved with os.replace, so every file in `out_dir` is always complete. The
    folder may hold the user's other files, so it is never swapped whole; instead
    `commit_marker` is removed first and moved in last: when it exists, the files beside it
    belong to it. On failure nothing in `out_dir` changes and the staging folder is removed.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging.", dir=out_dir.parent))
    try:
        yield stage
        out_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out_dir / commit_marker)
        for item in sorted(stage.iterdir(), key=lambda p: (p.name == commit_marker, p.name)):
            dest = out_dir / item.name
            if item.is_dir():
                if dest.exists():
                    shutil.rmtree(dest)
                os.replace(item, dest)
            else:
                os.replace(item, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
