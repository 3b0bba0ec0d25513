"""The standard-library byte corpus: file selection, the path-hash split, windows, errors."""

from __future__ import annotations

import hashlib

import pytest
import torch

from spikegate.datasets.pysource import (
    ByteWindows,
    PythonSourceData,
    load_source_bytes,
    python_source_files,
    source_split,
    stdlib_root,
)


def expected_split(rel, percent):
    h = hashlib.sha256(rel.encode()).digest()
    return "validation" if int.from_bytes(h[:4], "big") / 2**32 * 100 < percent else "train"


@pytest.fixture()
def tree(tmp_path):
    files = {
        "a.py": b"print(1)\n", "pkg/b.py": b"x = 2", "pkg/sub/c.py": b"y=3\n", "notes.txt": b"no",
        "site-packages/d.py": b"installed", "__pycache__/e.py": b"cache", "z/f.py": b"def f(): pass",
    }
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    return tmp_path, files


def test_files_sorted_relative_posix_without_packages(tree):
    root, _ = tree
    assert python_source_files(root) == ["a.py", "pkg/b.py", "pkg/sub/c.py", "z/f.py"]


def test_split_is_a_hash_of_the_relative_path(tree):
    root, files = tree
    rels = python_source_files(root)
    for percent in (10.0, 50.0, 90.0):
        assert [source_split(r, percent) for r in rels] == [expected_split(r, percent) for r in rels]
    for split in ("train", "validation"):
        members = [r for r in rels if expected_split(r, 50.0) == split]
        if not members:
            continue
        want = b"".join(files[r] + b"\n" for r in members)
        if len(want) >= 2:
            got = load_source_bytes(split, validation_percent=50.0, root=root)
            assert bytes(got.tolist()) == want


def test_stdlib_split_is_disjoint_and_about_ten_percent():
    rels = python_source_files()
    assert len(rels) > 100 and not any("site-packages" in r for r in rels)
    validation = [r for r in rels if source_split(r) == "validation"]
    assert 0.05 < len(validation) / len(rels) < 0.15
    assert [r for r in validation] == [r for r in rels if expected_split(r, 10.0) == "validation"]
    assert (stdlib_root() / rels[0]).is_file()


def test_windows_are_next_byte_pairs():
    data = torch.arange(23, dtype=torch.uint8)
    windows = ByteWindows(data, 5)
    assert len(windows) == 4
    x, y = windows[3]
    assert x.dtype == torch.int64 and x.tolist() == [15, 16, 17, 18, 19]
    assert y.tolist() == [16, 17, 18, 19, 20]
    with pytest.raises(IndexError, match="index: expected 0 <= index < 4, got 4"):
        windows[4]


def test_data_container_and_errors(tree):
    root, _ = tree
    data = PythonSourceData(context=4, validation_percent=50.0, root=root)
    assert data.vocab_size == 256 and data.context == 4
    x, y = data.train[0]
    assert torch.equal(x[1:], y[:-1])
    with pytest.raises(ValueError, match="context: expected at most"):
        ByteWindows(torch.zeros(3, dtype=torch.uint8), 5)
    with pytest.raises(ValueError, match="validation_percent: expected a value in"):
        load_source_bytes("train", validation_percent=100.0, root=root)
    with pytest.raises(ValueError, match="split: expected one of"):
        load_source_bytes("test", root=root)
    with pytest.raises(FileNotFoundError, match="root: expected a directory"):
        python_source_files(root / "missing")


def test_max_bytes_cuts_the_stream():
    got = load_source_bytes("validation", max_bytes=1000)
    assert got.numel() == 1000 and got.dtype == torch.uint8
