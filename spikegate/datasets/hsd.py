"""The Heidelberg spiking audio sets (Cramer et al. 2020): SHD (spoken digits, 20 classes) and SSC
(speech commands, 35 classes), spikes of 700 cochlea-model channels.

On disk (``root/SHD`` or ``root/SSC``, as tonic lays it out): one HDF5 file per published split,
``shd_train.h5`` and ``shd_test.h5`` (SSC: ``ssc_train.h5``, ``ssc_valid.h5``, ``ssc_test.h5``), or
the ``.h5.zip`` archives they are published as. Each file holds ``spikes/times`` (per sample, spike
times in seconds), ``spikes/units`` (per sample, channel 0..699) and ``labels`` (one int per
sample), read with h5py as tonic's ``HSD`` reader does. A channel is an event's ``x``; there is one
row and one polarity, so frames are ``[T, 700']`` (``spatial_factor`` pools neighbouring channels).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

import h5py
import numpy as np

from .event_frames import EventFrames, RecordedEventData, make_events
from .sources import CorruptDatasetFileError, DatasetFiles, SplitFiles

__all__ = ["SHDData", "SSCData"]

_KEYS = ("spikes/times", "spikes/units", "labels")


class _HeidelbergData(RecordedEventData):
    sensor_size = (700, 1, 1)
    prefix: str  # file name prefix, "shd" or "ssc"

    @staticmethod
    def sample_shape(frames: EventFrames) -> tuple[int, ...]:
        return (frames.frame_sensor[0],)

    def split_files(self, files: DatasetFiles, split: str) -> SplitFiles:
        name = f"{self.prefix}_{split}"
        found = files.split(rf"(?P<label>{name})\.h5", {name: 0})
        if not len(found):
            return found
        with self._open(found) as (h5, where):
            labels = np.asarray(h5["labels"][()], dtype=np.int64)
            if labels.ndim != 1 or len(h5["spikes/times"]) != len(labels) or len(h5["spikes/units"]) != len(labels):
                raise CorruptDatasetFileError(
                    f"{self.name}: {where!r} is not a {self.name} file: spikes/times, spikes/units and "
                    "labels differ in length"
                )
            if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise CorruptDatasetFileError(
                    f"{self.name}: {where!r} has labels up to {labels.max()}, but {self.name} has "
                    f"{self.num_classes} classes; is it another dataset's file?"
                )
        return found.repeat(labels)

    @contextmanager
    def _open(self, found: SplitFiles):
        where = found.where(0)
        path = found.local_path(0)
        try:
            if path is None:
                _, _, data = next(found.read())  # the one file, read once
                handle = h5py.File(io.BytesIO(data), "r")
            else:
                handle = h5py.File(path, "r")
        except OSError as error:
            raise CorruptDatasetFileError(
                f"{self.name}: cannot read {where!r} as HDF5 ({error}); is the file complete?"
            ) from error
        with handle:
            missing = [key for key in _KEYS if key not in handle]
            if missing:
                raise CorruptDatasetFileError(
                    f"{self.name}: {where!r} is not a {self.name} file: it lacks {missing} "
                    f"(expected {list(_KEYS)})"
                )
            yield handle, where

    def read_samples(self, split: str) -> Iterator[tuple[int, str, np.ndarray]]:
        found = self.files[split]
        with self._open(found) as (h5, where):
            times, units = h5["spikes/times"], h5["spikes/units"]
            for i in range(len(found)):
                try:
                    t, x = np.asarray(times[i], np.float64), np.asarray(units[i], np.int64)
                except (OSError, ValueError) as error:
                    raise CorruptDatasetFileError(
                        f"{self.name}: cannot read sample {i} of {where!r}: {error}"
                    ) from error
                if t.shape != x.shape:
                    raise CorruptDatasetFileError(
                        f"{self.name}: sample {i} of {where!r} has {len(t)} times but {len(x)} units"
                    )
                order = np.argsort(t, kind="stable")
                events = make_events(x[order], 0, np.round(t[order] * 1e6).astype(np.int64), 0)
                yield i, f"{where} sample {i}", events


class SHDData(_HeidelbergData):
    """Spiking Heidelberg Digits (``_target_: spikegate.datasets.SHDData``): 20 classes (English
    then German digits), published train/test split (8,156 / 2,264; test speakers are held out).
    input_shape ``(700',)``. See ``RecordedEventData``."""

    name = "SHD"
    folder = "SHD"
    prefix = "shd"
    classes = [f"english {d}" for d in range(10)] + [f"german {d}" for d in range(10)]
    published = "https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/"
    expected = "shd_train.h5 and shd_test.h5 (or their .h5.zip archives)"
    published_sizes = {"train": 8_156, "test": 2_264}


class SSCData(_HeidelbergData):
    """Spiking Speech Commands (``_target_: spikegate.datasets.SSCData``): 35 classes, published
    train/valid/test split (75,466 / 9,981 / 20,382); ``.valid`` is loaded too. input_shape
    ``(700',)``. See ``RecordedEventData``."""

    name = "SSC"
    folder = "SSC"
    prefix = "ssc"
    classes = [f"command {c}" for c in range(35)]
    published = "https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/"
    expected = "ssc_train.h5, ssc_valid.h5 and ssc_test.h5 (or their .h5.zip archives)"
    published_sizes = {"train": 75_466, "valid": 9_981, "test": 20_382}
    splits = ("train", "valid", "test")
