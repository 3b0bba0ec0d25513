"""Atomic files: write to a temporary file beside the target, then rename over it.

A crash or Ctrl-C mid-write leaves the previous file (or nothing), never half of a new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

import torch

__all__ = ["atomic_write", "save_json", "save_checkpoint", "load_checkpoint", "CheckpointError"]

PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or from another configuration."""


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path``; the temp file goes on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_json(path: PathLike, data: Any) -> Path:
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    return atomic_write(path, write)


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> Path:
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: PathLike, *, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint; with ``fingerprint``, check it was written by the same model config."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint: expected a file at {path}, found none")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(f"checkpoint: {path} is unreadable ({err})") from None
    if fingerprint is not None and state.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"checkpoint: {path} was written by another configuration:\n"
            f"  expected {fingerprint}\n  found    {state.get('fingerprint')}"
        )
    return state
