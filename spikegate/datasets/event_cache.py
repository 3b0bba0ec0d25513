"""On-disk cache of generated event sets: one compressed ``.npz`` per split, written atomically.

File layout (``np.savez_compressed``, no pickles):

- ``events``  ``[E]`` ``EVENT_DTYPE``, all samples concatenated, each sorted by ``t``
- ``offsets`` ``[N + 1]`` int64, sample ``i`` is ``events[offsets[i]:offsets[i + 1]]``
- ``targets`` ``[N]`` int64 class labels
- ``indices`` ``[N]`` int64 index of each sample's source image
- ``params``  0-d str, JSON of everything that produced the events (checked on load)

A file that cannot be read or fails these checks raises ``CorruptCacheError`` (a ``ValueError``)
naming the file; it is never silently regenerated, because a corrupt file in a cache that is only
ever written by rename points at a problem the user should see. Deleting the file regenerates it.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Optional, Union

import numpy as np

from spikegate.atomic import atomic_write

from .event_camera import EVENT_DTYPE

__all__ = [
    "CorruptCacheError",
    "EventSet",
    "default_root",
    "resolve_root",
    "check_event_dtype",
    "save_event_set",
    "load_event_set",
    "params_json",
]

PathLike = Union[str, "os.PathLike[str]"]
_ARRAYS = ("events", "offsets", "targets", "indices", "params")


class CorruptCacheError(ValueError):
    """A cache file exists but cannot be read or does not hold a valid event set."""


def default_root() -> Path:
    """``$SPIKEGATE_DATA`` if set, else ``~/.cache/spikegate``."""
    env = os.environ.get("SPIKEGATE_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/spikegate").expanduser()


def resolve_root(root: Optional[PathLike]) -> Path:
    """The data root: ``root`` or ``default_root()``; must be a directory if it exists."""
    if root is None:
        path = default_root()
    elif isinstance(root, (str, os.PathLike)):
        if str(root) == "":
            raise ValueError("root: expected a directory path or None, got ''")
        path = Path(root).expanduser()
    else:
        raise TypeError(f"root: expected a str, a path or None, got {type(root).__name__}")
    if path.exists() and not path.is_dir():
        raise ValueError(f"root: expected a directory, got {str(path)!r}, which is a file")
    return path


def check_event_dtype(dtype: np.dtype, name: str = "events") -> None:
    """``dtype`` must be ``EVENT_DTYPE``: fields x int16, y int16, t int64, p int8, in order."""
    expected = [(field, EVENT_DTYPE.fields[field][0].str) for field in EVENT_DTYPE.names]
    got = (
        [(field, dtype.fields[field][0].str) for field in dtype.names]
        if dtype.names is not None else str(dtype)
    )
    if got != expected:
        raise ValueError(f"{name}: expected dtype fields {expected}, got {got}")


@dataclass(frozen=True)
class EventSet:
    """Event streams of ``N`` samples, stored back to back (see the module docstring)."""

    events: np.ndarray
    offsets: np.ndarray
    targets: np.ndarray
    indices: np.ndarray
    params: str

    @classmethod
    def from_samples(
        cls, samples: Sequence[np.ndarray], targets: np.ndarray, indices: np.ndarray, params: str
    ) -> "EventSet":
        lengths = np.array([len(s) for s in samples], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        events = np.concatenate(samples) if samples else np.zeros(0, EVENT_DTYPE)
        return cls(events, offsets, np.asarray(targets, np.int64), np.asarray(indices, np.int64),
                   params)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def sample(self, i: int) -> np.ndarray:
        """Events of sample ``i`` (a view)."""
        return self.events[self.offsets[i]:self.offsets[i + 1]]


def save_event_set(path: PathLike, event_set: EventSet) -> None:
    """Write ``event_set`` to ``path`` atomically: into a temporary file in the same directory,
    then ``os.replace``. If anything fails, the temporary file is removed and ``path`` is left as
    it was."""
    arrays = dict(
        events=event_set.events,
        offsets=event_set.offsets,
        targets=event_set.targets,
        indices=event_set.indices,
        params=np.array(event_set.params),
    )
    atomic_write(path, lambda file: np.savez_compressed(file, **arrays))


def load_event_set(
    path: PathLike,
    *,
    expected_params: Optional[str] = None,
    sensor_size: Optional[tuple[int, int]] = None,
) -> EventSet:
    """Read and validate an event set written by ``save_event_set``.

    Checks: the five arrays are present; ``events`` has ``EVENT_DTYPE`` (field names and types);
    offsets start at 0, never decrease and end at ``len(events)``; each sample is sorted by ``t``;
    ``p`` is 0 or 1; with ``sensor_size=(W, H)``, ``0 <= x < W`` and ``0 <= y < H``; with
    ``expected_params``, the stored params equal them. Raises ``FileNotFoundError`` if ``path``
    does not exist and ``CorruptCacheError`` for anything else wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no event cache file at {str(path)!r}")
    try:
        with open(path, "rb") as file:
            data = np.load(file, allow_pickle=False)
            if not isinstance(data, Mapping):
                raise CorruptCacheError("it is not an .npz archive")
            missing = [name for name in _ARRAYS if name not in data]
            if missing:
                raise CorruptCacheError(f"arrays {missing} are missing")
            arrays = {name: data[name] for name in _ARRAYS}
        event_set = EventSet(
            events=arrays["events"],
            offsets=arrays["offsets"],
            targets=arrays["targets"],
            indices=arrays["indices"],
            params=str(arrays["params"]),
        )
        _validate(event_set, expected_params, sensor_size)
    except PermissionError as error:  # not corrupt: the file is there but this user cannot read it
        raise CorruptCacheError(
            f"cannot read the event cache {str(path)!r} (permission denied); make it readable or "
            "point dataset.root elsewhere"
        ) from error
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise CorruptCacheError(
            f"event cache {str(path)!r} is corrupt: {error}. Delete it to regenerate it."
        ) from error
    return event_set


