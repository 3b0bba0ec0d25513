"""Every recorded-dataset config composes, names a container class, and its paired model config
builds and runs on the input shape the dataset's frames have."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import get_class, instantiate

from spikegate.datasets import EventFrames, RecordedEventData

PAIRS = [
    ("nmnist", "conv_nmnist", (2, 34, 34)),
    ("dvsgesture", "conv_dvsgesture", (2, 32, 32)),
    ("dvsgesture_tess", "conv_dvsgesture", (2, 32, 32)),
    ("shd", "mlp_audio", (140,)),
    ("ssc", "mlp_audio", (140,)),
    ("cifar10dvs", "conv_cifar10dvs", (2, 64, 64)),
    ("cifar10dvs_tess", "conv_cifar10dvs", (2, 48, 48)),
    ("pokerdvs", "conv_pokerdvs", (2, 35, 35)),
]


@pytest.mark.parametrize("dataset, model, input_shape", PAIRS)
def test_config_gives_frames_its_model_takes(dataset, model, input_shape):
    with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"dataset={dataset}", f"model={model}"])
    assert cfg.dataset.root is None  # $SPIKEGATE_DATA or ~/.cache/spikegate
    cls = get_class(cfg.dataset._target_)
    assert issubclass(cls, RecordedEventData)
    frames = EventFrames(cls.sensor_size, cfg.dataset.time_steps, cfg.dataset.time_window,
                         cfg.dataset.denoise_us, cfg.dataset.spatial_factor, cfg.dataset.binary)
    assert cls.sample_shape(frames) == input_shape
    net = instantiate(cfg.model, input_shape=input_shape, num_classes=len(cls.classes),
                      neuron=instantiate(cfg.neuron))
    with torch.no_grad():
        logits = net(torch.zeros(2, 1, *input_shape))
    assert logits.shape == (1, len(cls.classes))
