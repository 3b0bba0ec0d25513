"""Event-camera (DVS) emulator for still images moved along N-MNIST-style saccades.

N-MNIST was recorded by an ATIS sensor on a pan-tilt unit making three straight saccades that form
a triangle (about 100 ms each) in front of a monitor showing an MNIST digit. This module does the
same in software:

1. ``saccade_offsets``: where the image sits on the sensor at each time (triangle path, pixels).
2. ``render_shifted``: the image, bilinearly upsampled to ``image_size`` sensor pixels, placed at a
   subpixel offset; sampled at the sensor pixel centres (one separable interpolation per step).
3. ``dvs_events``: the DVS pixel model. Each pixel keeps a reference log intensity, the value at
   its last event. When ``log(I + log_offset)`` moves past ``reference +- C`` the pixel emits one ON
   (``p=1``) or OFF (``p=0``) event per threshold crossed and moves the reference by ``C`` per
   event, so a change of ``delta`` in one step gives ``floor(|delta| / C)`` events. Event times are
   interpolated linearly between the two rendered frames at the level crossed (as ESIM does).
4. ``background_noise_events``: uniform shot noise (Poisson in time, uniform over pixels and
   polarities); it does not touch the reference levels. There is no refractory period.

Events are tonic-style structured arrays with dtype ``EVENT_DTYPE`` (``x, y`` in pixels, ``t`` in
microseconds from the start of the first saccade, ``p`` in {0, 1}), sorted by ``t``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from tqdm import tqdm

from spikegate.arguments import check_int, check_real

__all__ = [
    "EVENT_DTYPE",
    "SaccadeCamera",
    "saccade_offsets",
    "render_shifted",
    "dvs_events",
    "background_noise_events",
    "emulate_saccade_events",
    "emulate_saccade_events_batch",
]

EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])

Thresholds = Union[float, np.ndarray]


@dataclass(frozen=True)
class SaccadeCamera:
    """Parameters of the emulated sensor and its motion.

    sensor_size: ``(W, H)`` of the sensor, pixels.
    image_size: side of the upsampled image on the sensor, pixels (an 8x8 digit becomes 20x20).
    saccade_amplitude: side of the saccade triangle, pixels.
    saccade_duration_us: duration of each of the three saccades, microseconds.
    dt_us: rendering step, microseconds (event times are interpolated within a step).
    contrast_threshold: ``C``, change of ``log(I + log_offset)`` per event.
    threshold_mismatch: per-pixel relative spread of ``C`` (Gaussian sigma; 0 = identical pixels).
    noise_rate_hz: background events per pixel per second (both polarities together).
    log_offset: added to the intensity (in [0, 1]) before the log, so black has a finite log.
    """

    sensor_size: tuple[int, int] = (24, 24)
    image_size: int = 20
    saccade_amplitude: float = 3.0
    saccade_duration_us: int = 100_000
    dt_us: int = 2000
    contrast_threshold: float = 0.5
    threshold_mismatch: float = 0.03
    noise_rate_hz: float = 0.2
    log_offset: float = 0.2

    def __post_init__(self) -> None:
        size = tuple(self.sensor_size)
        if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
            raise ValueError(
                f"sensor_size: expected (W, H), two positive ints, got {self.sensor_size!r}"
            )
        object.__setattr__(self, "sensor_size", (int(size[0]), int(size[1])))
        check_int(self.image_size, "image_size", minimum=1)
        check_int(self.saccade_duration_us, "saccade_duration_us", minimum=1)
        check_int(self.dt_us, "dt_us", minimum=1)
        check_real(self.saccade_amplitude, "saccade_amplitude")
        check_real(self.contrast_threshold, "contrast_threshold", strict=True)
        check_real(self.threshold_mismatch, "threshold_mismatch")
        check_real(self.noise_rate_hz, "noise_rate_hz")
        check_real(self.log_offset, "log_offset", strict=True)

    @property
    def duration_us(self) -> int:
        """Length of one recording (three saccades), microseconds."""
        return 3 * self.saccade_duration_us

    @property
    def frame_times_us(self) -> np.ndarray:
        """Rendering times ``[K + 1]`` (int64, microseconds) from 0 to ``duration_us``."""
        steps = math.ceil(self.duration_us / self.dt_us)
        return np.minimum(np.arange(steps + 1, dtype=np.int64) * self.dt_us, self.duration_us)


def saccade_offsets(times_us: np.ndarray, camera: SaccadeCamera) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corner of the image on the sensor at ``times_us [K]``; returns ``(x [K], y [K])``
    in pixels (float64).

    The path visits ``(0, 0) -> (A/2, A) -> (A, 0) -> (0, 0)`` (``A = saccade_amplitude``) at
    constant speed, one leg per ``saccade_duration_us``, around a base offset that centres the
    swept area on the sensor.
    """
    a = float(camera.saccade_amplitude)
    vertices = np.array([[0.0, 0.0], [a / 2, a], [a, 0.0], [0.0, 0.0]])
    legs = np.asarray(times_us, dtype=np.float64) / camera.saccade_duration_us
    leg = np.clip(np.floor(legs).astype(np.int64), 0, 2)
    frac = np.clip(legs - leg, 0.0, 1.0)[:, None]
    xy = vertices[leg] * (1 - frac) + vertices[leg + 1] * frac
    width, height = camera.sensor_size
    base_x = (width - camera.image_size - a) / 2
    base_y = (height - camera.image_size - a) / 2
    return base_x + xy[:, 0], base_y + xy[:, 1]


