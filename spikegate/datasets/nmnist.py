"""N-MNIST (Orchard et al. 2015): MNIST digits seen by an ATIS camera on three saccades, 34x34.

On disk (``root/NMNIST``, as tonic lays it out) either the published archives ``train.zip`` and
``test.zip`` or the folders they unpack to, ``Train/<digit>/*.bin`` and ``Test/<digit>/*.bin``, or a
part of them (60,000 train and 10,000 test samples in full; published split). Each ``.bin`` holds
5-byte events read with ``tonic.io.read_mnist_file``: x, y (one byte each), then polarity (bit 7)
and a 23-bit timestamp in microseconds; ``y = 240`` marks a timestamp overflow (+2^13 us).
"""

from __future__ import annotations

import io

import numpy as np
from tonic.io import read_mnist_file

from .digits import DIGIT_CLASSES
from .event_frames import RecordedEventData
from .event_camera import EVENT_DTYPE
from .sources import CorruptDatasetFileError, DatasetFiles, SplitFiles

__all__ = ["NMNISTData"]

_FOLDERS = {"train": "Train", "test": "Test"}


class NMNISTData(RecordedEventData):
    """N-MNIST frames (``_target_: spikegate.datasets.NMNISTData``); input_shape ``(2, H', W')``,
    34x34 before ``spatial_factor``; channel 0 OFF, 1 ON events. See ``RecordedEventData``."""

    name = "N-MNIST"
    folder = "NMNIST"
    sensor_size = (34, 34, 2)
    classes = DIGIT_CLASSES
    published = "https://www.garrickorchard.com/datasets/n-mnist (Mendeley Data 468j46mzdv)"
    expected = "train.zip and test.zip, or Train/<digit>/*.bin and Test/<digit>/*.bin"
    published_sizes = {"train": 60_000, "test": 10_000}

    def split_files(self, files: DatasetFiles, split: str) -> SplitFiles:
        labels = {str(d): d for d in range(10)}
        return files.split(rf"{_FOLDERS[split]}/(?P<label>\d)/[^/]+\.bin", labels)

    def parse(self, data: bytes, where: str) -> np.ndarray:
        if len(data) % 5:
            raise CorruptDatasetFileError(
                f"{self.name}: {where!r} is truncated or not an N-MNIST file: {len(data)} bytes, "
                "expected a multiple of 5 (one event each)"
            )
        return read_mnist_file(io.BytesIO(data), dtype=EVENT_DTYPE, is_stream=True)
