"""On-disk cache of transformed samples: one ``.npy`` of frames per split, memory-mapped on load.

Files, in ``<cache_dir>/<dataset>/``, named ``<split>-<key>`` where ``key`` hashes ``params`` (every
transform parameter, the cache version and a stamp of the source files):

- ``<name>.npy``: frames ``[N, T, *input_shape]`` uint8 (event counts, saturating at 255)
- ``<name>.json``: ``{"params": ..., "labels": [N ints], "shape": [...]}``, written last, so its
  presence means the ``.npy`` beside it is complete (each file is written to a temporary name and
  renamed).

A file that is unreadable or disagrees with its partner raises ``CorruptCacheError`` naming it
(delete both to rebuild). Large sets (SSC, CIFAR10-DVS) stay on disk: ``FrameFileDataset`` reads one
sample at a time from the memory map, in every DataLoader worker.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from spikegate.atomic import save_json

from .event_cache import CorruptCacheError
from .sources import DatasetRootError

__all__ = ["FrameFileDataset", "build_frame_file", "load_frame_file"]


class FrameFileDataset(Dataset):
    """Samples of a frame cache file, read lazily (the memory map is opened in each process).

    Items are ``(x float32 [T, *input_shape], label int)``, like ``FrameDataset``.
    """

    def __init__(self, path: Path, labels: np.ndarray, shape: tuple[int, ...]) -> None:
        self.path = path
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.shape = shape
        self._frames: Optional[np.ndarray] = None

    @property
    def frames(self) -> np.ndarray:
        if self._frames is None:
            self._frames = _open_frames(self.path, self.shape)
        return self._frames

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_frames": None}  # workers open their own map

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.frames[index], dtype=np.float32)), int(self.labels[index])


def _open_frames(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        frames = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise CorruptCacheError(
            f"frame cache {str(path)!r} is corrupt: {error}. Delete it to rebuild it."
        ) from error
    if frames.dtype != np.uint8 or tuple(frames.shape) != tuple(shape):
        raise CorruptCacheError(
            f"frame cache {str(path)!r} holds {frames.dtype} {tuple(frames.shape)}, expected uint8 "
            f"{tuple(shape)}. Delete it to rebuild it."
        )
    return frames


def load_frame_file(base: Path, params: dict) -> Optional[FrameFileDataset]:
    """The cached split at ``base`` (``.npy`` + ``.json``) if it exists, else ``None``."""
    meta_path = base.with_suffix(".json")
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        stored, labels, shape = meta["params"], np.asarray(meta["labels"], np.int64), tuple(meta["shape"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CorruptCacheError(
            f"frame cache {str(meta_path)!r} is corrupt: {error}. Delete it to rebuild it."
        ) from error
    if stored != params or labels.shape != shape[:1]:
        raise CorruptCacheError(
            f"frame cache {str(meta_path)!r} does not match its name (params or labels differ). "
            "Delete it to rebuild it."
        )
    dataset = FrameFileDataset(base.with_suffix(".npy"), labels, shape)
    dataset.frames  # check the frames file now, not in the first batch
    return dataset


def build_frame_file(
    base: Path,
    params: dict,
    labels: np.ndarray,
    sample_shape: tuple[int, ...],
    fill: Callable[[np.ndarray], None],
) -> FrameFileDataset:
    """Write a split's frames and return them as a dataset.

    ``fill(frames)`` writes every sample into ``frames [N, *sample_shape]`` uint8 (a memory map of
    a temporary file, zeroed); then the file is renamed to ``<base>.npy`` and ``<base>.json``
    written. An exception leaves neither file behind.
    """
    shape = (len(labels), *sample_shape)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{base.name}.", suffix=".npy.tmp", dir=base.parent)
    except OSError as error:
        raise DatasetRootError(
            f"dataset.cache_dir: cannot write the frame cache in {str(base.parent)!r} "
            f"({error.strerror}); point dataset.cache_dir at a writable folder"
        ) from error
    os.close(fd)
    try:
        frames = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        fill(frames)
        frames.flush()
        del frames
        os.chmod(tmp, 0o644)
        os.replace(tmp, base.with_suffix(".npy"))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    save_json(base.with_suffix(".json"), {
        "params": params, "labels": [int(v) for v in labels], "shape": list(shape),
    })
    return FrameFileDataset(base.with_suffix(".npy"), labels, shape)
