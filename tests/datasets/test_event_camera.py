"""The event-camera emulator against independent references: a scalar per-pixel DVS written here
from the definition, torch/scipy bilinear interpolation, and the physics of a moving edge."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from spikegate.datasets import (
    EVENT_DTYPE,
    SaccadeCamera,
    background_noise_events,
    dvs_events,
    emulate_saccade_events,
    emulate_saccade_events_batch,
    render_shifted,
    saccade_offsets,
)


def reference_pixel_events(
    trace: list[float], times: list[int], c: float
) -> tuple[list[tuple[int, int]], float]:
    """One DVS pixel, event by event: ``(t, p)`` for the log-intensity ``trace`` at ``times``,
    and the smallest distance of any decision (level vs. trace value, rounded time) from its
    boundary, so a caller can skip cases that rounding could decide either way."""
    reference = trace[0]
    out = []
    margin = math.inf
    for k in range(1, len(trace)):
        low, high, t0, t1 = trace[k - 1], trace[k], times[k - 1], times[k]
        sign = 1 if high > reference else -1
        start = reference
        while sign * (high - (reference + sign * c)) >= 0:
            reference += sign * c
            frac = (reference - low) / (high - low)
            scaled = frac * (t1 - t0)
            margin = min(margin, abs(scaled - round(scaled)) if scaled > 1 else math.inf)
            out.append((min(max(t0 + math.ceil(scaled) - 1, t0), t1 - 1), int(sign > 0)))
        margin = min(margin, abs(high - (reference + c)), abs(high - (reference - c)))
        if reference != start:  # the last level crossed is a boundary too
            margin = min(margin, abs(high - reference))
    return out, margin


def sorted_events(events: np.ndarray) -> list[tuple[int, int, int, int]]:
    return sorted(zip(events["x"].tolist(), events["y"].tolist(), events["t"].tolist(),
                      events["p"].tolist()))


def test_step_change_gives_floor_of_log_change_over_threshold():
    rng = np.random.default_rng(1)
    c = 0.15
    before = rng.uniform(-2.0, 0.5, size=(3, 5, 7))
    after = rng.uniform(-2.0, 0.5, size=(3, 5, 7))
    events = dvs_events([before, after], np.array([0, 1000]), c)
    assert len(events) == 3
    for n, sample in enumerate(events):
        expected_on = np.floor(np.maximum(after[n] - before[n], 0) / c)
        expected_off = np.floor(np.maximum(before[n] - after[n], 0) / c)
        on = np.zeros((5, 7))
        off = np.zeros((5, 7))
        np.add.at(on, (sample["y"][sample["p"] == 1], sample["x"][sample["p"] == 1]), 1)
        np.add.at(off, (sample["y"][sample["p"] == 0], sample["x"][sample["p"] == 0]), 1)
        np.testing.assert_array_equal(on, expected_on)
        np.testing.assert_array_equal(off, expected_off)
        assert expected_on.sum() + expected_off.sum() > 10  # the check is not vacuous
        assert np.all((sample["t"] >= 0) & (sample["t"] < 1000))
        assert np.all(np.diff(sample["t"]) >= 0)


@settings(max_examples=40, deadline=None)
@given(
    traces=st.lists(
        st.lists(st.floats(-3.0, 1.0, allow_nan=False), min_size=6, max_size=6),
        min_size=1, max_size=4,
    ),
    c=st.floats(0.05, 0.8),
    dt=st.integers(1, 5000),
)
def test_dvs_matches_a_scalar_pixel_reference(traces, c, dt):
    times = [k * dt for k in range(6)]
    frames = [np.array([[[trace[k] for trace in traces]]]) for k in range(6)]  # [1, 1, W]
    got = dvs_events(frames, np.array(times), c)[0]
    expected = []
    for x, trace in enumerate(traces):
        pixel_events, margin = reference_pixel_events(trace, times, c)
        assume(margin > 1e-9)
        expected += [(x, 0, t, p) for t, p in pixel_events]
    assert sorted_events(got) == sorted(expected)


def test_reference_level_is_kept_between_steps():
    # 0.35 C per step: a lone step never crosses, but the accumulated change does.
    c = 0.2
    trace = np.arange(11) * 0.35 * c
    frames = [np.full((1, 1, 1), value) for value in trace]
    events = dvs_events(frames, np.arange(11) * 100, c)[0]
    assert len(events) == 3 and np.all(events["p"] == 1)
    # the crossings at C, 2C, 3C fall in the steps ending at indices 3, 6, 9
    np.testing.assert_array_equal(events["t"] // 100, [2, 5, 8])


def test_render_shifted_matches_torch_bilinear_upsampling_at_integer_offsets():
    rng = np.random.default_rng(2)
    image = np.zeros((2, 8, 8))
    image[:, 1:-1, 1:-1] = rng.uniform(0, 1, size=(2, 6, 6))  # zero border: padding is moot
    camera = SaccadeCamera(sensor_size=(26, 24), image_size=20)
    got = render_shifted(image, 2.0, 3.0, camera)
    upsampled = F.interpolate(torch.from_numpy(image)[:, None], size=(20, 20), mode="bilinear",
                              align_corners=False)[:, 0].numpy()
    expected = np.zeros((2, 24, 26))
    expected[:, 3:23, 2:22] = upsampled
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_render_shifted_subpixel_matches_scipy_map_coordinates():
    rng = np.random.default_rng(3)
    image = np.zeros((1, 8, 8))
    image[0, 1:-1, 1:-1] = rng.uniform(0, 1, size=(6, 6))
    camera = SaccadeCamera(sensor_size=(24, 24), image_size=20)
    ox, oy = 1.37, 2.81
    got = render_shifted(image, ox, oy, camera)[0]
    rows, cols = np.meshgrid(np.arange(24), np.arange(24), indexing="ij")
    coords = [(rows + 0.5 - oy) * 8 / 20 - 0.5, (cols + 0.5 - ox) * 8 / 20 - 0.5]
    expected = ndimage.map_coordinates(image[0], coords, order=1, mode="grid-constant", cval=0.0)
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_edge_moving_right_gives_on_ahead_and_off_behind():
    # A bright square moving right by 2 px: its right edge brightens the pixels it enters (ON),
    # its left edge darkens the pixels it leaves (OFF); every pixel changes monotonically.
    camera = SaccadeCamera(sensor_size=(24, 24), image_size=20)
    image = np.zeros((1, 8, 8))
    image[0, 2:6, 2:6] = 1.0
    c, offset = 0.3, 0.2
    shifts = np.linspace(0.0, 2.0, 41)
    log_frames = [np.log(render_shifted(image, 1.0 + s, 2.0, camera) + offset) for s in shifts]
    events = dvs_events(log_frames, np.arange(41) * 1000, c)[0]
    change = log_frames[-1][0] - log_frames[0][0]
    on = np.zeros((24, 24))
    off = np.zeros((24, 24))
    np.add.at(on, (events["y"][events["p"] == 1], events["x"][events["p"] == 1]), 1)
    np.add.at(off, (events["y"][events["p"] == 0], events["x"][events["p"] == 0]), 1)
    np.testing.assert_array_equal(on, np.floor(np.maximum(change, 0) / c))
    np.testing.assert_array_equal(off, np.floor(np.maximum(-change, 0) / c))
    # square spans sensor x in [1 + 5, 1 + 15) at the start: ON right of its centre, OFF left
    centre = 1.0 + 10.0 + 1.0
    assert on.sum() > 20 and off.sum() > 20
    assert np.all(events["x"][events["p"] == 1] > centre)
    assert np.all(events["x"][events["p"] == 0] < centre)
    # a horizontal move leaves rows outside the square untouched
    rows = np.flatnonzero((on + off).sum(axis=1))
    assert rows.min() >= 2 + 5 - 2 and rows.max() <= 2 + 15 + 1


def test_saccades_form_a_closed_triangle_inside_the_sensor():
    camera = SaccadeCamera(sensor_size=(24, 24), image_size=20, saccade_amplitude=3.0)
    x, y = saccade_offsets(np.array([0, 100_000, 200_000, 300_000, 50_000]), camera)
    base = (24 - 20 - 3.0) / 2
    np.testing.assert_allclose(x - base, [0, 1.5, 3.0, 0, 0.75])
    np.testing.assert_allclose(y - base, [0, 3.0, 0, 0, 1.5])
    xs, ys = saccade_offsets(camera.frame_times_us, camera)
    assert xs.min() >= 0 and xs.max() + 20 <= 24 and ys.min() >= 0 and ys.max() + 20 <= 24


def test_static_image_gives_no_events():
    image = np.random.default_rng(4).uniform(0, 1, size=(8, 8))
    camera = SaccadeCamera(saccade_amplitude=0.0, noise_rate_hz=0.0, threshold_mismatch=0.1)
    assert len(emulate_saccade_events(image, camera)) == 0


def test_noise_rate_matches_poisson_count():
    camera = SaccadeCamera(saccade_amplitude=0.0, noise_rate_hz=50.0)
    counts = [len(emulate_saccade_events(np.zeros((8, 8)), camera,
                                         rng=np.random.default_rng(s))) for s in range(4)]
    expected = 50.0 * 24 * 24 * 0.3
    assert abs(np.mean(counts) - expected) < 5 * math.sqrt(expected / 4)
    noise = background_noise_events(np.random.default_rng(0), (24, 24), 300_000, 50.0)
    assert abs(noise["p"].mean() - 0.5) < 0.02
    assert np.all(np.diff(noise["t"]) >= 0)


@pytest.fixture(scope="module")
def digit_images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images[:12] / 16.0


def test_saccade_events_are_tonic_style_sorted_and_in_bounds(digit_images):
    camera = SaccadeCamera()
    events = emulate_saccade_events(digit_images[0], camera, rng=np.random.default_rng(0))
    assert events.dtype == EVENT_DTYPE
    assert 200 < len(events) < 3000
    assert np.all(np.diff(events["t"]) >= 0)
    assert events["t"].min() >= 0 and events["t"].max() < camera.duration_us
    width, height = camera.sensor_size
    assert events["x"].min() >= 0 and events["x"].max() < width
    assert events["y"].min() >= 0 and events["y"].max() < height
    assert set(np.unique(events["p"]).tolist()) == {0, 1}
    # each saccade moves the digit and makes events
    per_saccade = np.bincount(events["t"] // camera.saccade_duration_us, minlength=3)
    assert np.all(per_saccade > 0.1 * len(events))


def test_saccade_events_are_deterministic_per_generator_and_batch_independent(digit_images):
    camera = SaccadeCamera()
    a = emulate_saccade_events(digit_images[3], camera, rng=np.random.default_rng(7))
    b = emulate_saccade_events(digit_images[3], camera, rng=np.random.default_rng(7))
    c = emulate_saccade_events(digit_images[3], camera, rng=np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    batch = emulate_saccade_events_batch(
        digit_images, camera, rngs=[np.random.default_rng(k) for k in range(len(digit_images))]
    )
    assert np.array_equal(batch[3], emulate_saccade_events(
        digit_images[3], camera, rng=np.random.default_rng(3)))


def test_tonic_transforms_apply_unchanged(digit_images):
    tonic = pytest.importorskip("tonic")
    camera = SaccadeCamera(noise_rate_hz=0.0)
    events = emulate_saccade_events(digit_images[1], camera, rng=np.random.default_rng(0))
    sensor_size = (*camera.sensor_size, 2)

    window = camera.duration_us // 10
    frames = tonic.transforms.ToFrame(sensor_size, time_window=window, start_time=0,
                                      end_time=camera.duration_us)(events)
    assert frames.shape == (10, 2, 24, 24)
    assert frames.sum() == len(events)
    expected = np.zeros((10, 2, 24, 24))
    np.add.at(expected, (events["t"] // window, events["p"], events["y"], events["x"]), 1)
    np.testing.assert_array_equal(frames, expected)
    assert tonic.transforms.ToFrame(sensor_size, n_time_bins=5)(events).shape == (5, 2, 24, 24)

    # Denoise drops events with no 4-neighbour event in the last 30 ms (and, in tonic, keeps all
    # of the first 30 ms): it keeps most of the moving edges' events, far less of sparse shot
    # noise, and invents nothing.
    noise = background_noise_events(np.random.default_rng(1), camera.sensor_size,
                                    camera.duration_us, 1.0)
    mixed = np.concatenate([events, noise])
    mixed = mixed[np.argsort(mixed["t"], kind="stable")]
    denoised = tonic.transforms.Denoise(filter_time=30_000)(mixed)
    assert np.all(np.isin(denoised, mixed))
    late_events, late_noise = events[events["t"] > 30_000], noise[noise["t"] > 30_000]
    signal_kept = np.isin(late_events, denoised).mean()
    assert signal_kept > 0.8
    assert np.isin(late_noise, denoised).mean() < signal_kept - 0.3

    down = tonic.transforms.Downsample(spatial_factor=0.5, time_factor=1e-3)(events)
    np.testing.assert_array_equal(down["x"], events["x"] // 2)
    np.testing.assert_array_equal(down["t"], np.floor(events["t"] * 1e-3))
    assert down.dtype == events.dtype
    assert tonic.transforms.ToFrame((12, 12, 2), n_time_bins=3)(down).shape == (3, 2, 12, 12)


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("contrast_threshold", 0.0, ValueError),
        ("noise_rate_hz", -1.0, ValueError),
        ("dt_us", 0, ValueError),
        ("dt_us", 1.5, TypeError),
        ("sensor_size", (24,), ValueError),
    ],
)
def test_camera_rejects_bad_parameters_by_name(field, value, error):
    with pytest.raises(error, match=field):
        SaccadeCamera(**{field: value})


def test_emulator_rejects_bad_images():
    with pytest.raises(ValueError, match="images: expected finite intensities in \\[0, 1\\]"):
        emulate_saccade_events(np.full((8, 8), 16.0))
    with pytest.raises(ValueError, match="image: expected"):
        emulate_saccade_events(np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="rngs"):
        emulate_saccade_events_batch(np.zeros((2, 8, 8)), rngs=[np.random.default_rng(0)])


def test_dvs_rejects_a_frame_count_that_does_not_match_the_times():
    frames = [np.zeros((1, 2, 2))] * 2
    with pytest.raises(ValueError, match="log_frames: expected 3 frames .* got 2"):
        dvs_events(frames, np.array([0, 1, 2]), 0.1)
    with pytest.raises(ValueError, match="log_frames: expected 1 frames .* got more"):
        dvs_events(frames, np.array([0]), 0.1)
    with pytest.raises(ValueError, match="thresholds"):
        dvs_events(frames, np.array([0, 1]), 0.0)
