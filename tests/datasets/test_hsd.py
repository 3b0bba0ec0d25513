"""SHD and SSC read from their published HDF5 files (plain or in .h5.zip), through the Hydra config."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from spikegate.datasets import CorruptDatasetFileError, SHDData, SSCData

from event_file_formats import write_heidelberg

pytestmark = pytest.mark.filterwarnings("ignore::spikegate.datasets.PartialDatasetWarning")
STEPS, WINDOW_US = 10, 100_000  # 10 bins of 100 ms


def random_samples(rng, n, classes):
    samples = []
    for _ in range(n):
        count = int(rng.integers(3, 30))
        samples.append((np.sort(rng.uniform(0, 1.2, count)).astype(np.float32), rng.integers(0, 700, count)))
    return samples, rng.integers(0, classes, n)


def expected_frames(times, units, factor):
    """[STEPS, channels] counts: 100 ms bins from t = 0, spikes at or after 1 s left out."""
    channels = int(699 * factor) + 1
    out = np.zeros((STEPS, channels), dtype=np.int64)
    t_us = np.round(times.astype(np.float64) * 1e6).astype(np.int64)
    keep = t_us < STEPS * WINDOW_US
    np.add.at(out, (t_us[keep] // WINDOW_US, (units[keep] * factor).astype(int)), 1)
    return out


@pytest.mark.parametrize("zipped", [False, True])
def test_shd_through_the_config(tmp_path, load_config, zipped):
    rng = np.random.default_rng(3)
    written = {split: random_samples(rng, n, 20) for split, n in (("train", 5), ("test", 3))}
    for split, (samples, labels) in written.items():
        path = tmp_path / "h5" / f"shd_{split}.h5"
        write_heidelberg(path, samples, labels)
        if zipped:
            (tmp_path / "SHD").mkdir(exist_ok=True)
            with zipfile.ZipFile(tmp_path / "SHD" / f"shd_{split}.h5.zip", "w") as archive:
                archive.write(path, path.name)
        else:
            (tmp_path / "SHD").mkdir(exist_ok=True)
            path.rename(tmp_path / "SHD" / path.name)
    data, (x, y) = load_config("shd", tmp_path, tmp_path / "cache", f"dataset.time_steps={STEPS}",
                               f"dataset.time_window={WINDOW_US}", "dataset.spatial_factor=0.2")
    assert isinstance(data, SHDData) and data.num_classes == 20
    assert data.input_shape == (140,) and x.shape == (5, STEPS, 140)
    for split in ("train", "test"):
        samples, labels = written[split]
        dataset = getattr(data, split)
        assert len(dataset) == len(samples)
        for i, (times, units) in enumerate(samples):
            frames, label = dataset[i]
            assert label == labels[i]
            np.testing.assert_array_equal(frames.numpy(), expected_frames(times, units, 0.2))


def test_ssc_has_three_published_splits(tmp_path, load_config):
    rng = np.random.default_rng(4)
    for split, n in (("train", 4), ("valid", 2), ("test", 3)):
        write_heidelberg(tmp_path / "SSC" / f"ssc_{split}.h5", *random_samples(rng, n, 35))
    data, (x, _) = load_config("ssc", tmp_path, tmp_path / "cache", "dataset.time_steps=5",
                               "dataset.time_window=200000", "dataset.spatial_factor=1.0")
    assert isinstance(data, SSCData) and data.num_classes == 35
    assert (len(data.train), len(data.valid), len(data.test)) == (4, 2, 3)
    assert x.shape == (4, 5, 700)


def test_ssc_file_in_the_shd_folder_is_named(tmp_path):
    rng = np.random.default_rng(5)
    samples, _ = random_samples(rng, 2, 35)
    write_heidelberg(tmp_path / "SHD" / "shd_train.h5", samples, [3, 34])
    write_heidelberg(tmp_path / "SHD" / "shd_test.h5", samples, [3, 4])
    with pytest.raises(CorruptDatasetFileError, match="labels up to 34, but SHD has 20 classes") as error:
        SHDData(tmp_path, cache_dir=tmp_path / "c")
    assert str(tmp_path / "SHD" / "shd_train.h5") in str(error.value)


def test_hdf5_without_the_published_keys_is_named(tmp_path):
    import h5py

    (tmp_path / "SHD").mkdir()
    for split in ("train", "test"):
        with h5py.File(tmp_path / "SHD" / f"shd_{split}.h5", "w") as h5:
            h5.create_dataset("labels", data=np.zeros(2, np.uint16))
    with pytest.raises(CorruptDatasetFileError, match=r"lacks \['spikes/times', 'spikes/units'\]"):
        SHDData(tmp_path, cache_dir=tmp_path / "c")


def test_truncated_hdf5_is_named(tmp_path):
    rng = np.random.default_rng(6)
    for split in ("train", "test"):
        write_heidelberg(tmp_path / "SHD" / f"shd_{split}.h5", *random_samples(rng, 3, 20))
    path = tmp_path / "SHD" / "shd_test.h5"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CorruptDatasetFileError, match="cannot read .*shd_test.h5.* as HDF5"):
        SHDData(tmp_path, cache_dir=tmp_path / "c")
