"""LIF in nn.Sequential (LIFSpikes, SpikesOnly) and the meaning of v0 for a stateful LIF, against
the LIF equations written out here as a float64 loop."""

import numpy as np
import pytest
import torch
from torch import nn

from spikegate.energy import estimate_energy
from spikegate.neurons import LIF, LIFSpikes, SpikesOnly


def lif_loop(x, v0, beta, threshold=1.0):
    """``u = beta v + x``, ``s = u >= threshold``, reset to zero; numpy float64, step by step."""
    x = x.detach().double().numpy()
    v = np.zeros(x.shape[1:]) if v0 is None else v0.detach().double().numpy()
    spikes = np.zeros_like(x)
    for t in range(x.shape[0]):
        u = beta * v + x[t]
        spikes[t] = u >= threshold
        v = u * (1 - spikes[t])
    return spikes, v


def test_the_issue_s_stack_runs_and_its_spikes_follow_the_equations():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 128), LIFSpikes(beta=0.9), nn.Linear(128, 10))
    x = torch.randn(12, 4, 64, dtype=torch.float64)
    net = net.double()
    logits = net(x)
    assert logits.shape == (12, 4, 10)
    hidden = net[1](net[0](x))
    expected, _ = lif_loop(net[0](x), None, 0.9)
    np.testing.assert_array_equal(hidden.detach().numpy(), expected)
    logits.sum().backward()  # the surrogate gradient reaches the first layer
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0


def test_spikes_only_wraps_any_neuron_and_keeps_its_state_dict_names():
    torch.manual_seed(1)
    x = torch.randn(6, 3, 5)
    wrapped = SpikesOnly(LIF(beta=0.8, learn_beta=True, shape=(5,)))
    assert torch.equal(wrapped(x), wrapped.neuron(x)[0])
    assert list(wrapped.state_dict()) == ["neuron.beta_logit"]
    assert isinstance(LIFSpikes(beta=0.5), LIF)  # exported to NIR and priced as a LIF
    with pytest.raises(TypeError, match=r"neuron: expected an nn.Module .*got function"):
        SpikesOnly(lambda x: x)


def test_lif_spikes_is_priced_by_the_energy_estimator_like_lif():
    torch.manual_seed(2)
    x = torch.rand(8, 2, 16)
    direct = nn.Sequential(nn.Linear(16, 32), LIFSpikes(beta=0.9), nn.Linear(32, 4))
    wrapped = nn.Sequential(nn.Linear(16, 32), SpikesOnly(LIF(beta=0.9)), nn.Linear(32, 4))
    wrapped.load_state_dict(direct.state_dict())
    a, b = estimate_energy(direct, x), estimate_energy(wrapped, x)
    assert a.energy_pj == pytest.approx(b.energy_pj) and a.synops == pytest.approx(b.synops)
    assert a.synops > 0


def test_v0_given_to_a_stateful_lif_starts_that_call_and_the_state_continues_from_it():
    torch.manual_seed(4)
    x1, x2 = torch.randn(5, 2, 7, dtype=torch.float64), torch.randn(4, 2, 7, dtype=torch.float64)
    v0 = torch.rand(2, 7, dtype=torch.float64)
    lif = LIF(beta=0.7, stateful=True)
    lif(torch.randn(3, 2, 7, dtype=torch.float64))  # some kept state that v0 must replace
    spikes1, v1 = lif(x1, v0)
    spikes2, v2 = lif(x2)
    expected, v_expected = lif_loop(torch.cat([x1, x2]), v0, 0.7)
    np.testing.assert_array_equal(torch.cat([spikes1, spikes2]).numpy(), expected)
    np.testing.assert_allclose(v2.numpy(), v_expected, rtol=0, atol=1e-12)
    assert torch.equal(lif.v, v2)
