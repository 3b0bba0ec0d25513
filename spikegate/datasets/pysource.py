"""Byte-level text that every machine has: the running interpreter's standard-library sources.

The corpus is every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]`` (``site-packages``,
``dist-packages`` and ``__pycache__`` excluded), read as raw bytes; vocabulary 256.

Split (fixed, documented, independent of the filesystem's file order): a file is in the
validation split when the first 8 hex digits of ``sha256`` of its path relative to the stdlib
root (``/``-separated, UTF-8) read as an integer are ``< validation_percent * 2^32 / 100``; all
other files are training files. Within a split, files are concatenated in the order of their
relative paths, each followed by one ``\\n`` (0x0A) byte. A Python version that adds or removes
files moves only those files; the others keep their split.

Samples are non-overlapping windows: item ``i`` is ``(x, y)``, ``x = bytes[iT : iT + T]`` and
``y = bytes[iT + 1 : iT + T + 1]`` (int64 ``[T]``), the next byte of every position. The default
collate gives ``[B, T]``; a time-major model transposes to ``[T, B]``.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from pathlib import Path
from typing import Optional, Union

import torch
from torch.utils.data import Dataset

from spikegate.arguments import check_int, check_real

from .checks import check_split

__all__ = [
    "VOCAB_SIZE",
    "stdlib_root",
    "python_source_files",
    "source_split",
    "load_source_bytes",
    "ByteWindows",
    "PythonSourceData",
]

VOCAB_SIZE = 256
SEPARATOR = b"\n"
_SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_root() -> Path:
    """The running interpreter's standard-library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def python_source_files(root: Optional[Union[str, Path]] = None) -> list[str]:
    """Relative ``/``-separated paths of the ``*.py`` files under ``root`` (default: the
    stdlib), sorted, without installed packages and caches."""
    root = Path(root) if root is not None else stdlib_root()
    if not root.is_dir():
        raise FileNotFoundError(f"root: expected a directory of Python sources, got {str(root)!r}")
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in _SKIPPED_DIRS]
        for name in files:
            if name.endswith(".py"):
                found.append(Path(directory, name).relative_to(root).as_posix())
    return sorted(found)


def source_split(relative_path: str, validation_percent: float = 10.0) -> str:
    """``"validation"`` or ``"train"`` from the sha256 of the relative path (module docstring)."""
    digest = int(hashlib.sha256(relative_path.encode("utf-8")).hexdigest()[:8], 16)
    return "validation" if digest < validation_percent / 100 * 2**32 else "train"


def load_source_bytes(
    split: str, *, validation_percent: float = 10.0, root: Optional[Union[str, Path]] = None,
    max_bytes: Optional[int] = None,
) -> torch.Tensor:
    """The concatenated bytes of one split as a uint8 tensor, cut at ``max_bytes`` if given."""
    if split not in ("train", "validation"):
        raise ValueError(f"split: expected one of ['train', 'validation'], got {split!r}")
    validation_percent = _check_percent(validation_percent)
    root = Path(root) if root is not None else stdlib_root()
    chunks, total = [], 0
    for rel in python_source_files(root):
        if source_split(rel, validation_percent) != split:
            continue
        chunks.append((root / rel).read_bytes() + SEPARATOR)
        total += len(chunks[-1])
        if max_bytes is not None and total >= max_bytes:
            break
    data = b"".join(chunks)[:max_bytes]
    if len(data) < 2:
        raise ValueError(
            f"split: the {split!r} split of {str(root)!r} holds {len(data)} bytes; need at least 2 "
            f"(validation_percent={validation_percent})"
        )
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _check_percent(value: object) -> float:
    value = check_real(value, "validation_percent", strict=True)
    if value >= 100:
        raise ValueError(f"validation_percent: expected a value in (0, 100), got {value!r}")
    return value


class ByteWindows(Dataset):
    """Non-overlapping next-byte windows over a uint8 tensor: item ``(x [T], y [T])`` int64."""

    def __init__(self, data: torch.Tensor, context: int) -> None:
        if data.dtype != torch.uint8 or data.dim() != 1:
            raise ValueError(
                f"data: expected a uint8 tensor [N], got {data.dtype} {tuple(data.shape)}"
            )
        self.context = check_int(context, "context", minimum=1)
        if data.numel() < context + 1:
            raise ValueError(
                f"context: expected at most {data.numel() - 1} (the data holds {data.numel()} "
                f"bytes), got {context}"
            )
        self.data = data

    def __len__(self) -> int:
        return (self.data.numel() - 1) // self.context

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index: expected 0 <= index < {len(self)}, got {index}")
        start = (index % len(self)) * self.context
        window = self.data[start:start + self.context + 1].to(torch.int64)
        return window[:-1], window[1:]


class PythonSourceData:
    """Standard-library sources as byte windows for a language model
    (``_target_: spikegate.datasets.PythonSourceData``).

    Args:
        context: bytes per window ``T``.
        validation_percent: share of files in the validation split (by path hash).
        max_train_bytes, max_validation_bytes: cut each split (None: all of it), for short runs.
        root: a directory to read instead of the stdlib (tests).

    train, test: :class:`ByteWindows` (``test`` is the validation split); vocab_size: 256;
    context: ``T``.
    """

    vocab_size = VOCAB_SIZE

    def __init__(
        self, context: int = 256, validation_percent: float = 10.0,
        max_train_bytes: Optional[int] = None, max_validation_bytes: Optional[int] = None,
        root: Optional[Union[str, Path]] = None,
    ) -> None:
        self.context = check_int(context, "context", minimum=1)
        limits = {"max_train_bytes": max_train_bytes, "max_validation_bytes": max_validation_bytes}
        for name, value in limits.items():
            if value is not None:
                check_int(value, name, minimum=context + 1)
        kw = dict(validation_percent=validation_percent, root=root)
        train = load_source_bytes("train", max_bytes=max_train_bytes, **kw)
        validation = load_source_bytes("validation", max_bytes=max_validation_bytes, **kw)
        self.train = ByteWindows(train, context)
        self.test = ByteWindows(validation, context)

    def split(self, name: str) -> ByteWindows:
        return self.train if check_split(name) == "train" else self.test
