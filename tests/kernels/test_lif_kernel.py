"""Fused Triton LIF kernels (``spikegate.kernels.lif``) against the torch reference.

Runs the kernels on the Triton CPU interpreter (``TRITON_INTERPRET=1``, set by tests/conftest.py
when there is no GPU) at small shapes, or on CUDA where present. Spikes must be bitwise those of
the reference, ``v_last`` bitwise those of the LIF equations evaluated in float32, gradients
those of the reference to rounding. Inputs are ``N(0.6, 0.6)`` so that a good fraction of neurons
spike, and comparisons first check that the case is not trivial (some spikes, some silences).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("triton")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from spikegate.kernels.lif import (  # noqa: E402
    _round_to,
    lif_bytes_per_neuron_step,
    lif_saved_bytes_per_neuron_step,
)
from spikegate.neurons import lif_sequence  # noqa: E402
from spikegate.neurons.checks import triton_interpreter_enabled  # noqa: E402
from spikegate.neurons.surrogate import (  # noqa: E402
    STE,
    ATan,
    FastSigmoid,
    Sigmoid,
    Surrogate,
    Triangle,
)

if not (torch.cuda.is_available() or triton_interpreter_enabled()):
    pytest.skip("needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
RESETS = ["zero", "subtract", "none"]
SURROGATES = [
    ATan(), ATan(alpha=3.0), Sigmoid(), Sigmoid(alpha=2.5), FastSigmoid(), FastSigmoid(slope=7.0),
    Triangle(), Triangle(gamma=0.5, width=0.7), STE(),
]
HALF = [torch.float16, torch.bfloat16]

# Gradients (assert_grads_close says what atol is relative to). float32 differs from the reference
# only by the rounding of the surrogate (a few ulps); half inputs keep u - threshold in their own
# dtype and return grad_x in it, so they agree to that dtype's rounding.
GRAD_TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float16: dict(rtol=4e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=3e-2, atol=1.5e-2),
}
# v_last against the reference: one ulp of x's dtype (see check_against_reference).
V_LAST_TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=1e-5),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-5),
}


def lif_input(shape, dtype=torch.float32, seed=0, mean=0.6, std=0.6):
    g = torch.Generator().manual_seed(seed)
    x = mean + std * torch.randn(shape, generator=g, dtype=torch.float64)
    return x.to(dtype).to(DEVICE)


def make_beta(kind: str, step_shape, seed: int = 7):
    """A decay of the given kind for neurons of shape ``step_shape = [B, ...]``."""
    g = torch.Generator().manual_seed(seed)
    shape = {
        "float": None,
        "scalar": (),
        "per_neuron": step_shape[-1:],
        "channel": (step_shape[1],) + (1,) * (len(step_shape) - 2),
        "full": tuple(step_shape),
    }[kind]
    if shape is None:
        return 0.8
    return (0.5 + 0.5 * torch.rand(shape, generator=g, dtype=torch.float64)).float().to(DEVICE)


def run(backend, x, v0, beta, *, grad="both", seed=1, **params):
    """Forward and backward of ``lif_sequence`` on fresh leaves. ``grad`` picks which outputs the
    loss reads: ``"both"``, ``"spikes"`` (no gradient reaches v_last) or ``"v_last"``."""
    x = x.clone().requires_grad_()
    v0 = None if v0 is None else v0.clone().requires_grad_()
    if isinstance(beta, torch.Tensor):
        beta = beta.clone().requires_grad_()
    spikes, v_last = lif_sequence(x, v0, beta=beta, backend=backend, **params)
    g = torch.Generator().manual_seed(seed)
    w_s = torch.randn(spikes.shape, generator=g).to(DEVICE)
    w_v = torch.randn(v_last.shape, generator=g).to(DEVICE)
    loss = 0
    if grad in ("both", "spikes"):
        loss = loss + (spikes.float() * w_s).sum()
    if grad in ("both", "v_last"):
        loss = loss + (v_last.float() * w_v).sum()
    loss.backward()
    grads = {"x": x.grad, "v0": None if v0 is None else v0.grad}
    grads["beta"] = beta.grad if isinstance(beta, torch.Tensor) else None
    return spikes.detach(), v_last.detach(), grads


def design_f32(x, v0, beta, threshold, reset, reset_amount=None):
    """The LIF equations written out in float32, u = (v * beta) + x with each op rounded; the
    subtractive reset takes away ``reset_amount`` (None: the threshold). Returns ``(spikes,
    v_last, v_prev)``, ``v_prev[t] = v[t-1]`` in float32."""
    amount = threshold if reset_amount is None else reset_amount
    v = torch.zeros(x.shape[1:], device=x.device) if v0 is None else v0.float()
    beta = beta.float() if isinstance(beta, torch.Tensor) else beta
    spikes, v_prev = [], []
    for x_t in x.float().unbind(0):
        v_prev.append(v)
        u = v * beta
        u = u + x_t
        s = u >= threshold
        v = {
            "zero": torch.where(s, torch.zeros_like(u), u),
            "subtract": torch.where(s, u - amount, u),
            "none": u,
        }[reset]
        spikes.append(s)
    return torch.stack(spikes).to(x.dtype), v.to(x.dtype), torch.stack(v_prev)


def assert_nontrivial(spikes):
    rate = spikes.float().mean().item()
    assert 0.0 < rate < 1.0, f"degenerate case: spike rate {rate}"


def assert_grads_close(got, ref, dtype, beta_terms=None):
    """Gradients equal to rounding: ``|got - ref| <= atol * scale + rtol * |ref|``. The scale is
    the largest reference entry, but at least 1, the scale of the N(0, 1) loss weights (terms of
    that size may cancel into a small gradient); for beta, a sum over time, it is the sum of its
    terms' scales ``beta_terms``."""
    tol = GRAD_TOL[dtype]
    for name, r in ref.items():
        if r is None:
            assert got[name] is None, name
            continue
        assert got[name] is not None, f"no gradient for {name}"
        assert got[name].dtype == r.dtype and got[name].shape == r.shape, name
        g, r = got[name].float(), r.float()
        if name == "beta" and beta_terms is not None:
            scale = beta_terms
        else:
            scale = r.abs().max().clamp_min(1)
        bound = tol["atol"] * scale + tol["rtol"] * r.abs() + 1e-12
        err = (g - r).abs()
        worst = (err / bound).argmax()
        assert (err <= bound).all(), (
            f"grad of {name}: |got - ref| = {err.flatten()[worst]:.3g} > "
            f"{bound.flatten()[worst]:.3g} at flat index {int(worst)} "
            f"(got {g.flatten()[worst]:.6g}, ref {r.flatten()[worst]:.6g})"
        )


