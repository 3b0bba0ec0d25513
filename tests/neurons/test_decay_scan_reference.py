"""The torch decay scan (``spikegate.neurons.decay_scan``) against the recurrence as a plain
per-step loop: values, gradients through autograd of the unrolled loop, and gradcheck."""

from __future__ import annotations

import pytest
import torch

from spikegate.neurons.decay_scan import decay_scan_sequence, decay_scan_torch, linear_scan_torch


def loop_scan(z, r, h0=None):
    """``h[t] = lambda h[t-1] + (1 - lambda) z[t]``, one step at a time."""
    lam = torch.sigmoid(r)[:, None]
    h = torch.zeros_like(z[0]) if h0 is None else h0
    out = []
    for z_t in z:
        h = lam * h + (1 - lam) * z_t
        out.append(h)
    return torch.stack(out)


def inputs(T, B=2, H=3, Dh=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(T, B, H, Dh, generator=g, dtype=dtype, requires_grad=True)
    r = (torch.randn(H, generator=g, dtype=dtype) * 2).requires_grad_()
    h0 = torch.randn(B, H, Dh, generator=g, dtype=dtype, requires_grad=True)
    return z, r, h0


@pytest.mark.parametrize("T", [1, 2, 31, 32, 33, 100, 1100])
@pytest.mark.parametrize("with_h0", [True, False])
def test_matches_loop_values_and_gradients(T, with_h0):
    z, r, h0 = inputs(T)
    h0 = h0 if with_h0 else None
    leaves = [t for t in (z, r, h0) if t is not None]
    want = loop_scan(z, r, h0)
    got, last = decay_scan_sequence(z, r, h0, backend="torch")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, want[-1])
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, leaves, g), torch.autograd.grad(want, leaves, g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_small_chunks_recurse_to_the_same_result(chunk):
    z, r, h0 = inputs(23)
    lam = torch.sigmoid(r)
    got = linear_scan_torch(z, lam, h0, scale=1 - lam, chunk=chunk)
    torch.testing.assert_close(got, loop_scan(z, r, h0), rtol=1e-12, atol=1e-12)


def test_small_decay_does_not_overflow():
    z, _, h0 = inputs(300, dtype=torch.float32)
    r = torch.tensor([-30.0, 0.0, 30.0])            # lambda ~ 1e-13, 0.5, ~1
    got = decay_scan_torch(z.detach(), r, h0.detach())
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, loop_scan(z.detach(), r, h0.detach()), rtol=1e-4, atol=1e-5)


def test_gradcheck_float64():
    z, r, h0 = inputs(9, B=1, H=2, Dh=2)
    assert torch.autograd.gradcheck(lambda a, b, c: decay_scan_torch(a, b, c), (z, r, h0))


def test_half_inputs_are_computed_in_float32():
    z, r, h0 = inputs(40, dtype=torch.float32)
    got = decay_scan_torch(z.detach().bfloat16(), r.detach(), h0.detach().bfloat16())
    assert got.dtype == torch.bfloat16
    want = loop_scan(z.detach().bfloat16().float(), r.detach(), h0.detach().bfloat16().float())
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)


def test_errors_name_the_argument():
    z, r, h0 = inputs(4)
    with pytest.raises(ValueError, match=r"z: expected \[T, B, H, Dh\]"):
        decay_scan_sequence(z[:, 0], r)
    with pytest.raises(ValueError, match=r"r: expected a tensor of shape \(3,\)"):
        decay_scan_sequence(z, r[:2])
    with pytest.raises(ValueError, match=r"h0: expected shape \(2, 3, 4\)"):
        decay_scan_sequence(z, r, h0[:1])
    with pytest.raises(ValueError, match="backend"):
        decay_scan_sequence(z, r, backend="cuda")
