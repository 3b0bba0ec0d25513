"""LIF as torch custom ops, so that ``torch.compile`` and ``torch.export`` see one op per direction.

Two op pairs, one per backend of ``lif_sequence``, with the same schema:

* ``spikegate::lif_reference_forward`` / ``lif_reference_backward``: the torch reference
  (:func:`spikegate.neurons.lif.reference_forward` / ``reference_backward``, the math of
  ``LIFTorchFunction``), any device. This module; no triton import.
* ``spikegate::lif_forward`` / ``lif_backward``: the fused Triton kernels (CUDA, or CPU tensors on
  Triton's interpreter), registered in :mod:`spikegate.kernels.lif` with :class:`LIFOps`.

``backend="auto"`` thus runs the reference op on the CPU and the kernel op on CUDA.

Schema (both pairs)::

    forward(x, v0?, beta?, beta_value, threshold, reset, reset_amount, surrogate,
            surrogate_params, detach_reset, save, check_finite) -> (spikes, v_last, kept, nonfinite)
    backward(kept, grad_spikes?, grad_v_last?, v0?, beta?, beta_value, threshold, reset,
             reset_amount, surrogate, surrogate_params, detach_reset, need_x, need_v0, need_beta,
             x_dtype) -> (grad_x, grad_v0, grad_beta)

``beta`` is a tensor or None (then the float ``beta_value`` is the decay). ``reset_amount`` is
what the subtractive reset takes away (``lif_sequence`` passes the threshold unless told
otherwise; the other resets ignore it). A surrogate travels as
its name and its dataclass fields (``float[]``), since an op takes no python objects. ``kept`` is
the per-step state the backward reads (``[0]`` when ``save`` is false: inference);
``nonfinite`` is a 0-dim bool, true when ``check_finite`` found a NaN or Inf in ``x`` (the kernels
fold that check into the forward launch; the reference returns false and leaves the check to
``lif_sequence``). Gradients that are not needed come back as ``[0]`` tensors and are turned into
None by the autograd formula. Every op has a fake (meta) implementation, so tracing needs no data.

Eager calls skip the dispatcher (see :class:`KernelOps`, which :class:`LIFOps` builds on):
``lif_sequence`` calls ``lif_reference(...)`` / ``lif_kernels(...)``, which take the op only while
tracing.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

from spikegate.neurons.surrogate import SURROGATES, Surrogate

__all__ = [
    "nothing",
    "KernelOps",
    "surrogate_args",
    "surrogate_from_args",
    "op_surrogate",
    "LIFOps",
    "lif_reference",
    "lif_reference_forward",
    "lif_reference_backward",
]


def op_surrogate(surrogate: Surrogate) -> bool:
    """Whether ``surrogate`` can travel through an op: one of the built-in classes, exactly."""
    return SURROGATES.get(surrogate.name) is type(surrogate)


def surrogate_args(surrogate: Surrogate) -> tuple[str, list[float]]:
    """``(name, field values)`` of a built-in surrogate, the form the ops take."""
    fields = dataclasses.fields(surrogate)
    return surrogate.name, [float(getattr(surrogate, f.name)) for f in fields]


def surrogate_from_args(name: str, params: list[float]) -> Surrogate:
    return SURROGATES[name](*params)


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def nothing(like: torch.Tensor) -> torch.Tensor:
    """The ``[0]`` placeholder for an op output that is not needed (every kernel's ops use it)."""
    return like.new_empty((0,), dtype=torch.float32)


_nothing = nothing  # the name the LIF schema functions below use


class KernelOps:
    """A forward/backward pair of torch custom ops and its eager route, for any schema: steps 1
    to 5 of the pattern in :mod:`spikegate.kernels`, from plain functions.

    Args:
        name: the ops are ``spikegate::<name>_forward`` and ``spikegate::<name>_backward``.
        forward_fn, backward_fn: the ops' implementations, with type hints (the schema is
            inferred from them); their outputs alias neither their inputs nor each other.
        fake_forward, fake_backward: the fake implementations (shapes, dtypes, devices only).
        setup_context: ``setup_context(ctx, inputs, output)`` saves what the backward reads.
        autograd_backward: ``autograd_backward(backward) -> formula``, where ``formula(ctx,
            *grad_outputs)`` returns one gradient (or None) per forward input and calls
            ``backward``, which is the backward op while tracing and ``backward_fn`` itself on the
            eager route.
        non_differentiable: indices of the forward outputs that carry no gradient (kept state,
            flags), for the eager route (an op's autograd formula ignores their gradients).

    ``forward`` / ``backward`` are the registered ops, what ``torch.compile`` and ``torch.export``
    trace. ``__call__`` runs the forward with autograd: through the op while tracing, and
    otherwise through ``eager``, an ``autograd.Function`` that calls ``forward_fn`` and
    ``backward_fn`` directly, since an eager call through the dispatcher costs a few hundred
    microseconds of Python per call on a CPU (more than a small kernel launch). Both routes run
    the same code; tests compare them bitwise.
    """

    def __init__(self, name: str, forward_fn: Callable, backward_fn: Callable, *,
                 fake_forward: Callable, fake_backward: Callable, setup_context: Callable,
                 autograd_backward: Callable, non_differentiable: tuple = ()) -> None:
        self.forward = torch.library.custom_op(f"spikegate::{name}_forward", forward_fn,
                                               mutates_args=())
        self.backward = torch.library.custom_op(f"spikegate::{name}_backward", backward_fn,
                                                mutates_args=())
        self.forward.register_fake(fake_forward)
        self.backward.register_fake(fake_backward)
        self.forward.register_autograd(autograd_backward(self.backward),
                                       setup_context=setup_context)
        self.eager = _eager_route(forward_fn, autograd_backward(backward_fn), setup_context,
                                  tuple(non_differentiable))

    def __call__(self, *inputs):
        """The forward's outputs with autograd, from its inputs (see the class docstring)."""
        if torch.compiler.is_compiling():
            return self.forward(*inputs)
        return self.eager.apply(*inputs)


def _eager_route(forward_fn: Callable, formula: Callable, setup_context: Callable,
                 non_differentiable: tuple) -> type:
    """The ``autograd.Function`` of :class:`KernelOps`: the op's function and autograd formula
    without the dispatcher."""

    class EagerKernelOps(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            output = forward_fn(*inputs)
            setup_context(ctx, inputs, output)
            if non_differentiable:
                ctx.mark_non_differentiable(*(output[k] for k in non_differentiable))
            return output

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, *grads):
            return formula(ctx, *grads)

    return EagerKernelOps


def _backward_outputs(kept, v0, beta, need_x, need_v0, need_beta, x_dtype):
    """Fake gradients, as both backward ops return them."""
    return (
        kept.new_empty(kept.shape, dtype=x_dtype) if need_x else _nothing(kept),
        v0.new_empty(v0.shape) if need_v0 else _nothing(kept),
        beta.new_empty(beta.shape) if need_beta else _nothing(kept),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, v0, beta, beta_value, threshold, reset, reset_amount, surrogate, params, detach_reset = (
        inputs[:10]
    )
    ctx.save_for_backward(output[2], v0, beta)
    ctx.config = (beta_value, threshold, reset, reset_amount, surrogate, params, detach_reset)
    ctx.x_dtype = x.dtype
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zeros


def _autograd_backward(backward_fn: Callable) -> Callable:
    """The autograd formula of the LIF schema, calling ``backward_fn`` (the backward op, or the
    function behind it)."""

    def backward(ctx, grad_spikes, grad_v_last, _grad_kept=None, _grad_nonfinite=None):
        kept, v0, beta = ctx.saved_tensors
        need_x, need_v0, need_beta = ctx.needs_input_grad[:3]
        need_v0 = need_v0 and v0 is not None
        need_beta = need_beta and beta is not None
        grad_x, grad_v0, grad_beta = backward_fn(
            kept, grad_spikes, grad_v_last, v0, beta, *ctx.config, need_x, need_v0, need_beta,
            ctx.x_dtype,
        )
        return (grad_x if need_x else None, grad_v0 if need_v0 else None,
                grad_beta if need_beta else None) + (None,) * 9

    return backward


class LIFOps(KernelOps):
    """A :class:`KernelOps` pair with the LIF schema above, from two plain functions and the
    forward's fake (the backward's fake, the context and the autograd formula are the schema's).

    ``__call__`` returns ``(spikes, v_last, kept, nonfinite)`` with autograd, from the forward's
    inputs; ``kept`` and ``nonfinite`` carry no gradient.
    """

    def __init__(self, name: str, forward_fn: Callable, backward_fn: Callable,
                 fake_forward: Callable) -> None:
        super().__init__(name, forward_fn, backward_fn, fake_forward=fake_forward,
                         fake_backward=_fake_backward, setup_context=_setup_context,
                         autograd_backward=_autograd_backward, non_differentiable=(2, 3))


def _fake_backward(kept, grad_spikes, grad_v_last, v0, beta, beta_value, threshold, reset,
                   reset_amount, surrogate, surrogate_params, detach_reset, need_x, need_v0,
                   need_beta, x_dtype):
    return _backward_outputs(kept, v0, beta, need_x, need_v0, need_beta, x_dtype)


# ---------------------------------------------------------------------------------------------
# The torch reference as an op pair


def _reference_forward(
    x: torch.Tensor, v0: Optional[torch.Tensor], beta: Optional[torch.Tensor], beta_value: float,
    threshold: float, reset: str, reset_amount: float, surrogate: str,
    surrogate_params: list[float], detach_reset: bool, save: bool, check_finite: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference forward: ``kept`` is ``u [T, ...]`` in the state dtype."""
    from spikegate.neurons.lif import reference_forward

    spikes, v_last, u = reference_forward(
        x, v0, beta if beta is not None else beta_value, threshold, reset, reset_amount
    )
    nonfinite = torch.zeros((), dtype=torch.bool, device=x.device)  # lif_sequence checks x
    return spikes, v_last, u if save else _nothing(x), nonfinite


def _fake_reference_forward(x, v0, beta, beta_value, threshold, reset, reset_amount, surrogate,
                            surrogate_params, detach_reset, save, check_finite):
    kept = x.new_empty(x.shape, dtype=_state_dtype(x.dtype)) if save else _nothing(x)
    return (x.new_empty(x.shape), x.new_empty(x.shape[1:]), kept,
            x.new_empty((), dtype=torch.bool))


def _reference_backward(
    kept: torch.Tensor, grad_spikes: Optional[torch.Tensor], grad_v_last: Optional[torch.Tensor],
    v0: Optional[torch.Tensor], beta: Optional[torch.Tensor], beta_value: float, threshold: float,
    reset: str, reset_amount: float, surrogate: str, surrogate_params: list[float],
    detach_reset: bool, need_x: bool, need_v0: bool, need_beta: bool, x_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from spikegate.neurons.lif import reference_backward

    decay = beta if beta is not None else beta_value
    gu, gbeta = reference_backward(
        kept, v0, decay, grad_spikes, grad_v_last, threshold, reset, reset_amount,
        surrogate_from_args(surrogate, surrogate_params), detach_reset, need_beta,
    )
    decay_c = beta.detach().to(kept.dtype) if beta is not None else beta_value
    # gu and gbeta are this op's own buffers, so handing them out aliases no input
    grad_x = gu.to(x_dtype) if need_x else _nothing(kept)
    grad_v0 = (gu[0] * decay_c).to(v0.dtype) if need_v0 else _nothing(kept)
    grad_beta = _nothing(kept)
    if need_beta:
        grad_beta = gbeta.sum_to_size(beta.shape).to(beta.dtype)
    return grad_x, grad_v0, grad_beta


lif_reference = LIFOps("lif_reference", _reference_forward, _reference_backward,
                       _fake_reference_forward)
lif_reference_forward = lif_reference.forward
lif_reference_backward = lif_reference.backward
