"""Leaky integrate-and-fire neuron over a whole sequence.

Semantics (time-major, ``x: [T, B, ...]``; pinned in DESIGN.md)::

    u[t] = beta * v[t-1] + x[t]          v[-1] = v0 (or 0)
    s[t] = 1 if u[t] >= threshold else 0
    v[t] = u[t] * (1 - s[t])             reset="zero"
    v[t] = u[t] - threshold * s[t]       reset="subtract"
    v[t] = u[t]                          reset="none"
    ds/du = surrogate'(u[t] - threshold)

With ``beta = 1 - 1/tau`` this is SpikingJelly's ``LIFNode(tau, decay_input=False)``.

Two backends compute it: the fused Triton kernels (``spikegate.kernels.lif``, one launch for all
T steps) and the torch reference below, a custom autograd Function that walks time in a plain
loop without building a per-step graph. The reference is the CPU path and the kernels' oracle.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from .checks import (
    check_choice,
    check_decay,
    check_positive,
    check_sequence,
    check_state,
    resolve_backend,
)
from .surrogate import Surrogate, SurrogateLike, get_surrogate

__all__ = ["lif_sequence", "LIF", "RESETS"]

RESETS = ("zero", "subtract", "none")
Decay = Union[float, torch.Tensor]


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half inputs keep their membrane in float32; float64 stays float64 (gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _not_spiking(u: torch.Tensor, threshold: float, out: torch.Tensor) -> torch.Tensor:
    """``1 - s = (u < threshold)`` as 0/1 floats written into ``out``, from float ops only: on the
    CPU, comparisons that produce bool tensors (and arithmetic with them) cost several times a
    float op. Exact: ``threshold - u > 0`` exactly when ``u < threshold`` in IEEE arithmetic."""
    return torch.neg(u, out=out).add_(threshold).clamp_min_(0).sign_()


def _after_reset(u, keep, threshold: float, reset: str, out: torch.Tensor) -> torch.Tensor:
    """``v[t]`` from ``u[t]`` and ``keep = 1 - s[t]``, written into ``out`` (``u`` itself for none)."""
    if reset == "zero":
        return torch.mul(u, keep, out=out)
    if reset == "subtract":
        # u + (-s * threshold) with s = 1 - keep: the product is exact, so the one rounding is the
        # kernel's, and a neuron that did not fire keeps u bit for bit
        return torch.sub(keep, 1, out=out).mul_(threshold).add_(u)
    return u


class LIFTorchFunction(torch.autograd.Function):
    """Reference LIF over ``T`` steps, walking time in a plain loop without a per-step graph.

    Keeps for backward only the membrane ``u [T, ...]`` in the state dtype (4 bytes per
    neuron-step for float32 and half inputs, 8 for float64); spikes and ``v[t-1]`` are recomputed
    from it. Every step works in place on a few ``[B, ...]`` scratch buffers: they stay in cache,
    and the loop allocates nothing.
    """

    @staticmethod
    def forward(ctx, x, v0, beta, threshold, reset, surrogate, detach_reset):
        cdt = _state_dtype(x.dtype)
        beta_c = beta.detach().to(cdt) if isinstance(beta, torch.Tensor) else beta
        step = x.shape[1:]
        v = torch.zeros(step, dtype=cdt, device=x.device) if v0 is None else v0.detach().to(cdt)
        u_all = torch.empty(x.shape, dtype=cdt, device=x.device)
        spikes = torch.empty_like(x)
        keep = torch.empty(step, dtype=cdt, device=x.device)
        v_buf = torch.empty(step, dtype=cdt, device=x.device)
        for x_t, u, s in zip(x.unbind(0), u_all.unbind(0), spikes.unbind(0)):
            torch.mul(v, beta_c, out=u)
            u.add_(x_t)
            _not_spiking(u, threshold, keep)
            s.copy_(keep).neg_().add_(1)
            v = _after_reset(u, keep, threshold, reset, v_buf)
        ctx.save_for_backward(u_all, v0)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zeros
        ctx.beta = beta_c
        ctx.beta_shape = beta.shape if isinstance(beta, torch.Tensor) else None
        ctx.beta_dtype = beta.dtype if isinstance(beta, torch.Tensor) else None
        ctx.args = (threshold, reset, surrogate, detach_reset, x.dtype)
        return spikes, v.to(x.dtype, copy=True)

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_last):
        u_all, v0 = ctx.saved_tensors
        threshold, reset, surrogate, detach_reset, x_dtype = ctx.args
        beta = ctx.beta
        need_x, need_v0, need_beta = ctx.needs_input_grad[:3]
        gs_steps = None if grad_spikes is None else grad_spikes.unbind(0)
        gx = torch.empty_like(u_all)                 # dL/du[t], which is dL/dx[t]
        gv = torch.empty_like(u_all[0])              # dL/dv[t]
        have_gv = grad_v_last is not None
        if have_gv:
            gv.copy_(grad_v_last)
        gbeta = torch.zeros_like(u_all[0]) if need_beta else None
        sg, keep, dvdu = (torch.empty_like(u_all[0]) for _ in range(3))
        gu_next = None
        for t in range(u_all.shape[0] - 1, -1, -1):
            u, gu = u_all[t], gx[t]
            surrogate.grad_(torch.sub(u, threshold, out=sg))
            _not_spiking(u, threshold, keep)
            # dv[t]/du[t]; None means 1
            if reset == "zero":
                slope = keep if detach_reset else torch.addcmul(keep, u, sg, value=-1, out=dvdu)
            elif reset == "subtract" and not detach_reset:
                slope = torch.mul(sg, -threshold, out=dvdu).add_(1)
            else:
                slope = None
            if gs_steps is not None:
                torch.mul(gs_steps[t], sg, out=gu)
            else:
                gu.zero_()
            if have_gv:
                gu.add_(gv) if slope is None else gu.addcmul_(gv, slope)
            if gbeta is not None and gu_next is not None:
                # u[t+1] = beta * v[t] + x[t+1]
                gbeta.addcmul_(gu_next, _after_reset(u, keep, threshold, reset, dvdu))
            torch.mul(gu, beta, out=gv)
            have_gv, gu_next = True, gu
        if gbeta is not None and v0 is not None:
            gbeta.addcmul_(gu_next, v0.to(u_all.dtype))
        grad_x = gx.to(x_dtype) if need_x else None
        grad_v0 = gv.to(v0.dtype) if (need_v0 and v0 is not None) else None
        grad_beta = gbeta.sum_to_size(ctx.beta_shape).to(ctx.beta_dtype) if gbeta is not None else None
        return grad_x, grad_v0, grad_beta, None, None, None, None


def lif_sequence(
    x: torch.Tensor,
    v0: Optional[torch.Tensor] = None,
    *,
    beta: Decay,
    threshold: float = 1.0,
    reset: str = "zero",
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
        surrogate: name or :class:`~spikegate.neurons.surrogate.Surrogate` for ds/du.
        detach_reset: stop the gradient through the reset.
        backend: ``"auto"`` (Triton on CUDA, torch elsewhere), ``"triton"`` or ``"torch"``.
        validate: check x for NaN/Inf (one extra read of x); the shape checks always run.

    Returns:
        ``(spikes [T, B, ...] (0/1, dtype of x), v_last [B, ...])``.
    """
    check_sequence(x, "x", finite=validate)
    check_state(v0, x, "v0")
    check_decay(beta, x, "beta")
    threshold = check_positive(threshold, "threshold")
    check_choice(reset, "reset", RESETS)
    if not isinstance(detach_reset, bool):
        raise TypeError(f"detach_reset: expected a bool, got {type(detach_reset).__name__}")
    surrogate = get_surrogate(surrogate)
    backend = resolve_backend(backend, x)
    if isinstance(beta, int):
        beta = float(beta)
    if backend == "triton":
        from spikegate.kernels.lif import lif_triton

        return lif_triton(
            x, v0, beta, threshold=threshold, reset=reset, surrogate=surrogate,
            detach_reset=detach_reset,
        )
    return LIFTorchFunction.apply(x, v0, beta, threshold, reset, surrogate, detach_reset)


