"""UltraLIF family (``spikegate.neurons.ultralif``): the equations, the paper's properties, the
released-code switches, the modules and the errors.

References are written out here independently: the definitions step by step with naive
``log(exp + exp)`` at moderate values, the authors' per-step formulation, and the tropical
max-plus recurrences; bounds are those the paper proves (Prop. 5.2, Cor. 5.3, Prop. 5.4).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikegate.neurons import (
    LIF,
    UltraDLIF,
    UltraDPLIF,
    UltraLIF,
    UltraPLIF,
    relaxed_neurons,
    soft_max_plus,
    tropical,
    ultradlif_sequence,
    ultralif_sequence,
)

f64 = torch.float64


def naive_ultralif(i, v0, eps, tau0, theta, reset=True):
    """Def. 4.1 literally, in float64 (no stabilisation: inputs stay moderate)."""
    v = v0.clone()
    out = []
    for x in i:
        u = eps * torch.log(torch.exp((v + math.log(tau0)) / eps) + torch.exp(x / eps))
        s = 1 / (1 + torch.exp(-(u - theta) / eps))
        v = u * (1 - s) if reset else u
        out.append(s)
    return torch.stack(out), v


def naive_ultradlif(i, v0, eps, tau0, theta, reset=True):
    """Def. 4.2 literally: neighbours k-1, k+1 along the last dim, wrapping around."""
    n = i.shape[-1]
    v = v0.clone()
    out = []
    for x in i:
        u = torch.empty_like(v)
        for k in range(n):
            terms = v[..., (k - 1) % n], v[..., k] + math.log(tau0), v[..., (k + 1) % n]
            u[..., k] = eps * torch.log(sum(torch.exp(t / eps) for t in terms)) + x[..., k]
        s = 1 / (1 + torch.exp(-(u - theta) / eps))
        v = u * (1 - s) if reset else u
        out.append(s)
    return torch.stack(out), v


def tropical_membranes(coupled, i, v0, tau0, theta=None):
    """The eps -> 0 limit, per step: ``u[t] = max(v + log tau0, i)`` (UltraLIF) or
    ``max(v_{k-1}, v_k + log tau0, v_{k+1}) + i`` (UltraDLIF); with ``theta`` the Heaviside zero
    reset follows, without it the reset is off."""
    v, us = v0.clone(), []
    for x in i:
        if coupled:
            centre = v + math.log(tau0)
            u = torch.maximum(torch.maximum(torch.roll(v, 1, -1), centre), torch.roll(v, -1, -1)) + x
        else:
            u = torch.maximum(v + math.log(tau0), x)
        v = u if theta is None else torch.where(u >= theta, torch.zeros_like(u), u)
        us.append(u)
    return us


def _inputs(shape=(6, 3, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=f64) * 1.5 + 0.3,
            torch.randn(shape[1:], generator=g, dtype=f64))


# --------------------------------------------------------------------------------------------- #
# Equations
# --------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("reset", [True, False])
def test_ultralif_follows_definition_4_1(reset):
    i, v0 = _inputs()
    got = ultralif_sequence(i, v0, eps=0.7, tau0=0.8, threshold=0.5, reset=reset)
    expected = naive_ultralif(i, v0, 0.7, 0.8, 0.5, reset)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reset", [True, False])
def test_ultradlif_follows_definition_4_2(reset):
    i, v0 = _inputs()
    got = ultradlif_sequence(i, v0, eps=0.6, tau0=0.9, threshold=0.5, reset=reset)
    expected = naive_ultradlif(i, v0, 0.6, 0.9, 0.5, reset)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_released_code_switches_reproduce_the_authors_per_step_neurons():
    """The released library's UltraDLIF (linear leak, LSE of the leaked membrane's neighbours,
    spike at threshold 0, pre-LSE membrane reset) and its UltraLIF (threshold 0), step by step."""
    i, v0 = _inputs(seed=4)
    eps, tau = 0.9, 0.9
    v = torch.zeros_like(v0)
    spikes = []
    for x in i:
        v = tau * v + x
        stack = torch.stack([torch.roll(v, 1, -1), v, torch.roll(v, -1, -1)], -1)
        m = stack.max(-1, keepdim=True).values
        v_max = m.squeeze(-1) + eps * torch.logsumexp((stack - m) / eps, -1)
        s = torch.sigmoid(v_max / eps)
        v = v * (1 - s)
        spikes.append(s)
    got = ultradlif_sequence(i, eps=eps, tau0=tau, threshold=0.0, leak_before_lse=True, reset_pre_lse=True)
    torch.testing.assert_close(got[0], torch.stack(spikes), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], v, rtol=1e-12, atol=1e-12)

    v = torch.zeros_like(v0)
    spikes = []
    for x in i:
        stack = torch.stack([v + math.log(tau), x], -1)
        m = stack.max(-1, keepdim=True).values
        v = m.squeeze(-1) + eps * torch.logsumexp((stack - m) / eps, -1)
        s = torch.sigmoid(v / eps)
        v = v * (1 - s)
        spikes.append(s)
    got = ultralif_sequence(i, eps=eps, tau0=tau, threshold=0.0)
    torch.testing.assert_close(got[0], torch.stack(spikes), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn, extra", [
    (ultralif_sequence, {}),
    (ultradlif_sequence, {}),
    (ultradlif_sequence, {"leak_before_lse": True}),
    (ultradlif_sequence, {"leak_before_lse": True, "reset_pre_lse": True}),
])
def test_gradcheck_float64_all_inputs(fn, extra):
    i, v0 = _inputs((4, 2, 4), seed=2)
    i.requires_grad_(), v0.requires_grad_()
    eps = torch.tensor([0.6, 0.9, 1.3, 0.8], dtype=f64, requires_grad=True)   # per neuron
    tau = torch.tensor(0.85, dtype=f64, requires_grad=True)                    # scalar

    def f(i, v0, eps, tau):
        return fn(i, v0, eps=eps, tau0=tau, threshold=0.5, backend="torch", **extra)

    assert torch.autograd.gradcheck(f, (i, v0, eps, tau))


# --------------------------------------------------------------------------------------------- #
# The paper's properties
# --------------------------------------------------------------------------------------------- #


@settings(max_examples=60, deadline=None)
@given(xs=st.lists(st.floats(-50, 50), min_size=1, max_size=6), eps=st.floats(0.01, 10))
def test_lse_lies_between_max_and_max_plus_eps_log_n(xs, eps):
    lse = float(soft_max_plus(torch.tensor(xs, dtype=f64), eps))
    top = max(xs)
    assert top - 1e-9 <= lse <= top + eps * math.log(len(xs)) + 1e-9


@pytest.mark.parametrize("coupled, n_terms", [(False, 2), (True, 3)], ids=["prop-5.2", "cor-5.3"])
@pytest.mark.parametrize("eps", [0.05, 0.3, 1.0])
def test_error_to_the_tropical_membrane_grows_at_most_eps_log_n_per_step(coupled, n_terms, eps):
    """Reset off: ``|V_eps(t) - V_trop(t)| <= t * eps * log 2`` (UltraLIF) and ``log 3``
    (UltraDLIF); the hard mode is the tropical recurrence itself."""
    fn = ultradlif_sequence if coupled else ultralif_sequence
    i, v0 = _inputs((10, 3, 7), seed=6)
    trop = tropical_membranes(coupled, i, v0, 0.8)
    gaps = []
    for t in range(1, i.shape[0] + 1):
        _, v_eps = fn(i[:t], v0, eps=eps, tau0=0.8, reset=False)
        _, v_hard = fn(i[:t], v0, eps=eps, tau0=0.8, reset=False, hard=True)
        torch.testing.assert_close(v_hard, trop[t - 1], rtol=0, atol=1e-12)
        gaps.append(float((v_eps - trop[t - 1]).abs().max()))
        assert gaps[-1] <= t * eps * math.log(n_terms) + 1e-12
    assert max(gaps) > 0.05 * eps  # the bound is not met trivially


@pytest.mark.parametrize("eps", [0.1, 0.5, 2.0])
def test_prop_5_4_spike_gradient_is_positive_and_at_most_one_over_4eps(eps):
    """T = 1: ds/di = ds/du * du/di with du/di in (0, 1]; the supremum 1/(4 eps) is reached at
    u = threshold when the input dominates the LSE."""
    i = torch.linspace(-3, 3, 601, dtype=f64).reshape(1, 1, -1).requires_grad_()
    v0 = torch.full((1, 601), -30.0, dtype=f64)    # a = v0 + log tau0 far below: du/di ~ 1
    spikes, _ = ultralif_sequence(i, v0, eps=eps, tau0=0.9, threshold=0.5)
    (grad,) = torch.autograd.grad(spikes.sum(), i)
    assert (grad > 0).all()
    assert float(grad.max()) <= 1 / (4 * eps) + 1e-12
    assert float(grad.max()) >= 0.99 / (4 * eps)


@pytest.mark.parametrize("coupled", [False, True], ids=["ultralif", "ultradlif"])
def test_relaxed_neuron_converges_to_the_hard_one_as_eps_goes_to_0(coupled):
    """Away from ties (every step's hard membrane at least 0.05 from the threshold in the row: the
    relaxed neuron cannot converge where the limit itself jumps), spikes and membrane converge."""
    fn = ultradlif_sequence if coupled else ultralif_sequence
    i, v0 = _inputs((6, 1024, 4), seed=9)
    u = torch.stack(tropical_membranes(coupled, i, v0, 0.9, theta=0.5))
    clear = ((u - 0.5).abs() > 0.05).all(0).all(-1)     # rows [B]
    assert int(clear.sum()) >= 5
    hard_s, hard_v = fn(i, v0, eps=1.0, tau0=0.9, hard=True)
    errors = []
    for eps in (0.1, 0.03, 0.01, 0.003):
        s, v = fn(i, v0, eps=eps, tau0=0.9)
        errors.append(float((s - hard_s)[:, clear].abs().max() + (v - hard_v)[clear].abs().max()))
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 1e-2 * errors[0] and errors[-1] < 0.05


# --------------------------------------------------------------------------------------------- #
# Modules
# --------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("cls", [UltraLIF, UltraPLIF, UltraDLIF, UltraDPLIF])
def test_modules_learn_eps_and_p_variants_learn_tau0(cls):
    neuron = cls(shape=(5,))
    x = torch.randn(4, 3, 5)
    spikes, v_last = neuron(x)
    assert spikes.shape == x.shape and v_last.shape == (3, 5)
    assert ((spikes > 0) & (spikes < 1)).all()
    (spikes.sum() + v_last.sum()).backward()
    assert neuron.log_eps.grad is not None and float(neuron.eps.detach()) == pytest.approx(1.0)
    learns_tau = cls in (UltraPLIF, UltraDPLIF)
    assert (neuron.tau0_raw is not None) == learns_tau
    if learns_tau:
        assert neuron.tau0_raw.grad is not None and float(neuron.tau0.detach()) == pytest.approx(0.9)
    cost = neuron.neuron_cost()
    assert cost.relaxed and cost.transcendentals >= 3


def test_eps_is_clamped_to_the_paper_range_and_fix_eps_overrides_it():
    neuron = UltraLIF(eps=1.0)
    with torch.no_grad():
        neuron.log_eps.fill_(math.log(50.0))
    assert float(neuron.eps.detach()) == pytest.approx(20.0)
    neuron.fix_eps(0.02)
    assert neuron.eps == pytest.approx(0.02) and not neuron.log_eps.requires_grad
    copy = UltraLIF()
    copy.load_state_dict(neuron.state_dict())
    assert copy.eps == pytest.approx(0.02)   # a fixed or annealed eps survives a checkpoint


def test_per_neuron_parameters_and_sigmoid_tau():
    neuron = UltraPLIF(shape=(4,), per_neuron=True, tau_param="sigmoid", tau0=0.7)
    assert neuron.log_eps.shape == (4,) and neuron.tau0_raw.shape == (4,)
    torch.testing.assert_close(neuron.tau0, torch.full((4,), 0.7))
    spikes, _ = neuron(torch.randn(3, 2, 4))
    spikes.sum().backward()
    assert neuron.tau0_raw.grad.shape == (4,)


def test_tropical_switches_every_relaxed_neuron_to_hard_spikes_and_back():
    model = torch.nn.Sequential(UltraLIF(shape=(6,)), UltraDLIF(shape=(6,)))
    x = torch.randn(5, 2, 6)
    with torch.no_grad(), tropical(model):
        assert all(n.hard for n in relaxed_neurons(model))
        for n in relaxed_neurons(model):
            spikes, _ = n(x)
            assert set(spikes.unique().tolist()) <= {0.0, 1.0}
            assert not n.neuron_cost().relaxed
    assert not any(n.hard for n in relaxed_neurons(model))


def test_relaxed_lif_uses_the_lif_beta_as_the_leak():
    lif = LIF(beta=0.8, threshold=1.0, shape=(5,))
    relaxed = UltraLIF.from_lif(lif, eps=0.5)
    i, _ = _inputs((4, 2, 5), seed=1)
    got = relaxed(i.float())
    expected = naive_ultralif(i, torch.zeros(2, 5, dtype=f64), 0.5, 0.8, 1.0)
    torch.testing.assert_close(got[0], expected[0].float(), rtol=1e-5, atol=1e-6)
    learned = UltraLIF.from_lif(LIF(beta=0.8, learn_beta=True, shape=(5,)))
    torch.testing.assert_close(learned.tau0, torch.full((5,), 0.8))
    with pytest.raises(ValueError, match="reset"):
        UltraLIF.from_lif(LIF(reset="subtract"))


# --------------------------------------------------------------------------------------------- #
# Errors (item 7)
# --------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("fn", [ultralif_sequence, ultradlif_sequence])
def test_errors_name_the_argument_what_was_expected_and_what_came(fn):
    x = torch.randn(3, 2, 4)
    with pytest.raises(ValueError, match=r"eps: expected a finite value > 0, got 0\.0"):
        fn(x, eps=0.0)
    with pytest.raises(ValueError, match=r"eps: expected finite values > 0, got minimum -1"):
        fn(x, eps=torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"tau0: expected a value in \(0, 1\], got 1\.5"):
        fn(x, tau0=1.5)
    with pytest.raises(ValueError, match=r"tau0: expected values in \(0, 1\], got range \[0\.0"):
        fn(x, tau0=torch.tensor(0.0))
    with pytest.raises(ValueError, match="i: expected finite values, got NaN or Inf"):
        fn(torch.tensor([[[1.0, float("nan"), 0.0, 1.0]]]))
    with pytest.raises(ValueError, match="hard: .* no gradient, but i require grad"):
        fn(x.clone().requires_grad_(), hard=True)
    with torch.no_grad():
        fn(x.clone().requires_grad_(), hard=True)   # fine without a graph
    with pytest.raises(ValueError, match=r"i: expected T >= 1"):
        fn(torch.zeros(0, 2, 4))


def test_ultradlif_needs_three_neurons_per_row_and_the_pre_lse_reset_needs_the_leak_first():
    with pytest.raises(ValueError, match=r"N >= 3, got shape \(3, 2, 2\)"):
        ultradlif_sequence(torch.randn(3, 2, 2))
    with pytest.raises(ValueError, match=r"N >= 3, got shape \(3, 2\)"):
        ultradlif_sequence(torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"shape: UltraDLIF .* got shape \(2,\)"):
        UltraDLIF(shape=(2,))
    with pytest.raises(ValueError, match="reset_pre_lse: expected leak_before_lse=True"):
        ultradlif_sequence(torch.randn(3, 2, 4), reset_pre_lse=True)


def test_module_errors():
    with pytest.raises(ValueError, match=r"eps: expected a finite value > 0, got -1"):
        UltraLIF(eps=-1)
    with pytest.raises(ValueError, match=r"tau0: expected a value in \(0, 1\], got 0"):
        UltraPLIF(tau0=0)
    with pytest.raises(ValueError, match="tau_param: expected one of"):
        UltraPLIF(tau_param="softplus")
    with pytest.raises(ValueError, match=r"i: expected \[T, B, 4\]"):
        UltraLIF(shape=(4,))(torch.randn(3, 2, 5))
    with pytest.raises(ValueError, match="per_neuron: expected shape"):
        UltraLIF(per_neuron=True)
