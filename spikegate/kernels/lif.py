"""Fused Triton kernels for LIF neurons: one launch walks all T steps forward, one walks them back.

The math is :func:`spikegate.neurons.lif_sequence` (DESIGN.md); its torch reference
``LIFTorchFunction`` is the oracle these kernels are tested against::

    u[t] = beta * v[t-1] + x[t]      s[t] = (u[t] >= threshold)      v[t] = reset(u[t], s[t])

Layout. ``x [T, B, ...]`` is made contiguous and seen as ``[T, M]`` with ``M = B * prod(...)``
neurons per step. The grid covers the ``M`` neurons of one step, ``BLOCK`` neighbouring neurons
per program (1024 and 4 warps by default), and each program loops over ``t`` inside the kernel
with the membrane in registers: every load and store of a step is one contiguous, coalesced run of
``BLOCK`` elements (16-byte vector accesses), and step ``t + 1`` of a neuron sits ``M`` elements
after step ``t``. Programs never talk to each other. Pointers advance by ``M`` per step (64-bit
pointer arithmetic) and the backward's start ``(T - 1) * M`` is formed in int64, so ``T * M`` may
exceed 2^31 (``M`` itself may not). Each step's load of the next step is issued before the current
step's arithmetic and stores, so two steps of loads are in flight per thread.

State math is float32 for every input dtype, ``u`` computed as ``v * beta`` rounded, then ``+ x``
(no fused multiply-add: CUDA launches pass ``enable_fp_fusion=False``), as DESIGN.md's equations
and the reference do, so spikes are bitwise those of the reference and ``v_last`` those of the
equations in float32.

Kept for backward, per neuron-step (the only ``[T, ...]`` tensor the layer holds):

* float32 input: ``u`` in float32, **4 bytes**; the spike is recomputed as ``u >= threshold``.
* float16 / bfloat16 input: ``d = u - threshold`` rounded (to nearest even) to the input dtype,
  **2 bytes**. Rounding never changes the sign of ``d``, and a tiny ``d`` underflows to a *signed*
  zero, so the sign bit of the kept value is exactly the forward's spike (``+0`` when
  ``u == threshold``); the backward reads the spike from that bit, never from a rounded ``u``
  (a ``u`` rounded to half precision would put neurons just below threshold above it). ``d`` is
  also the surrogate's argument, now accurate relative to its own size where the surrogate is
  steep; ``u = d + threshold`` is recovered for the zero reset's derivative and for ``v[t-1]`` in
  beta's gradient, to ``|d| * eps``. float16 saturates ``|d|`` at 65504 so that a membrane beyond
  the float16 range gives a finite, approximate gradient instead of ``inf * 0``.
  Spikes and ``v_last`` stay exact; gradients equal the reference's to the input dtype's rounding,
  at the scale of the incoming gradient (where terms cancel, e.g. ``1 - u * sg`` near 0, the
  relative error of the result can be larger). Keeping float32 ``u`` instead (the
  ``SAVE_SHIFTED=False`` path, 4 bytes) would give the reference's gradients to float32 rounding.

Spikes and ``v[t]`` are not kept: the backward recomputes both from the kept value. The reference
``LIFTorchFunction`` keeps float32 ``u``, 4 bytes per neuron-step, for all three dtypes.

Memory traffic per neuron-step (``b`` = bytes per element of x: 4 float32, 2 float16/bfloat16),
which :func:`lif_bytes_per_neuron_step` returns for roofline fractions:

* forward, training: read ``x`` (b) + write spikes (b) + write the kept value (b) = ``3b``
  (12 bytes float32, 6 bytes half); inference (no input needs a gradient): ``2b`` (8 / 4).
* backward: read the kept value (b) + read ``grad_spikes`` (b) + write ``grad_x`` (b) = ``3b``
  (12 / 6); ``grad_spikes`` is not read when only ``v_last`` carries a gradient, ``grad_x`` not
  written when x needs none.

Per-neuron traffic, once per launch rather than per step, is left out of these figures: ``v0``,
``beta`` and ``v_last`` add at most ``12 / T`` bytes per neuron-step to the forward;
``grad_v_last``, ``v0``, ``beta``, ``grad_v0`` and ``grad_beta`` at most ``20 / T`` to the
backward.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Optional, Union

import torch
import triton
import triton.language as tl

from spikegate.neurons.checks import KERNEL_DTYPES
from spikegate.neurons.surrogate import Surrogate

__all__ = [
    "lif_triton",
    "LIFTritonFunction",
    "lif_bytes_per_neuron_step",
    "lif_saved_bytes_per_neuron_step",
    "lif_min_bytes_per_neuron_step",
]

_RESET_IDS = {"zero": 0, "subtract": 1, "none": 2}
_FLOAT16_MAX = 65504.0
_MAX_NEURONS = 2**31 - 1 - 1024  # neuron offsets within a step are int32 (plus one block)


# --------------------------------------------------------------------------------------------- #
# Kernels
# --------------------------------------------------------------------------------------------- #


@triton.jit
def _surrogate_grad(d, SURROGATE: tl.constexpr, c0, c1):
    """ds/du at ``d = u - threshold``: the formulas of ``Surrogate.grad`` in the same operation
    order, with the constants of :func:`_surrogate_constants`."""
    if SURROGATE == 0:  # atan: c0 = pi/2 * alpha, c1 = alpha/2
        z = c0 * d
        g = (1.0 / (z * z + 1.0)) * c1
    elif SURROGATE == 1:  # sigmoid: c0 = alpha
        sg = tl.sigmoid(c0 * d)
        g = (sg - sg * sg) * c0
    elif SURROGATE == 2:  # fast sigmoid (SuperSpike): c0 = slope
        q = tl.abs(d) * c0 + 1.0
        g = 1.0 / (q * q)
    elif SURROGATE == 3:  # triangle: c0 = gamma / width, c1 = width
        g = tl.maximum(1.0 - tl.abs(d) / c1, 0.0) * c0
    else:  # straight-through
        g = tl.full(d.shape, 1.0, tl.float32)
    return g


@triton.jit
def _round_to(x, DTYPE: tl.constexpr):
    """float32 ``x`` rounded to nearest-even in ``DTYPE``. bfloat16 goes through integer ops: the
    Triton interpreter truncates float32 -> bfloat16 where the GPU and torch round, so this keeps
    the interpreter, the GPU and torch in agreement for a few integer ops."""
    if DTYPE == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(DTYPE)


@triton.jit(do_not_specialize=["T"])
def _lif_fwd_kernel(
    x_ptr, v0_ptr, beta_ptr,                 # in: [T, M], [M] (HAS_V0), [M] (BETA_PER_NEURON)
    spikes_ptr, saved_ptr, v_last_ptr,       # out: [T, M], [T, M] (SAVE), [M]
    T, M, beta, threshold,
    HAS_V0: tl.constexpr, BETA_PER_NEURON: tl.constexpr,
    SAVE: tl.constexpr, SAVE_SHIFTED: tl.constexpr, SAVE_MAX: tl.constexpr,
    RESET: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    if HAS_V0:
        v = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    else:
        v = tl.zeros([BLOCK], dtype=tl.float32)
    if BETA_PER_NEURON:
        b = tl.load(beta_ptr + offs, mask=mask, other=1.0)
    else:
        b = beta
    x_ptrs = x_ptr + offs
    s_ptrs = spikes_ptr + offs
    k_ptrs = saved_ptr + offs
    x_next = tl.load(x_ptrs, mask=mask, other=0.0, eviction_policy="evict_first")
    for t in range(T):
        x = x_next.to(tl.float32)
        x_ptrs += M
        x_next = tl.load(x_ptrs, mask=offs < tl.where(t + 1 < T, M, 0), other=0.0,
                         eviction_policy="evict_first")
        u = v * b
        u = u + x
        fired = u >= threshold
        # via float32: the interpreter cannot cast int1 to bfloat16
        tl.store(s_ptrs, tl.where(fired, 1.0, 0.0).to(spikes_ptr.dtype.element_ty), mask=mask)
        if SAVE:
            if SAVE_SHIFTED:
                d = u - threshold
                if SAVE_MAX > 0:
                    d = tl.minimum(tl.maximum(d, -SAVE_MAX), SAVE_MAX)
                tl.store(k_ptrs, _round_to(d, saved_ptr.dtype.element_ty), mask=mask)
            else:
                tl.store(k_ptrs, u, mask=mask)
        if RESET == 0:  # zero
            v = tl.where(fired, 0.0, u)
        elif RESET == 1:  # subtract
            v = tl.where(fired, u - threshold, u)
        else:  # none
            v = u
        s_ptrs += M
        k_ptrs += M
    tl.store(v_last_ptr + offs, _round_to(v, v_last_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["T"])
def _lif_bwd_kernel(
    saved_ptr, grad_spikes_ptr, grad_v_last_ptr, v0_ptr, beta_ptr,   # in
    grad_x_ptr, grad_v0_ptr, grad_beta_ptr,                          # out: [T, M], [M], [M] (f32)
    T, M, beta, threshold, c0, c1,
    HAS_GRAD_SPIKES: tl.constexpr, HAS_GRAD_V_LAST: tl.constexpr, HAS_V0: tl.constexpr,
    BETA_PER_NEURON: tl.constexpr,
    NEED_GRAD_X: tl.constexpr, NEED_GRAD_V0: tl.constexpr, NEED_GRAD_BETA: tl.constexpr,
    SAVE_SHIFTED: tl.constexpr, RESET: tl.constexpr, DETACH_RESET: tl.constexpr,
    SURROGATE: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    if BETA_PER_NEURON:
        b = tl.load(beta_ptr + offs, mask=mask, other=1.0)
    else:
        b = beta
    if HAS_GRAD_V_LAST:
        gv = tl.load(grad_v_last_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # dL/dv[t]
    else:
        gv = tl.zeros([BLOCK], dtype=tl.float32)
    gu_next = tl.zeros([BLOCK], dtype=tl.float32)     # dL/du[t+1]
    gbeta = tl.zeros([BLOCK], dtype=tl.float32)

    last = (T - 1).to(tl.int64) * M
    k_ptrs = saved_ptr + last + offs
    gs_ptrs = grad_spikes_ptr + last + offs
    gx_ptrs = grad_x_ptr + last + offs
    k_next = tl.load(k_ptrs, mask=mask, other=0.0, eviction_policy="evict_first")
    if HAS_GRAD_SPIKES:
        gs_next = tl.load(gs_ptrs, mask=mask, other=0.0, eviction_policy="evict_first")
    for i in range(T):
        more = offs < tl.where(i + 1 < T, M, 0)   # mask of the prefetch of step t - 1
        k = k_next
        k_ptrs -= M
        k_next = tl.load(k_ptrs, mask=more, other=0.0, eviction_policy="evict_first")
        if SAVE_SHIFTED:
            d = k.to(tl.float32)
            u = d + threshold
            fired = k.to(tl.int16, bitcast=True) >= 0     # sign bit clear: u >= threshold
        else:
            u = k
            d = u - threshold
            fired = u >= threshold
        sg = _surrogate_grad(d, SURROGATE, c0, c1)

        if HAS_GRAD_SPIKES:
            gs = gs_next.to(tl.float32)
            gs_ptrs -= M
            gs_next = tl.load(gs_ptrs, mask=more, other=0.0, eviction_policy="evict_first")
            gu = gs * sg
        else:
            gu = tl.zeros([BLOCK], dtype=tl.float32)
        if RESET == 0:  # zero: v = u * (1 - s)
            v = tl.where(fired, 0.0, u)
            keep = tl.where(fired, 0.0, 1.0)
            if DETACH_RESET:
                gu = gu + gv * keep
            else:
                gu = gu + gv * (keep - u * sg)
        elif RESET == 1:  # subtract: v = u - threshold * s
            v = tl.where(fired, d, u)
            if DETACH_RESET:
                gu = gu + gv
            else:
                gu = gu + gv * (1.0 - threshold * sg)
        else:  # none: v = u
            v = u
            gu = gu + gv

        if NEED_GRAD_X:
            tl.store(gx_ptrs, _round_to(gu, grad_x_ptr.dtype.element_ty), mask=mask)
            gx_ptrs -= M
        if NEED_GRAD_BETA:
            gbeta += gu_next * v                          # u[t+1] = beta * v[t] + x[t+1]
        gv = gu * b
        gu_next = gu

    if NEED_GRAD_BETA:
        if HAS_V0:
            gbeta += gu_next * tl.load(v0_ptr + offs, mask=mask, other=0.0)
        tl.store(grad_beta_ptr + offs, gbeta, mask=mask)
    if NEED_GRAD_V0:
        tl.store(grad_v0_ptr + offs, gv, mask=mask)


# --------------------------------------------------------------------------------------------- #
# Launchers
# --------------------------------------------------------------------------------------------- #


def lif_saved_bytes_per_neuron_step(dtype: torch.dtype) -> int:
    """Bytes the layer keeps for backward per neuron-step: float32 ``u`` (4) for float32 input,
    ``u - threshold`` in the input dtype (2) for float16 and bfloat16."""
    _check_kernel_dtype(dtype)
    return 4 if dtype == torch.float32 else 2


def lif_bytes_per_neuron_step(dtype: torch.dtype, *, backward: bool, training: bool = True) -> int:
    """Bytes of global memory one launch moves per neuron-step (see the module docstring).

    Forward: ``x`` read + spikes written + (``training``) the kept value written.
    Backward: kept value read + ``grad_spikes`` read + ``grad_x`` written (the usual case, where
    spikes carry a gradient and x needs one). Per-neuron, once-per-launch traffic is left out.
    """
    b = torch.empty((), dtype=_check_kernel_dtype(dtype)).element_size()
    kept = lif_saved_bytes_per_neuron_step(dtype)
    if backward:
        return kept + 2 * b
    return 2 * b + (kept if training else 0)


def lif_min_bytes_per_neuron_step(dtype: torch.dtype) -> int:
    """The fewest bytes per neuron-step that any implementation of ``lif_sequence``'s training
    step must move through global memory, forward plus backward, ``b`` bytes per element of x:

    read ``x``, write spikes, read ``grad_spikes``, write ``grad_x`` (``4b``), plus the smallest
    per-step state from which the backward rebuilds the membrane. Nothing smaller than ``x`` itself
    rebuilds ``u``; reading ``x`` once more in the backward (from per-neuron checkpoints of ``v``,
    whose traffic is ``O(1/T)`` and left out) costs ``b``, less than writing and reading any kept
    value. So ``5b``: 20 bytes for float32, 10 for float16/bfloat16, against the kernels' ``6b``
    (:func:`lif_bytes_per_neuron_step`, forward plus backward)."""
    b = torch.empty((), dtype=_check_kernel_dtype(dtype)).element_size()
    return 5 * b


def _check_kernel_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in KERNEL_DTYPES:
        raise TypeError(f"dtype: the LIF kernels take float32, float16, bfloat16, got {dtype}")
    return dtype


@functools.lru_cache(maxsize=64)  # surrogates are frozen dataclasses; called a few times per step
def _surrogate_constants(surrogate: Surrogate) -> tuple[int, float, float]:
    """``(kernel_id, c0, c1)`` for :func:`_surrogate_grad`. Constants that ``Surrogate.grad``
    forms from python floats (in double) are formed here the same way, then rounded to float32."""
    kid = surrogate.kernel_id
    if kid not in (0, 1, 2, 3, 4):
        raise ValueError(
            f"surrogate: {type(surrogate).__name__} has no Triton kernel (kernel_id={kid}); "
            "use backend='torch'"
        )
    p0, p1 = (float(p) for p in surrogate.kernel_params)
    if kid == 0:
        return kid, math.pi / 2 * p0, p0 / 2
    if kid == 3:
        return kid, p0 / p1, p1
    return kid, p0, p1


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _launch_config(m: int, device: torch.device) -> tuple[int, int]:
    """``(BLOCK, num_warps)``: 1024 neurons and 4 warps per program (8 neurons, two 16-byte
    float32 loads, per thread), halved down to 128 while that leaves fewer than two programs per
    SM. The CPU interpreter runs programs one after another, so there a block just covers ``m``."""
    if device.type != "cuda":
        return min(1024, max(16, triton.next_power_of_2(m))), 4
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    block = 1024
    while block > 128 and triton.cdiv(m, block) < 2 * sms:
        block //= 2
    return block, max(1, block // 256)


def _launch_options(device: torch.device) -> dict:
    # No FMA contraction of v * beta + x: the reference rounds the product, and the spikes must
    # agree bit for bit.
    return {"enable_fp_fusion": False} if device.type == "cuda" else {}


def _on_device(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _per_neuron_inputs(x, v0, beta):
    """``v0`` and ``beta`` as the kernels read them: ``(v0 [M] float32 or None, beta [M] float32
    or None, beta as a python float)``; a tensor beta is broadcast to the step shape."""
    v0_f32 = None if v0 is None else v0.detach().to(torch.float32).contiguous()
    if isinstance(beta, torch.Tensor):
        beta_f32 = beta.detach().to(torch.float32).expand(x.shape[1:]).contiguous()
        return v0_f32, beta_f32, 1.0
    return v0_f32, None, float(beta)


def _lif_forward(x, v0, beta, threshold, reset, *, save):
    """One forward launch over contiguous ``x``. Returns ``(spikes, v_last, kept or None, v0_f32,
    beta_f32)``, the last two as the kernels read them."""
    T, step_shape = x.shape[0], x.shape[1:]
    m = step_shape.numel()
    v0_f32, beta_f32, beta_scalar = _per_neuron_inputs(x, v0, beta)
    if m > _MAX_NEURONS:
        raise ValueError(
            f"x: the LIF kernels take at most {_MAX_NEURONS} neurons per step (int32 offsets "
            f"within a step), got {m} (shape {tuple(x.shape)})"
        )
    spikes = torch.empty_like(x)
    v_last = torch.empty(step_shape, dtype=x.dtype, device=x.device)
    kept_dtype = x.dtype  # float32 keeps u; half keeps u - threshold in its own dtype
    kept = torch.empty(x.shape, dtype=kept_dtype, device=x.device) if save else None
    if m > 0:
        block, num_warps = _launch_config(m, x.device)
        with _on_device(x.device):
            _lif_fwd_kernel[(triton.cdiv(m, block),)](
                x, _or(v0_f32, x), _or(beta_f32, x), spikes, _or(kept, spikes), v_last,
                T, m, beta_scalar, threshold,
                HAS_V0=v0_f32 is not None, BETA_PER_NEURON=beta_f32 is not None,
                SAVE=save, SAVE_SHIFTED=kept_dtype != torch.float32,
                SAVE_MAX=_FLOAT16_MAX if kept_dtype == torch.float16 else 0.0,
                RESET=_RESET_IDS[reset], BLOCK=block, num_warps=num_warps,
                **_launch_options(x.device),
            )
    return spikes, v_last, kept, v0_f32, beta_f32


def _or(tensor, placeholder):
    """A pointer argument the kernel will not touch (its flag is off) still needs a tensor."""
    return placeholder if tensor is None else tensor


class LIFTritonFunction(torch.autograd.Function):
    """LIF over ``T`` steps as two Triton launches (forward, backward), with the arguments and
    results of the reference ``LIFTorchFunction``:
    ``apply(x, v0, beta, threshold, reset, surrogate, detach_reset) -> (spikes, v_last)``.

    Keeps for backward the per-step value of the module docstring (4 bytes per neuron-step for
    float32 input, 2 for float16/bfloat16) and, per neuron, ``v0`` and a tensor ``beta`` in
    float32. Gradients that do not arrive (``grad_spikes`` or ``grad_v_last`` None) are not
    materialized: the backward launch skips reading them.
    """

    @staticmethod
    def forward(ctx, x, v0, beta, threshold, reset, surrogate, detach_reset):
        _check_kernel_dtype(x.dtype)
        _surrogate_constants(surrogate)  # fail in the forward, not in the backward
        spikes, v_last, kept, v0_f32, beta_f32 = _lif_forward(
            x.contiguous(), v0, beta, threshold, reset, save=True
        )
        ctx.save_for_backward(kept, v0_f32, beta_f32)
        ctx.set_materialize_grads(False)
        ctx.args = (float(beta) if beta_f32 is None else 1.0, threshold, reset, surrogate,
                    detach_reset)
        ctx.x_dtype = x.dtype
        ctx.v0_dtype = None if v0 is None else v0.dtype
        ctx.beta_meta = (beta.shape, beta.dtype) if isinstance(beta, torch.Tensor) else None
        return spikes, v_last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_spikes, grad_v_last):
        kept, v0_f32, beta_f32 = ctx.saved_tensors
        beta_scalar, threshold, reset, surrogate, detach_reset = ctx.args
        need_x, need_v0, need_beta = ctx.needs_input_grad[:3]
        need_v0 = need_v0 and v0_f32 is not None
        need_beta = need_beta and beta_f32 is not None
        T, step_shape, device = kept.shape[0], kept.shape[1:], kept.device
        m = step_shape.numel()

        def buffer(needed, shape, dtype):
            return torch.empty(shape, dtype=dtype, device=device) if needed else None

        grad_x = buffer(need_x, kept.shape, ctx.x_dtype)
        grad_v0 = buffer(need_v0, step_shape, torch.float32)
        grad_beta = buffer(need_beta, step_shape, torch.float32)   # per neuron, summed below
        if grad_spikes is not None:
            grad_spikes = grad_spikes.contiguous()                  # e.g. stride 0 from .sum()
        if grad_v_last is not None:
            grad_v_last = grad_v_last.contiguous()

        if m > 0:
            kid, c0, c1 = _surrogate_constants(surrogate)
            block, num_warps = _launch_config(m, device)
            with _on_device(device):
                _lif_bwd_kernel[(triton.cdiv(m, block),)](
                    kept, _or(grad_spikes, kept), _or(grad_v_last, kept),
                    _or(v0_f32, kept), _or(beta_f32, kept),
                    _or(grad_x, kept), _or(grad_v0, kept), _or(grad_beta, kept),
                    T, m, beta_scalar, threshold, c0, c1,
                    HAS_GRAD_SPIKES=grad_spikes is not None,
                    HAS_GRAD_V_LAST=grad_v_last is not None,
                    HAS_V0=v0_f32 is not None, BETA_PER_NEURON=beta_f32 is not None,
                    NEED_GRAD_X=need_x, NEED_GRAD_V0=need_v0, NEED_GRAD_BETA=need_beta,
                    SAVE_SHIFTED=kept.dtype != torch.float32, RESET=_RESET_IDS[reset],
                    DETACH_RESET=detach_reset, SURROGATE=kid, BLOCK=block, num_warps=num_warps,
                    **_launch_options(device),
                )

        if grad_v0 is not None:
            grad_v0 = grad_v0.to(ctx.v0_dtype)
        if grad_beta is not None:
            beta_shape, beta_dtype = ctx.beta_meta
            grad_beta = grad_beta.sum_to_size(beta_shape).to(beta_dtype)
        return grad_x, grad_v0, grad_beta, None, None, None, None


def lif_triton(
    x: torch.Tensor,
    v0: Optional[torch.Tensor],
    beta: Union[float, torch.Tensor],
    *,
    threshold: float,
    reset: str,
    surrogate: Surrogate,
    detach_reset: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LIF on the Triton kernels; arguments already validated by ``lif_sequence``.

    Args:
        x: ``[T, B, ...]`` input current (float32, float16, bfloat16; any strides).
        v0: ``[B, ...]`` initial membrane or None (zeros).
        beta: python float, or tensor broadcastable to ``[B, ...]`` (0-dim, per neuron, full).
        threshold, reset, surrogate, detach_reset: as in ``lif_sequence``.

    Returns:
        ``(spikes [T, B, ...] 0/1 in x.dtype, v_last [B, ...] in x.dtype)``.
    """
    _surrogate_constants(surrogate)  # refuse a surrogate without a kernel in inference too
    tensors = [t for t in (x, v0, beta) if isinstance(t, torch.Tensor)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return LIFTritonFunction.apply(x, v0, beta, threshold, reset, surrogate, detach_reset)
    # Inference: nothing to keep; the launch reads x and writes spikes.
    _check_kernel_dtype(x.dtype)
    spikes, v_last, *_ = _lif_forward(x.contiguous(), v0, beta, threshold, reset, save=False)
    return spikes, v_last
