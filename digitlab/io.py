"""Atomic file writes: every file digitlab writes goes through here.

A crash, a full disk or Ctrl-C leaves either the old file or the new one, never half of one:
each writer writes a hidden temporary file in the target's directory and renames it over the
target (``os.replace`` is atomic on POSIX and Windows). ``atomic_path`` hands the temporary
path to writers that want a file name (safetensors, matplotlib, Pillow, csv).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import DigitlabError


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the suffix: matplotlib and Pillow choose the format by it
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)  # mkstemp makes 0600; these are ordinary shareable files
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Pretty JSON with a final newline."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def require_empty_dir(path: str | os.PathLike, force: bool,
                      hint: str = "use --force to overwrite") -> Path:
    """Refuse to write into a non-empty directory unless ``force`` (nothing is lost by accident)."""
    path = Path(path)
    if path.exists() and not force and (not path.is_dir() or any(path.iterdir())):
        what = "is not a directory" if not path.is_dir() else "already exists and is not empty"
        raise DigitlabError(f"{path}: {what}; {hint}")
    return path
