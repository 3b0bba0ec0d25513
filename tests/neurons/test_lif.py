"""LIF against its pinned equations (the LIF docstring) (a plain float64 loop written here), against autograd of
an unrolled graph, and against the peers (SpikingJelly, snnTorch, Norse) where installed."""

import math

import numpy as np
import pytest
import torch

from spikegate.neurons import LIF, lif_sequence
from spikegate.neurons import lif as lif_module

RESETS = ["zero", "subtract", "none"]


def equations_reference(x, v0, beta, threshold, reset, dtype=np.float64, reset_amount=None):
    """The pinned LIF equations in numpy, every operation rounded to ``dtype``; the subtractive
    reset takes away ``reset_amount`` (None: the threshold)."""
    as_np = lambda a: a.detach().numpy() if isinstance(a, torch.Tensor) else a  # noqa: E731
    x = np.asarray(as_np(x), dtype=dtype)
    v = np.zeros(x.shape[1:], dtype=dtype) if v0 is None else np.array(as_np(v0), dtype=dtype)
    beta = np.broadcast_to(np.asarray(beta, dtype=dtype), v.shape)
    threshold = dtype(threshold)
    amount = threshold if reset_amount is None else dtype(reset_amount)
    spikes = np.zeros_like(x)
    for t in range(x.shape[0]):
        u = beta * v + x[t]
        s = (u >= threshold).astype(dtype)
        spikes[t] = s
        v = {"zero": u * (1 - s), "subtract": u - amount * s, "none": u}[reset]
    return spikes, v