def check_against_reference(x, v0, beta, *, grad="both", nontrivial=True, **params):
    ref = run("torch", x, v0, beta, grad=grad, **params)
    got = run("triton", x, v0, beta, grad=grad, **params)
    if nontrivial:
        assert_nontrivial(ref[0])
        # (through v_last alone it may vanish: straight-through + subtract has dv/du = 0)
        if grad != "v_last":
            assert ref[2]["x"].abs().max() > 0, "no gradient reaches x"
    assert got[0].dtype == x.dtype and got[1].dtype == x.dtype
    assert torch.equal(got[0], ref[0]), "spikes differ from the reference"
    want_s, want_v, v_prev = design_f32(x, v0, beta, params["threshold"], params["reset"],
                                        params.get("reset_amount"))
    assert torch.equal(got[0], want_s)
    assert torch.equal(got[1], want_v), "v_last differs from the LIF equations in float32"
    # The reference's v_last agrees to rounding (its subtract reset rounds twice).
    torch.testing.assert_close(got[1].float(), ref[1].float(), **V_LAST_TOL[x.dtype])
    beta_terms = None
    if isinstance(beta, torch.Tensor):
        # dL/dbeta = sum_t dL/du[t] * v[t-1], each factor known to rounding: dL/du at the scale of
        # its largest entry (as grad_x), and v[t-1], from the kept u - threshold for half inputs,
        # to |u - threshold| * eps <= (|v| + threshold + reset amount) * eps.
        v_scale = v_prev.abs() + params["threshold"] + (params.get("reset_amount") or 0.0)
        gu_scale = ref[2]["x"].float().abs().max().clamp_min(1)
        beta_terms = (gu_scale * v_scale).sum(0).sum_to_size(beta.shape)
    assert_grads_close(got[2], ref[2], x.dtype, beta_terms)
    return got


# --------------------------------------------------------------------------------------------- #
# Every surrogate, reset and detach_reset, float32, 4-D input, per-neuron beta, v0, both outputs.
# --------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("surrogate", SURROGATES, ids=repr)
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("detach_reset", [False, True])
def test_matches_reference_all_modes(surrogate, reset, detach_reset):
    x = lif_input((6, 2, 3, 13))
    v0 = lif_input((2, 3, 13), seed=1, mean=0.2)
    beta = make_beta("per_neuron", x.shape[1:])
    check_against_reference(
        x, v0, beta, threshold=1.0, reset=reset, surrogate=surrogate, detach_reset=detach_reset
    )


