"""Datasets: offline sets that need no download (scikit-learn digits, rate-coded or seen by an
emulated event camera) and their containers for the trainer.

Trainer entry points (Hydra ``_target_``): ``spikegate.datasets.DigitsData`` and
``spikegate.datasets.EventDigitsData``; each has ``.train``, ``.test`` (items ``(x [T, *input_shape]
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
    "ByteWindows",
    "PythonSourceData",
    "load_source_bytes",
    "python_source_files",
    "source_split",
]
