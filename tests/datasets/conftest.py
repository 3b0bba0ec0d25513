"""The path a user's configuration takes to a recorded dataset: Hydra config -> instantiate ->
container -> DataLoader."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from torch.utils.data import DataLoader


@pytest.fixture
def load_config():
    """``load(dataset, root, cache_dir, *overrides) -> (container, first train batch)`` through
    the Hydra config group a user selects with ``dataset=<name>``."""

    def load(name: str, root: Path, cache_dir: Path, *overrides: str, partial_ok: bool = True):
        with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
            cfg = compose(config_name="config", overrides=[
                f"dataset={name}", f"dataset.root={root}", f"dataset.cache_dir={cache_dir}",
                "+dataset.progress=false", *overrides,
            ])
        with warnings.catch_warnings():
            if partial_ok:
                warnings.simplefilter("ignore")
            data = instantiate(cfg.dataset)
        loader = DataLoader(data.train, batch_size=64, shuffle=False)
        x, y = next(iter(loader))
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        return data, (x, y)

    return load
