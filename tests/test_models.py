import functools

import pytest
import torch

from spikegate.models import SpikingConvNet, SpikingMLP
from spikegate.neurons import LIF

NEURON = functools.partial(LIF, beta=0.9, backend="torch")


@pytest.mark.parametrize("cls, kwargs", [(SpikingMLP, {"hidden": (12, 8)}), (SpikingConvNet, {"channels": (4, 6)})])
def test_models_map_time_major_batches_to_logits(cls, kwargs):
    model = cls(input_shape=(2, 8, 8), num_classes=5, neuron=NEURON, **kwargs)
    x = (torch.rand(6, 3, 2, 8, 8) < 0.3).float()
    logits = model(x)
    assert logits.shape == (3, 5)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_model_output_depends_on_each_sample_only():
    model = SpikingMLP(input_shape=(1, 4, 4), num_classes=3, neuron=NEURON, hidden=(10,))
    x = (torch.rand(5, 4, 1, 4, 4) < 0.5).float()
    torch.testing.assert_close(model(x)[1:2], model(x[:, 1:2]))


def test_batch_major_input_is_rejected():
    model = SpikingMLP(input_shape=(1, 4, 4), num_classes=3, neuron=NEURON)
    with pytest.raises(ValueError, match=r"x: expected a time-major batch \[T, B, 1, 4, 4\].*transpose"):
        model(torch.zeros(5, 1, 4, 4))
