"""Datasets: offline sets that need no download (scikit-learn digits, rate-coded or seen by an
emulated event camera), recorded neuromorphic datasets read from disk with tonic (N-MNIST, DVS
Gesture, SHD, SSC, CIFAR10-DVS, POKER-DVS), and their containers for the trainer.

Trainer entry points (Hydra ``_target_``): ``spikegate.datasets.DigitsData``,
``EventDigitsData``, ``NMNISTData``, ``DVSGestureData``, ``SHDData``, ``SSCData``,
``CIFAR10DVSData`` and ``POKERDVSData``; each has ``.train``, ``.test`` (items ``(x [T, *input_shape]
float32, label)``), ``.input_shape``, ``.num_classes`` and ``.time_steps``.

Language modelling: ``spikegate.datasets.PythonSourceData`` (the interpreter's standard-library
sources as bytes) has ``.train``, ``.test`` (the validation split; items ``(x [T] int64,
y [T] int64)``, y the next bytes), ``.vocab_size`` and ``.context``.
"""

from .digits import DIGIT_CLASSES, DigitsData, digits_split, load_digits_split, rate_code
from .event_cache import (
    CorruptCacheError,
    EventSet,
    check_event_dtype,
    default_root,
    load_event_set,
    save_event_set,
)
from .event_camera import (
    EVENT_DTYPE,
    SaccadeCamera,
    background_noise_events,
    dvs_events,
    emulate_saccade_events,
    emulate_saccade_events_batch,
    render_shifted,
    saccade_offsets,
)
from .event_digits import EventDigits, EventDigitsData, bin_events
from .frames import FrameDataset
from .cifar10dvs import CIFAR10DVSData
from .dvsgesture import DVSGestureData
from .event_frames import EventFrames, RecordedEventData
from .frame_cache import FrameFileDataset
from .hsd import SHDData, SSCData
from .nmnist import NMNISTData
from .pokerdvs import POKERDVSData
from .sources import (
    CorruptDatasetFileError,
    DatasetError,
    DatasetNotFoundError,
    DatasetRootError,
    PartialDatasetWarning,
)
from .pysource import ByteWindows, PythonSourceData, load_source_bytes, python_source_files, source_split

__all__ = [
    "DIGIT_CLASSES",
    "DigitsData",
    "digits_split",
    "load_digits_split",
    "rate_code",
    "CorruptCacheError",
    "EventSet",
    "check_event_dtype",
    "default_root",
    "load_event_set",
    "save_event_set",
    "EVENT_DTYPE",
    "SaccadeCamera",
    "background_noise_events",
    "dvs_events",
    "emulate_saccade_events",
    "emulate_saccade_events_batch",
    "render_shifted",
    "saccade_offsets",
    "EventDigits",
    "EventDigitsData",
    "bin_events",
    "FrameDataset",
    "EventFrames",
    "RecordedEventData",
    "FrameFileDataset",
    "NMNISTData",
    "DVSGestureData",
    "SHDData",
    "SSCData",
    "CIFAR10DVSData",
    "POKERDVSData",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetRootError",
    "CorruptDatasetFileError",
    "PartialDatasetWarning",
    "ByteWindows",
    "PythonSourceData",
    "load_source_bytes",
    "python_source_files",
    "source_split",
]
