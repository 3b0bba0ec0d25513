"""Leaky integrate-and-fire neuron over a whole sequence.

Semantics (time-major, ``x: [T, B, ...]``)::

    u[t] = beta * v[t-1] + x[t]          v[-1] = v0 (or 0)
    s[t] = 1 if u[t] >= threshold else 0
    v[t] = u[t] * (1 - s[t])             reset="zero"
    v[t] = u[t] - reset_amount * s[t]    reset="subtract" (reset_amount: threshold unless given)
    v[t] = u[t]                          reset="none"
    ds/du = surrogate'(u[t] - threshold)
    dv/du = 1 - reset_amount * ds/du     reset="subtract" (1 with detach_reset)

``reset_amount`` lets the subtractive reset take away a fixed amount other than the threshold,
e.g. ``round(theta)`` as in the TESS authors' conv layers (theta 0.6: subtract 1.0).

With ``beta = 1 - 1/tau`` this is SpikingJelly's ``LIFNode(tau, decay_input=False)``.

Two backends compute it: the fused Triton kernels (``spikegate.kernels.lif``, one launch for all
T steps) and the torch reference below (``reference_forward`` / ``reference_backward``), which
walks time in a plain loop without building a per-step graph. The reference is the CPU path and
the kernels' oracle. Both run as torch custom ops (``spikegate.kernels.ops``), so that
``torch.compile`` and ``torch.export`` trace a LIF network as one op per direction and layer.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from spikegate.arguments import check_real

from .checks import (
    BACKENDS,
    check_choice,
    check_decay,
    check_decay_value,
    check_finite,
    check_reset_amount,
    check_sequence,
    check_state,
    resolve_backend,
)
from .cost import NeuronCost
from .surrogate import Surrogate, SurrogateLike, get_surrogate

__all__ = ["lif_sequence", "LIF", "RESETS"]

RESETS = ("zero", "subtract", "none")
Decay = Union[float, torch.Tensor]


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half inputs keep their membrane in float32; float64 stays float64 (gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _not_spiking(u: torch.Tensor, threshold: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``1 - s = (u < threshold)`` as 0/1 floats written into ``out``, from float ops only: on the
    CPU, comparisons that produce bool tensors (and arithmetic with them) cost several times a
    float op. Exact: ``threshold - u > 0`` exactly when ``u < threshold`` in IEEE arithmetic.
    ``threshold`` is a 0-dim tensor of u's dtype."""
    return torch.sub(threshold, u, out=out).clamp_min_(0).sign_()


def _after_reset(u, keep, reset_amount: float, reset: str, out: torch.Tensor) -> torch.Tensor:
    """``v[t]`` from ``u[t]`` and ``keep = 1 - s[t]``, written into ``out`` (``u`` itself for none);
    the subtractive reset takes away ``reset_amount``."""
    if reset == "zero":
        return torch.mul(u, keep, out=out)
    if reset == "subtract":
        # u + (-s * reset_amount) with s = 1 - keep: the product is exact, so the one rounding is
        # the kernel's u - reset_amount, and a neuron that did not fire keeps u bit for bit
        return torch.sub(keep, 1, out=out).mul_(reset_amount).add_(u)
    return u


# Elements per time block in the backward pass: a few [block, ...] buffers stay in cache.
_BLOCK_ELEMENTS = 1 << 18