def _validate(
    event_set: EventSet, expected_params: Optional[str], sensor_size: Optional[tuple[int, int]]
) -> None:
    events, offsets = event_set.events, event_set.offsets
    check_event_dtype(events.dtype)
    if events.ndim != 1:
        raise ValueError(f"events: expected a 1-d array, got shape {events.shape}")
    n = len(event_set.targets)
    if offsets.shape != (n + 1,) or offsets.dtype != np.int64:
        raise ValueError(f"offsets: expected int64 [{n + 1}], got {offsets.dtype} {offsets.shape}")
    if offsets[0] != 0 or offsets[-1] != len(events) or bool(np.any(np.diff(offsets) < 0)):
        raise ValueError("offsets: expected 0 = offsets[0] <= ... <= offsets[-1] = len(events)")
    if event_set.indices.shape != (n,):
        raise ValueError(f"indices: expected shape ({n},), got {event_set.indices.shape}")
    if expected_params is not None and event_set.params != expected_params:
        raise ValueError(
            f"params: the file was written for {event_set.params}, expected {expected_params}"
        )
    if len(events):
        step = np.diff(events["t"])
        starts = offsets[1:-1]
        starts = starts[(starts > 0) & (starts < len(events))]
        step[starts - 1] = 0  # a new sample may start earlier in time
        if bool(np.any(step < 0)):
            raise ValueError("events: expected each sample sorted by t")
        if not bool(np.isin(events["p"], (0, 1)).all()):
            raise ValueError("events: expected polarities p in {0, 1}")
        if sensor_size is not None:
            width, height = sensor_size
            x, y = events["x"], events["y"]
            if x.min() < 0 or y.min() < 0 or x.max() >= width or y.max() >= height:
                raise ValueError(f"events: expected x, y within the sensor {sensor_size}")


def params_json(params: dict) -> str:
    """Canonical JSON of cache parameters (sorted keys), stored in and checked against a file."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))