@pytest.mark.parametrize("grad", ["spikes", "v_last", "both"])
@pytest.mark.parametrize("beta_kind", ["float", "scalar", "per_neuron", "channel", "full"])
@pytest.mark.parametrize("reset", RESETS)
def test_gradient_paths_and_beta_shapes(grad, beta_kind, reset):
    """grad_spikes or grad_v_last absent (None inside the kernel), every way to give beta."""
    x = lif_input((5, 2, 3, 4, 5), seed=3)
    v0 = lif_input((2, 3, 4, 5), seed=4, mean=0.2)
    beta = make_beta(beta_kind, x.shape[1:])
    check_against_reference(
        x, v0, beta, grad=grad, threshold=1.0, reset=reset, surrogate="atan", detach_reset=False
    )


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("surrogate", ["atan", "sigmoid", "fast_sigmoid", "triangle", "ste"])
@pytest.mark.parametrize("reset", RESETS)
def test_half_inputs(dtype, surrogate, reset):
    x = lif_input((6, 3, 29), dtype, seed=5)
    v0 = lif_input((3, 29), dtype, seed=6, mean=0.2)
    beta = make_beta("per_neuron", x.shape[1:])
    check_against_reference(
        x, v0, beta, threshold=1.0, reset=reset, surrogate=surrogate,
        detach_reset=surrogate == "sigmoid",
    )


@pytest.mark.parametrize("dtype", [torch.float32] + HALF, ids=str)
def test_several_programs_and_a_ragged_last_block(dtype):
    """More neurons per step than one block holds (1024 on the interpreter, <= 1024 on a GPU)."""
    x = lif_input((3, 2, 1031), dtype, seed=8)
    beta = make_beta("per_neuron", x.shape[1:])
    check_against_reference(
        x, None, beta, threshold=1.0, reset="subtract", surrogate="atan", detach_reset=False
    )


# --------------------------------------------------------------------------------------------- #
# reset="subtract" by a chosen reset_amount (TESS's round(theta)).
# --------------------------------------------------------------------------------------------- #


class _ATanSpike(torch.autograd.Function):
    """s = (d >= 0) with ATan(alpha=2)'s surrogate, written here, independent of the package."""

    @staticmethod
    def forward(ctx, d):
        ctx.save_for_backward(d)
        return (d >= 0).to(d.dtype)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        return g * (1.0 / (1 + (torch.pi / 2 * 2.0 * d) ** 2))  # alpha / 2 = 1


def unrolled_subtract(x, v0, beta, threshold, reset_amount, detach_reset):
    """The LIF equations, one autograd op at a time in float32: ``u = beta * v + x``, ``s = (u >=
    threshold)``, ``v = u - reset_amount * s`` (``s`` detached there with ``detach_reset``).
    Returns ``(spikes, v_last, u)``."""
    v, spikes, us = v0, [], []
    for x_t in x.unbind(0):
        u = v * beta
        u = u + x_t.float()
        s = _ATanSpike.apply(u - threshold)
        v = u - reset_amount * (s.detach() if detach_reset else s)
        spikes.append(s)
        us.append(u.detach())
    return torch.stack(spikes), v, torch.stack(us)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("amount", [1.0, 0.35])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_subtract_by_a_chosen_amount_matches_an_unrolled_loop(dtype, amount, detach_reset):
    x = lif_input((6, 3, 21), dtype, seed=11)
    v0 = lif_input((3, 21), seed=12, mean=0.2)
    beta = make_beta("per_neuron", x.shape[1:])
    leaves = [t.clone().requires_grad_() for t in (x, v0, beta)]
    spikes, v_last = lif_sequence(*leaves[:2], beta=leaves[2], threshold=0.6, reset="subtract",
                                  reset_amount=amount, detach_reset=detach_reset, backend="triton")
    ref_leaves = [t.clone().requires_grad_() for t in (x, v0, beta)]
    ref_s, ref_v, ref_u = unrolled_subtract(*ref_leaves, 0.6, amount, detach_reset)
    assert_nontrivial(spikes)
    assert torch.equal(spikes, ref_s.detach().to(dtype))
    assert torch.equal(v_last, ref_v.detach().to(dtype))
    g = torch.Generator().manual_seed(13)
    w_s = torch.randn(x.shape, generator=g).to(DEVICE)
    w_v = torch.randn(v0.shape, generator=g).to(DEVICE)
    ((spikes.float() * w_s).sum() + (v_last.float() * w_v).sum()).backward()
    ((ref_s * w_s).sum() + (ref_v * w_v).sum()).backward()
    got = dict(zip(("x", "v0", "beta"), (t.grad for t in leaves)))
    ref = dict(zip(("x", "v0", "beta"), (t.grad for t in ref_leaves)))
    # beta's gradient sums B * T terms dL/du[t] * v[t-1], each known to rounding at the scale of
    # max |dL/du| * (|u| + 0.6 + amount) (v[t-1] from the kept u - 0.6 for bfloat16)
    terms = x.shape[0] * x.shape[1] * (ref_u.abs().max().clamp_min(v0.abs().max()) + 0.6 + amount)
    assert_grads_close(got, ref, dtype, terms * ref["x"].float().abs().max().clamp_min(1))


