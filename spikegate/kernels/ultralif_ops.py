"""The UltraLIF family as torch custom ops, so that ``torch.compile`` and ``torch.export`` see one
op per direction (the pattern of :mod:`spikegate.kernels`).

Two op pairs, one per backend of ``ultralif_sequence`` / ``ultradlif_sequence``, with the same
schema; each serves both neurons (``coupled`` picks UltraDLIF) and every variant:

* ``spikegate::ultra_reference_forward`` / ``ultra_reference_backward``: the torch reference
  (:func:`spikegate.neurons.ultralif.reference_forward` / ``reference_backward``), any device
  and float64 too. This module; no triton import.
* ``spikegate::ultra_forward`` / ``ultra_backward``: the fused Triton kernels (CUDA, or CPU
  tensors on Triton's interpreter), registered in :mod:`spikegate.kernels.ultralif`.

Schema (both pairs)::

    forward(i, v0?, eps?, tau0?, eps_value, tau0_value, coupled, threshold, reset, hard,
            leak_before_lse, reset_pre_lse, save) -> (spikes, v_last, kept)
    backward(kept, grad_spikes?, grad_v_last?, v0?, eps?, tau0?, eps_value, tau0_value, coupled,
             threshold, reset, hard, leak_before_lse, reset_pre_lse, need_i, need_v0, need_eps,
             need_tau0, i_dtype) -> (grad_i, grad_v0, grad_eps, grad_tau0)

``eps`` / ``tau0`` are tensors broadcastable to the step shape (learnable, of any shape and
dtype: their gradients come back summed to that shape, in that dtype) or None, and then the
floats ``eps_value`` / ``tau0_value`` are the values. ``kept`` is the per-step state the backward
reads: ``u[t]`` (``w[t]`` with ``leak_before_lse``) in float32 (float64 for float64 input on the
reference), ``[0]`` when ``save`` is false (inference). Gradients that are not needed come back
as ``[0]`` tensors and are turned into None by the autograd formula. ``hard=True`` (the tropical
limit) has no gradient: its backward raises.

Eager calls skip the dispatcher (:class:`~spikegate.kernels.ops.KernelOps`): the sequence
functions call :func:`ultra_call`, which takes the op only while tracing.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from spikegate.kernels.ops import KernelOps, nothing

__all__ = ["UltraOps", "ultra_call", "ultra_reference", "ultra_reference_forward",
           "ultra_reference_backward", "gradient_outputs", "check_differentiable"]

Param = Union[float, torch.Tensor]


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_differentiable(hard: bool) -> None:
    """Refuse a backward of the tropical limit, which has no gradient."""
    if hard:
        raise ValueError(
            "hard: the tropical limit (hard=True, Heaviside spikes) has no gradient; run it "
            "under torch.no_grad() or use hard=False"
        )


def gradient_outputs(
    like: torch.Tensor, grad_i: Optional[torch.Tensor], grad_v0: torch.Tensor,
    grad_eps: torch.Tensor, grad_tau0: torch.Tensor, v0: Optional[torch.Tensor],
    eps: Optional[torch.Tensor], tau0: Optional[torch.Tensor],
    need_i: bool, need_v0: bool, need_eps: bool, need_tau0: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A backward op's outputs from its per-neuron gradients: ``grad_i`` as it is, the others
    summed to their input's shape in its dtype, ``[0]`` (from ``like``) for those not needed."""
    def reduced(grad, param, need):
        return grad.sum_to_size(param.shape).to(param.dtype) if need else nothing(like)

    return (grad_i if need_i else nothing(like),
            grad_v0.to(v0.dtype) if need_v0 else nothing(like),
            reduced(grad_eps, eps, need_eps), reduced(grad_tau0, tau0, need_tau0))


def _fake_backward(kept, grad_spikes, grad_v_last, v0, eps, tau0, eps_value, tau0_value, coupled,
                   threshold, reset, hard, leak_before_lse, reset_pre_lse, need_i, need_v0,
                   need_eps, need_tau0, i_dtype):
    return (kept.new_empty(kept.shape, dtype=i_dtype) if need_i else nothing(kept),
            v0.new_empty(v0.shape) if need_v0 else nothing(kept),
            eps.new_empty(eps.shape) if need_eps else nothing(kept),
            tau0.new_empty(tau0.shape) if need_tau0 else nothing(kept))


def _setup_context(ctx, inputs, output) -> None:
    i, v0, eps, tau0 = inputs[:4]
    ctx.save_for_backward(output[2], v0, eps, tau0)
    ctx.config = inputs[4:12]   # eps_value .. reset_pre_lse
    ctx.i_dtype = i.dtype
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zeros