class _Heaviside(torch.autograd.Function):
    """Spike with the ATan surrogate, written independently of spikegate.neurons.surrogate."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        a = ctx.alpha
        return g * (a / 2) / (1 + (math.pi / 2 * a * x) ** 2), None


def unrolled_autograd(x, v0, beta, threshold, reset, detach_reset, alpha=2.0, reset_amount=None):
    amount = threshold if reset_amount is None else reset_amount
    v = torch.zeros_like(x[0]) if v0 is None else v0
    out = []
    for x_t in x.unbind(0):
        u = beta * v + x_t
        s = _Heaviside.apply(u - threshold, alpha)
        r = s.detach() if detach_reset else s
        v = {"zero": u * (1 - r), "subtract": u - amount * r, "none": u}[reset]
        out.append(s)
    return torch.stack(out), v


def lif_input(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.6 + 0.6 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("beta_kind", ["float", "per_neuron"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_matches_equations_bit_for_bit(reset, beta_kind, dtype):
    x = lif_input((20, 3, 7), dtype)
    v0 = lif_input((3, 7), dtype, seed=1)
    beta = 0.8 if beta_kind == "float" else torch.linspace(0.2, 1.0, 7, dtype=dtype)
    spikes, v_last = lif_sequence(x, v0, beta=beta, threshold=0.9, reset=reset, backend="torch")
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    ref_s, ref_v = equations_reference(x, v0, beta if isinstance(beta, float) else beta.numpy(), 0.9,
                                       reset, np_dtype)
    assert 0.1 < spikes.mean() < 0.95
    np.testing.assert_array_equal(spikes.numpy(), ref_s)
    np.testing.assert_array_equal(v_last.numpy(), ref_v)


def _assert_same_spikes_and_gradients(out, out_ref, inputs, dtype):
    """Spikes equal; gradients of a random weighting of (spikes, v_last) for ``inputs`` (x, v0,
    beta) close to the reference's, to float32 or float64 rounding."""
    (s, v), (s_ref, v_ref) = out, out_ref
    assert torch.equal(s, s_ref)
    w_s, w_v = torch.randn_like(s), torch.randn_like(v)
    grads = torch.autograd.grad((s * w_s).sum() + (v * w_v).sum(), inputs)
    grads_ref = torch.autograd.grad((s_ref * w_s).sum() + (v_ref * w_v).sum(), inputs)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for name, g, g_ref in zip(("x", "v0", "beta"), grads, grads_ref):
        torch.testing.assert_close(g, g_ref, **tol, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("steps_per_block", [None, 5])
def test_gradients_match_unrolled_autograd(reset, detach_reset, dtype, steps_per_block, monkeypatch):
    if steps_per_block:  # the backward walks time in blocks; make 12 steps span 3 uneven blocks
        monkeypatch.setattr(lif_module, "_BLOCK_ELEMENTS", steps_per_block * 4 * 5)
    x = lif_input((12, 4, 5), dtype).requires_grad_()
    v0 = lif_input((4, 5), dtype, seed=2).requires_grad_()
    beta = torch.linspace(0.3, 0.95, 5, dtype=dtype).requires_grad_()
    args = dict(threshold=1.0, reset=reset)
    s, v = lif_sequence(x, v0, beta=beta, detach_reset=detach_reset, surrogate="atan", backend="torch", **args)
    s_ref, v_ref = unrolled_autograd(x, v0, beta, detach_reset=detach_reset, **args)
    _assert_same_spikes_and_gradients((s, v), (s_ref, v_ref), (x, v0, beta), dtype)


@pytest.mark.parametrize("reset", RESETS)
def test_gradcheck_float64(reset):
    # Away from the threshold the membrane path is smooth; with the reset detached the analytic
    # gradient of v_last is the true derivative, which finite differences can check.
    x = lif_input((6, 2, 3), torch.float64).requires_grad_()
    v0 = lif_input((2, 3), torch.float64, seed=3).requires_grad_()
    beta = torch.tensor([0.5, 0.7, 0.9], dtype=torch.float64, requires_grad=True)

    def v_last(x, v0, beta):
        return lif_sequence(x, v0, beta=beta, reset=reset, detach_reset=True, backend="torch")[1]

    assert torch.autograd.gradcheck(v_last, (x, v0, beta), eps=1e-7, atol=1e-6)


# ---- reset="subtract" by a chosen reset_amount (TESS's round(theta)) --------------------------


@pytest.mark.parametrize("amount", [1.0, 0.35])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_subtract_by_a_chosen_amount_matches_equations_bit_for_bit(amount, dtype):
    x = lif_input((20, 3, 7), dtype)
    v0 = lif_input((3, 7), dtype, seed=1)
    beta = torch.linspace(0.2, 1.0, 7, dtype=dtype)
    spikes, v_last = lif_sequence(x, v0, beta=beta, threshold=0.6, reset="subtract",
                                  reset_amount=amount, backend="torch")
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    ref_s, ref_v = equations_reference(x, v0, beta.numpy(), 0.6, "subtract", np_dtype,
                                       reset_amount=amount)
    assert 0.1 < spikes.mean() < 0.95
    np.testing.assert_array_equal(spikes.numpy(), ref_s)
    np.testing.assert_array_equal(v_last.numpy(), ref_v)
    _, by_threshold = equations_reference(x, v0, beta.numpy(), 0.6, "subtract", np_dtype)
    assert not np.array_equal(ref_v, by_threshold)  # the amount matters


@pytest.mark.parametrize("amount", [1.0, 0.35])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_subtract_by_a_chosen_amount_gradients_match_unrolled_autograd(amount, detach_reset, dtype,
                                                                       monkeypatch):
    monkeypatch.setattr(lif_module, "_BLOCK_ELEMENTS", 5 * 4 * 5)  # 12 steps in 3 uneven blocks
    x = lif_input((12, 4, 5), dtype).requires_grad_()
    v0 = lif_input((4, 5), dtype, seed=2).requires_grad_()
    beta = torch.linspace(0.3, 0.95, 5, dtype=dtype).requires_grad_()
    args = dict(threshold=0.6, reset="subtract", detach_reset=detach_reset, reset_amount=amount)
    s, v = lif_sequence(x, v0, beta=beta, surrogate="atan", backend="torch", **args)
    s_ref, v_ref = unrolled_autograd(x, v0, beta, **args)
    _assert_same_spikes_and_gradients((s, v), (s_ref, v_ref), (x, v0, beta), dtype)


def test_reset_amount_none_is_the_threshold_bit_for_bit():
    x = lif_input((9, 3, 5)).requires_grad_()
    beta = torch.linspace(0.4, 0.9, 5).requires_grad_()
    results = []
    for amount in (None, 0.7):
        s, v = lif_sequence(x, beta=beta, threshold=0.7, reset="subtract", reset_amount=amount,
                            backend="torch")
        grads = torch.autograd.grad((s * torch.arange(s.numel()).view_as(s)).sum() + v.sum(),
                                    (x, beta))
        results.append([s, v, *grads])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_gradcheck_float64_subtract_by_a_chosen_amount():
    x = lif_input((6, 2, 3), torch.float64).requires_grad_()
    v0 = lif_input((2, 3), torch.float64, seed=3).requires_grad_()
    beta = torch.tensor([0.5, 0.7, 0.9], dtype=torch.float64, requires_grad=True)

    def v_last(x, v0, beta):
        return lif_sequence(x, v0, beta=beta, reset="subtract", reset_amount=1.3, detach_reset=True,
                            backend="torch")[1]

    assert torch.autograd.gradcheck(v_last, (x, v0, beta), eps=1e-7, atol=1e-6)


def test_module_subtracts_its_reset_amount():
    lif = LIF(beta=0.5, threshold=0.6, reset="subtract", reset_amount=1.0, backend="torch")
    assert "reset='subtract', reset_amount=1.0" in repr(lif)
    assert "reset_amount" not in repr(LIF(reset="subtract"))
    x = torch.tensor([[[1.3, 0.5]]])
    spikes, v_last = lif(x)
    assert spikes.flatten().tolist() == [1.0, 0.0]
    assert torch.equal(v_last, x[0] - torch.tensor([1.0, 0.0]))  # 1.3 - 1.0, float32
    cost = lif.neuron_cost()
    assert cost == LIF(reset="subtract").neuron_cost() and cost.adds == 2


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(reset_amount=True), TypeError, r"reset_amount: expected a float, got bool"),
        (dict(reset_amount="1"), TypeError, r"reset_amount: expected a float, got str"),
        (dict(reset_amount=0.0), ValueError, r"reset_amount: expected a finite value > 0, got 0.0"),
        (dict(reset_amount=-1.0), ValueError, r"reset_amount: expected a finite value > 0, got -1.0"),
        (dict(reset_amount=float("inf")), ValueError, r"reset_amount: expected a finite value > 0"),
        (dict(reset_amount=float("nan")), ValueError, r"reset_amount: expected a finite value > 0"),
        (dict(reset="zero", reset_amount=1.0), ValueError,
         r"reset_amount: only applies to reset='subtract', got reset='zero'"),
        (dict(reset="none", reset_amount=1.0), ValueError,
         r"reset_amount: only applies to reset='subtract', got reset='none'"),
    ],
)
def test_bad_reset_amount_is_named(kwargs, exc, pattern):
    call = {"reset": "subtract", **kwargs}
    with pytest.raises(exc, match=pattern):
        lif_sequence(torch.zeros(4, 2, 3), beta=0.5, backend="torch", **call)
    with pytest.raises(exc, match=pattern):
        LIF(**call)


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_matches_spikingjelly_lifnode(reset):
    sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    tau = 4.0
    x = lif_input((16, 3, 9), torch.float32)
    node = sj_neuron.LIFNode(
        tau=tau, decay_input=False, v_threshold=1.0, v_reset=0.0 if reset == "zero" else None,
        surrogate_function=sj_surrogate.ATan(), detach_reset=False, step_mode="m",
    )
    x_sj = x.clone().requires_grad_()
    s_sj = node(x_sj)
    x_ours = x.clone().requires_grad_()
    s_ours, v_ours = lif_sequence(x_ours, beta=1 - 1 / tau, reset=reset, backend="torch")
    assert torch.equal(s_ours, s_sj)
    torch.testing.assert_close(v_ours, node.v)
    w = torch.randn_like(s_sj)
    (g_sj,) = torch.autograd.grad((s_sj * w).sum(), x_sj)
    (g_ours,) = torch.autograd.grad((s_ours * w).sum(), x_ours)
    torch.testing.assert_close(g_ours, g_sj, rtol=1e-5, atol=1e-6)