@pytest.mark.parametrize("dtype", [torch.float32] + HALF, ids=str)
@pytest.mark.parametrize("amount", [1.0, 0.35])
def test_subtract_by_a_chosen_amount_matches_reference(dtype, amount):
    x = lif_input((6, 3, 29), dtype, seed=14)
    v0 = lif_input((3, 29), dtype, seed=15, mean=0.2)
    beta = make_beta("per_neuron", x.shape[1:])
    for detach_reset in (False, True):
        check_against_reference(x, v0, beta, threshold=0.6, reset="subtract", reset_amount=amount,
                                surrogate="atan", detach_reset=detach_reset)


@pytest.mark.parametrize("dtype", [torch.float32] + HALF, ids=str)
def test_reset_amount_none_is_the_threshold_bitwise(dtype):
    """The default takes the same path as an explicit amount equal to the threshold, and the
    kernel's v after a spike for half inputs is then the kept u - threshold itself."""
    x = lif_input((5, 2, 19), dtype, seed=16)
    v0 = lif_input((2, 19), seed=17, mean=0.2)
    beta = make_beta("channel", x.shape[1:])
    a = run("triton", x, v0, beta, threshold=0.7, reset="subtract", reset_amount=None)
    b = run("triton", x, v0, beta, threshold=0.7, reset="subtract", reset_amount=0.7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for name in a[2]:
        assert torch.equal(a[2][name], b[2][name]), name


# --------------------------------------------------------------------------------------------- #
# Random shapes and parameters.
# --------------------------------------------------------------------------------------------- #


@st.composite
def lif_cases(draw):
    shape = (
        draw(st.integers(1, 6)),
        draw(st.integers(1, 3)),
        *draw(st.lists(st.integers(1, 23), min_size=1, max_size=2)),
    )
    return dict(
        shape=shape,
        reset=draw(st.sampled_from(RESETS)),
        surrogate=draw(st.sampled_from(SURROGATES)),
        detach_reset=draw(st.booleans()),
        beta_kind=draw(st.sampled_from(["float", "scalar", "per_neuron", "full"])),
        has_v0=draw(st.booleans()),
        threshold=draw(st.sampled_from([1.0, 0.7, 1.3])),
        reset_amount=draw(st.sampled_from([None, None, 1.0, 0.45])),  # with reset="subtract" only
        grad=draw(st.sampled_from(["both", "both", "spikes", "v_last"])),
        seed=draw(st.integers(0, 2**16)),
    )


def _check_case(case, dtype):
    x = lif_input(case["shape"], dtype, seed=case["seed"])
    v0 = None
    if case["has_v0"]:
        v0 = lif_input(case["shape"][1:], dtype, seed=case["seed"] + 1, mean=0.2)
    beta = make_beta(case["beta_kind"], x.shape[1:], seed=case["seed"] + 2)
    check_against_reference(
        x, v0, beta, grad=case["grad"], nontrivial=x.numel() >= 100, threshold=case["threshold"],
        reset=case["reset"], surrogate=case["surrogate"], detach_reset=case["detach_reset"],
        reset_amount=case["reset_amount"] if case["reset"] == "subtract" else None,
    )


_T1 = dict(shape=(1, 2, 33), reset="zero", surrogate=ATan(), detach_reset=False,
           beta_kind="per_neuron", has_v0=True, threshold=1.0, reset_amount=None, grad="both",
           seed=0)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=lif_cases())
@example(case=_T1)
@example(case={**_T1, "shape": (4, 1, 1), "has_v0": False, "beta_kind": "scalar"})
def test_random_cases_float32(case):
    _check_case(case, torch.float32)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=lif_cases(), dtype=st.sampled_from(HALF))
@example(case=_T1, dtype=torch.bfloat16)
def test_random_cases_half(case, dtype):
    _check_case(case, dtype)


# --------------------------------------------------------------------------------------------- #
# Known answers.
# --------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", [torch.float32] + HALF, ids=str)
@pytest.mark.parametrize("k", [2, 4, 8])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_constant_input_fires_every_k_steps(dtype, k, reset):
    """beta = 1, x = 1/k (exact in binary), threshold 1: the membrane climbs 1/k per step and fires
    on steps k-1, 2k-1, ...; both resets bring it back to exactly 0."""
    T = 3 * k + 1
    x = torch.full((T, 2, 5), 1.0 / k, dtype=dtype, device=DEVICE)
    spikes, v_last = lif_sequence(x, beta=1.0, threshold=1.0, reset=reset, backend="triton")
    want = torch.zeros(T, dtype=dtype)
    want[k - 1::k] = 1
    assert torch.equal(spikes.cpu(), want[:, None, None].expand(T, 2, 5))
    assert torch.equal(v_last.cpu(), torch.full((2, 5), 1.0 / k, dtype=dtype))


