"""Training checkpoints: saved atomically, loaded with a check that they fit the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from spikegate.atomic import PathLike, atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or from another configuration."""


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> Path:
    return atomic_write(path, lambda file: torch.save(state, file))


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
        differences = "; ".join(_differences(fingerprint, state.get("fingerprint")))
        raise CheckpointError(f"checkpoint: {path} was written by another configuration ({differences})")
    return state


def _differences(expected: Any, found: Any, key: str = "") -> list[str]:
    """``key: here <expected>, checkpoint <found>`` for each leaf setting that differs."""
    if isinstance(expected, dict) and isinstance(found, dict):
        return [line for name in sorted(expected.keys() | found.keys(), key=str)
                for line in _differences(expected.get(name), found.get(name), f"{key}.{name}" if key else str(name))]
    if expected == found:
        return []
    return [f"{key or 'fingerprint'}: here {expected!r}, in the checkpoint {found!r}"]
