"""Atomic files: write to a temporary file beside the target, flush it to disk, rename it over.

A crash or Ctrl-C mid-write leaves the previous file (or nothing), never half of a new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union

__all__ = ["atomic_write", "save_json"]

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary binary file and rename it to ``path``.

    On any exception (KeyboardInterrupt too) the temporary file is removed and ``path`` is left
    as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_json(path: PathLike, data: Any) -> Path:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda file: file.write(text.encode()))