def _interpolation_matrix(
    n_sensor: int, n_source: int, image_size: int, offset: float
) -> np.ndarray:
    """``[n_sensor, n_source]`` bilinear weights along one axis: sensor pixel centre ``s + 0.5``
    looks at source coordinate ``(s + 0.5 - offset) * n_source / image_size - 0.5``; the image is
    zero outside its ``n_source`` pixels."""
    u = (np.arange(n_sensor) + 0.5 - offset) * (n_source / image_size) - 0.5
    lower = np.floor(u).astype(np.int64)
    weight_upper = u - lower
    matrix = np.zeros((n_sensor, n_source + 2))
    rows = np.arange(n_sensor)
    # Columns shifted by one so that index -1 and n_source land in the padding columns.
    np.add.at(matrix, (rows, np.clip(lower + 1, 0, n_source + 1)), 1 - weight_upper)
    np.add.at(matrix, (rows, np.clip(lower + 2, 0, n_source + 1)), weight_upper)
    return matrix[:, 1:-1]


def render_shifted(
    images: np.ndarray, offset_x: float, offset_y: float, camera: SaccadeCamera
) -> np.ndarray:
    """Sensor view of ``images [N, h, w]`` (intensity, any unit) upsampled bilinearly to
    ``image_size`` pixels with its top-left corner at ``(offset_x, offset_y)`` sensor pixels.

    Returns ``[N, H, W]`` float64 (same unit), zero where the image does not cover the sensor.
    """
    width, height = camera.sensor_size
    rows = _interpolation_matrix(height, images.shape[-2], camera.image_size, offset_y)
    cols = _interpolation_matrix(width, images.shape[-1], camera.image_size, offset_x)
    return rows @ images @ cols.T


