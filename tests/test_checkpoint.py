import json

import pytest
import torch

from spikegate.atomic import atomic_write, save_json
from spikegate.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    save_json(target, {"a": 1})

    def crash(file):
        file.write(b'{"a": 2, "trunc')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, crash)
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_truncated_checkpoint_is_reported(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"w": torch.ones(100), "fingerprint": {}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)


def test_fingerprint_mismatch(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", {"fingerprint": {"model": {"hidden": [8]}}})
    assert load_checkpoint(tmp_path, fingerprint={"model": {"hidden": [8]}})
    with pytest.raises(CheckpointError, match="another configuration"):
        load_checkpoint(tmp_path, fingerprint={"model": {"hidden": [16]}})