def test_matches_snntorch_leaky_with_detached_reset():
    snn = pytest.importorskip("snntorch")
    x = lif_input((16, 3, 9), torch.float32) + 1e-4  # keep away from exact ties (snnTorch fires on >)
    leaky = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero", spike_grad=snn.surrogate.atan())
    x_ref = x.clone().requires_grad_()
    mem = torch.zeros_like(x[0])
    out = []
    for x_t in x_ref.unbind(0):
        s, mem = leaky(x_t, mem)
        out.append(s)
    s_ref = torch.stack(out)
    x_ours = x.clone().requires_grad_()
    s_ours, _ = lif_sequence(x_ours, beta=0.5, reset="zero", detach_reset=True, backend="torch")
    assert torch.equal(s_ours, s_ref)
    w = torch.randn_like(s_ref)
    (g_ref,) = torch.autograd.grad((s_ref * w).sum(), x_ref)
    (g_ours,) = torch.autograd.grad((s_ours * w).sum(), x_ours)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-6)


def test_matches_norse_spikes():
    norse = pytest.importorskip("norse.torch")
    x = lif_input((16, 3, 9), torch.float32) + 1e-4
    p = norse.LIFBoxParameters(
        tau_mem_inv=torch.tensor(0.5), v_leak=torch.tensor(0.0), v_th=torch.tensor(1.0),
        v_reset=torch.tensor(0.0), method="super", alpha=torch.tensor(100.0),
    )
    cell = norse.LIFBoxCell(p, dt=1.0)
    state, out = None, []
    for x_t in x.unbind(0):
        s, state = cell(2 * x_t, state)
        out.append(s)
    s_ours, _ = lif_sequence(x, beta=0.5, reset="zero", backend="torch")
    assert torch.equal(s_ours, torch.stack(out))


