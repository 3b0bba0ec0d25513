"""Fused Triton decay scan (``spikegate.kernels.decay_scan``) against the torch reference.

Runs on the Triton CPU interpreter (``TRITON_INTERPRET=1``, set by tests/conftest.py without a
GPU) at small shapes, or on CUDA. Small ``chunk`` values force the time-chunked path (chunk ends,
carried entering states) that a GPU picks for long sequences; values and the gradients of z, the
decay logit r and h0 must match the reference to float32 rounding (bfloat16: to its rounding).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from spikegate.kernels.decay_scan import decay_scan_bytes_per_element, decay_scan_triton  # noqa: E402
from spikegate.neurons.checks import triton_interpreter_enabled  # noqa: E402
from spikegate.neurons.decay_scan import decay_scan_sequence, decay_scan_torch  # noqa: E402

if not (torch.cuda.is_available() or triton_interpreter_enabled()):
    pytest.skip("needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def inputs(T, B, H, Dh, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(T, B, H, Dh, generator=g).to(DEVICE, dtype).requires_grad_()
    r = (torch.randn(H, generator=g) * 2).to(DEVICE).requires_grad_()
    h0 = torch.randn(B, H, Dh, generator=g).to(DEVICE, dtype).requires_grad_()
    return z, r, h0


def reference(z, r, h0):
    """The torch reference on float32 copies of the same (rounded) inputs."""
    zf = z.detach().float().requires_grad_()
    rf = r.detach().float().requires_grad_()
    hf = None if h0 is None else h0.detach().float().requires_grad_()
    return decay_scan_torch(zf, rf, hf), [t for t in (zf, rf, hf) if t is not None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "T, chunk", [(1, None), (9, None), (9, 4), (12, 3), (13, 1), (7, 7)],
)
@pytest.mark.parametrize("with_h0", [True, False])
def test_matches_reference(dtype, T, chunk, with_h0):
    z, r, h0 = inputs(T, 2, 3, 4, dtype)
    h0 = h0 if with_h0 else None
    leaves = [t for t in (z, r, h0) if t is not None]
    got = decay_scan_triton(z, r, h0, chunk=chunk)
    want, ref_leaves = reference(z, r, h0)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, **TOL[dtype])
    g = torch.randn(want.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    got_grads = torch.autograd.grad(got, leaves, g.to(dtype))
    want_grads = torch.autograd.grad(want, ref_leaves, g.to(dtype).float())
    for leaf, a, b in zip(leaves, got_grads, want_grads):
        assert a.dtype == leaf.dtype
        scale = max(1.0, float(b.abs().max()))
        torch.testing.assert_close(a.float() / scale, b / scale, **TOL[dtype])


def test_only_some_gradients_requested():
    z, r, h0 = inputs(10, 1, 2, 8, torch.float32)
    r = r.detach()
    got = decay_scan_triton(z, r, h0, chunk=3)
    gz, gh0 = torch.autograd.grad(got.sum(), (z, h0))
    want, (zf, rf, hf) = reference(z, r, h0)
    wz, wh0 = torch.autograd.grad(want.sum(), (zf, hf))
    torch.testing.assert_close(gz, wz, **TOL[torch.float32])
    torch.testing.assert_close(gh0, wh0, **TOL[torch.float32])


def test_gradient_through_last_state_only():
    z, r, h0 = inputs(11, 2, 2, 4, torch.float32)
    h, last = decay_scan_sequence(z, r, h0, backend="triton")
    got = torch.autograd.grad(last.square().sum(), (z, r, h0))
    want, leaves = reference(z, r, h0)
    ref = torch.autograd.grad(want[-1].square().sum(), leaves)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, **TOL[torch.float32])


def test_bytes_per_element():
    assert decay_scan_bytes_per_element(torch.float32, chunked=False) == 8
    assert decay_scan_bytes_per_element(torch.bfloat16, chunked=True) == 6
    assert decay_scan_bytes_per_element(torch.float32, chunked=True, backward=True) == 20


def test_refuses_float64_and_bad_chunk():
    z, r, h0 = inputs(3, 1, 1, 2, torch.float32)
    with pytest.raises(TypeError, match="z: the decay-scan kernels take"):
        decay_scan_triton(z.double(), r)
    with pytest.raises(ValueError, match="chunk: expected an int >= 1"):
        decay_scan_triton(z, r, chunk=0)


def test_mixer_on_the_kernel_matches_the_torch_path():
    from spikegate.neurons.dualpath_mixer import DualPathMixer

    torch.manual_seed(0)
    mixers = {
        b: DualPathMixer(16, 2, window=3, anchors=1, backend=b).to(DEVICE) for b in ("torch", "triton")
    }
    mixers["triton"].load_state_dict(mixers["torch"].state_dict())
    g = torch.Generator().manual_seed(2)
    s = (torch.rand(9, 2, 16, generator=g) < 0.1).float().to(DEVICE)
    x = torch.randn(9, 2, 16, generator=g).to(DEVICE)
    ys = {b: m(s, x)[0] for b, m in mixers.items()}
    torch.testing.assert_close(ys["triton"], ys["torch"], **TOL[torch.float32])
    for m, y in zip(mixers.values(), ys.values()):
        y.square().sum().backward()
    torch.testing.assert_close(
        mixers["triton"].decay_logit.grad, mixers["torch"].decay_logit.grad, **TOL[torch.float32]
    )


# --------------------------------------------------------------------------------------------- #
# The kernels as custom ops (spikegate::decay_scan_forward / _backward).
# --------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("chunk", [0, 3])
def test_opcheck_decay_scan_ops(chunk):
    from spikegate.kernels.decay_scan import decay_scan_backward, decay_scan_forward

    z, r, h0 = inputs(7, 2, 3, 4, torch.float32)
    torch.library.opcheck(decay_scan_forward, (z, r, h0, chunk))
    torch.library.opcheck(decay_scan_forward, (z, r, None, chunk))
    h = decay_scan_forward(z.detach(), r.detach(), h0.detach(), chunk)
    g = torch.randn_like(h)
    torch.library.opcheck(decay_scan_backward,
                          (g, z.detach(), h, r.detach(), h0.detach(), chunk, True, True, True))


def test_compiled_decay_scan_matches_eager():
    """fullgraph: the Triton scan traces as one op per direction (aot_eager: no code generation)."""
    z, r, h0 = inputs(9, 2, 3, 4, torch.float32, seed=4)

    def step(z, r, h0):
        h, h_last = decay_scan_sequence(z, r, h0, backend="triton")
        return h.square().sum() + h_last.sum()

    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    eager = torch.autograd.grad(step(z, r, h0), (z, r, h0))
    got = torch.autograd.grad(compiled(z, r, h0), (z, r, h0))
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b, **TOL[torch.float32])


def test_eager_route_and_registered_op_agree_bitwise():
    from spikegate.kernels.decay_scan import decay_scan_forward

    results = []
    for route in ("eager", "op"):
        z, r, h0 = inputs(9, 2, 3, 4, torch.float32, seed=6)
        if route == "eager":
            h = decay_scan_triton(z, r, h0, chunk=4)
        else:
            h = decay_scan_forward(z, r, h0, 4)
        (h * torch.arange(h.numel()).view_as(h)).sum().backward()
        results.append([h, z.grad, r.grad, h0.grad])
    for a, b in zip(*results):
        assert torch.equal(a, b)
