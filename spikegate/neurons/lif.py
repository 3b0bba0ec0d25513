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


def _after_reset(u: torch.Tensor, threshold: float, reset: str) -> torch.Tensor:
    """``v[t]`` from ``u[t]`` (spikes recomputed as ``u >= threshold``)."""
    if reset == "zero":
        return u.masked_fill(u >= threshold, 0.0)
    if reset == "subtract":
        return u - threshold * (u >= threshold).to(u.dtype)
    return u


class LIFTorchFunction(torch.autograd.Function):
    """Reference LIF over ``T`` steps. Keeps for backward the membrane ``u [T, ...]`` in the
    state dtype (4 bytes per neuron-step for half and float32 inputs); spikes and ``v[t-1]``
    are recomputed from it."""

    @staticmethod
    def forward(ctx, x, v0, beta, threshold, reset, surrogate, detach_reset):
        cdt = _state_dtype(x.dtype)
        beta_c = beta.to(cdt) if isinstance(beta, torch.Tensor) else beta
        v = (
            torch.zeros(x.shape[1:], dtype=cdt, device=x.device)
            if v0 is None
            else v0.detach().to(cdt)
        )
        u_all = torch.empty(x.shape, dtype=cdt, device=x.device)
        for x_t, u in zip(x.unbind(0), u_all.unbind(0)):
            torch.mul(v, beta_c, out=u)
            u.add_(x_t)
            v = _after_reset(u, threshold, reset)
        spikes = (u_all >= threshold).to(x.dtype)
        ctx.save_for_backward(u_all, v0)
        ctx.beta = beta_c
        ctx.beta_shape = beta.shape if isinstance(beta, torch.Tensor) else None
        ctx.args = (threshold, reset, surrogate, detach_reset, x.dtype)
        return spikes, v.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_last):
        u_all, v0 = ctx.saved_tensors
        threshold, reset, surrogate, detach_reset, x_dtype = ctx.args
        beta = ctx.beta
        cdt = u_all.dtype
        need_x, need_v0, need_beta = ctx.needs_input_grad[:3]
        T = u_all.shape[0]
        gv = (
            torch.zeros(u_all.shape[1:], dtype=cdt, device=u_all.device)
            if grad_v_last is None
            else grad_v_last.to(cdt)
        )
        gx = torch.empty(u_all.shape, dtype=cdt, device=u_all.device)
        gbeta = torch.zeros(u_all.shape[1:], dtype=cdt, device=u_all.device) if need_beta else None
        gs_steps = None if grad_spikes is None else grad_spikes.unbind(0)
        for t in range(T - 1, -1, -1):
            u = u_all[t]
            sg = surrogate.grad(u - threshold)
            if reset == "zero":
                dvdu = (u < threshold).to(cdt)
                if not detach_reset:
                    dvdu = dvdu - u * sg
            elif reset == "subtract" and not detach_reset:
                dvdu = 1 - threshold * sg
            else:
                dvdu = None  # dv/du == 1
            gu = gv * dvdu if dvdu is not None else gv.clone()
            if gs_steps is not None:
                gu.addcmul_(gs_steps[t].to(cdt), sg)
            gx[t] = gu
            if gbeta is not None:
                if t > 0:
                    v_prev = _after_reset(u_all[t - 1], threshold, reset)
                elif v0 is not None:
                    v_prev = v0.to(cdt)
                else:
                    v_prev = None
                if v_prev is not None:
                    gbeta.addcmul_(gu, v_prev)
            gv = gu * beta
        grad_x = gx.to(x_dtype) if need_x else None
        grad_v0 = gv.to(v0.dtype) if (need_v0 and v0 is not None) else None
        grad_beta = None
        if gbeta is not None:
            grad_beta = gbeta.sum_to_size(ctx.beta_shape).to(beta.dtype)
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
