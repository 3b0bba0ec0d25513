"""CIFAR10-DVS (Li et al. 2017): 10,000 CIFAR-10 images (1,000 per class) moved on a monitor in
front of a DVS128 camera (128x128).

On disk (``root/CIFAR10DVS``): one folder per class, ``<class>/*.aedat`` (the original AER-DAT 2.0
recordings) or ``<class>/*.aedat4`` (tonic's conversion; reading these needs the ``aedat``
package), or the per-class archives ``<class>.zip`` as published, or part of them.
``.aedat`` files are read with tonic's AER-DAT reader (``tonic.io.read_aedat_header_from_file``,
``get_aer_events_from_file``): 8 bytes per event, big-endian address and timestamp (us); the
address holds y in bits 1-7, x in bits 8-14 and the polarity in bit 0, decoded as SpikingJelly does
(``x = 127 - x``, ``y = 127 - y``, ``p = 1 - bit``) so the images stand upright. Times are made relative to the recording's first event.

No split is published. The fixed split used here: within each class, files sorted by name with
numbers compared as numbers (``cifar10_cat_2`` before ``cifar10_cat_10``), the last
``ceil(n / 10)`` are test and the others train: 900 / 100 per class for the full set. A partial
copy is split the same way over what is there.
"""

from __future__ import annotations

import os
import re
import tempfile

import numpy as np
from tonic.io import get_aer_events_from_file, read_aedat4, read_aedat_header_from_file

from .event_frames import RecordedEventData, make_events
from .sources import CorruptDatasetFileError, DatasetFiles, SplitFiles

__all__ = ["CIFAR10DVSData", "TEST_SHARE"]

TEST_SHARE = 10  # one file in ten (rounded up) per class is test
_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class CIFAR10DVSData(RecordedEventData):
    """CIFAR10-DVS frames (``_target_: spikegate.datasets.CIFAR10DVSData``); input_shape
    ``(2, H', W')``, 128x128 before ``spatial_factor``. See ``RecordedEventData`` and the module
    docstring for the fixed split."""

    name = "CIFAR10-DVS"
    folder = "CIFAR10DVS"
    sensor_size = (128, 128, 2)
    classes = _CLASSES
    published = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"
    expected = "<class>/*.aedat (or *.aedat4) for the classes " + ", ".join(_CLASSES) + ", or <class>.zip"
    published_sizes = {"train": 9_000, "test": 1_000}

    def split_files(self, files: DatasetFiles, split: str) -> SplitFiles:
        labels = {name: c for c, name in enumerate(_CLASSES)}
        every = files.split(rf"(?P<label>{'|'.join(_CLASSES)})/[^/]+\.aedat4?", labels)
        chosen = []
        for c in range(len(_CLASSES)):
            members = sorted(np.flatnonzero(every.labels == c), key=lambda i: _natural_key(every.keys[i]))
            n_train = len(members) - -(-len(members) // TEST_SHARE)
            chosen += members[:n_train] if split == "train" else members[n_train:]
        chosen.sort()
        return SplitFiles(
            [every.keys[i] for i in chosen], every.labels[chosen],
            [every.sources[i] for i in chosen], [every.names[i] for i in chosen],
        )

    def parse(self, data: bytes, where: str) -> np.ndarray:
        suffix = ".aedat4" if where.endswith(".aedat4") else ".aedat"
        with tempfile.TemporaryDirectory() as folder:  # tonic's readers take a path
            path = os.path.join(folder, "sample" + suffix)
            with open(path, "wb") as file:
                file.write(data)
            events = self._read_aedat4(path, where) if suffix == ".aedat4" else self._read_aedat2(path, where)
        events = events[np.argsort(events["t"], kind="stable")]
        if len(events):
            events["t"] -= events["t"][0]  # recordings carry absolute camera time
        return events

    def _read_aedat2(self, path: str, where: str) -> np.ndarray:
        try:
            version, start, _ = read_aedat_header_from_file(path)
        except (AssertionError, ValueError, UnboundLocalError, IndexError) as error:
            raise CorruptDatasetFileError(
                f"{self.name}: {where!r} has no AER-DAT header ('#!AER-DAT2.0' line): {error!r}"
            ) from error
        if not 2 <= version < 3:
            raise CorruptDatasetFileError(
                f"{self.name}: {where!r} is AER-DAT {version}, expected 2.0 (the original release)"
            )
        if (os.path.getsize(path) - start) % 8:
            raise CorruptDatasetFileError(
                f"{self.name}: {where!r} is truncated: its event data is not a multiple of 8 bytes"
            )
        raw = get_aer_events_from_file(path, version, start)
        address = raw["address"].astype(np.int64)
        return make_events(
            127 - ((address >> 8) & 0x7F), 127 - ((address >> 1) & 0x7F),
            raw["timeStamp"].astype(np.int64), 1 - (address & 1),
        )

    def _read_aedat4(self, path: str, where: str) -> np.ndarray:
        try:
            import aedat  # noqa: F401  (tonic's AEDAT4 reader needs it)
        except ImportError as error:
            raise CorruptDatasetFileError(
                f"{self.name}: reading {where!r} needs the 'aedat' package (pip install aedat)"
            ) from error
        try:
            raw = read_aedat4(path)
        except Exception as error:  # the decoder raises its own types
            raise CorruptDatasetFileError(f"{self.name}: cannot read {where!r}: {error}") from error
        names = raw.dtype.names
        return make_events(raw[names[1]], raw[names[2]], raw[names[0]].astype(np.int64), raw[names[3]])
