"""N-MNIST read from its published layouts (folders, zip archives, part of either), through the
Hydra config a user selects, checked against events binned independently in the test."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from spikegate.datasets import (
    CorruptDatasetFileError,
    DatasetError,
    DatasetNotFoundError,
    DatasetRootError,
    NMNISTData,
    PartialDatasetWarning,
)

from event_file_formats import nmnist_bytes

T = 4
pytestmark = pytest.mark.filterwarnings("ignore::spikegate.datasets.PartialDatasetWarning")


def random_sample(rng: np.random.Generator, n: int):
    t = np.sort(rng.integers(0, 300_000, n))
    return rng.integers(0, 34, n), rng.integers(0, 34, n), rng.integers(0, 2, n), t


def expected_frames(x, y, p, t, steps=T, factor=1.0, size=34) -> np.ndarray:
    """The sample's span cut into ``steps`` equal bins of integer width, every event counted."""
    out = np.zeros((steps, 2, size, size), dtype=np.int64)
    window = (t.max() - t.min()) // steps + 1
    np.add.at(out, ((t - t.min()) // window, p, (y * factor).astype(int), (x * factor).astype(int)), 1)
    return out


def write_split(folder: Path, split: str, per_class: dict[int, int], rng) -> dict[str, tuple]:
    """``<folder>/<split>/<digit>/<i>.bin`` files; returns key -> events."""
    written = {}
    for digit, count in per_class.items():
        (folder / split / str(digit)).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            events = random_sample(rng, int(rng.integers(5, 40)))
            key = f"{split}/{digit}/{i:05d}.bin"
            (folder / key).write_bytes(nmnist_bytes(*events))
            written[key] = (digit, events)
    return written


@pytest.fixture
def nmnist_root(tmp_path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "NMNIST"
    written = write_split(folder, "Train", {0: 2, 3: 3, 9: 1}, rng)
    written |= write_split(folder, "Test", {1: 2, 3: 1}, rng)
    return tmp_path / "data", written


def check_against_written(data, written: dict, split: str) -> None:
    dataset = getattr(data, split)
    keys = sorted(k for k in written if k.startswith(split.capitalize()))
    assert len(dataset) == len(keys)
    for i, key in enumerate(keys):
        digit, events = written[key]
        x, label = dataset[i]
        assert label == digit
        assert x.shape == (T, 2, 34, 34)
        assert int(x.sum()) == len(events[0])  # every event counted once
        np.testing.assert_array_equal(x.numpy(), expected_frames(*events))


def test_unpacked_folders_load_through_the_config(nmnist_root, load_config, tmp_path):
    root, written = nmnist_root
    data, (x, y) = load_config("nmnist", root, tmp_path / "cache", f"dataset.time_steps={T}")
    assert isinstance(data, NMNISTData)
    assert data.input_shape == (2, 34, 34) and data.num_classes == 10
    assert x.shape == (6, T, 2, 34, 34)
    assert y.tolist() == [0, 0, 3, 3, 3, 9]
    check_against_written(data, written, "train")
    check_against_written(data, written, "test")


def test_published_zip_archives_give_the_same_samples(nmnist_root, tmp_path, load_config):
    root, written = nmnist_root
    zipped = tmp_path / "zipped" / "NMNIST"
    zipped.mkdir(parents=True)
    for split, name in (("Train", "train.zip"), ("Test", "test.zip")):
        with zipfile.ZipFile(zipped / name, "w") as archive:
            for key in (k for k in written if k.startswith(split)):
                archive.write(root / "NMNIST" / key, key)
    data, _ = load_config("nmnist", zipped.parent, tmp_path / "cache", f"dataset.time_steps={T}")
    check_against_written(data, written, "train")
    check_against_written(data, written, "test")


def test_timestamp_overflow_events_add_2_to_the_13_us(tmp_path):
    """y = 240 marks a timestamp overflow: later events' times grow by 8192 us."""
    folder = tmp_path / "NMNIST"
    for split in ("Train", "Test"):
        (folder / split / "4").mkdir(parents=True)
        raw = nmnist_bytes([1, 0, 2], [1, 240, 2], [1, 0, 0], [100, 0, 100])
        (folder / split / "4" / "a.bin").write_bytes(raw)
    with pytest.warns(PartialDatasetWarning):
        data = NMNISTData(tmp_path, time_steps=2, time_window=5000.0, cache_dir=tmp_path / "c",
                          progress=False)
    x, label = data.train[0]
    assert label == 4 and int(x.sum()) == 2  # the marker is not an event
    assert x[0, 1, 1, 1] == 1  # t = 100 us: bin 0
    assert x[1, 0, 2, 2] == 1  # t = 100 + 8192 us: bin 1 (bin 0 without the overflow)


def test_partial_copy_warns_with_samples_per_split_and_class(nmnist_root, tmp_path):
    root, _ = nmnist_root
    with pytest.warns(PartialDatasetWarning) as record:
        NMNISTData(root, time_steps=T, cache_dir=tmp_path / "c", progress=False)
    message = str(record[0].message)
    assert str(root / "NMNIST") in message
    assert "train 6 of 60000 (per class [2, 0, 0, 3, 0, 0, 0, 0, 0, 1])" in message
    assert "test 3 of 10000 (per class [0, 2, 0, 1, 0, 0, 0, 0, 0, 0])" in message


def test_frames_come_from_the_cache_keyed_by_every_parameter(nmnist_root, tmp_path, monkeypatch):
    root, _ = nmnist_root
    cache = tmp_path / "c"
    first = NMNISTData(root, time_steps=T, cache_dir=cache, progress=False)
    files = sorted(os.listdir(cache / "NMNIST"))
    assert len(files) == 4  # .npy + .json per split

    def no_reading(*args):
        raise AssertionError("read the dataset files although the cache holds the frames")

    monkeypatch.setattr(NMNISTData, "parse", no_reading)
    again = NMNISTData(root, time_steps=T, cache_dir=cache, progress=False)
    torch.testing.assert_close(again.train[2][0], first.train[2][0])
    monkeypatch.undo()
    for change in ({"time_steps": 3}, {"spatial_factor": 0.5}, {"binary": True},
                   {"time_window": 1e5}, {"denoise_us": 1e4}):
        NMNISTData(root, **{"time_steps": T, **change}, cache_dir=cache, progress=False)
    assert len(os.listdir(cache / "NMNIST")) == 4 + 5 * 4


def test_downsampling_and_binary_frames(nmnist_root, tmp_path):
    root, written = nmnist_root
    data = NMNISTData(root, time_steps=T, spatial_factor=0.5, binary=True, cache_dir=tmp_path / "c",
                      progress=False)
    assert data.input_shape == (2, 17, 17)
    key = sorted(k for k in written if k.startswith("Train"))[0]
    expected = np.minimum(expected_frames(*written[key][1], factor=0.5, size=17), 1)
    np.testing.assert_array_equal(data.train[0][0].numpy(), expected)


def test_truncated_file_is_named(nmnist_root, tmp_path):
    root, written = nmnist_root
    bad = root / "NMNIST" / sorted(written)[-1]
    bad.write_bytes(bad.read_bytes()[:-2])
    with pytest.raises(CorruptDatasetFileError, match="truncated") as error:
        NMNISTData(root, cache_dir=tmp_path / "c", progress=False)
    assert str(bad) in str(error.value)
    assert not any((tmp_path / "c" / "NMNIST").glob("*.npy"))  # nothing half-written


def test_corrupt_archive_is_named(nmnist_root, tmp_path):
    root, _ = nmnist_root
    archive = root / "NMNIST" / "train.zip"
    archive.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CorruptDatasetFileError, match="train.zip"):
        NMNISTData(root, cache_dir=tmp_path / "c", progress=False)


def test_events_outside_the_sensor_mean_another_dataset(tmp_path):
    for split in ("Train", "Test"):
        (tmp_path / "NMNIST" / split / "0").mkdir(parents=True)
        (tmp_path / "NMNIST" / split / "0" / "a.bin").write_bytes(nmnist_bytes([100], [50], [0], [5]))
    with pytest.raises(CorruptDatasetFileError, match="outside the 34x34 sensor.*x up to 100"):
        NMNISTData(tmp_path, cache_dir=tmp_path / "c", progress=False)


def test_missing_files_give_one_clear_message(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        NMNISTData(tmp_path / "nowhere", cache_dir=tmp_path / "c")
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, FileNotFoundError)
    for part in ("N-MNIST", str(tmp_path / "nowhere" / "NMNIST"), "train.zip", "Train/<digit>/*.bin",
                 "garrickorchard.com"):
        assert part in message


def test_missing_test_split_is_named(tmp_path):
    write_split(tmp_path / "NMNIST", "Train", {0: 1}, np.random.default_rng(1))
    with pytest.raises(DatasetNotFoundError, match=r"no test samples .*\(found train: 1\)"):
        NMNISTData(tmp_path, cache_dir=tmp_path / "c")


def test_root_that_is_a_file(tmp_path):
    file = tmp_path / "data.txt"
    file.write_text("not a folder")
    with pytest.raises(DatasetRootError, match="is a file") as error:
        NMNISTData(file)
    assert str(file) in str(error.value) and isinstance(error.value, DatasetError)


def test_folder_holding_another_dataset(tmp_path):
    (tmp_path / "NMNIST").mkdir()
    (tmp_path / "NMNIST" / "shd_train.h5").write_bytes(b"")
    with pytest.raises(DatasetRootError, match="does not hold N-MNIST: it holds 1 files") as error:
        NMNISTData(tmp_path)
    assert str(tmp_path / "NMNIST") in str(error.value)


def test_root_holding_another_dataset_gets_a_hint(tmp_path):
    (tmp_path / "SHD").mkdir()
    with pytest.raises(DatasetNotFoundError, match="holds SHD"):
        NMNISTData(tmp_path)


def test_unreadable_root(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access  # the suite may run as root, who reads everything: deny by hand
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    with pytest.raises(DatasetRootError, match="cannot read the directory") as error:
        NMNISTData(locked)
    assert str(locked) in str(error.value)


def test_root_pointing_at_the_dataset_folder_itself_gets_a_hint(tmp_path):
    (tmp_path / "NMNIST" / "Train").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="the folder that holds NMNIST/, not NMNIST itself"):
        NMNISTData(tmp_path / "NMNIST")


def test_training_run_on_nmnist_files_with_a_worker(nmnist_root, tmp_path):
    """``spikegate train dataset=nmnist model=conv_nmnist trainer.num_workers=1`` end to end."""
    import json

    from hydra import compose, initialize_config_module

    from spikegate.train import run

    root, _ = nmnist_root
    with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "dataset=nmnist", "model=conv_nmnist", f"dataset.root={root}",
            f"dataset.cache_dir={tmp_path / 'cache'}", f"dataset.time_steps={T}", "model.channels=[4]",
            "trainer.epochs=1", "trainer.batch_size=4", "trainer.progress=false",
            "trainer.num_workers=1", "trainer.pin_memory=false",
        ])
    metrics = run(cfg, tmp_path / "run")
    assert metrics["epochs"] == 1 and 0 <= metrics["test_accuracy"] <= 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 1