def _autograd_backward(backward_fn):
    """The autograd formula of the schema, calling ``backward_fn`` (the backward op, or the
    function behind it)."""

    def backward(ctx, grad_spikes, grad_v_last, _grad_kept=None):
        kept, v0, eps, tau0 = ctx.saved_tensors
        need_i, need_v0, need_eps, need_tau0 = ctx.needs_input_grad[:4]
        need = (need_i, need_v0 and v0 is not None, need_eps and eps is not None,
                need_tau0 and tau0 is not None)
        grads = backward_fn(kept, grad_spikes, grad_v_last, v0, eps, tau0, *ctx.config, *need,
                            ctx.i_dtype)
        return tuple(g if n else None for g, n in zip(grads, need)) + (None,) * 9

    return backward


class UltraOps(KernelOps):
    """A :class:`~spikegate.kernels.ops.KernelOps` pair with the schema above, from two plain
    functions and the forward's fake. ``__call__`` returns ``(spikes, v_last, kept)`` with
    autograd; ``kept`` carries no gradient."""

    def __init__(self, name: str, forward_fn, backward_fn, fake_forward) -> None:
        super().__init__(name, forward_fn, backward_fn, fake_forward=fake_forward,
                         fake_backward=_fake_backward, setup_context=_setup_context,
                         autograd_backward=_autograd_backward, non_differentiable=(2,))


def ultra_call(
    ops: UltraOps, i: torch.Tensor, v0: Optional[torch.Tensor], eps: Param, tau0: Param, *,
    coupled: bool, threshold: float, reset: bool, hard: bool, leak_before_lse: bool = False,
    reset_pre_lse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(spikes, v_last)`` of one of the op pairs, from the sequence functions' arguments (a
    float or a tensor ``eps`` / ``tau0``); the per-step state is kept only when a backward can
    run."""
    tensors = [t for t in (i, v0, eps, tau0) if isinstance(t, torch.Tensor)]
    save = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    eps_t, tau_t = (p if isinstance(p, torch.Tensor) else None for p in (eps, tau0))
    spikes, v_last, _ = ops(
        i, v0, eps_t, tau_t, 1.0 if eps_t is not None else float(eps),
        1.0 if tau_t is not None else float(tau0), coupled, float(threshold), reset, hard,
        leak_before_lse, reset_pre_lse, save,
    )
    return spikes, v_last


# ---------------------------------------------------------------------------------------------
# The torch reference as an op pair


def _param(tensor: Optional[torch.Tensor], value: float) -> Param:
    return tensor if tensor is not None else value


def _reference_forward(
    i: torch.Tensor, v0: Optional[torch.Tensor], eps: Optional[torch.Tensor],
    tau0: Optional[torch.Tensor], eps_value: float, tau0_value: float, coupled: bool,
    threshold: float, reset: bool, hard: bool, leak_before_lse: bool, reset_pre_lse: bool,
    save: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from spikegate.neurons.ultralif import reference_forward

    spikes, v_last, kept = reference_forward(
        i, v0, _param(eps, eps_value), _param(tau0, tau0_value), threshold, reset, hard, coupled,
        leak_before_lse, reset_pre_lse, save,
    )
    return spikes, v_last, kept if kept is not None else nothing(i)


def _fake_reference_forward(i, v0, eps, tau0, eps_value, tau0_value, coupled, threshold, reset,
                            hard, leak_before_lse, reset_pre_lse, save):
    kept = i.new_empty(i.shape, dtype=_state_dtype(i.dtype)) if save else nothing(i)
    return i.new_empty(i.shape), i.new_empty(i.shape[1:]), kept


def _reference_backward(
    kept: torch.Tensor, grad_spikes: Optional[torch.Tensor], grad_v_last: Optional[torch.Tensor],
    v0: Optional[torch.Tensor], eps: Optional[torch.Tensor], tau0: Optional[torch.Tensor],
    eps_value: float, tau0_value: float, coupled: bool, threshold: float, reset: bool,
    hard: bool, leak_before_lse: bool, reset_pre_lse: bool, need_i: bool, need_v0: bool,
    need_eps: bool, need_tau0: bool, i_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from spikegate.neurons.ultralif import reference_backward

    check_differentiable(hard)
    gi, gv0, geps, gtau = reference_backward(
        kept, grad_spikes, grad_v_last, v0, _param(eps, eps_value), _param(tau0, tau0_value),
        threshold, reset, coupled, leak_before_lse, reset_pre_lse,
    )
    # every gradient is this op's own buffer, so handing them out aliases no input
    return gradient_outputs(kept, gi.to(i_dtype) if need_i else None, gv0, geps, gtau, v0, eps,
                            tau0, need_i, need_v0, need_eps, need_tau0)


ultra_reference = UltraOps("ultra_reference", _reference_forward, _reference_backward,
                           _fake_reference_forward)
ultra_reference_forward = ultra_reference.forward
ultra_reference_backward = ultra_reference.backward
