"""LIF as torch custom ops (``spikegate.kernels.ops``): opcheck, torch.compile and torch.export.

The reference ops run everywhere; the kernel ops run on CUDA or on Triton's CPU interpreter
(tests/conftest.py sets it without a GPU). Compiled and exported models are compared with the
same model run eagerly, and eager gradients with autograd through an unrolled per-step graph.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikegate.kernels.ops import lif_reference_backward, lif_reference_forward, surrogate_args
from spikegate.neurons import LIF, lif_sequence
from spikegate.neurons.checks import triton_interpreter_enabled
from spikegate.neurons.surrogate import ATan, Triangle

KERNELS = torch.cuda.is_available() or triton_interpreter_enabled()
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _inputs(shape=(5, 2, 6), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = (0.6 + 0.6 * torch.randn(shape, generator=g)).to(dtype).to(DEVICE)
    v0 = (0.2 * torch.randn(shape[1:], generator=g)).to(DEVICE)
    beta = (0.5 + 0.4 * torch.rand(shape[-1:], generator=g)).to(DEVICE)
    return x, v0, beta


def _forward_args(x, v0, beta, surrogate=ATan(), save=True, check_finite=False, reset="zero",
                  reset_amount=1.0):
    return (x, v0, beta, 1.0, 1.0, reset, reset_amount, *surrogate_args(surrogate), False, save,
            check_finite)


@pytest.mark.parametrize("with_state", [True, False])
def test_opcheck_reference_forward(with_state):
    x, v0, beta = _inputs()
    x.requires_grad_()
    args = (_forward_args(x, v0.requires_grad_(), beta.requires_grad_()) if with_state
            else (x, None, None, 0.8, 1.0, "subtract", 0.75, *surrogate_args(Triangle()), True,
                  True, False))
    torch.library.opcheck(lif_reference_forward, args)


@pytest.mark.parametrize("reset, reset_amount", [("zero", 1.0), ("subtract", 0.6)])
def test_opcheck_reference_backward(reset, reset_amount):
    x, v0, beta = _inputs()
    _, _, u, _ = lif_reference_forward(*_forward_args(x, v0, beta, reset=reset,
                                                      reset_amount=reset_amount))
    g_s = torch.randn_like(x)
    args = (u, g_s, None, v0, beta, 1.0, 1.0, reset, reset_amount, *surrogate_args(ATan()), False,
            True, True, True, torch.float32)
    torch.library.opcheck(lif_reference_backward, args)


@pytest.mark.skipif(not KERNELS, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("reset, reset_amount", [("zero", 1.0), ("subtract", 0.6)])
def test_opcheck_kernel_ops(reset, reset_amount):
    from spikegate.kernels.lif import lif_backward, lif_forward

    x, v0, beta = _inputs()
    args = _forward_args(x.requires_grad_(), v0.requires_grad_(), beta.requires_grad_(),
                         reset=reset, reset_amount=reset_amount)
    # The interpreter cannot run on fake tensors, but the ops' own fakes never call it; the
    # AOT-dispatch test traces through them and then runs the kernels on real tensors.
    torch.library.opcheck(lif_forward, args)
    _, _, kept, _ = lif_forward(*args)
    bwd = (kept.detach(), torch.randn_like(x), torch.randn_like(v0), v0.detach(), beta.detach(),
           1.0, 1.0, reset, reset_amount, *surrogate_args(ATan()), False, True, True, True,
           torch.float32)
    torch.library.opcheck(lif_backward, bwd)


def _unrolled(x, v0, beta, threshold=1.0):
    """LIF with a zero reset and an ATan(2) surrogate, stepped in plain autograd ops."""
    v, spikes = v0, []
    for x_t in x.unbind(0):
        u = beta * v + x_t
        hard = (u >= threshold).to(u.dtype)
        z = torch.pi / 2 * 2.0 * (u - threshold)
        soft = torch.atan(z) / torch.pi  # d/du = alpha/2 / (1 + z^2), ATan's surrogate
        s = hard + (soft - soft.detach())  # exactly 0/1 forward, the surrogate backward
        spikes.append(s)
        v = u * (1 - s)
    return torch.stack(spikes), v


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_op_gradients_equal_an_unrolled_graph(backend):
    if backend == "triton" and not KERNELS:
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    x, v0, beta = _inputs(seed=3)
    leaves = [t.clone().requires_grad_() for t in (x, v0, beta)]
    spikes, v_last = lif_sequence(*leaves[:2], beta=leaves[2], backend=backend)
    ref_leaves = [t.clone().requires_grad_() for t in (x, v0, beta)]
    ref_s, ref_v = _unrolled(*ref_leaves)
    assert torch.equal(spikes, ref_s.detach())
    w = torch.randn_like(x)
    (spikes * w).sum().add(v_last.sum()).backward()
    (ref_s * w).sum().add(ref_v.sum()).backward()
    for got, ref in zip(leaves, ref_leaves):
        torch.testing.assert_close(got.grad, ref.grad, rtol=1e-4, atol=1e-5)


class _LIFMLP(nn.Module):
    def __init__(self, backend="auto", learn_beta=False):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.lif = LIF(beta=0.8, backend=backend, learn_beta=learn_beta, shape=(16,))
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        spikes, _ = self.lif(self.fc1(x))
        return self.fc2(spikes).mean(0)


def _compare_compiled(model, x, backend):
    torch.manual_seed(0)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    eager_out = model(x)
    eager_out.square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = compiled(x)
    out.square().sum().backward()
    torch.testing.assert_close(out, eager_out, rtol=1e-5, atol=1e-6)
    for p, g in zip(model.parameters(), eager_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)


def test_compile_fullgraph_aot_eager_on_the_reference_op():
    torch.manual_seed(0)
    model = _LIFMLP(backend="torch", learn_beta=True).to(DEVICE)
    x = torch.randn(6, 4, 8, device=DEVICE)
    torch._dynamo.reset()
    _compare_compiled(model, x, "aot_eager")


@pytest.mark.skipif(not KERNELS, reason="needs CUDA or TRITON_INTERPRET=1")
def test_compile_fullgraph_aot_eager_on_the_kernel_op():
    torch.manual_seed(0)
    model = _LIFMLP(backend="triton", learn_beta=True).to(DEVICE)
    x = torch.randn(6, 4, 8, device=DEVICE)
    torch._dynamo.reset()
    _compare_compiled(model, x, "aot_eager")


def test_compile_fullgraph_inductor_on_the_cpu():
    """The one inductor compile (a C++ compiler builds the CPU graph around the op)."""
    torch.manual_seed(0)
    model = _LIFMLP(backend="torch")
    x = torch.randn(6, 4, 8)
    torch._dynamo.reset()
    _compare_compiled(model, x, "inductor")


def test_export_holds_one_lif_op():
    torch.manual_seed(0)
    model = _LIFMLP(backend="torch").eval()
    x = torch.randn(6, 4, 8)
    exported = torch.export.export(model, (x,))
    targets = [str(n.target) for n in exported.graph.nodes if n.op == "call_function"]
    assert targets.count("spikegate.lif_reference_forward.default") == 1, targets
    torch.testing.assert_close(exported.module()(x), model(x))


def test_validation_is_eager_only():
    """Eager calls still refuse NaN; a compiled call cannot read values and skips the check."""
    x = torch.full((3, 1, 4), float("nan"))
    with pytest.raises(ValueError, match="x: expected finite values"):
        lif_sequence(x, beta=0.5, backend="torch")
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: lif_sequence(t, beta=0.5, backend="torch"),
                             backend="aot_eager", fullgraph=True)
    spikes, _ = compiled(x)
    assert spikes.shape == x.shape


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("reset, reset_amount", [("zero", 1.0), ("subtract", 0.6)])
def test_eager_calls_and_the_registered_ops_agree_bitwise(backend, reset, reset_amount):
    """Eager calls take an autograd.Function around the ops' own functions (no dispatcher);
    the registered op with its autograd formula must give the same values and gradients."""
    if backend == "triton" and not KERNELS:
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    from spikegate.kernels import ops

    pair = ops.lif_reference
    if backend == "triton":
        from spikegate.kernels.lif import lif_kernels as pair
    x, v0, beta = _inputs(seed=5)
    results = []
    for call in (pair, pair.forward):  # __call__ is the eager route outside tracing
        leaves = [t.clone().requires_grad_() for t in (x, v0, beta)]
        spikes, v_last, _, _ = call(*_forward_args(*leaves, reset=reset, reset_amount=reset_amount))
        (spikes * torch.arange(spikes.numel()).view_as(spikes)).sum().add(v_last.sum()).backward()
        results.append([spikes, v_last] + [t.grad for t in leaves])
    for a, b in zip(*results):
        assert torch.equal(a, b)