def dvs_events(
    log_frames: Iterable[np.ndarray],
    times_us: np.ndarray,
    thresholds: Thresholds,
    *,
    progress: bool = False,
) -> list[np.ndarray]:
    """DVS pixel model over ``K + 1`` frames of log intensity.

    log_frames: ``K + 1`` arrays ``[N, H, W]``, log intensity at ``times_us[k]`` (may be a
        generator). The first frame sets every pixel's reference level and emits nothing.
    times_us: ``[K + 1]`` increasing int64 times, microseconds.
    thresholds: contrast threshold ``C`` (log units), a float or ``[N, H, W]`` per pixel.

    Returns ``N`` structured arrays (``EVENT_DTYPE``) sorted by ``t``. A step from ``L0`` to ``L1``
    at a pixel with reference ``r`` gives ``floor(|L1 - r| / C)`` events of polarity
    ``L1 > r``; the event at level ``r +- j C`` gets time ``t0 + (t1 - t0) * (level - L0) /
    (L1 - L0)``, taken as the last whole microsecond before that instant (``ceil(...) - 1``)
    and kept in ``[t0, t1 - 1]``.
    """
    times_us = np.asarray(times_us, dtype=np.int64)
    frames: Iterator[np.ndarray] = iter(log_frames)
    reference = np.array(_next_frame(frames, 0, len(times_us)), dtype=np.float64)
    if reference.ndim != 3:
        raise ValueError(
            f"log_frames: expected frames [N, H, W], got shape {tuple(reference.shape)}"
        )
    n_samples = reference.shape[0]
    threshold = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), reference.shape)
    if not bool(np.all(threshold > 0)):
        raise ValueError("thresholds: expected values > 0, got some <= 0")
    previous = reference.copy()
    columns: list[tuple[np.ndarray, ...]] = []
    steps = tqdm(
        range(1, len(times_us)), desc="event camera", unit="step", disable=not progress,
        delay=0.5, leave=False,
    )
    for k in steps:
        current = np.asarray(_next_frame(frames, k, len(times_us)), dtype=np.float64)
        if current.shape != reference.shape:
            raise ValueError(
                f"log_frames: frame {k} has shape {tuple(current.shape)}, "
                f"expected {tuple(reference.shape)}"
            )
        change = current - reference
        counts = np.floor(np.abs(change) / threshold)
        sample, y, x = np.nonzero(counts)
        if len(sample):
            columns.append(
                _crossings(sample, y, x, counts, change, reference, previous, current,
                           threshold, times_us[k - 1], times_us[k])
            )
        previous = current
    if next(frames, None) is not None:
        raise ValueError(f"log_frames: expected {len(times_us)} frames (one per time), got more")
    return _split_by_sample(columns, n_samples)


def _next_frame(frames: Iterator[np.ndarray], k: int, expected: int) -> np.ndarray:
    frame = next(frames, None)
    if frame is None:
        raise ValueError(f"log_frames: expected {expected} frames (one per time), got {k}")
    return frame


def _crossings(
    sample: np.ndarray, y: np.ndarray, x: np.ndarray, counts: np.ndarray, change: np.ndarray,
    reference: np.ndarray, previous: np.ndarray, current: np.ndarray, threshold: np.ndarray,
    t0: int, t1: int,
) -> tuple[np.ndarray, ...]:
    """Events of one step at the pixels ``(sample, y, x)`` that crossed; updates ``reference``."""
    where = (sample, y, x)
    n = counts[where].astype(np.int64)
    sign = np.sign(change[where])
    c = threshold[where]
    ref = reference[where]
    reference[where] = ref + sign * n * c
    # j = 1..n for each crossing pixel, flattened
    first = np.repeat(np.cumsum(n) - n, n)
    j = np.arange(int(n.sum())) - first + 1
    levels = np.repeat(ref, n) + np.repeat(sign * c, n) * j
    low = np.repeat(previous[where], n)
    span = np.repeat(current[where], n) - low
    # A level can sit on the old frame's value (span 0) only through rounding at an exact
    # threshold multiple; such an event goes to the end of the step.
    frac = np.divide(levels - low, span, out=np.ones_like(span), where=span != 0)
    frac = np.clip(frac, 0.0, 1.0)
    t = np.clip(t0 + np.ceil(frac * (t1 - t0)).astype(np.int64) - 1, t0, t1 - 1)
    return (
        np.repeat(sample, n),
        np.repeat(x, n).astype(np.int16),
        np.repeat(y, n).astype(np.int16),
        t,
        np.repeat(sign > 0, n).astype(np.int8),
    )


