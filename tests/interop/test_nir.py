"""NIR export and import: round trip through a .nir file, the exported graph against NIR's LIF
equation stepped by hand, Norse reading our export, and named errors for what does not map."""

from __future__ import annotations

from functools import partial

import nir
import numpy as np
import pytest
import torch
from torch import nn

from spikegate.interop import NIRMappingError, from_nir, to_nir
from spikegate.models import SpikingConvNet, SpikingMLP
from spikegate.neurons import LIF, SpikesOnly

DT = 1e-3


def trained_like_mlp(input_shape=(12,), hidden=(24, 16), learn_beta=False, seed=0) -> SpikingMLP:
    """An MLP with weights large enough that every layer spikes often, as a trained one does."""
    torch.manual_seed(seed)
    model = SpikingMLP(input_shape, 5, partial(LIF, beta=0.8, threshold=0.7, learn_beta=learn_beta),
                       hidden=list(hidden))
    with torch.no_grad():
        for layer in model.body:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(3)
            if learn_beta and isinstance(layer, SpikesOnly):  # a different beta per neuron
                layer.neuron.beta_logit.uniform_(-1, 3)
    return model


def layer_spikes(model: SpikingMLP, x: torch.Tensor) -> list[torch.Tensor]:
    spikes = []
    hooks = [m.register_forward_hook(lambda m, i, out: spikes.append(out))
             for m in model.body if isinstance(m, SpikesOnly)]
    with torch.no_grad():
        model.body(x)
    for hook in hooks:
        hook.remove()
    return spikes


def inputs(shape=(12,), steps=25, batch=3, seed=1) -> torch.Tensor:
    return torch.rand((steps, batch, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("input_shape, learn_beta", [((12,), False), ((12,), True), ((2, 3, 2), False)])
def test_round_trip_through_a_file_gives_the_same_spikes(tmp_path, input_shape, learn_beta):
    model = trained_like_mlp(input_shape, learn_beta=learn_beta)
    x = inputs(input_shape)
    path = tmp_path / "net.nir"
    nir.write(path, to_nir(model, x))
    back = from_nir(nir.read(path))
    expected, got = layer_spikes(model, x), layer_spikes(back, x)
    assert all(0.05 < s.mean() < 0.95 for s in expected)  # every layer is active
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x))


def euler_lif_graph(graph: nir.NIRGraph, x: torch.Tensor) -> list[np.ndarray]:
    """The graph stepped by hand: Affine, then NIR's LIF ``tau dv/dt = (v_leak - v) + r I`` with one
    forward-Euler step of DT per input step, spiking at ``v >= v_threshold`` and setting
    ``v = v_reset``; returns each LIF node's spikes ``[T, B, N]``."""
    order, node = [], "input"
    following = dict(graph.edges)
    while node in following:
        node = following[node]
        order.append(graph.nodes[node])
    h = x.double().flatten(2).numpy()
    recorded = []
    for n in order:
        if isinstance(n, nir.Affine):
            h = h @ n.weight.T + n.bias
        elif isinstance(n, nir.LIF):
            v, out = np.zeros(h.shape[1:]), np.zeros(h.shape)
            for t in range(h.shape[0]):
                v = v + DT / n.tau * ((n.v_leak - v) + n.r * h[t])
                out[t] = v >= n.v_threshold
                v = np.where(out[t] > 0, n.v_reset, v)
            h = out
            recorded.append(out)
    return recorded


def test_exported_graph_follows_nir_lif_equation():
    model = trained_like_mlp(learn_beta=True)
    x = inputs()
    by_hand = euler_lif_graph(to_nir(model, dt=DT), x)
    for ours, reference in zip(layer_spikes(model, x), by_hand):
        mismatches = int((ours.numpy() != reference).sum())
        assert mismatches <= ours.numel() // 1000  # float64 vs float32: a rare tie at threshold


def norse_spikes(graph: nir.NIRGraph, x: torch.Tensor) -> list[torch.Tensor]:
    import norse.torch

    executor = norse.torch.from_nir(graph, dt=DT)
    names = [k for k in graph.nodes if k.startswith("lif_")]
    spikes = {name: [] for name in names}
    for name in names:
        getattr(executor, name).register_forward_hook(
            lambda m, i, out, name=name: spikes[name].append(out[0]))
    state = None
    with torch.no_grad():
        for x_t in x:
            _, state = executor(x_t, state)
    return [torch.stack(spikes[name]) for name in names]


@pytest.mark.filterwarnings("ignore:nirtorch.load is being deprecated:DeprecationWarning")
def test_norse_reads_our_export_and_spikes_the_same():
    """Norse 1.1's LIFBoxCell decays its input and ignores ``r``: ``unit_r=True`` folds ``r`` into
    the weights, so Norse computes our network."""
    model = trained_like_mlp()
    x = inputs()
    theirs = norse_spikes(to_nir(model, unit_r=True), x)
    for ours, norse_layer in zip(layer_spikes(model, x), theirs):
        assert ours.sum() > 50
        torch.testing.assert_close(norse_layer, ours, rtol=0, atol=0)


def test_graph_with_unit_r_imports_to_the_same_network():
    model = trained_like_mlp(learn_beta=True)
    x = inputs()
    back = from_nir(to_nir(model, unit_r=True))
    for a, b in zip(layer_spikes(model, x), layer_spikes(back, x)):
        assert int((a != b).sum()) <= a.numel() // 1000  # r folded in and out again: rounding


def test_neuron_without_a_mapping_is_named():
    class Spiky(nn.Module):  # stands for any neuron type NIR has no node for
        def __init__(self, shape):
            super().__init__()

        def forward(self, x):
            return (x > 0).float(), x[-1]

    model = SpikingMLP((4,), 2, Spiky, hidden=[3])
    with pytest.raises(NIRMappingError, match="layer body.2 is a Spiky neuron, which has no NIR mapping"):
        to_nir(model)


@pytest.mark.parametrize("reset", ["subtract", "none"])
def test_lif_without_zero_reset_is_refused(reset):
    model = SpikingMLP((4,), 2, partial(LIF, beta=0.5, reset=reset), hidden=[3])
    with pytest.raises(NIRMappingError, match=f"reset='{reset}'"):
        to_nir(model)


def test_conv_net_is_refused():
    model = SpikingConvNet((2, 8, 8), 3, partial(LIF, beta=0.5), channels=[4])
    with pytest.raises(NIRMappingError, match="SpikingConvNet"):
        to_nir(model)


def test_graph_nodes_without_a_mapping_are_named():
    graph = to_nir(trained_like_mlp())
    graph.nodes["lif_0"] = nir.IF(r=np.ones(24), v_threshold=np.ones(24))
    with pytest.raises(NIRMappingError, match="node 'lif_0' is a IF"):
        from_nir(graph)
    leaky = to_nir(trained_like_mlp())
    leaky.nodes["lif_1"].v_leak = np.full(16, 0.1)
    with pytest.raises(NIRMappingError, match="'lif_1' has v_leak != 0"):
        from_nir(leaky)


def test_sample_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="x: expected a time-major batch"):
        to_nir(trained_like_mlp(), torch.zeros(3, 2, 7))