def test_constant_drive_fires_periodically():
    # beta = 1, subtract reset, constant input 1/k: exactly one spike every k steps.
    k, T = 4, 24
    x = torch.full((T, 1, 1), 1.0 / k, dtype=torch.float64)
    s, v = lif_sequence(x, beta=1.0, reset="subtract", backend="torch")
    expected = [1.0 if (t + 1) % k == 0 else 0.0 for t in range(T)]
    assert s.flatten().tolist() == expected
    assert abs(float(v)) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_keep_float32_state(dtype):
    x = lif_input((10, 4, 6), dtype)
    s, v = lif_sequence(x, beta=0.9, backend="torch")
    # the equations in float32 on the half input: the state never passes through the half dtype
    s_ref, v_ref = equations_reference(x.float(), None, 0.9, 1.0, "zero", np.float32)
    assert s.dtype == dtype and v.dtype == dtype
    np.testing.assert_array_equal(s.float().numpy(), s_ref)
    assert v_ref.any()
    assert torch.equal(v, torch.from_numpy(v_ref).to(dtype))  # rounded to the half dtype only at the end


def test_module_stateful_equals_one_long_call():
    x = lif_input((10, 2, 3))
    full, v_full = LIF(beta=0.7, backend="torch")(x)
    lif = LIF(beta=0.7, stateful=True, backend="torch")
    a, _ = lif(x[:4])
    b, v_last = lif(x[4:])
    assert torch.equal(torch.cat([a, b]), full)
    torch.testing.assert_close(v_last, v_full)
    lif.reset_state()
    c, _ = lif(x[:4])
    assert torch.equal(c, a)


def test_module_learnable_per_neuron_beta_gets_gradient():
    lif = LIF(beta=0.8, learn_beta=True, shape=(3,), backend="torch")
    torch.testing.assert_close(lif.beta, torch.full((3,), 0.8))
    s, v = lif(lif_input((8, 2, 3)))
    (s.sum() + v.sum()).backward()
    assert lif.beta_logit.grad is not None and lif.beta_logit.grad.abs().sum() > 0


# ---- errors: each names the argument, what was expected and what came -------------------------