def _split_by_sample(columns: list[tuple[np.ndarray, ...]], n_samples: int) -> list[np.ndarray]:
    if not columns:
        return [np.zeros(0, dtype=EVENT_DTYPE) for _ in range(n_samples)]
    sample, x, y, t, p = (np.concatenate(c) for c in zip(*columns))
    order = np.lexsort((t, sample))
    events = np.empty(len(order), dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x[order], y[order], t[order], p[order]
    bounds = np.searchsorted(sample[order], np.arange(n_samples + 1))
    return [events[bounds[i]:bounds[i + 1]] for i in range(n_samples)]


def background_noise_events(
    rng: np.random.Generator, sensor_size: tuple[int, int], duration_us: int, rate_hz: float
) -> np.ndarray:
    """Shot noise: ``Poisson(rate_hz * W * H * duration)`` events, uniform over pixels, polarities
    and ``t in [0, duration_us)``; returns ``EVENT_DTYPE`` events sorted by ``t``."""
    width, height = sensor_size
    count = rng.poisson(rate_hz * width * height * duration_us * 1e-6) if rate_hz > 0 else 0
    events = np.empty(count, dtype=EVENT_DTYPE)
    events["x"] = rng.integers(0, width, count)
    events["y"] = rng.integers(0, height, count)
    events["t"] = rng.integers(0, duration_us, count)
    events["p"] = rng.integers(0, 2, count)
    return events[np.argsort(events["t"], kind="stable")]


def _check_images(images: object) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images: expected a numpy array [N, h, w], got {type(images).__name__}")
    if images.ndim != 3 or 0 in images.shape[1:]:
        raise ValueError(f"images: expected shape [N, h, w], got {tuple(images.shape)}")
    images = images.astype(np.float64)
    if images.size and not (np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
        raise ValueError(
            "images: expected finite intensities in [0, 1], got range "
            f"[{images.min()}, {images.max()}]"
        )
    return images


def emulate_saccade_events_batch(
    images: np.ndarray,
    camera: SaccadeCamera = SaccadeCamera(),
    *,
    rngs: Sequence[np.random.Generator],
    progress: bool = False,
) -> list[np.ndarray]:
    """Events of each of ``images [N, h, w]`` (intensity in [0, 1]) seen through ``camera``.

    ``rngs[i]`` draws sample ``i``'s threshold mismatch and then its noise, so a sample's events
    depend only on its image and its generator (not on the batch it came in).
    Returns ``N`` ``EVENT_DTYPE`` arrays sorted by ``t``, ``t`` in ``[0, camera.duration_us)``.
    """
    images = _check_images(images)
    if len(rngs) != len(images):
        raise ValueError(f"rngs: expected one generator per image ({len(images)}), got {len(rngs)}")
    width, height = camera.sensor_size
    mismatch = np.ones((len(images), height, width))
    if camera.threshold_mismatch > 0:
        for i, rng in enumerate(rngs):
            mismatch[i] = 1 + camera.threshold_mismatch * rng.standard_normal((height, width))
    # Keep every pixel's threshold positive even at large mismatch.
    thresholds = camera.contrast_threshold * np.maximum(mismatch, 0.1)

    times = camera.frame_times_us
    offset_x, offset_y = saccade_offsets(times, camera)
    log_frames = (
        np.log(render_shifted(images, ox, oy, camera) + camera.log_offset)
        for ox, oy in zip(offset_x, offset_y)
    )
    events = dvs_events(log_frames, times, thresholds, progress=progress)
    if camera.noise_rate_hz == 0:
        return events
    merged = []
    for signal, rng in zip(events, rngs):
        noise = background_noise_events(rng, camera.sensor_size, camera.duration_us,
                                        camera.noise_rate_hz)
        both = np.concatenate([signal, noise])
        merged.append(both[np.argsort(both["t"], kind="stable")])
    return merged


def emulate_saccade_events(
    image: np.ndarray,
    camera: SaccadeCamera = SaccadeCamera(),
    *,
    rng: Optional[np.random.Generator] = None,
) -> np.ndarray:
    """Events of one image ``[h, w]`` (intensity in [0, 1]) moved along the three saccades.

    Returns an ``EVENT_DTYPE`` array sorted by ``t`` (microseconds), ``0 <= x < W``,
    ``0 <= y < H``, ``p`` 1 where the pixel got brighter, 0 where it got darker.
    ``rng`` defaults to ``np.random.default_rng(0)``.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 2:
        shape = tuple(image.shape) if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image: expected a numpy array [h, w], got {shape}")
    rng = np.random.default_rng(0) if rng is None else rng
    return emulate_saccade_events_batch(image[None], camera, rngs=[rng])[0]
