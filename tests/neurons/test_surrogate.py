"""Each surrogate is the derivative of a known smooth primitive; autograd of the primitive is the
independent reference."""

import math

import pytest
import torch

from spikegate.neurons.surrogate import SURROGATES, get_surrogate, spike

PRIMITIVES = {
    # name: (params, primitive F with F' = surrogate)
    "atan": ({"alpha": 3.0}, lambda x: torch.atan(math.pi / 2 * 3.0 * x) / math.pi),
    "sigmoid": ({"alpha": 5.0}, lambda x: torch.sigmoid(5.0 * x)),
    "fast_sigmoid": ({"slope": 10.0}, lambda x: x / (1 + 10.0 * x.abs())),
    # integral of gamma*max(0, 1-|x|/w)/w: a quadratic inside the width, flat (gamma/2) outside
    "triangle": (
        {"gamma": 0.5, "width": 2.0},
        lambda x: torch.where(x.abs() < 2.0, 0.5 / 2.0 * (x - x * x.abs() / (2 * 2.0)), 0.25 * x.sign()),
    ),
    "ste": ({}, lambda x: x),
}


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_surrogate_is_derivative_of_primitive(name):
    params, primitive = PRIMITIVES[name]
    x = torch.linspace(-3.1, 3.1, 401, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(primitive(x).sum(), x)
    got = get_surrogate(name, **params).grad(x.detach())
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_spike_is_heaviside_with_surrogate_backward(name):
    params, primitive = PRIMITIVES[name]
    x = torch.tensor([-2.5, -1.0, -1e-7, 0.0, 1e-7, 0.7], dtype=torch.float64, requires_grad=True)
    s = spike(x, get_surrogate(name, **params))
    assert s.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    (g,) = torch.autograd.grad(s.sum(), x)
    (expected,) = torch.autograd.grad(primitive(x).sum(), x)
    torch.testing.assert_close(g, expected)


def test_atan_matches_spikingjelly():
    sj = pytest.importorskip("spikingjelly.activation_based.surrogate")
    x = torch.linspace(-2, 2, 101, requires_grad=True)
    (g_sj,) = torch.autograd.grad(sj.ATan(alpha=2.0)(x).sum(), x)
    torch.testing.assert_close(get_surrogate("atan").grad(x.detach()), g_sj)


def test_defaults_follow_design():
    assert get_surrogate("atan").alpha == 2.0
    assert get_surrogate("sigmoid").alpha == 4.0
    assert get_surrogate("fast_sigmoid").slope == 25.0
    tri = get_surrogate("triangle")
    assert (tri.gamma, tri.width) == (0.3, 1.0)


def test_bad_surrogates_name_the_argument():
    with pytest.raises(ValueError, match=r"surrogate: expected one of .*'bogus'"):
        get_surrogate("bogus")
    with pytest.raises(TypeError, match="surrogate"):
        get_surrogate(3)
    with pytest.raises(ValueError, match=r"surrogate.alpha: expected a finite value > 0, got -1.0"):
        get_surrogate("atan", alpha=-1.0)
    with pytest.raises(TypeError, match="bad parameters"):
        get_surrogate("atan", slope=2.0)