@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(x=torch.zeros(5)), ValueError, r"x: expected a time-major tensor \[T, B, \.\.\.\].*shape \(5,\)"),
        (dict(x=torch.zeros(0, 2, 3)), ValueError, r"x: expected T >= 1.*T = 0"),
        (dict(x=torch.tensor([[1.0, float("nan")]])), ValueError, r"x: expected finite.*NaN or Inf"),
        (dict(x=torch.tensor([[1.0, float("inf")]])), ValueError, r"x: expected finite"),
        (dict(x=torch.zeros(3, 2, dtype=torch.int32)), TypeError, r"x: expected dtype.*int32"),
        (dict(x=[[1.0]]), TypeError, r"x: expected a torch.Tensor.*list"),
        (dict(surrogate="nope"), ValueError, r"surrogate: expected one of.*'nope'"),
        (dict(reset="hard"), ValueError, r"reset: expected one of \['zero', 'subtract', 'none'\], got 'hard'"),
        (dict(backend="cuda"), ValueError, r"backend: expected one of.*'cuda'"),
        (dict(beta=1.5), ValueError, r"beta: expected a value in \(0, 1\], got 1.5"),
        (dict(beta=0.0), ValueError, r"beta: expected a value in \(0, 1\]"),
        (dict(beta=torch.tensor([0.5, 2.0, 0.5])), ValueError, r"beta: expected values in \(0, 1\]"),
        (dict(beta=torch.full((4,), 0.5)), ValueError, r"beta: expected a tensor broadcastable"),
        (dict(threshold=-1.0), ValueError, r"threshold: expected a finite value > 0, got -1.0"),
        (dict(v0=torch.zeros(3, 2)), ValueError, r"v0: expected shape \(2, 3\).*got \(3, 2\).*time-major"),
    ],
)
def test_bad_input_is_named(kwargs, exc, pattern):
    call = dict(x=torch.zeros(4, 2, 3), beta=0.5, backend="torch")
    call.update(kwargs)
    x = call.pop("x")
    v0 = call.pop("v0", None)
    with pytest.raises(exc, match=pattern):
        lif_sequence(x, v0, **call)


def test_finite_check_is_exact_when_the_sum_overflows():
    big = torch.full((4, 2, 3), 3e38)  # finite, but its float32 sum is not
    lif_sequence(big, beta=0.5, backend="torch")
    big[2, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="x: expected finite"):
        lif_sequence(big, beta=0.5, backend="torch")
    with pytest.raises(ValueError, match="x: expected finite"):
        lif_sequence(torch.tensor([[float("inf"), -float("inf")]]), beta=0.5, backend="torch")


def test_triton_backend_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match=r"backend: 'triton' needs a CUDA tensor.*TRITON_INTERPRET=1"):
        lif_sequence(torch.zeros(4, 2, 3), beta=0.5, backend="triton")


def test_triton_backend_rejects_float64():
    with pytest.raises(TypeError, match=r"x: backend='triton' supports float32, float16, bfloat16, got torch.float64"):
        lif_sequence(torch.zeros(4, 2, 3, dtype=torch.float64), beta=0.5, backend="triton")


def test_module_rejects_batch_major_input():
    lif = LIF(beta=0.5, shape=(10,))
    with pytest.raises(ValueError, match=r"x: expected \[T, B, 10\] \(time-major\), got shape \(8, 10, 4\)"):
        lif(torch.zeros(8, 10, 4))
    with pytest.raises(ValueError, match=r"beta: expected a value in \(0, 1\], got 2.0"):
        LIF(beta=2.0)
    with pytest.raises(TypeError, match=r"beta: expected a float or a tensor, got str"):
        LIF(beta="0.5")


def test_numpy_scalar_beta_is_accepted():
    x = lif_input((6, 2, 3))
    s_np, _ = lif_sequence(x, beta=np.float32(0.75), backend="torch")
    s_py, _ = lif_sequence(x, beta=0.75, backend="torch")
    assert torch.equal(s_np, s_py)


def test_empty_step_with_tensor_beta():
    s, v = lif_sequence(torch.zeros(3, 2, 0), beta=torch.full((0,), 0.5), backend="torch")
    assert s.shape == (3, 2, 0) and v.shape == (2, 0)


def test_validate_false_skips_value_checks_but_not_shape_checks():
    x = torch.tensor([[[float("nan")]]])
    lif_sequence(x, beta=torch.tensor([2.0]), backend="torch", validate=False)
    with pytest.raises(ValueError, match="v0: expected shape"):
        lif_sequence(x, torch.zeros(5), beta=0.5, backend="torch", validate=False)
    lif = LIF(beta=0.5, validate=False, backend="torch")
    lif(x)
    with pytest.raises(ValueError, match="x: expected finite"):
        LIF(beta=0.5, backend="torch")(x)


def test_auto_backend_falls_back_to_torch_without_triton(monkeypatch):
    from spikegate.neurons import checks

    monkeypatch.setattr(checks, "triton_available", lambda: False)
    x = torch.zeros(2, 1, 1)
    assert checks.resolve_backend("auto", x) == "torch"
    with pytest.raises(ValueError, match="backend: 'triton' needs the triton package"):
        checks.resolve_backend("triton", x)