class LIF(nn.Module):
    """LIF neurons as a module; the math lives in :func:`lif_sequence`.

    Args:
        beta: initial decay in (0, 1].
        threshold, reset, surrogate, detach_reset, backend: as in :func:`lif_sequence`.
        learn_beta: make beta a parameter, ``beta = sigmoid(beta_logit)`` so it stays in (0, 1).
        shape: neuron shape (the trailing dims of ``[T, B, *shape]``); with ``learn_beta`` this gives
            one beta per neuron, and inputs are checked against it.
        stateful: keep ``v_last`` between calls and start the next call from it (``reset_state()``
            clears it); otherwise every call starts from ``v0`` or zeros.

    ``forward(x [T, B, *shape], v0=None) -> (spikes [T, B, *shape], v_last [B, *shape])``.
    """

    def __init__(
        self,
        beta: float = 0.5,
        threshold: float = 1.0,
        reset: str = "zero",
        surrogate: SurrogateLike = "atan",
        detach_reset: bool = False,
        learn_beta: bool = False,
        shape: Optional[tuple[int, ...]] = None,
        stateful: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (0 < beta <= 1):
            raise ValueError(f"beta: expected a float in (0, 1], got {beta!r}")
        if learn_beta and beta >= 1:
            raise ValueError(f"beta: a learnable beta must start below 1, got {beta!r}")
        self.threshold = check_positive(threshold, "threshold")
        self.reset = check_choice(reset, "reset", RESETS)
        self.surrogate: Surrogate = get_surrogate(surrogate)
        self.detach_reset = detach_reset
        self.backend = check_choice(backend, "backend", ("auto", "triton", "torch"))
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
            surrogate=self.surrogate, detach_reset=self.detach_reset, backend=self.backend,
        )
        if self.stateful:
            self.v = v_last.detach()
        return spikes, v_last

    def extra_repr(self) -> str:
        beta = "learned" if self.beta_logit is not None else self._beta
        return (
            f"beta={beta}, threshold={self.threshold}, reset={self.reset!r}, "
            f"surrogate={self.surrogate}, backend={self.backend!r}"
        )
