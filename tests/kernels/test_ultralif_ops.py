"""UltraLIF / UltraDLIF as torch custom ops (``spikegate.kernels.ultralif_ops``): opcheck, the
reference op's own backward, torch.compile, torch.export and the eager route.

The reference ops run everywhere; the kernel ops on CUDA or on Triton's CPU interpreter
(tests/conftest.py sets it without a GPU), at small shapes. Gradients are checked against
autograd through per-step loops of the equations written out here, in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from spikegate.kernels.ultralif_ops import (
    ultra_reference,
    ultra_reference_backward,
    ultra_reference_forward,
)
from spikegate.neurons import UltraDLIF, UltraDPLIF, UltraLIF, UltraPLIF
from spikegate.neurons.checks import triton_interpreter_enabled

KERNELS = torch.cuda.is_available() or triton_interpreter_enabled()
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
needs_kernels = pytest.mark.skipif(not KERNELS, reason="needs CUDA or TRITON_INTERPRET=1")

# (coupled, leak_before_lse, reset_pre_lse)
VARIANTS = [
    pytest.param(False, False, False, id="ultralif"),
    pytest.param(True, False, False, id="ultradlif"),
    pytest.param(True, True, False, id="ultradlif-leak-first"),
    pytest.param(True, True, True, id="ultradlif-released"),
]


def _steps(i, v0, eps, tau, theta, reset, coupled, leak_before_lse, reset_pre_lse):
    """The equations of spikegate.neurons.ultralif, one step at a time in plain autograd ops:
    naive log-sum-exp (inputs stay moderate) and explicit neighbour indices."""
    v = torch.zeros_like(i[0]) if v0 is None else v0
    n = i.shape[-1]
    left = [(k - 1) % n for k in range(n)]
    right = [(k + 1) % n for k in range(n)]
    spikes = []
    for x in i:
        if not coupled:
            u = eps * torch.log(torch.exp((v + torch.log(tau)) / eps) + torch.exp(x / eps))
            base = u
        elif leak_before_lse:
            w = tau * v + x
            u = eps * torch.log(sum(torch.exp(t / eps) for t in (w[..., left], w, w[..., right])))
            base = w if reset_pre_lse else u
        else:
            terms = (v[..., left], v + torch.log(tau), v[..., right])
            u = eps * torch.log(sum(torch.exp(t / eps) for t in terms)) + x
            base = u
        s = 1 / (1 + torch.exp(-(u - theta) / eps))
        v = base * (1 - s) if reset else base
        spikes.append(s)
    return torch.stack(spikes), v


def _inputs(shape=(5, 2, 6), seed=0, dtype=torch.float32, per_neuron=True, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    i = (1.5 * torch.randn(shape, generator=g) + 0.4).to(dtype)
    v0 = 0.5 * torch.randn(shape[1:], generator=g).to(dtype)
    n = shape[-1]
    eps = (0.5 + torch.rand(n, generator=g)) if per_neuron else torch.tensor(0.7)
    tau = (0.6 + 0.4 * torch.rand(n, generator=g)) if per_neuron else torch.tensor(0.85)
    return [t.to(device) for t in (i, v0, eps.to(dtype), tau.to(dtype))]


def _forward_args(i, v0, eps, tau, coupled=False, leak=False, pre=False, *, reset=True,
                  hard=False, save=True):
    return (i, v0, eps, tau, 1.0, 1.0, coupled, 0.5, reset, hard, leak, pre, save)


def _backward_args(kept, grad_spikes, grad_v_last, v0, eps, tau, coupled=False, leak=False,
                   pre=False, *, need=(True, True, True, True), dtype=torch.float32):
    return (kept, grad_spikes, grad_v_last, v0, eps, tau, 1.0, 1.0, coupled, 0.5, True, False,
            leak, pre, *need, dtype)


# --------------------------------------------------------------------------------------------- #
# opcheck


@pytest.mark.parametrize("coupled, leak, pre", VARIANTS)
def test_opcheck_reference_ops(coupled, leak, pre):
    i, v0, eps, tau = _inputs(device="cpu")
    args = _forward_args(i.requires_grad_(), v0.requires_grad_(), eps.requires_grad_(),
                         tau.requires_grad_(), coupled, leak, pre)
    torch.library.opcheck(ultra_reference_forward, args)
    # floats for eps and tau0, no v0, no reset, inference (nothing kept, nothing needs a grad)
    torch.library.opcheck(ultra_reference_forward,
                          (i.detach(), None, None, None, 0.8, 0.9, coupled, 0.2, False, False,
                           leak, pre, False))
    _, _, kept = ultra_reference_forward(*args)
    g_s = torch.randn_like(i)
    torch.library.opcheck(ultra_reference_backward,
                          _backward_args(kept.detach(), g_s, None, v0.detach(), eps.detach(),
                                         tau.detach(), coupled, leak, pre))
    torch.library.opcheck(ultra_reference_backward,
                          _backward_args(kept.detach(), None, torch.randn_like(v0), None,
                                         eps.detach(), None, coupled, leak, pre,
                                         need=(True, False, True, False)))


@needs_kernels
@pytest.mark.parametrize("coupled, leak, pre", VARIANTS)
def test_opcheck_kernel_ops(coupled, leak, pre):
    from spikegate.kernels.ultralif import ultra_backward, ultra_forward

    i, v0, eps, tau = _inputs((3, 2, 4), seed=1)
    args = _forward_args(i.requires_grad_(), v0.requires_grad_(), eps.requires_grad_(),
                         tau.requires_grad_(), coupled, leak, pre)
    # The interpreter cannot run on fake tensors, but the ops' own fakes never call it; the
    # AOT-dispatch test traces through them and then runs the kernels on real tensors.
    torch.library.opcheck(ultra_forward, args)
    _, _, kept = ultra_forward(*args)
    torch.library.opcheck(ultra_backward,
                          _backward_args(kept.detach(), torch.randn_like(i), torch.randn_like(v0),
                                         v0.detach(), eps.detach(), tau.detach(), coupled, leak,
                                         pre))


# --------------------------------------------------------------------------------------------- #
# The reference op's own backward


@pytest.mark.parametrize("coupled, leak, pre", VARIANTS)
@pytest.mark.parametrize("reset", [True, False], ids=["reset", "no-reset"])
@pytest.mark.parametrize("per_neuron", [True, False], ids=["per-neuron", "scalar"])
@pytest.mark.parametrize("block", [None, 2], ids=["one-block", "blocks-of-2-steps"])
def test_reference_gradients_equal_the_unrolled_equations(coupled, leak, pre, reset, per_neuron,
                                                          block, monkeypatch):
    if block is not None:  # several time blocks: the carries between blocks are exercised
        import spikegate.neurons.ultralif as ultralif_module

        monkeypatch.setattr(ultralif_module, "_BLOCK_ELEMENTS", block * 2 * 6)
    i, v0, eps, tau = _inputs((7, 2, 6), seed=3, dtype=torch.float64, per_neuron=per_neuron,
                              device="cpu")
    g = torch.Generator().manual_seed(4)
    w_s = torch.randn(i.shape, generator=g, dtype=torch.float64)
    w_v = torch.randn(v0.shape, generator=g, dtype=torch.float64)
    results = []
    for fn in ("op", "unrolled"):
        leaves = [t.clone().requires_grad_() for t in (i, v0, eps, tau)]
        if fn == "op":
            spikes, v_last, _ = ultra_reference(*_forward_args(*leaves, coupled, leak, pre,
                                                               reset=reset))
        else:
            spikes, v_last = _steps(*leaves, 0.5, reset, coupled, leak, pre)
        loss = (spikes * w_s).sum() + (v_last * w_v).sum()
        results.append([spikes, v_last, *torch.autograd.grad(loss, leaves)])
    assert 0.05 < float(results[1][0].mean()) < 0.99   # not silent, not all saturated
    for name, got, want in zip(("spikes", "v_last", "i", "v0", "eps", "tau0"), *results):
        assert float(want.abs().max()) > 1e-3, name
        torch.testing.assert_close(got, want.detach(), rtol=1e-10, atol=1e-12,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("coupled, leak, pre", VARIANTS)
def test_reference_gradient_from_one_output_or_for_some_inputs(coupled, leak, pre):
    """Only spikes or only v_last carry a gradient; only i and tau0 need one (eps a float)."""
    i, v0, eps, tau = _inputs((4, 3, 5), seed=6, dtype=torch.float64, device="cpu")
    for use in ("spikes", "v_last"):
        grads = []
        for fn in ("op", "unrolled"):
            leaves = [i.clone().requires_grad_(), tau.clone().requires_grad_()]
            if fn == "op":
                spikes, v_last, _ = ultra_reference(leaves[0], v0, None, leaves[1], 0.7, 1.0,
                                                    coupled, 0.5, True, False, leak, pre, True)
            else:
                spikes, v_last = _steps(leaves[0], v0, torch.tensor(0.7, dtype=torch.float64),
                                        leaves[1], 0.5, True, coupled, leak, pre)
            out = spikes.sum() if use == "spikes" else v_last.square().sum()
            grads.append(torch.autograd.grad(out, leaves))
        for got, want in zip(*grads):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_reference_op_gradcheck_float64():
    i, v0, eps, tau = _inputs((3, 2, 4), seed=8, dtype=torch.float64, device="cpu")

    def f(i, v0, eps, tau):
        return ultra_reference(i, v0, eps, tau, 1.0, 1.0, True, 0.5, True, False, False, False,
                               True)[:2]

    assert torch.autograd.gradcheck(f, [t.requires_grad_() for t in (i, v0, eps, tau)])


def test_reference_backward_refuses_the_tropical_limit():
    i, v0, eps, tau = _inputs(device="cpu")
    _, _, kept = ultra_reference_forward(*_forward_args(i, v0, eps, tau))
    args = list(_backward_args(kept, torch.ones_like(i), None, v0, eps, tau))
    args[11] = True   # hard
    with pytest.raises(ValueError, match="hard: the tropical limit"):
        ultra_reference_backward(*args)


# --------------------------------------------------------------------------------------------- #
# The eager route and the registered op


def _pair(backend):
    if backend == "triton":
        from spikegate.kernels.ultralif import ultra_kernels

        return ultra_kernels
    return ultra_reference


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_kernels)])
@pytest.mark.parametrize("coupled, leak, pre", VARIANTS)
def test_eager_route_and_registered_op_agree_bitwise(backend, coupled, leak, pre):
    """Eager calls take an autograd.Function around the ops' own functions (no dispatcher);
    the registered op with its autograd formula must give the same values and gradients."""
    pair = _pair(backend)
    i, v0, eps, tau = _inputs(seed=9)
    results = []
    for call in (pair, pair.forward):  # __call__ is the eager route outside tracing
        leaves = [t.clone().requires_grad_() for t in (i, v0, eps, tau)]
        spikes, v_last, _ = call(*_forward_args(*leaves, coupled, leak, pre))
        weight = torch.arange(spikes.numel(), device=spikes.device).view_as(spikes) / spikes.numel()
        (spikes * weight).sum().add(v_last.sum()).backward()
        results.append([spikes, v_last] + [t.grad for t in leaves])
    for a, b in zip(*results):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------- #
# torch.compile and torch.export


class _Net(nn.Module):
    """Linear -> relaxed neuron -> Linear, the readout averaged over time."""

    def __init__(self, neuron: nn.Module):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.neuron = neuron
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        spikes, v_last = self.neuron(self.fc1(x))
        return self.fc2(spikes).mean(0) + v_last.mean()


NEURONS = [
    pytest.param(lambda b: UltraLIF(shape=(6,), backend=b), id="UltraLIF"),
    pytest.param(lambda b: UltraPLIF(shape=(6,), per_neuron=True, backend=b), id="UltraPLIF"),
    pytest.param(lambda b: UltraDLIF(shape=(6,), backend=b), id="UltraDLIF"),
    pytest.param(lambda b: UltraDPLIF(shape=(6,), per_neuron=True, tau_param="sigmoid",
                                      leak_before_lse=True, reset_pre_lse=True, backend=b),
                 id="UltraDPLIF-released"),
]


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_kernels)])
@pytest.mark.parametrize("make", NEURONS)
def test_compile_fullgraph_matches_eager(make, backend):
    """fullgraph: the neuron traces as one op per direction (before, the sequence functions'
    value checks and the kernels' autograd.Function broke the graph). Outputs and gradients of
    the input, the weights, eps and (P variants) tau0 equal the eager ones."""
    torch.manual_seed(0)
    model = _Net(make(backend)).to(DEVICE)
    x = torch.randn(5, 2, 4, device=DEVICE)
    results = []
    torch._dynamo.reset()
    for run in (model, torch.compile(model, backend="aot_eager", fullgraph=True)):
        model.zero_grad()
        leaf = x.clone().requires_grad_()
        out = run(leaf)
        out.square().sum().backward()
        results.append([out, leaf.grad] + [p.grad for p in model.parameters()])
    names = ["out", "x"] + [n for n, _ in model.named_parameters()]
    assert "neuron.log_eps" in names
    for name, got, want in zip(names, results[1], results[0]):
        assert got is not None and want is not None, name
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_kernels)])
def test_compile_fullgraph_hard_mode_without_gradient(backend):
    torch.manual_seed(0)
    model = _Net(UltraDLIF(shape=(6,), hard=True, backend=backend)).to(DEVICE)
    x = torch.randn(5, 2, 4, device=DEVICE)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)


class _TwoNeurons(nn.Module):
    """An UltraLIF network, then an UltraDLIF layer over its readout repeated for 3 steps."""

    def __init__(self):
        super().__init__()
        self.net = _Net(UltraLIF(shape=(6,), backend="torch"))
        self.fc = nn.Linear(3, 6)
        self.coupled = UltraDLIF(shape=(6,), backend="torch")

    def forward(self, x):
        return self.coupled(self.fc(self.net(x)).expand(3, -1, -1))


def test_export_holds_one_ultra_op_per_neuron():
    torch.manual_seed(0)
    model = _TwoNeurons().eval()
    x = torch.randn(5, 2, 4)
    with torch.no_grad():
        exported = torch.export.export(model, (x,))
        targets = [str(n.target) for n in exported.graph.nodes if n.op == "call_function"]
        assert targets.count("spikegate.ultra_reference_forward.default") == 2, targets
        assert not any("ultra_reference_backward" in t for t in targets)
        for got, want in zip(exported.module()(x), model(x)):
            torch.testing.assert_close(got, want)


def test_validation_is_eager_only():
    """Eager calls still refuse NaN and eps <= 0; a compiled call cannot read values."""
    x = torch.full((3, 1, 4), float("nan"))
    neuron = UltraLIF(backend="torch")
    with pytest.raises(ValueError, match="i: expected finite values"):
        neuron(x)
    torch._dynamo.reset()
    spikes, _ = torch.compile(neuron, backend="aot_eager", fullgraph=True)(x)
    assert spikes.shape == x.shape
    assert math.isnan(float(spikes[0, 0, 0]))
