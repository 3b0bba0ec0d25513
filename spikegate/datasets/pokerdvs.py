"""POKER-DVS (Serrano-Gotarredona and Linares-Barranco 2015): card pips (clubs, hearts, diamonds,
spades) flashed past a DVS, cropped to 35x35.

On disk (``root/POKERDVS``, as tonic lays it out): the archives ``pips_train.tar.gz`` and
``pips_test.tar.gz`` or the folders they unpack to, ``pips_train/<cl|he|di|sp>/*.npy`` (and
``pips_test``), or part of them. Each ``.npy`` is ``[E, 4]`` columns t (microseconds), x, y, p.
Published split (tonic's): 48 train, 20 test samples.
"""

from __future__ import annotations

import numpy as np

from .event_frames import RecordedEventData, make_events
from .npy_events import load_event_columns
from .sources import DatasetFiles, SplitFiles

__all__ = ["POKERDVSData"]

_FOLDERS = {"train": "pips_train", "test": "pips_test"}
_CODES = ("cl", "he", "di", "sp")


class POKERDVSData(RecordedEventData):
    """POKER-DVS frames (``_target_: spikegate.datasets.POKERDVSData``); input_shape
    ``(2, H', W')``, 35x35 before ``spatial_factor``. See ``RecordedEventData``."""

    name = "POKER-DVS"
    folder = "POKERDVS"
    sensor_size = (35, 35, 2)
    classes = ["clubs", "hearts", "diamonds", "spades"]
    published = "http://www2.imse-cnm.csic.es/caviar/POKERDVS.html (tonic's pips_*.tar.gz)"
    expected = "pips_train.tar.gz and pips_test.tar.gz, or pips_train/<cl|he|di|sp>/*.npy and pips_test/..."
    published_sizes = {"train": 48, "test": 20}

    def split_files(self, files: DatasetFiles, split: str) -> SplitFiles:
        labels = {code: c for c, code in enumerate(_CODES)}
        return files.split(rf"{_FOLDERS[split]}/(?:[^/]*/)*[^/]*(?P<label>{'|'.join(_CODES)})/[^/]+\.npy", labels)

    def parse(self, data: bytes, where: str) -> np.ndarray:
        c = load_event_columns(data, where, self.name, "txyp")
        order = np.argsort(c["t"], kind="stable")
        return make_events(c["x"][order], c["y"][order], c["t"][order].astype(np.int64), c["p"][order])