def test_no_reset_fires_on_every_step_after_crossing():
    x = torch.full((7, 1, 3), 0.25, device=DEVICE)
    spikes, v_last = lif_sequence(x, beta=1.0, threshold=1.0, reset="none", backend="triton")
    assert spikes[:, 0, 0].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert torch.equal(v_last, torch.full((1, 3), 1.75, device=DEVICE))


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_straight_through_gradient_is_a_geometric_sum(beta):
    """reset none + straight-through: dL/dx[t] for L = sum of all spikes is sum_{k<T-t} beta^k."""
    T = 6
    x = lif_input((T, 2, 9)).requires_grad_()
    spikes, _ = lif_sequence(x, beta=beta, reset="none", surrogate="ste", backend="triton")
    spikes.sum().backward()
    want = torch.tensor([sum(beta**k for k in range(T - t)) for t in range(T)], device=DEVICE)
    torch.testing.assert_close(x.grad, want[:, None, None].expand_as(x), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------- #
# Launcher: layouts, inference, memory kept for backward, traffic figures, errors.
# --------------------------------------------------------------------------------------------- #


def test_non_contiguous_inputs():
    base = lif_input((4, 11, 6, 2), seed=9)  # viewed as [T, B=2, 6, 11] through a transpose
    x = base.permute(0, 3, 2, 1)
    v0 = lif_input((11, 6, 2), seed=10, mean=0.2).permute(2, 1, 0)
    assert not x.is_contiguous() and not v0.is_contiguous()
    beta = make_beta("full", x.shape[1:]).transpose(0, 2).contiguous().transpose(0, 2)
    check_against_reference(
        x, v0, beta, threshold=1.0, reset="zero", surrogate="atan", detach_reset=False
    )


def test_expanded_grad_spikes():
    """``spikes.sum()`` hands the backward a stride-0 gradient."""
    x = lif_input((5, 2, 7)).requires_grad_()
    y = x.detach().clone().requires_grad_()
    lif_sequence(x, beta=0.8, backend="triton")[0].sum().backward()
    lif_sequence(y, beta=0.8, backend="torch")[0].sum().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32] + HALF, ids=str)
def test_inference_without_grad(dtype):
    x = lif_input((5, 3, 17), dtype, seed=11)
    beta = make_beta("per_neuron", x.shape[1:]).requires_grad_()
    with torch.no_grad():
        spikes, v_last = lif_sequence(x, beta=beta, reset="subtract", backend="triton")
    want_s, want_v, _ = design_f32(x, None, beta.detach(), 1.0, "subtract")
    assert_nontrivial(spikes)
    assert torch.equal(spikes, want_s) and torch.equal(v_last, want_v)
    assert not spikes.requires_grad


@pytest.mark.parametrize("dtype", [torch.float32] + HALF, ids=str)
def test_kept_for_backward_is_one_value_per_neuron_step(dtype):
    """The only [T, ...] tensor the layer keeps has the documented bytes per neuron-step."""
    x = lif_input((6, 2, 5), dtype).requires_grad_()
    kept = []

    def pack(t):
        kept.append(t)
        return t

    v0, beta = lif_input((2, 5)), make_beta("per_neuron", (2, 5))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lif_sequence(x, v0, beta=beta, backend="triton")
    per_step = [t for t in kept if t.shape == x.shape]
    assert len(per_step) == 1
    assert per_step[0].element_size() == lif_saved_bytes_per_neuron_step(dtype)
    assert sum(t.numel() * t.element_size() for t in kept) == (
        x.numel() * lif_saved_bytes_per_neuron_step(dtype) + 10 * 4 + 5 * 4  # + v0, beta as given
    )


def test_bytes_per_neuron_step():
    assert lif_saved_bytes_per_neuron_step(torch.float32) == 4
    assert lif_saved_bytes_per_neuron_step(torch.float16) == 2
    assert lif_saved_bytes_per_neuron_step(torch.bfloat16) == 2
    for dtype, b in ((torch.float32, 4), (torch.float16, 2), (torch.bfloat16, 2)):
        assert lif_bytes_per_neuron_step(dtype, backward=False) == 3 * b
        assert lif_bytes_per_neuron_step(dtype, backward=False, training=False) == 2 * b
        assert lif_bytes_per_neuron_step(dtype, backward=True) == 3 * b
    with pytest.raises(TypeError, match="dtype"):
        lif_bytes_per_neuron_step(torch.float64, backward=True)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_spike_is_read_back_from_the_sign_of_the_kept_membrane(dtype):
    """Membranes within a float16 ulp of the threshold: u - threshold rounds to -0, +0 or a tiny
    value; the backward must still see the forward's spikes (zero reset: dv/du jumps by 1)."""
    threshold = 0.5
    tiny = 2.0 ** -25                      # half of float16's smallest subnormal: rounds to 0
    v0 = torch.tensor([[threshold - tiny, threshold, threshold + tiny, threshold - 2 * tiny,
                        threshold + 2 * tiny, threshold - 0.25, threshold + 0.25]], device=DEVICE)
    assert v0.dtype == torch.float32  # v0 keeps its own dtype: these values are not half values
    x = torch.zeros((1,) + v0.shape, dtype=dtype, device=DEVICE)
    params = dict(threshold=threshold, reset="zero", surrogate="atan", detach_reset=False)
    ref = run("torch", x, v0, 1.0, grad="v_last", **params)
    got = run("triton", x, v0, 1.0, grad="v_last", **params)
    assert ref[0].flatten().tolist() == [0, 1, 1, 0, 1, 0, 1]
    assert torch.equal(got[0], ref[0])
    assert_grads_close(got[2], ref[2], dtype)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # v_last is -inf in float16
