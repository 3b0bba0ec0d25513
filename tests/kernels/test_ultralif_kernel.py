"""Fused UltraLIF / UltraDLIF Triton kernels (``spikegate.kernels.ultralif``) against the torch
reference (autograd through the unrolled per-step equations).

Runs on the Triton CPU interpreter (``TRITON_INTERPRET=1``, set by tests/conftest.py without a
GPU) at small shapes. Spikes (soft, in [0, 1]) and ``v_last`` must equal the reference's to the
input dtype's rounding; gradients for i, v0, eps and tau0 (scalar and per neuron) to float32
rounding (half inputs: their own rounding of grad_i).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from spikegate.kernels.ultralif import (  # noqa: E402
    ultra_bytes_per_neuron_step,
    ultra_saved_bytes_per_neuron_step,
    ultradlif_triton,
    ultralif_triton,
)
from spikegate.neurons import ultradlif_sequence, ultralif_sequence  # noqa: E402
from spikegate.neurons.checks import triton_interpreter_enabled  # noqa: E402
from spikegate.neurons.ultralif import ultradlif_reference, ultralif_reference  # noqa: E402

if not (torch.cuda.is_available() or triton_interpreter_enabled()):
    pytest.skip("needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

VARIANTS = [
    pytest.param("lif", {}, id="ultralif"),
    pytest.param("dlif", {}, id="ultradlif"),
    pytest.param("dlif", {"leak_before_lse": True}, id="ultradlif-leak-first"),
    pytest.param("dlif", {"leak_before_lse": True, "reset_pre_lse": True}, id="ultradlif-released"),
]
OUT_TOL = {torch.float32: dict(rtol=1e-5, atol=2e-6), torch.float16: dict(rtol=2e-3, atol=1e-3),
           torch.bfloat16: dict(rtol=1.6e-2, atol=8e-3)}
GRAD_TOL = dict(rtol=2e-4, atol=2e-5)


def _functions(family, variant):
    if family == "lif":
        return (lambda i, v0, e, t, th, r: ultralif_reference(i, v0, e, t, th, r),
                lambda i, v0, e, t, th, r: ultralif_triton(i, v0, e, t, threshold=th, reset=r, hard=False))
    flags = {"leak_before_lse": False, "reset_pre_lse": False, **variant}
    return (lambda i, v0, e, t, th, r: ultradlif_reference(i, v0, e, t, th, r, False, *flags.values()),
            lambda i, v0, e, t, th, r: ultradlif_triton(i, v0, e, t, threshold=th, reset=r, hard=False,
                                                         **flags))


def _inputs(shape, dtype, seed, *, per_neuron):
    g = torch.Generator().manual_seed(seed)
    i = (torch.randn(shape, generator=g) * 1.5 + 0.4).to(DEVICE, dtype).requires_grad_()
    v0 = (torch.randn(shape[1:], generator=g) * 0.5).to(DEVICE).requires_grad_()
    if per_neuron:
        eps = (0.5 + torch.rand(shape[-1], generator=g)).to(DEVICE).requires_grad_()
        tau = (0.6 + 0.4 * torch.rand(shape[-1], generator=g)).to(DEVICE).requires_grad_()
    else:
        eps = torch.tensor(0.7, device=DEVICE).requires_grad_()
        tau = torch.tensor(0.85, device=DEVICE).requires_grad_()
    return i, v0, eps, tau


def _run_with_grads(fn, args, threshold, reset, g_s, g_v):
    spikes, v_last = fn(*args, threshold, reset)
    loss = (spikes.float() * g_s).sum() + (v_last.float() * g_v).sum()
    return (spikes, v_last, *torch.autograd.grad(loss, args))


@pytest.mark.parametrize("family, variant", VARIANTS)
@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per-neuron"])
@pytest.mark.parametrize("reset", [True, False], ids=["reset", "no-reset"])
def test_kernel_matches_reference_float32(family, variant, per_neuron, reset):
    shape = (6, 3, 5)
    args = _inputs(shape, torch.float32, seed=11 + per_neuron + 2 * reset,
                   per_neuron=per_neuron)
    g = torch.Generator().manual_seed(1)
    g_s, g_v = torch.randn(shape, generator=g).to(DEVICE), torch.randn(shape[1:], generator=g).to(DEVICE)
    ref, tri = _functions(family, variant)
    expected = _run_with_grads(ref, args, 0.5, reset, g_s, g_v)
    got = _run_with_grads(tri, args, 0.5, reset, g_s, g_v)
    assert 0.05 < float(expected[0].detach().mean()) < 0.99  # not silent, not all saturated
    for name, a, b in zip(["spikes", "v_last", "grad_i", "grad_v0", "grad_eps", "grad_tau0"], got, expected):
        assert a.shape == b.shape, name
        assert float(b.detach().abs().max()) > 1e-3, f"{name}: trivial case"
        tol = OUT_TOL[torch.float32] if name in ("spikes", "v_last") else GRAD_TOL
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("family, variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_kernel_half_inputs_keep_float32_state(family, variant, dtype):
    shape = (5, 2, 6)
    args = _inputs(shape, dtype, seed=3, per_neuron=False)
    g_s = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    g_v = torch.zeros(shape[1:], device=DEVICE)
    ref, tri = _functions(family, variant)
    expected = _run_with_grads(ref, args, 0.5, True, g_s, g_v)
    got = _run_with_grads(tri, args, 0.5, True, g_s, g_v)
    assert got[0].dtype == dtype and got[1].dtype == dtype and got[2].dtype == dtype
    torch.testing.assert_close(got[0], expected[0], **OUT_TOL[dtype])
    torch.testing.assert_close(got[1], expected[1], **OUT_TOL[dtype])
    torch.testing.assert_close(got[2].float(), expected[2].float(), **OUT_TOL[dtype])
    for a, b in zip(got[3:], expected[3:]):  # float32 parameters: float32 state throughout
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("family, variant", VARIANTS)
def test_kernel_hard_mode_is_the_max_plus_reference(family, variant):
    shape = (7, 3, 4)
    i, v0, eps, tau = (a.detach() for a in _inputs(shape, torch.float32, seed=5, per_neuron=True))
    ref, _ = _functions(family, variant)
    if family == "lif":
        got = ultralif_triton(i, v0, eps, tau, threshold=0.5, reset=True, hard=True)
        expected = ultralif_reference(i, v0, eps, tau, 0.5, True, True)
    else:
        flags = {"leak_before_lse": False, "reset_pre_lse": False, **variant}
        got = ultradlif_triton(i, v0, eps, tau, threshold=0.5, reset=True, hard=True, **flags)
        expected = ultradlif_reference(i, v0, eps, tau, 0.5, True, True, *flags.values())
    assert set(got[0].unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("family, variant", VARIANTS)
def test_kernel_only_spikes_or_only_v_last_carry_gradient(family, variant):
    shape = (4, 2, 5)
    args = _inputs(shape, torch.float32, seed=7, per_neuron=False)
    ref, tri = _functions(family, variant)
    for use in ("spikes", "v_last"):
        grads = []
        for fn in (ref, tri):
            spikes, v_last = fn(*args, 0.5, True)
            out = spikes.sum() if use == "spikes" else v_last.sum()
            grads.append(torch.autograd.grad(out, args))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, **GRAD_TOL)


@pytest.mark.parametrize("family, variant", VARIANTS)
def test_kernel_is_stable_for_large_inputs_over_eps(family, variant):
    """|i| / eps of 1e5: the naive exp would overflow float32 (exp(88) is the limit)."""
    i = torch.tensor([[[1e4, -1e4, 3.0, -2.0]]], device=DEVICE).repeat(3, 2, 1).requires_grad_()
    _, tri = _functions(family, variant)
    spikes, v_last = tri(i, None, 0.1, 0.9, 0.5, True)
    (grad,) = torch.autograd.grad(spikes.sum() + v_last.sum(), i)
    for t in (spikes, v_last, grad):
        assert torch.isfinite(t).all()
    ref, _ = _functions(family, variant)
    expected = ref(i.detach(), None, 0.1, 0.9, 0.5, True)
    torch.testing.assert_close(spikes, expected[0], rtol=1e-5, atol=1e-6)


def test_kernel_through_the_sequence_functions_and_odd_layouts():
    """``backend='triton'`` routes here; a non-contiguous input and a 4-D step shape (rows of the
    last dim for UltraDLIF) give the reference's results."""
    base = torch.randn(5, 6, 2, 3, device=DEVICE)
    i = base.transpose(1, 2)          # [5, 2, 6, 3], not contiguous
    for fn in (ultralif_sequence, ultradlif_sequence):
        got = fn(i, eps=0.8, tau0=0.9, backend="triton")
        expected = fn(i, eps=0.8, tau0=0.9, backend="torch")
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-6)


def test_bytes_per_neuron_step():
    assert ultra_saved_bytes_per_neuron_step(torch.bfloat16) == 4
    assert ultra_bytes_per_neuron_step(torch.float32, backward=False) == 12
    assert ultra_bytes_per_neuron_step(torch.float16, backward=False, training=False) == 4
    assert ultra_bytes_per_neuron_step(torch.bfloat16, backward=True) == 8
    with pytest.raises(TypeError, match="dtype"):
        ultra_saved_bytes_per_neuron_step(torch.float64)


@pytest.mark.parametrize("family, variant", VARIANTS)
def test_kernel_single_step_and_smallest_row(family, variant):
    """T = 1 (the paper's headline setting) and rows of exactly 3 coupled neurons."""
    args = _inputs((1, 2, 3), torch.float32, seed=13, per_neuron=False)
    g_s = torch.randn(1, 2, 3, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    g_v = torch.randn(2, 3, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    ref, tri = _functions(family, variant)
    for a, b in zip(_run_with_grads(tri, args, 0.5, True, g_s, g_v),
                    _run_with_grads(ref, args, 0.5, True, g_s, g_v)):
        torch.testing.assert_close(a, b, **GRAD_TOL)