def reference_forward(
    x: torch.Tensor, v0: Optional[torch.Tensor], beta: Decay, threshold: float, reset: str,
    reset_amount: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference forward: ``(spikes [T, ...] in x.dtype, v_last [...] in x.dtype, u [T, ...]
    in the state dtype)``; ``u`` is all the backward needs. ``reset_amount`` is what the
    subtractive reset takes away (the threshold by default). The loop works in place on
    ``[B, ...]`` scratch buffers, so it allocates nothing per step."""
    cdt = _state_dtype(x.dtype)
    beta_c = beta.detach().to(cdt) if isinstance(beta, torch.Tensor) else beta
    th = torch.tensor(threshold, dtype=cdt, device=x.device)
    step = x.shape[1:]
    v = torch.zeros(step, dtype=cdt, device=x.device) if v0 is None else v0.detach().to(cdt)
    u_all = torch.empty(x.shape, dtype=cdt, device=x.device)
    spikes = torch.empty_like(x, memory_format=torch.contiguous_format)
    # keep = 1 - s goes straight into the spike buffer when the dtypes allow; flipped at the end
    keep_in_spikes = spikes.dtype == cdt
    keep_buf = None if keep_in_spikes else torch.empty(step, dtype=cdt, device=x.device)
    v_buf = torch.empty(step, dtype=cdt, device=x.device)
    for x_t, u, s in zip(x.unbind(0), u_all.unbind(0), spikes.unbind(0)):
        torch.mul(v, beta_c, out=u)
        u.add_(x_t)
        keep = _not_spiking(u, th, s if keep_in_spikes else keep_buf)
        if not keep_in_spikes:
            s.copy_(keep)
        v = _after_reset(u, keep, reset_amount, reset, v_buf)
    spikes.neg_().add_(1)
    return spikes, v.to(x.dtype, copy=True), u_all


def reference_backward(
    u_all: torch.Tensor, v0: Optional[torch.Tensor], beta: Decay,
    grad_spikes: Optional[torch.Tensor], grad_v_last: Optional[torch.Tensor],
    threshold: float, reset: str, reset_amount: float, surrogate: Surrogate, detach_reset: bool,
    need_beta: bool,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The reference backward from the kept ``u [T, ...]`` (state dtype): ``(dL/du [T, ...],
    dL/dbeta per neuron [...] or None)``, both in the state dtype. ``dL/dx = dL/du`` and
    ``dL/dv0 = dL/du[0] * beta``; a gradient that did not arrive is None.

    A linear recurrence, ``gu[t] = a[t] + c[t] * gu[t+1]`` with ``a = dL/ds * ds/du`` and
    ``c = dv/du * beta``: ``a`` and ``c`` are computed for blocks of time steps at once (about
    1 MB each, so they stay in cache), leaving one fused op per step."""
    if isinstance(beta, torch.Tensor):
        beta = beta.detach().to(u_all.dtype)
    T, step = u_all.shape[0], u_all.shape[1:]
    th = torch.tensor(threshold, dtype=u_all.dtype, device=u_all.device)
    gx = torch.empty_like(u_all)  # dL/du[t], which is dL/dx[t]
    gbeta = torch.zeros(step, dtype=u_all.dtype, device=u_all.device) if need_beta else None
    block = max(1, _BLOCK_ELEMENTS // max(1, u_all[0].numel()))
    sg_buf, keep_buf, c_buf = (
        torch.empty((min(block, T), *step), dtype=u_all.dtype, device=u_all.device) for _ in range(3)
    )
    for t1 in range(T, 0, -block):
        t0 = max(0, t1 - block)
        u, gu = u_all[t0:t1], gx[t0:t1]
        sg = surrogate.grad_(torch.sub(u, threshold, out=sg_buf[: t1 - t0]))
        keep = _not_spiking(u, th, keep_buf[: t1 - t0])
        if reset == "zero":
            dvdu = keep if detach_reset else torch.addcmul(keep, u, sg, value=-1, out=c_buf[: t1 - t0])
        elif reset == "subtract" and not detach_reset:
            dvdu = torch.mul(sg, -reset_amount, out=c_buf[: t1 - t0]).add_(1)
        else:
            dvdu = None  # dv/du = 1
        if grad_spikes is not None:
            torch.mul(grad_spikes[t0:t1], sg, out=gu)
        else:
            gu.zero_()
        if t1 == T and grad_v_last is not None:
            gu[-1].add_(grad_v_last) if dvdu is None else gu[-1].addcmul_(grad_v_last, dvdu[-1])
        # c[t] = dv[t]/du[t] * beta, the factor carrying gu[t+1] back to gu[t]
        c = c_buf[: t1 - t0]
        torch.mul(dvdu, beta, out=c) if dvdu is not None else c.fill_(1).mul_(beta)
        for t in range(min(t1, T - 1) - 1, t0 - 1, -1):
            gx[t].addcmul_(c[t - t0], gx[t + 1])
        if gbeta is not None:
            # u[t] = beta * v[t-1] + x[t]: pair gu[t] with v[t-1] for t >= 1 in this block
            lo = max(t0, 1)
            if lo < t1:
                prev = u_all[lo - 1:t1 - 1]
                keep_prev = _not_spiking(prev, th, keep_buf[: t1 - lo])
                v_prev = _after_reset(prev, keep_prev, reset_amount, reset, sg_buf[: t1 - lo])
                gbeta.add_(torch.mul(v_prev, gx[lo:t1], out=c_buf[: t1 - lo]).sum(0))
    if gbeta is not None and v0 is not None:
        gbeta.addcmul_(gx[0], v0.to(u_all.dtype))
    return gx, gbeta


class LIFTorchFunction(torch.autograd.Function):
    """Reference LIF over ``T`` steps (:func:`reference_forward`, :func:`reference_backward`),
    walking time in a plain loop without a per-step graph.

    Keeps for backward only the membrane ``u [T, ...]`` in the state dtype (4 bytes per
    neuron-step for float32 and half inputs, 8 for float64); spikes and ``v[t-1]`` are recomputed
    from it. ``lif_sequence`` runs the same two functions as the custom ops
    ``spikegate::lif_reference_forward`` / ``lif_reference_backward`` (``spikegate.kernels.ops``)
    for the built-in surrogates, so that ``torch.compile`` sees one op; this Function serves any
    other surrogate.
    """

    @staticmethod
    def forward(ctx, x, v0, beta, threshold, reset, reset_amount, surrogate, detach_reset):
        spikes, v_last, u_all = reference_forward(x, v0, beta, threshold, reset, reset_amount)
        ctx.save_for_backward(u_all, v0)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zeros
        ctx.beta = beta.detach() if isinstance(beta, torch.Tensor) else beta
        ctx.args = (threshold, reset, reset_amount, surrogate, detach_reset, x.dtype)
        return spikes, v_last

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_last):
        u_all, v0 = ctx.saved_tensors
        threshold, reset, reset_amount, surrogate, detach_reset, x_dtype = ctx.args
        beta = ctx.beta
        need_x, need_v0, need_beta = ctx.needs_input_grad[:3]
        gx, gbeta = reference_backward(
            u_all, v0, beta, grad_spikes, grad_v_last, threshold, reset, reset_amount, surrogate,
            detach_reset, need_beta,
        )
        beta_c = beta.to(u_all.dtype) if isinstance(beta, torch.Tensor) else beta
        grad_x = gx.to(x_dtype) if need_x else None
        grad_v0 = (gx[0] * beta_c).to(v0.dtype) if (need_v0 and v0 is not None) else None
        grad_beta = gbeta.sum_to_size(beta.shape).to(beta.dtype) if gbeta is not None else None
        return grad_x, grad_v0, grad_beta, None, None, None, None, None


def lif_sequence(
    x: torch.Tensor,
    v0: Optional[torch.Tensor] = None,
    *,
    beta: Decay,
    threshold: float = 1.0,
    reset: str = "zero",
    reset_amount: Optional[float] = None,
    surrogate: SurrogateLike = "atan",
    detach_reset: bool = False,
    backend: str = "auto",
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run LIF neurons over a sequence.

    Args:
        x: ``[T, B, ...]`` input current per step (float32, float16, bfloat16; float64 on torch).
        v0: ``[B, ...]`` membrane before the first step, or None for zeros.
        beta: decay in (0, 1], a float or a tensor broadcastable to ``[B, ...]`` (may require grad).
        threshold: firing threshold (> 0).
        reset: ``"zero"``, ``"subtract"`` or ``"none"``.
        reset_amount: what ``reset="subtract"`` takes away from a neuron that fired (> 0); None
            for the threshold. Only with ``reset="subtract"``.
        surrogate: name or :class:`~spikegate.neurons.surrogate.Surrogate` for ds/du.
        detach_reset: stop the gradient through the reset.
        backend: ``"auto"`` (Triton on CUDA, torch elsewhere), ``"triton"`` or ``"torch"``.
        validate: check values: x for NaN/Inf (the torch backend reads x once more; the Triton
            kernels check inside their forward launch) and a tensor beta for (0, 1]; the shape,
            dtype and device checks always run. Inside ``torch.compile`` / ``torch.export`` the
            value checks are skipped (a traced graph cannot branch on values).

    Returns:
        ``(spikes [T, B, ...] (0/1, dtype of x), v_last [B, ...])``.
    """
    # Values cannot be read while torch.compile or torch.export traces (no data, no branching on
    # it), so the value checks run in eager calls only; shapes, dtypes and devices always.
    validate = validate and not torch.compiler.is_compiling()
    check_sequence(x, "x", finite=False)
    surrogate = get_surrogate(surrogate)
    backend = resolve_backend(backend, x)
    if validate and backend == "torch":  # the kernels check inside their forward launch instead
        check_finite(x, "x")
    check_state(v0, x, "v0")
    check_decay(beta, x, "beta", values=validate)
    threshold = check_real(threshold, "threshold", strict=True)
    check_choice(reset, "reset", RESETS)
    reset_amount = check_reset_amount(reset_amount, reset)
    amount = threshold if reset_amount is None else reset_amount
    if not isinstance(detach_reset, bool):
        raise TypeError(f"detach_reset: expected a bool, got {type(detach_reset).__name__}")
    if not isinstance(beta, torch.Tensor):
        beta = float(beta)
    if backend == "triton":
        from spikegate.kernels.lif import lif_triton

        return lif_triton(
            x, v0, beta, threshold=threshold, reset=reset, reset_amount=amount,
            surrogate=surrogate, detach_reset=detach_reset, check_finite=validate,
        )
    from spikegate.kernels.ops import lif_reference, op_surrogate, surrogate_args

    if not op_surrogate(surrogate):  # a user's own surrogate cannot travel through an op
        return LIFTorchFunction.apply(
            x, v0, beta, threshold, reset, amount, surrogate, detach_reset
        )
    tensor_beta = beta if isinstance(beta, torch.Tensor) else None
    spikes, v_last, _, _ = lif_reference(
        x, v0, tensor_beta, 1.0 if tensor_beta is not None else beta, threshold, reset, amount,
        *surrogate_args(surrogate), detach_reset, _needs_grad(x, v0, beta), False,
    )
    return spikes, v_last


def _needs_grad(*inputs: object) -> bool:
    """Whether the backward will run: keep the per-step state only then."""
    return torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in inputs
    )


class LIF(nn.Module):
    """LIF neurons as a module; the math lives in :func:`lif_sequence`.

    Args:
        beta: initial decay in (0, 1].
        threshold, reset, reset_amount, surrogate, detach_reset, backend: as in
            :func:`lif_sequence`.
        learn_beta: make beta a parameter, ``beta = sigmoid(beta_logit)`` so it stays in (0, 1).
        shape: neuron shape (the trailing dims of ``[T, B, *shape]``); with ``learn_beta`` this gives
            one beta per neuron, and inputs are checked against it.
        stateful: keep ``v_last`` between calls and start the next call from it (``reset_state()``
            clears it); otherwise every call starts from ``v0`` or zeros. A ``v0`` passed to a
            stateful LIF replaces the kept membrane for that call (the call starts from ``v0``, as a
            stateless LIF would) and the kept membrane afterwards is that call's ``v_last``.
        validate: check input values on every call (see :func:`lif_sequence`); turn off to save a
            read of the input and a host sync per call once a pipeline is known to be sound.

    ``forward(x [T, B, *shape], v0=None) -> (spikes [T, B, *shape], v_last [B, *shape])``; in
    ``nn.Sequential``, where a layer returns one tensor, use :class:`~spikegate.neurons.LIFSpikes`.
    """

    def __init__(
        self,
        beta: float = 0.5,
        threshold: float = 1.0,
        reset: str = "zero",
        reset_amount: Optional[float] = None,
        surrogate: SurrogateLike = "atan",
        detach_reset: bool = False,
        learn_beta: bool = False,
        shape: Optional[tuple[int, ...]] = None,
        stateful: bool = False,
        backend: str = "auto",
        validate: bool = True,
    ) -> None:
        super().__init__()
        beta = check_decay_value(beta, "beta")
        if learn_beta and beta >= 1:
            raise ValueError(f"beta: a learnable beta must start below 1, got {beta!r}")
        self.threshold = check_real(threshold, "threshold", strict=True)
        self.reset = check_choice(reset, "reset", RESETS)
        self.reset_amount = check_reset_amount(reset_amount, reset)
        self.surrogate: Surrogate = get_surrogate(surrogate)
        self.detach_reset = detach_reset
        self.backend = check_choice(backend, "backend", BACKENDS)
        self.validate = validate
        self.shape = tuple(shape) if shape is not None else None
        self.stateful = stateful
        self.v: Optional[torch.Tensor] = None
        if learn_beta:
            logit = torch.logit(torch.tensor(float(beta)))
            init = torch.full(self.shape, float(logit)) if self.shape else logit.clone()
            self.beta_logit = nn.Parameter(init)
        else:
            self.register_parameter("beta_logit", None)
            self._beta = float(beta)

    @property
    def beta(self) -> Decay:
        return torch.sigmoid(self.beta_logit) if self.beta_logit is not None else self._beta

    def reset_state(self) -> None:
        self.v = None

    def forward(
        self, x: torch.Tensor, v0: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shape is not None and isinstance(x, torch.Tensor) and tuple(x.shape[2:]) != self.shape:
            raise ValueError(
                f"x: expected [T, B, {', '.join(map(str, self.shape))}] (time-major), "
                f"got shape {tuple(x.shape)}"
            )
        if v0 is None and self.stateful:
            v0 = self.v
        spikes, v_last = lif_sequence(
            x, v0, beta=self.beta, threshold=self.threshold, reset=self.reset,
            reset_amount=self.reset_amount, surrogate=self.surrogate, detach_reset=self.detach_reset, backend=self.backend,
            validate=self.validate,
        )
        if self.stateful:
            self.v = v_last.detach()
        return spikes, v_last

    def neuron_cost(self) -> NeuronCost:
        """Per neuron and step: ``beta * v`` (1 mul), ``+ x`` (1 add), the threshold test (1
        compare), and the reset: a select for zero, one more add for subtract (whatever its
        ``reset_amount``), nothing for none."""
        return NeuronCost(
            muls=1, adds=1 + (self.reset == "subtract"), compares=1 + (self.reset == "zero"),
        )

    def extra_repr(self) -> str:
        beta = "learned" if self.beta_logit is not None else self._beta
        amount = "" if self.reset_amount is None else f", reset_amount={self.reset_amount}"
        return (
            f"beta={beta}, threshold={self.threshold}, reset={self.reset!r}{amount}, "
            f"surrogate={self.surrogate}, backend={self.backend!r}"
        )