def test_float16_membrane_beyond_float16_range_gives_finite_gradients():
    """u - threshold is kept in float16, saturated at 65504: a membrane that leaves the float16
    range must not turn the reset's derivative into inf * 0."""
    x = torch.full((4, 1, 8), -6.0e4, dtype=torch.float16, device=DEVICE)
    x[:, :, ::2] = 2.0
    ref = run("torch", x, None, 1.0, reset="zero", surrogate="atan", threshold=1.0)
    got = run("triton", x, None, 1.0, reset="zero", surrogate="atan", threshold=1.0)
    assert torch.equal(got[0], ref[0])
    assert torch.isfinite(got[2]["x"].float()).all()
    torch.testing.assert_close(got[2]["x"], ref[2]["x"], rtol=4e-3, atol=1e-6)


def test_surrogate_without_kernel_is_refused():
    @dataclass(frozen=True)
    class Custom(Surrogate):
        name: ClassVar[str] = "custom"

        def grad_(self, x):
            return x.fill_(1)

    with pytest.raises(ValueError, match="backend='torch'"):
        lif_sequence(lif_input((2, 1, 3)), beta=0.5, surrogate=Custom(), backend="triton")


def test_empty_batch():
    x = torch.zeros((3, 0, 4), device=DEVICE, requires_grad=True)
    spikes, v_last = lif_sequence(x, beta=0.5, surrogate=ATan(), backend="triton")
    assert spikes.shape == (3, 0, 4) and v_last.shape == (0, 4)
    spikes.sum().backward()
    assert x.grad.shape == x.shape


# --------------------------------------------------------------------------------------------- #
# Hazards a compiled kernel has and the interpreter hides (issue 11, item 1).
# --------------------------------------------------------------------------------------------- #


@triton.jit
def _round_bits_kernel(in_ptr, out_ptr, n, NATIVE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(in_ptr + offs, mask=offs < n).to(tl.float32, bitcast=True)
    y = _round_to(x, tl.bfloat16, NATIVE)
    tl.store(out_ptr + offs, y.to(tl.int16, bitcast=True), mask=offs < n)


def _round_bits(bits: list[int], native: bool) -> list[int]:
    """float32 bit patterns through ``_round_to(..., bfloat16)``: the bfloat16 bit patterns."""
    src = torch.tensor([b - (1 << 32) if b >= 1 << 31 else b for b in bits], dtype=torch.int32,
                       device=DEVICE)
    out = torch.empty(len(bits), dtype=torch.int16, device=DEVICE)
    _round_bits_kernel[(1,)](src, out, len(bits), NATIVE=native, BLOCK=16)
    return [int(v) & 0xFFFF for v in out.cpu()]


def _is_bf16_nan(bits: int) -> bool:
    return (bits & 0x7F80) == 0x7F80 and (bits & 0x007F) != 0


def test_bfloat16_rounding_keeps_the_canonical_gpu_nan_a_nan():
    """The GPU's canonical NaN is 0x7FFFFFFF; with the rounding bias added it would carry into
    the sign bit and come out as -0.0 (0x8000)."""
    nans = [0x7FFFFFFF, 0xFFFFFFFF, 0x7FC00000, 0x7F800001, 0x7FFF8000]
    for native in ([False, True] if torch.cuda.is_available() else [False]):
        got = _round_bits(nans, native)
        assert all(_is_bf16_nan(b) for b in got), [hex(b) for b in got]


def test_bfloat16_rounding_is_nearest_even_like_torch():
    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.randn(9, generator=g) * 10.0 ** torch.arange(-4, 5),
                        torch.tensor([float("inf"), -float("inf"), 0.0, -0.0, 1.00390625,
                                      1.01171875, 3.4e38])])
    bits = [int(b) & 0xFFFFFFFF for b in values.view(torch.int32)]
    want = [int(b) & 0xFFFF for b in values.to(torch.bfloat16).view(torch.int16)]
    assert _round_bits(bits, native=False) == want


