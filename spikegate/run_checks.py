"""Checks of a run's setup that would otherwise fail late: after minutes of generating data, or at the
first training step. Each error names the setting that chose the failing value."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig

__all__ = ["check_run_setup", "data_directory"]


def _default_data_root() -> tuple[Path, str]:
    from spikegate.datasets.event_cache import default_root

    setting = "SPIKEGATE_DATA" if os.environ.get("SPIKEGATE_DATA") else \
        "the default data directory (set SPIKEGATE_DATA or dataset.root to move it)"
    return default_root(), setting


def data_directory(dataset: DictConfig) -> Optional[tuple[Path, str]]:
    """The directory a dataset writes its cache into, and the setting that chose it; None for a
    dataset that writes nothing (``digits``). Recorded sets cache frames under ``dataset.cache_dir``
    (null: ``<data root>/frame-cache``); generated sets (``event_digits``) under ``dataset.root``
    (null: ``$SPIKEGATE_DATA`` or ``~/.cache/spikegate``)."""
    if "cache_dir" in dataset:
        if dataset.cache_dir:
            return Path(str(dataset.cache_dir)).expanduser(), "dataset.cache_dir"
        root, setting = _default_data_root()
        return root / "frame-cache", setting
    if "root" in dataset:
        if dataset.root:
            return Path(str(dataset.root)).expanduser(), "dataset.root"
        return _default_data_root()
    return None


def _check_writable(path: Path, setting: str) -> None:
    """Create ``path`` and a scratch file in it. A directory that exists with files in it may be a
    prepared read-only cache, so it passes; a missing file in it still fails when it is written."""
    if path.is_dir() and any(path.iterdir()) and not os.access(path, os.W_OK):
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise OSError(f"{setting}: the data directory {path} is not writable ({reason}); "
                      "point it at a writable directory") from None


def _check_device(cfg: DictConfig) -> None:
    device = str(cfg.trainer.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.device: expected 'auto' or 'cpu' on this machine (no CUDA GPU), got {device!r}")
    backend = cfg.get("neuron", {}).get("backend")
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"  # the kernels on the CPU (tests)
    if backend == "triton" and not torch.cuda.is_available() and not interpreted:
        raise ValueError("neuron.backend: 'triton' needs a CUDA GPU and this machine has none; "
                         "expected 'auto' or 'torch'")


def check_run_setup(cfg: DictConfig) -> None:
    """Before anything slow: the device and neuron backend exist here, and the data directory is
    writable (OSError naming the path and the setting that chose it)."""
    _check_device(cfg)
    target = data_directory(cfg.dataset)
    if target is not None:
        _check_writable(*target)
