"""Event files saved as numpy ``.npy`` arrays ``[E, 4]`` (tonic's DVS-Gesture and POKER-DVS)."""

from __future__ import annotations

import io

import numpy as np

from .sources import CorruptDatasetFileError

__all__ = ["load_event_columns"]


def load_event_columns(data: bytes, where: str, dataset: str, columns: str) -> dict[str, np.ndarray]:
    """The four columns of an ``[E, 4]`` array in ``data`` (npy bytes), named by ``columns`` (e.g.
    ``"xypt"``). ``CorruptDatasetFileError`` naming ``where`` if it is not such an array."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise CorruptDatasetFileError(f"{dataset}: cannot read {where!r} as .npy: {error}") from error
    if not isinstance(array, np.ndarray) or array.ndim != 2 or array.shape[1] != 4:
        shape = getattr(array, "shape", type(array).__name__)
        raise CorruptDatasetFileError(
            f"{dataset}: {where!r} holds {shape}, expected an event array [E, 4] ({columns})"
        )
    return {name: array[:, i] for i, name in enumerate(columns)}
