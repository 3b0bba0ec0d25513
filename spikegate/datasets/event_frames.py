"""Recorded neuromorphic datasets as frames for the trainer: the shared container.

A dataset module (``nmnist``, ``dvsgesture``, ``hsd``, ``cifar10dvs``, ``pokerdvs``) subclasses
``RecordedEventData`` with its name, folder, sensor, classes, where it is published, the pattern of
its files per split and a parser from a file's bytes to events. This module does the rest:

1. find the files under ``root/<folder>`` (``sources.DatasetFiles``: unpacked, archived or part of
   either; a partial copy warns with the samples found per split and class),
2. turn each sample's events into frames with tonic's transforms (``EventFrames``: Denoise,
   Downsample, ToFrame),
3. cache the frames on disk keyed by every parameter (``frame_cache``) and serve them from there.

Events are ``EVENT_DTYPE`` arrays (x, y int16 pixels; t int64 microseconds; p int8 0/1).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
from tonic.transforms import Denoise, Downsample, ToFrame
from tqdm.auto import tqdm

from spikegate.arguments import check_real

from .checks import SPLITS, check_time_steps
from .event_cache import PathLike, default_root, params_json
from .event_camera import EVENT_DTYPE
from .frame_cache import FrameFileDataset, build_frame_file, load_frame_file
from .sources import (
    CorruptDatasetFileError,
    DatasetFiles,
    DatasetNotFoundError,
    DatasetRootError,
    PartialDatasetWarning,
    SplitFiles,
    dataset_root,
)

__all__ = ["EventFrames", "RecordedEventData", "make_events", "FRAME_CACHE_VERSION"]

# Bump when the frames produced for the same parameters change.
FRAME_CACHE_VERSION = 1

# The dataset folders this package knows, to tell a user who pointed one dataset at another's.
KNOWN_FOLDERS = ("NMNIST", "DVSGesture", "SHD", "SSC", "CIFAR10DVS", "POKERDVS")


def make_events(x, y, t, p) -> np.ndarray:
    """An ``EVENT_DTYPE`` array from four equal-length sequences."""
    events = np.empty(len(t), dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events


@dataclass(frozen=True)
class EventFrames:
    """Events -> frames ``[time_steps, P, H', W']`` uint8, with tonic's transforms in this order:

    1. ``Denoise(filter_time=denoise_us)`` if ``denoise_us`` is set (at the sensor's resolution);
    2. ``Downsample(spatial_factor=spatial_factor)``: pixel coordinates times the factor, rounded
       down, so the sensor becomes ``floor((W - 1) * f) + 1`` by ``floor((H - 1) * f) + 1``;
    3. ``ToFrame``, one of two time grids:

       - ``time_window=None``: the sample's own span in ``time_steps`` equal bins (tonic's
         ``n_time_bins`` idea), computed as ``ToFrame(time_window=w, start_time=t0,
         end_time=t0 + time_steps * w)`` with ``w = (t_last - t0) // time_steps + 1``, so every
         event is counted (tonic 1.7's ``n_time_bins`` drops the events at the last timestamp);
       - ``time_window=w`` (microseconds): ``time_steps`` bins of ``w`` from ``t = 0``; events at
         or after ``time_steps * w`` are left out.

    Counts saturate at 255; ``binary=True`` clips them to 0/1 spikes.
    """

    sensor_size: tuple[int, int, int]
    time_steps: int = 16
    time_window: Optional[float] = None
    denoise_us: Optional[float] = None
    spatial_factor: float = 1.0
    binary: bool = False

    def __post_init__(self) -> None:
        check_time_steps(self.time_steps)
        if self.time_window is not None:
            check_real(self.time_window, "time_window", strict=True)
        if self.denoise_us is not None:
            check_real(self.denoise_us, "denoise_us", strict=True)
        factor = check_real(self.spatial_factor, "spatial_factor", strict=True)
        if factor > 1:
            raise ValueError(f"spatial_factor: expected a value in (0, 1], got {factor!r}")
        if not isinstance(self.binary, bool):
            raise TypeError(f"binary: expected a bool, got {type(self.binary).__name__}")

    @property
    def frame_sensor(self) -> tuple[int, int, int]:
        """``(W', H', P)`` after downsampling."""
        width, height, polarities = self.sensor_size
        f = self.spatial_factor
        return int((width - 1) * f) + 1, int((height - 1) * f) + 1, polarities

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        width, height, polarities = self.frame_sensor
        return self.time_steps, polarities, height, width

    def __call__(self, events: np.ndarray) -> np.ndarray:
        frames = np.zeros(self.frame_shape, dtype=np.uint8)
        if len(events) > 1 and bool(np.any(np.diff(events["t"]) < 0)):
            events = events[np.argsort(events["t"], kind="stable")]
        if self.denoise_us is not None and len(events):
            events = Denoise(filter_time=self.denoise_us)(events)
        if self.spatial_factor != 1 and len(events):
            events = Downsample(spatial_factor=self.spatial_factor)(events)
        if self.time_window is None:
            if not len(events):
                return frames
            start = int(events["t"].min())
            window = (int(events["t"].max()) - start) // self.time_steps + 1
        else:
            start, window = 0, self.time_window
            events = events[events["t"] < self.time_steps * window]
            if not len(events):  # ToFrame gives a misshapen frame for no events
                return frames
        counts = ToFrame(self.frame_sensor, time_window=window, start_time=start,
                         end_time=start + self.time_steps * window)(events)
        np.minimum(counts, 1 if self.binary else 255, out=counts)
        frames[: len(counts)] = counts[: self.time_steps]
        return frames


class RecordedEventData:
    """Frames of a recorded event dataset for the trainer (the subclasses are Hydra ``_target_``\\ s).

    Args:
        root: the folder holding the dataset's folder (``None``: ``$SPIKEGATE_DATA`` or
            ``~/.cache/spikegate``).
        time_steps, time_window, denoise_us, spatial_factor, binary: see ``EventFrames``.
        cache_dir: where the frames are cached (``None``: ``<default root>/frame-cache``).
        progress: show a bar while building the cache.

    Attributes: ``train``, ``test`` (``FrameFileDataset`` of ``(x float32 [T, *input_shape],
    label)``), ``input_shape``, ``num_classes``, ``classes``, ``time_steps``, ``sensor_size``
    (``(W, H, P)`` of the recording), ``files`` (split -> ``SplitFiles``).
    """

    name: ClassVar[str]  # as the authors spell it, e.g. "N-MNIST"
    folder: ClassVar[str]  # the dataset's folder under root, as tonic lays it out
    sensor_size: ClassVar[tuple[int, int, int]]
    classes: ClassVar[Sequence[str]]
    published: ClassVar[str]  # where to download it
    expected: ClassVar[str]  # the files expected in the folder, for the message
    published_sizes: ClassVar[dict[str, int]]  # samples per split in the full dataset
    splits: ClassVar[tuple[str, ...]] = SPLITS

    def __init__(
        self,
        root: Optional[PathLike] = None,
        time_steps: int = 16,
        time_window: Optional[float] = None,
        denoise_us: Optional[float] = None,
        spatial_factor: float = 1.0,
        binary: bool = False,
        cache_dir: Optional[PathLike] = None,
        progress: bool = True,
    ) -> None:
        self.frames = EventFrames(self.sensor_size, time_steps, time_window, denoise_us,
                                  spatial_factor, binary)
        self.time_steps = self.frames.time_steps
        self.num_classes = len(self.classes)
        self.input_shape = self.sample_shape(self.frames)
        self.root = dataset_root(root)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_root() / "frame-cache"
        self.progress = progress
        self.files = self._find_files()
        for split in self.splits:
            setattr(self, split, self._frames(split))

    # -- what a dataset module provides ------------------------------------------------------

    def split_files(self, files: DatasetFiles, split: str) -> SplitFiles:
        """The files of ``split`` (``files.split(pattern, labels)``)."""
        raise NotImplementedError

    def parse(self, data: bytes, where: str) -> np.ndarray:
        """One file's bytes -> ``EVENT_DTYPE`` events; ``CorruptDatasetFileError`` naming ``where``
        for anything unreadable."""
        raise NotImplementedError

    def read_samples(self, split: str) -> Iterator[tuple[int, str, np.ndarray]]:
        """``(index, where, events)`` of every sample of ``split``, in any order."""
        for index, where, data in self.files[split].read():
            yield index, where, self.parse(data, where)

    @staticmethod
    def sample_shape(frames: EventFrames) -> tuple[int, ...]:
        """The trainer's ``input_shape``: ``(P, H', W')`` for a camera."""
        return frames.frame_shape[1:]

    # -- shared machinery --------------------------------------------------------------------

    def missing_message(self, folder: Path) -> str:
        others = [f for f in KNOWN_FOLDERS if f != self.folder and (self.root / f).is_dir()]
        hint = f"; {str(self.root)!r} holds {', '.join(others)} (another dataset?)" if others else ""
        if self.root.name == self.folder:
            hint = f"; set dataset.root to the folder that holds {self.folder}/, not {self.folder} itself"
        elif self.root.name in KNOWN_FOLDERS:
            hint = (f"; {str(self.root)!r} looks like {self.root.name}'s own folder (another dataset): "
                    f"set dataset.root to the folder that holds {self.folder}/")
        return (
            f"{self.name}: no dataset files in {str(folder)!r}; expected {self.expected} "
            f"(published at {self.published}; set dataset.root to the folder that holds "
            f"{self.folder}/){hint}"
        )

    def _find_files(self) -> dict[str, SplitFiles]:
        folder = self.root / self.folder
        files = DatasetFiles(folder, self.missing_message(folder))
        found = {split: self.split_files(files, split) for split in self.splits}
        empty = [split for split, f in found.items() if len(f) == 0]
        if len(empty) == len(found):
            if files.members:
                raise DatasetRootError(
                    f"{self.name}: {str(folder)!r} does not hold {self.name}: "
                    f"{files.describe_contents()}; expected {self.expected}"
                )
            raise DatasetNotFoundError(self.missing_message(folder))
        if empty:
            raise DatasetNotFoundError(
                f"{self.name}: no {' or '.join(empty)} samples in {str(folder)!r} (found "
                f"{', '.join(f'{s}: {len(f)}' for s, f in found.items() if len(f))}); expected "
                f"{self.expected} (published at {self.published})"
            )
        self._warn_if_partial(folder, found)
        return found

    def _warn_if_partial(self, folder: Path, found: dict[str, SplitFiles]) -> None:
        short = {s: f for s, f in found.items() if len(f) < self.published_sizes.get(s, 0)}
        if not short:
            return
        parts = []
        for split, f in found.items():
            counts = np.bincount(f.labels, minlength=self.num_classes)
            parts.append(
                f"{split} {len(f)} of {self.published_sizes.get(split, '?')} "
                f"(per class {counts.tolist()})"
            )
        warnings.warn(
            f"{self.name}: partial copy in {str(folder)!r}: " + "; ".join(parts),
            PartialDatasetWarning, stacklevel=3,
        )

    def cache_params(self, split: str) -> dict:
        return json.loads(params_json({
            "dataset": self.folder,
            "version": FRAME_CACHE_VERSION,
            "split": split,
            "frames": asdict(self.frames),
            "files": self.files[split].stamp(),
        }))

    def _frames(self, split: str) -> FrameFileDataset:
        params = self.cache_params(split)
        key = hashlib.sha256(params_json(params).encode()).hexdigest()[:16]
        base = self.cache_dir / self.folder / f"{split}-{key}"
        cached = load_frame_file(base, params)
        if cached is not None:
            return cached
        files = self.files[split]

        def fill(frames: np.ndarray) -> None:
            bar = tqdm(total=len(files), desc=f"{self.name} {split} frames", leave=False,
                       disable=not self.progress)
            for index, where, events in self.read_samples(split):
                self.check_events(events, where)
                frames[index] = self.frames(events).reshape(frames.shape[1:])
                bar.update()
            bar.close()

        return build_frame_file(base, params, files.labels, (self.time_steps, *self.input_shape), fill)

    def check_events(self, events: np.ndarray, where: str) -> None:
        """Coordinates within the sensor (else the file holds another dataset's events)."""
        if not len(events):
            return
        width, height, polarities = self.sensor_size
        bad = [
            f"{name} up to {int(events[name].max())}"
            for name, size in (("x", width), ("y", height), ("p", polarities))
            if events[name].min() < 0 or events[name].max() >= size
        ]
        if bad:
            raise CorruptDatasetFileError(
                f"{self.name}: {where!r} holds events outside the {width}x{height} sensor with "
                f"{polarities} polarities ({', '.join(bad)}); is it another dataset's file?"
            )
