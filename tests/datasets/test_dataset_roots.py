"""A ``dataset.root`` that is a file, cannot be read, or holds the wrong dataset gives one clear
message naming the path, for each of the six recorded datasets and the offline event digits (the
scikit-learn digits have no root: their images ship with scikit-learn)."""

import os
from pathlib import Path

import pytest

from spikegate.datasets import (
    CIFAR10DVSData,
    DatasetError,
    DatasetNotFoundError,
    DatasetRootError,
    DVSGestureData,
    EventDigits,
    NMNISTData,
    POKERDVSData,
    SaccadeCamera,
    SHDData,
    SSCData,
)
from spikegate.datasets.event_cache import CorruptCacheError

RECORDED = [NMNISTData, DVSGestureData, SHDData, SSCData, CIFAR10DVSData, POKERDVSData]
ids = [cls.__name__ for cls in RECORDED]


def build(cls, root, tmp_path):
    return cls(root, cache_dir=tmp_path / "cache", progress=False)


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, DatasetError)
    return message


def deny(monkeypatch, *paths):
    """Deny access to ``paths`` (the suite may run as root, who reads everything)."""
    denied = {Path(p) for p in paths}
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) not in denied and real(path, mode, **kw))


@pytest.mark.parametrize("cls", RECORDED, ids=ids)
def test_root_that_is_a_file(cls, tmp_path):
    file = tmp_path / f"{cls.folder}.zip"
    file.write_bytes(b"PK")
    with pytest.raises(DatasetRootError, match="is a file, expected a directory") as error:
        build(cls, file, tmp_path)
    assert repr(str(file)) in one_line(error)


@pytest.mark.parametrize("cls", RECORDED, ids=ids)
def test_dataset_folder_that_is_a_file(cls, tmp_path):
    (tmp_path / cls.folder).write_bytes(b"an archive saved without its suffix")
    with pytest.raises(DatasetRootError, match="is a file, expected the dataset's folder") as error:
        build(cls, tmp_path, tmp_path)
    assert repr(str(tmp_path / cls.folder)) in one_line(error)


@pytest.mark.parametrize("cls", RECORDED, ids=ids)
@pytest.mark.parametrize("which", ["root", "dataset folder"])
def test_unreadable_root_or_dataset_folder(cls, which, tmp_path, monkeypatch):
    (tmp_path / cls.folder).mkdir()
    locked = tmp_path if which == "root" else tmp_path / cls.folder
    deny(monkeypatch, locked)
    with pytest.raises(DatasetRootError, match="cannot read the directory .* \\(permission denied\\)") as error:
        build(cls, tmp_path, tmp_path)
    assert repr(str(locked)) in one_line(error)


@pytest.mark.parametrize("cls", RECORDED, ids=ids)
def test_unreadable_subfolder_is_named(cls, tmp_path, monkeypatch):
    locked = tmp_path / cls.folder / "Train"
    locked.mkdir(parents=True)
    real = os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)  # os.walk lists folders through it
    with pytest.raises(DatasetRootError, match="Permission denied") as error:
        build(cls, tmp_path, tmp_path)
    assert repr(str(locked)) in one_line(error)


@pytest.mark.parametrize("cls", RECORDED, ids=ids)
def test_folder_holding_another_datasets_files(cls, tmp_path):
    folder = tmp_path / cls.folder
    other = "shd_train.h5" if cls is NMNISTData else "Train/0/00001.bin"  # SHD's file, or N-MNIST's
    (folder / other).parent.mkdir(parents=True, exist_ok=True)
    (folder / other).write_bytes(b"\0" * 10)
    with pytest.raises(DatasetRootError, match=f"does not hold {cls.name}: it holds 1 files") as error:
        build(cls, tmp_path, tmp_path)
    message = one_line(error)
    assert repr(str(folder)) in message and repr(other) in message and cls.expected in message


@pytest.mark.parametrize("cls", RECORDED, ids=ids)
def test_root_that_is_another_datasets_own_folder(cls, tmp_path):
    other = "SHD" if cls is not SHDData else "NMNIST"
    (tmp_path / other).mkdir()
    with pytest.raises(DatasetNotFoundError, match=f"looks like {other}'s own folder") as error:
        build(cls, tmp_path / other, tmp_path)
    message = one_line(error)
    assert repr(str(tmp_path / other / cls.folder)) in message and cls.published in message


# a few steps of small saccades: a split generates in a fraction of a second
SMALL = SaccadeCamera(saccade_duration_us=10_000, dt_us=2_500, saccade_amplitude=1.5, contrast_threshold=0.8)


def test_event_digits_root_that_is_a_file(tmp_path):
    file = tmp_path / "data"
    file.write_text("")
    with pytest.raises(ValueError, match="root: expected a directory") as error:
        EventDigits(file, "test", camera=SMALL, progress=False)
    assert repr(str(file)) in str(error.value)


def test_event_digits_cache_folder_that_is_a_file(tmp_path):
    (tmp_path / "event_digits").write_text("")
    with pytest.raises(DatasetRootError, match="is a file, expected the folder of the event_digits cache") as error:
        EventDigits(tmp_path, "test", camera=SMALL, progress=False)
    assert repr(str(tmp_path / "event_digits")) in one_line(error)


def test_event_digits_unwritable_root_fails_before_generating(tmp_path, monkeypatch):
    (tmp_path / "event_digits").mkdir()
    deny(monkeypatch, tmp_path / "event_digits")
    monkeypatch.setattr(EventDigits, "_generate", lambda *a: pytest.fail("generated before checking"))
    with pytest.raises(DatasetRootError, match="cannot write the event cache in") as error:
        EventDigits(tmp_path, "test", camera=SMALL, progress=False)
    assert repr(str(tmp_path / "event_digits")) in one_line(error)


def test_event_digits_cache_holding_another_file_is_named(tmp_path):
    first = EventDigits(tmp_path, "test", camera=SMALL, progress=False)
    first.cache_path.write_bytes(b"\x93NUMPY not an npz")  # e.g. another tool's file under that name
    with pytest.raises(CorruptCacheError, match="is corrupt") as error:
        EventDigits(tmp_path, "test", camera=SMALL, progress=False)
    assert repr(str(first.cache_path)) in str(error.value) and "Delete it to regenerate it" in str(error.value)


def test_event_digits_unreadable_cache_file_is_not_called_corrupt(tmp_path, monkeypatch):
    first = EventDigits(tmp_path, "test", camera=SMALL, progress=False)
    real_open = open

    def guarded(path, *args, **kwargs):
        if Path(path) == first.cache_path:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded)
    with pytest.raises(CorruptCacheError, match="cannot read the event cache .* \\(permission denied\\)") as error:
        EventDigits(tmp_path, "test", camera=SMALL, progress=False)
    assert repr(str(first.cache_path)) in str(error.value)


def test_unreadable_sample_file_is_named(tmp_path, monkeypatch):
    from event_file_formats import nmnist_bytes

    from spikegate.datasets import CorruptDatasetFileError

    for split in ("Train", "Test"):
        (tmp_path / "NMNIST" / split / "0").mkdir(parents=True)
        (tmp_path / "NMNIST" / split / "0" / "00001.bin").write_bytes(nmnist_bytes([1], [2], [1], [10]))
    locked = tmp_path / "NMNIST" / "Test" / "0" / "00001.bin"
    real = Path.read_bytes

    def read_bytes(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.warns(UserWarning, match="partial copy"), \
            pytest.raises(CorruptDatasetFileError, match="cannot read .*Permission denied") as error:
        build(NMNISTData, tmp_path, tmp_path)
    assert repr(str(locked)) in one_line(error)
