import functools

import pytest
import torch
import torch.nn.functional as F

from spikegate.models import SpikingVGG, WSConv2d
from spikegate.neurons import LIF

NEURON = functools.partial(LIF, beta=0.5, threshold=0.6, reset="subtract", backend="torch")


def test_weight_standardisation_is_the_authors_formula():
    torch.manual_seed(0)
    conv = WSConv2d(3, 4, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.gain.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]).view(4, 1, 1, 1))
    w = conv.weight.detach()
    expected = torch.empty_like(w)
    for o in range(4):
        flat = w[o].flatten()
        n = flat.numel()
        mean = flat.sum() / n
        var = ((flat - mean) ** 2).sum() / (n - 1)  # unbiased, as torch.var
        expected[o] = conv.gain[o].detach() * (w[o] - mean) / torch.sqrt(var * n + 1e-4)
    torch.testing.assert_close(conv.standardized_weight().detach(), expected)
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, expected, padding=1))


def test_vgg9_is_the_papers_stack():
    model = SpikingVGG((2, 32, 32), 11, NEURON)
    convs = [m for m in model.modules() if isinstance(m, WSConv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    neurons = [m for m in model.modules() if isinstance(m, LIF)]
    assert [n.shape for n in neurons][-1] == (512, 4, 4)
    assert model.body[-1].in_features == 512
    logits = model((torch.rand(2, 1, 2, 32, 32) < 0.2).float())
    assert logits.shape == (1, 11)


def test_small_vgg_trains_by_backprop():
    model = SpikingVGG((2, 8, 8), 3, NEURON, layers=(4, "M", 6, "M"), global_pool=2)
    model((torch.rand(4, 2, 2, 8, 8) < 0.3).float()).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("layers", [("M", 4), (4, "M", "M"), (4, 0), (4, "X")])
def test_bad_layer_lists_are_named(layers):
    with pytest.raises(ValueError, match="layers: expected"):
        SpikingVGG((2, 8, 8), 3, NEURON, layers=layers)