def test_hidden_files_and_macos_resource_forks_are_skipped(nmnist_root, tmp_path):
    root, written = nmnist_root
    (root / "NMNIST" / "Train" / "0" / "._00000.bin").write_bytes(b"\x00\x05\x16")  # not 5-byte events
    (root / "NMNIST" / "__MACOSX" / "Train" / "1").mkdir(parents=True)
    (root / "NMNIST" / "__MACOSX" / "Train" / "1" / "x.bin").write_bytes(b"\x01")
    data = NMNISTData(root, time_steps=T, cache_dir=tmp_path / "c", progress=False)
    assert len(data.train) == sum(k.startswith("Train") for k in written)


def test_cache_dir_that_cannot_be_written_is_named(nmnist_root, tmp_path):
    root, _ = nmnist_root
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should go")
    with pytest.raises(DatasetRootError, match="dataset.cache_dir: cannot write the frame cache") as error:
        NMNISTData(root, cache_dir=blocker, progress=False)
    assert str(blocker / "NMNIST") in str(error.value)


def test_truncated_cache_file_is_named(nmnist_root, tmp_path):
    from spikegate.datasets import CorruptCacheError

    root, _ = nmnist_root
    NMNISTData(root, time_steps=T, cache_dir=tmp_path / "c", progress=False)
    frames = next((tmp_path / "c" / "NMNIST").glob("train-*.npy"))
    frames.write_bytes(frames.read_bytes()[:200])
    with pytest.raises(CorruptCacheError, match="Delete it to rebuild it") as error:
        NMNISTData(root, time_steps=T, cache_dir=tmp_path / "c", progress=False)
    assert str(frames) in str(error.value)
