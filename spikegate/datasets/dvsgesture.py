"""IBM DVS Gesture (Amir et al. 2017): 11 hand and arm gestures by 29 people under 3 lightings,
DVS128 camera (128x128).

On disk (``root/DVSGesture``, as tonic lays it out): tonic's preprocessed release, the archives
``ibmGestureTrain.tar.gz`` and ``ibmGestureTest.tar.gz`` or the folders they unpack to,
``ibmGestureTrain/user<NN>_<lighting>/<label>.npy`` (and ``ibmGestureTest``), or part of them.
Each ``.npy`` is one gesture, ``[E, 4]`` columns x, y, p, t with t in milliseconds (the
multi-gesture recordings already cut at the label boundaries). Published split: users 1 to 23
train (1,077 samples), 24 to 29 test (264).
"""

from __future__ import annotations

import numpy as np

from .event_frames import RecordedEventData, make_events
from .npy_events import load_event_columns
from .sources import DatasetFiles, SplitFiles

__all__ = ["DVSGestureData"]

_FOLDERS = {"train": "ibmGestureTrain", "test": "ibmGestureTest"}


class DVSGestureData(RecordedEventData):
    """DVS Gesture frames (``_target_: spikegate.datasets.DVSGestureData``); input_shape
    ``(2, H', W')``, 128x128 before ``spatial_factor``. See ``RecordedEventData``."""

    name = "DVS Gesture"
    folder = "DVSGesture"
    sensor_size = (128, 128, 2)
    classes = [
        "hand clapping", "right hand wave", "left hand wave", "right arm clockwise",
        "right arm counter-clockwise", "left arm clockwise", "left arm counter-clockwise",
        "arm roll", "air drums", "air guitar", "other gestures",
    ]
    published = (
        "https://research.ibm.com/interactive/dvsgesture/ (tonic's preprocessed .npy release: "
        "https://figshare.com/ndownloader/files/38022171 and 38020584)"
    )
    expected = (
        "ibmGestureTrain.tar.gz and ibmGestureTest.tar.gz, or "
        "ibmGestureTrain/user<NN>_<lighting>/<label>.npy and ibmGestureTest/..."
    )
    published_sizes = {"train": 1_077, "test": 264}

    def split_files(self, files: DatasetFiles, split: str) -> SplitFiles:
        labels = {str(c): c for c in range(len(self.classes))}
        return files.split(rf"{_FOLDERS[split]}/user\d+_[^/]+/(?P<label>\d+)\.npy", labels)

    def parse(self, data: bytes, where: str) -> np.ndarray:
        c = load_event_columns(data, where, self.name, "xypt")
        return make_events(c["x"], c["y"], np.round(c["t"] * 1000).astype(np.int64), c["p"])
