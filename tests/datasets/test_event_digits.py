"""event_digits: the tonic-style dataset, its on-disk cache and the frame container."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import spikegate.datasets.event_cache as event_cache
import spikegate.datasets.event_digits as event_digits
from spikegate.datasets import (
    EVENT_DTYPE,
    CorruptCacheError,
    EventDigits,
    EventDigitsData,
    EventSet,
    SaccadeCamera,
    digits_split,
    emulate_saccade_events,
    load_digits_split,
    load_event_set,
    save_event_set,
)

# 30 ms of small saccades in 12 steps, high threshold (about 90 events a sample): a whole split
# generates and compresses in a fraction of a second.
SMALL = SaccadeCamera(saccade_duration_us=10_000, dt_us=2_500, saccade_amplitude=1.5,
                      contrast_threshold=0.8)


@pytest.fixture(scope="module")
def default_data(tmp_path_factory) -> EventDigitsData:
    """Both splits with the default camera, generated once for the module."""
    return EventDigitsData(root=tmp_path_factory.mktemp("data"), time_steps=8, progress=False)


def cache_files(root: Path) -> list[str]:
    folder = root / "event_digits"
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_default_set_statistics_and_split(default_data):
    dataset = EventDigits(default_data.root, "train")  # from the cache
    assert len(dataset) == 1438
    np.testing.assert_array_equal(dataset.event_set.indices, digits_split("train"))
    counts = np.diff(dataset.event_set.offsets)
    assert 300 < counts.min() and counts.max() < 3000
    assert abs(dataset.event_set.events["p"].mean() - 0.5) < 0.05


def test_samples_are_the_emulator_output_for_their_source_image(default_data):
    dataset = EventDigits(default_data.root, "test")
    images, labels, indices = load_digits_split("test")
    for i in (0, 123, len(dataset) - 1):
        events, target = dataset[i]
        expected = emulate_saccade_events(images[i] / 16.0, SaccadeCamera(),
                                          rng=np.random.default_rng([0, int(indices[i])]))
        assert np.array_equal(events, expected)
        assert target == labels[i]


def test_frames_count_every_event_in_a_fixed_time_grid(default_data):
    dataset = EventDigits(default_data.root, "test")
    assert default_data.input_shape == (2, 24, 24) and default_data.num_classes == 10
    assert default_data.sensor_size == dataset.sensor_size == (24, 24, 2)
    assert len(default_data.train) == 1438 and len(default_data.test) == 359
    bin_us = 300_000 / 8
    for i in (0, 200):
        x, label = default_data.test[i]
        events, target = dataset[i]
        assert x.shape == (8, 2, 24, 24) and x.dtype == torch.float32 and label == target
        assert x.sum().item() == len(events)
        expected = np.zeros((8, 2, 24, 24))
        np.add.at(expected, ((events["t"] // bin_us).astype(int), events["p"], events["y"],
                             events["x"]), 1)
        np.testing.assert_array_equal(x.numpy(), expected)
    xb, yb = next(iter(DataLoader(default_data.train, batch_size=4)))
    assert xb.shape == (4, 8, 2, 24, 24) and yb.shape == (4,)


def test_tonic_style_interface(tmp_path):
    tonic = pytest.importorskip("tonic")
    frame = tonic.transforms.ToFrame(sensor_size=SMALL.sensor_size + (2,), n_time_bins=3)
    dataset = EventDigits(tmp_path, "test", camera=SMALL, transform=frame,
                          target_transform=lambda y: y + 100, progress=False)
    assert dataset.ordering == "xytp" and dataset.dtype == EVENT_DTYPE
    assert dataset.sensor_size == (24, 24, 2) and len(dataset.classes) == 10
    frames, target = dataset[0]
    assert frames.shape == (3, 2, 24, 24) and target == dataset.targets[0] + 100
    raw = EventDigits(tmp_path, "test", camera=SMALL,
                      transforms=lambda e, y: (len(e), -y), progress=False)
    length, neg = raw[-1]
    assert length == len(raw.event_set.sample(len(raw) - 1)) and neg == -raw.targets[-1]
    with pytest.raises(IndexError):
        raw[len(raw)]
    plain = EventDigits(tmp_path, "test", camera=SMALL, progress=False)
    events, _ = plain[0]
    events["x"] = 0  # items are copies
    assert plain[0][0]["x"].max() > 0


def test_cache_is_reused_without_regenerating(tmp_path, monkeypatch):
    first = EventDigits(tmp_path, "test", camera=SMALL, progress=False)
    mtime = first.cache_path.stat().st_mtime_ns
    assert first.cache_path.parent == tmp_path / "event_digits"

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although the cache exists")

    monkeypatch.setattr(event_digits, "emulate_saccade_events_batch", fail)
    second = EventDigits(tmp_path, "test", camera=SMALL, progress=False)
    assert second.cache_path.stat().st_mtime_ns == mtime
    assert np.array_equal(first.event_set.events, second.event_set.events)
    np.testing.assert_array_equal(first.event_set.offsets, second.event_set.offsets)


def test_changed_parameters_write_a_new_file(tmp_path, monkeypatch):
    calls = []
    real = event_digits.emulate_saccade_events_batch

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(event_digits, "emulate_saccade_events_batch", counting)
    a = EventDigits(tmp_path, "test", camera=SMALL, progress=False)
    b = EventDigits(tmp_path, "test", camera=replace(SMALL, contrast_threshold=0.5),
                    progress=False)
    c = EventDigits(tmp_path, "test", camera=SMALL, seed=1, progress=False)
    assert len(calls) == 3
    assert len({a.cache_path, b.cache_path, c.cache_path}) == 3
    assert len(cache_files(tmp_path)) == 3
    assert len(b.event_set.events) > len(a.event_set.events)  # lower threshold, more events
    assert a.cache_path.name.startswith("event_digits-v1-test-")


def test_generation_is_deterministic_per_seed(tmp_path):
    a = EventDigits(tmp_path / "a", "test", camera=SMALL, seed=5, progress=False)
    b = EventDigits(tmp_path / "b", "test", camera=SMALL, seed=5, progress=False)
    c = EventDigits(tmp_path / "c", "test", camera=SMALL, seed=6, progress=False)
    assert np.array_equal(a.event_set.events, b.event_set.events)
    assert not np.array_equal(a.event_set.events, c.event_set.events)
    assert a.cache_path.name == b.cache_path.name


def test_write_is_atomic(tmp_path, monkeypatch):
    EventDigits(tmp_path, "test", camera=SMALL, progress=False)
    assert [Path(f).suffix for f in cache_files(tmp_path)] == [".npz"]  # no temporary left

    real_savez = np.savez_compressed

    def interrupted(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(event_cache.np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        EventDigits(tmp_path, "train", camera=SMALL, progress=False)
    assert [f for f in cache_files(tmp_path) if "train" in f] == []  # neither final nor temp

    monkeypatch.setattr(event_cache.np, "savez_compressed", real_savez)
    train = EventDigits(tmp_path, "train", camera=SMALL, progress=False)
    assert train.cache_path.exists() and len(cache_files(tmp_path)) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_cache_file_raises_a_clear_error(tmp_path, damage):
    path = EventDigits(tmp_path, "test", camera=SMALL, progress=False).cache_path
    content = path.read_bytes()
    damaged = {"garbage": b"not an archive" * 10, "truncated": content[: len(content) // 2],
               "empty": b""}[damage]
    path.write_bytes(damaged)
    with pytest.raises(CorruptCacheError, match="Delete it to regenerate") as info:
        EventDigits(tmp_path, "test", camera=SMALL, progress=False)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def small_set(events: np.ndarray) -> EventSet:
    return EventSet(events, np.array([0, len(events)], dtype=np.int64), np.array([3]),
                    np.array([7]), "{}")


def test_load_event_set_validates_dtype_fields(tmp_path):
    wrong = np.dtype([("x", np.int32), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
    save_event_set(tmp_path / "wrong.npz", small_set(np.zeros(4, dtype=wrong)))
    with pytest.raises(CorruptCacheError, match="events: expected dtype fields .*'x', '<i2'"):
        load_event_set(tmp_path / "wrong.npz")
    renamed = np.dtype([("x", np.int16), ("y", np.int16), ("ts", np.int64), ("p", np.int8)])
    save_event_set(tmp_path / "renamed.npz", small_set(np.zeros(4, dtype=renamed)))
    with pytest.raises(CorruptCacheError, match="dtype fields"):
        load_event_set(tmp_path / "renamed.npz")


def test_load_event_set_validates_content(tmp_path):
    events = np.zeros(3, dtype=EVENT_DTYPE)
    events["t"] = [0, 5, 9]
    events["x"] = [1, 2, 30]
    save_event_set(tmp_path / "ok.npz", small_set(events))
    loaded = load_event_set(tmp_path / "ok.npz", expected_params="{}")
    assert np.array_equal(loaded.events, events) and loaded.targets.tolist() == [3]
    with pytest.raises(CorruptCacheError, match="within the sensor"):
        load_event_set(tmp_path / "ok.npz", sensor_size=(24, 24))
    with pytest.raises(CorruptCacheError, match="params"):
        load_event_set(tmp_path / "ok.npz", expected_params='{"seed":1}')
    events["t"] = [0, 9, 5]
    save_event_set(tmp_path / "unsorted.npz", small_set(events))
    with pytest.raises(CorruptCacheError, match="sorted by t"):
        load_event_set(tmp_path / "unsorted.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_event_set(tmp_path / "missing.npz")


def test_root_defaults_to_environment_and_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGATE_DATA", str(tmp_path / "env"))
    dataset = EventDigits(split="test", camera=SMALL, progress=False)
    assert dataset.cache_path.parent == tmp_path / "env" / "event_digits"
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="root: expected a directory"):
        EventDigits(a_file, "test", camera=SMALL)
    with pytest.raises(TypeError, match="root: expected a str, a path or None, got int"):
        EventDigits(3, "test", camera=SMALL)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"split: expected one of .*'train'.*, got 'valid'"):
        EventDigits(tmp_path, "valid", camera=SMALL)
    with pytest.raises(ValueError, match="time_steps: expected an int >= 1, got 0"):
        EventDigitsData(tmp_path, time_steps=0, camera=SMALL)
    with pytest.raises(TypeError, match="time_steps"):
        EventDigitsData(tmp_path, time_steps="16", camera=SMALL)
    with pytest.raises(ValueError, match="camera: unknown fields \\['threshold'\\]"):
        EventDigits(tmp_path, "test", camera={"threshold": 0.1})
    with pytest.raises(TypeError, match="binary"):
        EventDigitsData(tmp_path, camera=SMALL, binary=1)
    assert cache_files(tmp_path) == []  # nothing generated for a bad call


def test_binary_frames_and_hydra_instantiation(tmp_path):
    hydra_utils = pytest.importorskip("hydra.utils")
    config = {
        "_target_": "spikegate.datasets.EventDigitsData",
        "root": str(tmp_path),
        "time_steps": 4,
        "seed": 0,
        "binary": True,
        "progress": False,
        "camera": {"saccade_duration_us": 10_000, "dt_us": 2_500, "saccade_amplitude": 1.5,
                   "contrast_threshold": 0.8, "sensor_size": [24, 24]},
    }
    data = hydra_utils.instantiate(config)
    counts = EventDigitsData(tmp_path, time_steps=4, camera=SMALL, progress=False)
    assert isinstance(data, EventDigitsData) and data.input_shape == (2, 24, 24)
    assert data.time_steps == 4 and data.camera == SMALL
    assert torch.equal(data.train.frames, counts.train.frames.clamp(max=1))
    assert counts.train.frames.max() > 1  # clipping did something
    assert len(cache_files(tmp_path)) == 2  # both containers share the cached events