def test_vector_width_follows_the_divisibility_of_the_step():
    from spikegate.kernels.lif import _vector_width

    assert _vector_width(1024) == 16 and _vector_width(1000) == 8 and _vector_width(4 * 9) == 4
    assert _vector_width(1031) == 1
    x = torch.zeros((4, 1031))
    assert x.data_ptr() % 16 == 0 and _vector_width(1031, x) == 1
    x = torch.zeros((4, 1001))
    assert x[1:].data_ptr() % 16 != 0 and _vector_width(1000, x[1:]) == 1  # a slice off alignment
    x = torch.zeros((4, 1000))
    assert _vector_width(1000, x[1:]) == 8  # 1000 float32 are 4000 bytes: x[1:] stays aligned


@pytest.mark.parametrize("n", [1000, 1001, 36, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_unaligned_steps_and_time_slices(n, dtype):
    """Steps of M = 2 n neurons (every power-of-two divisor up to 16, or none) and the time
    slice x[1:], which starts off a 16-byte boundary when M * b is not a multiple of 16."""
    base = lif_input((5, 2, n), dtype, seed=n)
    x = base[1:]
    assert x.is_contiguous()
    beta = make_beta("per_neuron", x.shape[1:])
    check_against_reference(
        x, lif_input((2, n), seed=n + 1, mean=0.2), beta,
        threshold=1.0, reset="zero", surrogate="atan", detach_reset=False,
    )


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_a_single_decay_gradient_is_reduced_in_the_kernel(shape):
    """One decay for all neurons, over two programs (1031 neurons): the backward sums per
    program and adds the partial sums, and the gradient has the decay's own shape."""
    x = lif_input((4, 1, 1031), seed=5)
    beta = torch.full(shape, 0.8, device=DEVICE)
    got = check_against_reference(
        x, None, beta, threshold=1.0, reset="subtract", surrogate="sigmoid", detach_reset=False,
    )
    assert got[2]["beta"].shape == shape


def test_a_single_decay_is_not_materialized_per_neuron():
    """Kept for backward: the [T, ...] value and the decay as given, nothing per neuron."""
    x = lif_input((3, 2, 5)).requires_grad_()
    beta = torch.tensor(0.7, device=DEVICE, requires_grad=True)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        lif_sequence(x, beta=beta, backend="triton")
    assert sorted(t.numel() for t in kept) == [1, x.numel()]


# A decay broadcast along one run of the step's dims (BETA_MODE 3) over a [B, C, H, W] =
# [2, 3, 5, 7] step: the decay's shape, the mode _decay_inputs picks, and (mode 3) its
# (inner, size).
BROADCAST_DECAYS = [
    ((7,), 3, (1, 7)),              # per neuron along the last dim
    ((3, 1, 1), 3, (35, 3)),        # per channel
    ((1, 3, 1, 1), 3, (35, 3)),     # per channel, with the batch dim
    ((5, 7), 3, (1, 35)),           # per position, shared by channels
    ((3, 5, 7), 3, (1, 105)),       # per neuron of a sample, the usual learnable beta
    ((2, 1, 1, 1), 3, (105, 2)),    # per sample
    ((3, 1, 7), 2, None),           # channel and column with H between: not one run, expanded
    ((2, 3, 5, 7), 2, None),        # the full step shape
]


@pytest.mark.parametrize("shape, mode, run", BROADCAST_DECAYS, ids=str)
def test_the_decay_mode_follows_the_broadcast(shape, mode, run):
    from spikegate.kernels.lif import _decay_inputs

    step = torch.Size((2, 3, 5, 7))
    decay = _decay_inputs(torch.full(shape, 0.5), 1.0, step, 1)
    assert decay.mode == mode
    if mode == 3:
        assert (decay.inner, decay.size) == run
        assert decay.tensor.shape == (math.prod(shape),)  # its own values, not one per neuron
    else:
        assert decay.tensor.shape == step
    assert _decay_inputs(None, 0.8, step, 1).mode == 0
    assert _decay_inputs(torch.full((1, 1), 0.5), 1.0, step, 1).mode == 1


def test_a_broadcast_decay_is_expanded_under_deterministic_algorithms():
    """Mode 3's atomic adds sum in no fixed order; deterministic algorithms get mode 2."""
    from spikegate.kernels.lif import _decay_inputs

    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        assert _decay_inputs(torch.full((3, 1, 1), 0.5), 1.0, torch.Size((2, 3, 5, 7)), 1).mode == 2
    finally:
        torch.use_deterministic_algorithms(was)


def _broadcast_decay(shape, seed=21):
    g = torch.Generator().manual_seed(seed)
    return (0.5 + 0.5 * torch.rand(shape, generator=g, dtype=torch.float64)).float().to(DEVICE)


@pytest.mark.parametrize("shape", [s for s, _, _ in BROADCAST_DECAYS], ids=str)
@pytest.mark.parametrize("block", [None, 16])
def test_broadcast_decays_match_reference(shape, block, monkeypatch):
    """Values and gradients for every decay shape. ``block=16`` runs 14 programs of 16 neurons:
    a decay value's run of neurons then spans programs and starts mid-block (runs of 35 and
    105: the per-block sums with two atomics), or repeats within a block (runs of 1: one
    atomic per neuron, several on one address)."""
    import spikegate.kernels.lif as kernels

    if block is not None:
        monkeypatch.setattr(kernels, "_launch_config", lambda m, device: (block, 1))
    x = lif_input((4, 2, 3, 5, 7), seed=22)
    v0 = lif_input((2, 3, 5, 7), seed=23, mean=0.2)
    got = check_against_reference(x, v0, _broadcast_decay(shape), threshold=1.0, reset="subtract",
                                  reset_amount=0.8, surrogate="atan", detach_reset=False)
    assert got[2]["beta"].shape == shape


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("shape", [(3, 1, 1), (3, 5, 7)], ids=str)
def test_broadcast_decays_with_half_inputs(dtype, shape):
    x = lif_input((4, 2, 3, 5, 7), dtype, seed=24)
    check_against_reference(x, None, _broadcast_decay(shape), threshold=1.0, reset="zero",
                            surrogate="sigmoid", detach_reset=False)


def test_a_broadcast_decay_is_not_expanded_per_neuron(monkeypatch):
    """Mode 3 hands the kernels the decay's own values: no per-neuron buffer is made for it in
    the forward or the backward (without v0, the only other per-neuron input)."""
    import spikegate.kernels.lif as kernels

    made = []
    per_neuron = kernels._per_neuron

    def spy(t, vec):
        made.append(None if t is None else tuple(t.shape))
        return per_neuron(t, vec)

    monkeypatch.setattr(kernels, "_per_neuron", spy)
    x = lif_input((3, 2, 3, 5, 7)).requires_grad_()
    beta = _broadcast_decay((3, 1, 1)).requires_grad_()
    spikes, v_last = lif_sequence(x, beta=beta, backend="triton")
    (spikes.sum() + v_last.sum()).backward()
    assert beta.grad.shape == (3, 1, 1) and beta.grad.abs().sum() > 0
    assert made == [None, None]  # v0 in each direction
    made.clear()
    lif_sequence(x, beta=_broadcast_decay((3, 1, 7)), backend="triton")  # not one run
    assert made == [None, (2, 3, 5, 7)]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.filterwarnings("ignore:invalid value encountered")  # numpy, in the interpreter
def test_the_finite_check_runs_inside_the_forward_launch(bad, monkeypatch):
    """NaN or Inf anywhere in x (here the last step, last neuron of two programs) is refused with
    the error of the torch path, without the extra pass over x that path makes."""
    import spikegate.neurons.lif as lif_module

    def no_extra_pass(*args, **kwargs):
        raise AssertionError("the Triton path must not read x a second time")

    monkeypatch.setattr(lif_module, "check_finite", no_extra_pass)
    x = lif_input((3, 2, 700))
    x[-1, -1, -1] = bad
    with pytest.raises(ValueError, match=r"^x: expected finite values, got NaN or Inf$"):
        lif_sequence(x, beta=0.5, backend="triton")
    with pytest.raises(ValueError, match=r"^x: expected finite values, got NaN or Inf$"):
        lif_sequence(x.clone().requires_grad_(), beta=0.5, backend="triton")
    spikes, _ = lif_sequence(x, beta=0.5, backend="triton", validate=False)  # unchecked: runs
    assert spikes.shape == x.shape
    clean = lif_input((3, 2, 700))
    lif_sequence(clean, beta=0.5, backend="triton")


def test_steps_of_a_longer_buffer_are_read_by_stride():
    """x[t] contiguous but T-strided (every other step block of an interleaved buffer)."""
    from spikegate.kernels.lif import _step_stride

    big = lif_input((5, 2, 3, 8), seed=12)   # [T, 2, B, N]: x = big[:, 1] is [T, B, N]
    x = big[:, 1]
    assert not x.is_contiguous() and _step_stride(x) == 2 * 3 * 8
    assert _step_stride(big.transpose(1, 2)) is None and _step_stride(big[:1]) == 48
    check_against_reference(
        x, None, make_beta("scalar", x.shape[1:]), threshold=1.0, reset="zero",
        surrogate="atan", detach_reset=False,
    )


def test_a_gradient_expanded_over_time_is_read_by_stride():
    """``(spikes.sum(0) * w).sum()`` hands the backward ``w`` expanded over T (stride 0)."""
    x = lif_input((6, 2, 40), seed=13)
    w = torch.randn(2, 40, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    grads = []
    for backend in ("triton", "torch"):
        leaf = x.clone().requires_grad_()
        spikes, _ = lif_sequence(leaf, beta=0.8, backend=backend)
        (spikes.sum(0) * w).sum().backward()
        grads.append(leaf.grad)
    assert grads[1].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
