"""DVS Gesture, POKER-DVS and CIFAR10-DVS read from their on-disk layouts (tonic's .npy releases
in folders or .tar.gz archives, AER-DAT 2.0 files), through the Hydra config."""

from __future__ import annotations

import io
import tarfile
import zipfile

import numpy as np
import pytest

from spikegate.datasets import CIFAR10DVSData, CorruptDatasetFileError, DVSGestureData, POKERDVSData

from event_file_formats import aedat2_bytes, npy_bytes

pytestmark = pytest.mark.filterwarnings("ignore::spikegate.datasets.PartialDatasetWarning")
T = 5


def random_events(rng, size, n=None):
    n = int(rng.integers(5, 60)) if n is None else n
    t = np.sort(rng.integers(0, 2_000_000, n))
    return rng.integers(0, size, n), rng.integers(0, size, n), rng.integers(0, 2, n), t


def expected_frames(x, y, p, t, size, factor=1.0):
    width = int((size - 1) * factor) + 1
    out = np.zeros((T, 2, width, width), dtype=np.int64)
    window = (t.max() - t.min()) // T + 1
    np.add.at(out, ((t - t.min()) // window, p, (y * factor).astype(int), (x * factor).astype(int)), 1)
    return out


def add_to_tar(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("archived", [False, True])
def test_dvsgesture_through_the_config(tmp_path, load_config, archived):
    rng = np.random.default_rng(7)
    folder = tmp_path / "DVSGesture"
    folder.mkdir()
    written = {}
    for split, users in (("ibmGestureTrain", (1, 2)), ("ibmGestureTest", (24,))):
        tar = tarfile.open(folder / f"{split}.tar.gz", "w:gz") if archived else None
        for user in users:
            for label in (0, 4, 10):
                x, y, p, t_us = random_events(rng, 128)
                t_us = t_us // 1000 * 1000  # the release stores milliseconds
                name = f"{split}/user{user:02d}_fluorescent/{label}.npy"
                data = npy_bytes([x, y, p, t_us / 1000])  # columns x, y, p, t (ms)
                if tar:
                    add_to_tar(tar, name, data)
                else:
                    (folder / name).parent.mkdir(parents=True, exist_ok=True)
                    (folder / name).write_bytes(data)
                written[name] = (label, (x, y, p, t_us))
        if tar:
            tar.close()
    data, (x, y) = load_config("dvsgesture", tmp_path, tmp_path / "cache", f"dataset.time_steps={T}")
    assert data.input_shape == (2, 32, 32) and data.num_classes == 11
    assert x.shape == (6, T, 2, 32, 32) and y.tolist() == [0, 10, 4, 0, 10, 4]
    names = sorted(n for n in written if n.startswith("ibmGestureTrain"))  # "10" sorts before "4"
    for i, name in enumerate(names):
        label, events = written[name]
        frames, got = data.train[i]
        assert got == label
        np.testing.assert_array_equal(frames.numpy(), expected_frames(*events, 128, 0.25))
    assert len(data.test) == 3


def test_pokerdvs_through_the_config(tmp_path, load_config):
    rng = np.random.default_rng(8)
    written = {}
    with tarfile.open(tmp_path / "pips_train.tar.gz", "w:gz") as archive:
        for c, code in enumerate(("cl", "he", "di", "sp")):
            x, y, p, t = random_events(rng, 35)
            add_to_tar(archive, f"pips_train/{code}/{code}_0.npy", npy_bytes([t, x, y, p]))
            written[code] = (c, (x, y, p, t))
    (tmp_path / "POKERDVS").mkdir()
    (tmp_path / "pips_train.tar.gz").rename(tmp_path / "POKERDVS" / "pips_train.tar.gz")
    test_dir = tmp_path / "POKERDVS" / "pips_test" / "sp"
    test_dir.mkdir(parents=True)
    (test_dir / "sp_9.npy").write_bytes(npy_bytes([[5, 9], [1, 2], [3, 4], [0, 1]]))
    data, (x, y) = load_config("pokerdvs", tmp_path, tmp_path / "cache", f"dataset.time_steps={T}")
    assert isinstance(data, POKERDVSData) and data.input_shape == (2, 35, 35)
    assert sorted(y.tolist()) == [0, 1, 2, 3] and len(data.test) == 1
    for i, key in enumerate(sorted(f"pips_train/{code}/{code}_0.npy" for code in written)):
        code = key.split("/")[1]
        frames, label = data.train[i]
        assert label == written[code][0]
        np.testing.assert_array_equal(frames.numpy(), expected_frames(*written[code][1], 35))
    assert data.test[0][0].sum() == 2 and data.test[0][1] == 3


def test_npy_of_the_wrong_shape_is_named(tmp_path):
    for split in ("pips_train", "pips_test"):
        (tmp_path / "POKERDVS" / split / "cl").mkdir(parents=True)
        (tmp_path / "POKERDVS" / split / "cl" / "a.npy").write_bytes(npy_bytes([[1, 2], [3, 4], [5, 6]]))
    with pytest.raises(CorruptDatasetFileError, match=r"a.npy' holds \(2, 3\), expected an event array"):
        POKERDVSData(tmp_path, cache_dir=tmp_path / "c")


def test_truncated_tar_archive_is_named(tmp_path):
    (tmp_path / "DVSGesture").mkdir()
    path = tmp_path / "DVSGesture" / "ibmGestureTrain.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        add_to_tar(archive, "ibmGestureTrain/user01_led/1.npy", npy_bytes(random_events(np.random.default_rng(0), 128)))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptDatasetFileError, match="ibmGestureTrain.tar.gz"):
        DVSGestureData(tmp_path, cache_dir=tmp_path / "c")


def write_cifar(tmp_path, per_class: int, rng, zipped_class: str = "cat"):
    folder = tmp_path / "CIFAR10DVS"
    written = {}
    for name in ("airplane", "cat"):
        files = {}
        for i in range(per_class):
            x, y, p, t = random_events(rng, 128)
            files[f"cifar10_{name}_{i}.aedat"] = (x, y, p, t + 5_000_000)  # absolute camera time
        written[name] = files
        if name == zipped_class:
            folder.mkdir(exist_ok=True)
            with zipfile.ZipFile(folder / f"{name}.zip", "w") as archive:
                for file, events in files.items():
                    archive.writestr(file, aedat2_bytes(*events))
        else:
            (folder / name).mkdir(parents=True)
            for file, events in files.items():
                (folder / name / file).write_bytes(aedat2_bytes(*events))
    return written


def test_cifar10dvs_fixed_split_and_events(tmp_path, load_config):
    rng = np.random.default_rng(9)
    written = write_cifar(tmp_path, 11, rng)
    data, _ = load_config("cifar10dvs", tmp_path, tmp_path / "cache", f"dataset.time_steps={T}",
                          "dataset.spatial_factor=1.0")
    assert isinstance(data, CIFAR10DVSData) and data.input_shape == (2, 128, 128)
    # per class the last ceil(11 / 10) = 2 files in numeric order (9 and 10) are test
    assert len(data.train) == 18 and len(data.test) == 4
    assert data.test.labels.tolist() == [0, 0, 3, 3]
    frames, label = data.test[3]  # keys sort "..._10" before "..._9"
    assert label == 3
    events = written["cat"]["cifar10_cat_9.aedat"]
    np.testing.assert_array_equal(frames.numpy(), expected_frames(*events, 128))
    frames, label = data.train[0]  # airplane file 0
    np.testing.assert_array_equal(frames.numpy(), expected_frames(*written["airplane"]["cifar10_airplane_0.aedat"], 128))


def test_truncated_aedat_is_named(tmp_path):
    write_cifar(tmp_path, 5, np.random.default_rng(10), zipped_class="none")
    path = tmp_path / "CIFAR10DVS" / "cat" / "cifar10_cat_1.aedat"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(CorruptDatasetFileError, match="truncated") as error:
        CIFAR10DVSData(tmp_path, cache_dir=tmp_path / "c")
    assert str(path) in str(error.value)
