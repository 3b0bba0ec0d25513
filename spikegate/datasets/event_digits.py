"""``event_digits``: scikit-learn digits seen by an emulated event camera making N-MNIST saccades.

``EventDigits`` is a tonic-style dataset of raw events (``__getitem__ -> (events, target)``, tonic
transforms apply unchanged). ``EventDigitsData`` bins them into frames for the trainer.

Events are generated once per (split, seed, camera) and cached in
``<root>/event_digits/event_digits-v<VERSION>-<split>-<hash>.npz``, where the hash covers every
parameter that shapes the events, so changing one writes a new file. ``root`` defaults to
``$SPIKEGATE_DATA`` or ``~/.cache/spikegate``. A corrupt cache file raises ``CorruptCacheError``
(delete it to regenerate). With the default camera (24x24 sensor, 300 ms) a sample has about
840 events and the full set takes under 2 s to generate on 2 cores.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from tonic.transforms import ToFrame
from torch.utils.data import Dataset

from .checks import SPLITS, check_seed, check_split, check_time_steps
from .digits import DIGIT_CLASSES, MAX_INTENSITY, SPLIT_SEED, load_digits_split
from .event_cache import (
    EventSet,
    PathLike,
    load_event_set,
    params_json,
    resolve_root,
    save_event_set,
)
from .event_camera import EVENT_DTYPE, SaccadeCamera, emulate_saccade_events_batch
from .frames import FrameDataset
from .sources import DatasetRootError

__all__ = ["CACHE_VERSION", "EventDigits", "EventDigitsData", "bin_events", "as_camera"]

# Bump when the emulator's output changes for the same parameters.
CACHE_VERSION = 1

CameraLike = Union[SaccadeCamera, Mapping[str, Any], None]


def as_camera(camera: CameraLike) -> SaccadeCamera:
    """``None`` (defaults), a ``SaccadeCamera``, or a mapping of its fields (e.g. a Hydra node)."""
    if camera is None:
        return SaccadeCamera()
    if isinstance(camera, SaccadeCamera):
        return camera
    if isinstance(camera, Mapping):
        known = {f.name for f in fields(SaccadeCamera)}
        unknown = sorted(set(camera) - known)
        if unknown:
            raise ValueError(f"camera: unknown fields {unknown}, expected some of {sorted(known)}")
        return SaccadeCamera(**dict(camera))
    raise TypeError(
        f"camera: expected a SaccadeCamera, a mapping of its fields or None, "
        f"got {type(camera).__name__}"
    )


def _check_cache_folder(folder: Path) -> None:
    """``folder`` (``root/event_digits``) exists or can be made, and can be written."""
    if folder.exists() and not folder.is_dir():
        raise DatasetRootError(
            f"dataset.root: {str(folder)!r} is a file, expected the folder of the event_digits cache; "
            "move it away or point dataset.root elsewhere"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetRootError(
            f"dataset.root: cannot make the event cache folder {str(folder)!r} ({error.strerror}); "
            "point dataset.root at a writable folder"
        ) from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatasetRootError(
            f"dataset.root: cannot write the event cache in {str(folder)!r} (permission denied); "
            "point dataset.root at a writable folder"
        )


class EventDigits(Dataset):
    """Event streams of one split of the scikit-learn digits, tonic style.

    root: cache directory (``None``: ``$SPIKEGATE_DATA`` or ``~/.cache/spikegate``).
    split: "train" (1438 samples) or "test" (359), the fixed stratified split of ``digits_split``.
    camera: ``SaccadeCamera`` (or a mapping of its fields); seed: int >= 0. Sample ``i`` comes from
    source image ``indices[i]`` with ``np.random.default_rng([seed, indices[i]])`` (threshold
    mismatch, noise), so its events depend on neither split nor batch.

    Items are ``(events, target)``: ``events`` a fresh ``EVENT_DTYPE`` array (x, y pixels; t
    microseconds in ``[0, camera.duration_us)``; p 1 = ON, 0 = OFF) sorted by ``t``, after
    ``transform``; ``target`` an int after ``target_transform``; then ``transforms(events,
    target)`` if given.
    """

    ordering = "xytp"
    dtype = EVENT_DTYPE
    classes = DIGIT_CLASSES

    def __init__(
        self,
        root: Optional[PathLike] = None,
        split: str = "train",
        *,
        camera: CameraLike = None,
        seed: int = 0,
        transform: Optional[Callable] = None,
        target_transform: Optional[Callable] = None,
        transforms: Optional[Callable] = None,
        progress: bool = True,
    ) -> None:
        self.split = check_split(split)
        self.seed = check_seed(seed)
        self.camera = as_camera(camera)
        self.root = resolve_root(root)
        width, height = self.camera.sensor_size
        self.sensor_size = (width, height, 2)
        self.transform = transform
        self.target_transform = target_transform
        self.transforms = transforms
        self.params = params_json({
            "dataset": "event_digits",
            "version": CACHE_VERSION,
            "split": self.split,
            "split_seed": SPLIT_SEED,
            "seed": self.seed,
            "camera": asdict(self.camera),
        })
        key = hashlib.sha256(self.params.encode()).hexdigest()[:12]
        self.cache_path: Path = (
            self.root / "event_digits" / f"event_digits-v{CACHE_VERSION}-{self.split}-{key}.npz"
        )
        if self.cache_path.exists():
            self.event_set = load_event_set(
                self.cache_path, expected_params=self.params, sensor_size=(width, height)
            )
        else:
            _check_cache_folder(self.cache_path.parent)  # before the generation, not after it
            self.event_set = self._generate(progress)
            save_event_set(self.cache_path, self.event_set)
        self.targets = self.event_set.targets

    def _generate(self, progress: bool) -> EventSet:
        images, labels, indices = load_digits_split(self.split)
        rngs = [np.random.default_rng([self.seed, int(i)]) for i in indices]
        samples = emulate_saccade_events_batch(
            images.astype(np.float64) / MAX_INTENSITY, self.camera, rngs=rngs, progress=progress
        )
        return EventSet.from_samples(samples, labels, indices, self.params)

    def __len__(self) -> int:
        return len(self.event_set)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index: expected -{n} <= index < {n}, got {index}")
        index = index % n
        events = self.event_set.sample(index).copy()
        target: Any = int(self.targets[index])
        if self.transform is not None:
            events = self.transform(events)
        if self.target_transform is not None:
            target = self.target_transform(target)
        if self.transforms is not None:
            events, target = self.transforms(events, target)
        return events, target

    def __repr__(self) -> str:
        return (
            f"EventDigits(split={self.split!r}, samples={len(self)}, "
            f"sensor_size={self.sensor_size}, cache={str(self.cache_path)!r})"
        )


def bin_events(
    event_set: EventSet, sensor_size: tuple[int, int, int], time_steps: int, duration_us: int
) -> torch.Tensor:
    """Event counts per time bin: ``[N, time_steps, P, H, W]`` uint8 (saturating at 255).

    Each sample goes through ``tonic.transforms.ToFrame(sensor_size, time_window=w,
    start_time=0, end_time=time_steps * w)`` with ``w = ceil(duration_us / time_steps)``: bin
    ``k`` holds ``k * w <= t < (k + 1) * w``, one time grid for all samples, every event counted.
    (``n_time_bins=T`` would stretch each sample's own first-to-last event span over the bins and,
    in tonic 1.7, drop the events at the last timestamp.)
    """
    check_time_steps(time_steps)
    width, height, polarities = sensor_size
    bin_width = -(-duration_us // time_steps)
    events = event_set.events
    if len(events) and (events["t"].min() < 0 or events["t"].max() >= duration_us):
        raise ValueError(f"events: expected t in [0, {duration_us}) microseconds")
    to_frame = ToFrame(
        sensor_size, time_window=bin_width, start_time=0, end_time=time_steps * bin_width
    )
    frames = np.zeros((len(event_set), time_steps, polarities, height, width), dtype=np.uint8)
    for i in range(len(event_set)):
        sample = event_set.sample(i)
        if len(sample):  # ToFrame gives a misshapen frame for an empty sample
            frames[i] = np.minimum(to_frame(sample), 255)
    return torch.from_numpy(frames)


class EventDigitsData:
    """Event digits as frames for the trainer (``_target_: spikegate.datasets.EventDigitsData``).

    Generates (or loads from the cache) both splits of ``EventDigits``, bins each sample's events
    into ``time_steps`` equal bins over the 300 ms recording (``bin_events``) and keeps the frames
    in memory.

    train, test: ``FrameDataset`` of ``(x float32 [T, 2, H, W], label)``; channel 0 counts OFF
    events, channel 1 ON events. ``binary=False`` keeps event counts per bin (usually 0..3);
    ``binary=True`` clips them to 0/1 spikes.
    input_shape: ``(2, H, W)``; sensor_size: ``(W, H, 2)``; num_classes: 10; time_steps: ``T``.
    """

    num_classes = len(DIGIT_CLASSES)
    classes = DIGIT_CLASSES

    def __init__(
        self,
        root: Optional[PathLike] = None,
        time_steps: int = 16,
        seed: int = 0,
        *,
        camera: CameraLike = None,
        binary: bool = False,
        progress: bool = True,
    ) -> None:
        self.time_steps = check_time_steps(time_steps)
        if not isinstance(binary, bool):
            raise TypeError(f"binary: expected a bool, got {type(binary).__name__}")
        self.binary = binary
        self.camera = as_camera(camera)
        width, height = self.camera.sensor_size
        self.sensor_size = (width, height, 2)
        self.input_shape = (2, height, width)
        datasets = {
            split: EventDigits(root, split, camera=self.camera, seed=seed, progress=progress)
            for split in SPLITS
        }
        self.root = datasets["train"].root
        self.train = self._frames(datasets["train"])
        self.test = self._frames(datasets["test"])

    def _frames(self, dataset: EventDigits) -> FrameDataset:
        frames = bin_events(
            dataset.event_set, self.sensor_size, self.time_steps, self.camera.duration_us
        )
        if self.binary:
            frames = frames.clamp_(max=1)
        return FrameDataset(frames, torch.from_numpy(dataset.targets.copy()))
