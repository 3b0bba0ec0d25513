"""Fused Triton kernels for LIF neurons: one launch walks all T steps forward, one walks them back.

The math is :func:`spikegate.neurons.lif_sequence` (the equations in its module docstring); its
torch reference (``reference_forward`` / ``reference_backward``, ``LIFTorchFunction``) is the
oracle these kernels are tested against::

    u[t] = beta * v[t-1] + x[t]      s[t] = (u[t] >= threshold)      v[t] = reset(u[t], s[t])

The kernels run as the torch custom ops ``spikegate::lif_forward`` / ``spikegate::lif_backward``
(schema, fakes and autograd: :mod:`spikegate.kernels.ops`), so torch.compile and torch.export see
one op per direction.

Layout. ``x [T, B, ...]`` is seen as ``[T, M]`` with ``M = B * prod(...)`` neurons per step; an
``x`` (or ``grad_spikes``) whose every step is one contiguous run is read by its step stride, a
slice of a longer buffer or a gradient expanded over time (stride 0) without a copy, anything
else is made contiguous first. The grid covers the ``M`` neurons of one step, ``BLOCK``
neighbouring neurons per program (1024 and 4 warps by default), and each program loops over
``t`` inside the kernel with the membrane in registers: every load and store of a step is one
contiguous, coalesced run of ``BLOCK`` elements. Programs never talk to each other. Pointers
advance by one step stride per step (64-bit pointer arithmetic) and the backward's start
``(T - 1) * stride`` is formed in int64, so ``T * M`` may exceed 2^31 (``M`` itself may not).
Each step's load of the next step is issued before the current step's arithmetic and stores, so
two steps of loads are in flight per thread.

Alignment. ``M`` reaches the kernels as ``M_div * VEC`` with ``VEC`` the largest power of two
up to 16 that divides ``M`` (``M_div`` is not specialized), so the compiler knows that a pointer
advanced by ``M`` keeps its alignment: the per-step accesses are 16-byte vectors whenever ``M``
and the tensors' starts allow, not only when ``M`` is a multiple of 16. When they cannot be (``M``
odd, or a per-step input off a 16-byte boundary such as a slice ``x[1:]``), ``VEC = 1`` and the
per-neuron buffers (``v0``, ``beta``, ``v_last``, their gradients) start off alignment too, so
every access has the same scalar layout and the time loop holds no layout conversion (a
shared-memory round trip per step otherwise). ``spikegate.kernels.aot`` checks both cases on
sm_90 code.

State math is float32 for every input dtype, ``u`` computed as ``v * beta`` rounded, then ``+ x``
(no fused multiply-add: the forward launch passes ``enable_fp_fusion=False``), as the equations
and the reference do, so spikes are bitwise those of the reference and ``v_last`` those of the
equations in float32. The backward launch allows contraction: it affects gradients (equal to
rounding), never spikes, which it reads back from the kept value.

Validation inside the launch. With ``check_finite`` the forward sets one flag per program when
the ``x`` it streams holds a NaN or Inf (``x - x != 0``); the launcher raises the same error as
the torch path's check, without the extra pass over ``x`` that check makes.

Decay (``BETA_MODE``). A python float is a kernel argument (mode 0). A one-element tensor is
read once from memory (mode 1, not broadcast to a per-neuron tensor) and its gradient is reduced
in the backward kernel, one partial sum per program, then summed over programs. A tensor whose
broadcast to the step varies along one contiguous run of its dims, the usual learnable decay
(per neuron ``[C, H, W]`` or ``[N]`` shared over the batch, per channel ``[C, 1, 1]``), is read
as its own ``P`` values (mode 3): neuron ``i`` reads ``beta[(i // INNER) % P]``, ``INNER`` the
product of the step dims after the run, so nothing of the step's size is made for it; the
backward adds each program's per-neuron terms into a zeroed float32 ``[P]`` gradient with atomic
adds (a run of at least a block, as a channel of a feature map, is summed in registers first:
at most two atomics per program), with no second reduction op. Those adds sum in no fixed order,
so under ``torch.use_deterministic_algorithms(True)`` such a decay takes mode 2 instead. Mode 2:
a decay of the full step shape, or one broadcast otherwise (``[C, 1, W]`` over ``[B, C, H, W]``),
is expanded to one float32 value per neuron, its gradient kept per neuron and summed to the
decay's shape afterwards.

bfloat16 stores. Compiled kernels convert natively (round to nearest even); the interpreter,
which truncates, rounds through integer ops, with NaN replaced by the canonical quiet NaN first
(the GPU's NaN 0x7FFFFFFF would otherwise carry into the sign bit and be stored as -0.0).

Kept for backward, per neuron-step (the only ``[T, ...]`` tensor the layer holds):

* float32 input: ``u`` in float32, **4 bytes**; the spike is recomputed as ``u >= threshold``.
* float16 / bfloat16 input: ``d = u - threshold`` rounded (to nearest even) to the input dtype,
  **2 bytes**. Rounding never changes the sign of ``d``, and a tiny ``d`` underflows to a *signed*
  zero, so the sign bit of the kept value is exactly the forward's spike (``+0`` when
  ``u == threshold``); the backward reads the spike from that bit, never from a rounded ``u``
  (a ``u`` rounded to half precision would put neurons just below threshold above it). ``d`` is
  also the surrogate's argument, now accurate relative to its own size where the surrogate is
  steep; ``u = d + threshold`` is recovered for the zero reset's derivative and for ``v[t-1]`` in
  beta's gradient, to ``|d| * eps`` (after a subtractive reset ``v = d + (threshold -
  reset_amount)``, which is ``d`` itself for the default amount, the threshold). float16
  saturates ``|d|`` at 65504 so that a membrane beyond the float16 range gives a finite,
  approximate gradient instead of ``inf * 0``.
  Spikes and ``v_last`` stay exact; gradients equal the reference's to the input dtype's rounding,
  at the scale of the incoming gradient (where terms cancel, e.g. ``1 - u * sg`` near 0, the
  relative error of the result can be larger). Keeping float32 ``u`` instead (the
  ``SAVE_SHIFTED=False`` path, 4 bytes) would give the reference's gradients to float32 rounding.

Spikes and ``v[t]`` are not kept: the backward recomputes both from the kept value. The reference
keeps float32 ``u``, 4 bytes per neuron-step, for all three dtypes.

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
backward (a mode-3 decay moves only its ``P`` values, mostly through the cache, where mode 2
writes and reads an ``[M]`` float32 copy of it and an ``[M]`` gradient for ``sum_to_size``).
:func:`lif_min_bytes_per_neuron_step` gives the least any implementation of the same call must
move (``5b``), the other yardstick of the benchmark's roofline.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional, Union

import torch
import triton
import triton.language as tl

# the helpers shared with the other kernel modules, under the names this module's code uses
from spikegate.kernels.common import (
    MAX_NEURONS as _MAX_NEURONS,
    launch_config as _launch_config,
    native_round as _native_round,
    on_device as _on_device,
    or_placeholder as _or,
    round_to as _round_to,
)
from spikegate.kernels.ops import LIFOps, surrogate_args, surrogate_from_args
from spikegate.kernels.ops import nothing as _nothing
from spikegate.neurons.checks import KERNEL_DTYPES, nonfinite_error
from spikegate.neurons.surrogate import Surrogate

__all__ = [
    "lif_triton",
    "lif_kernels",
    "lif_forward",
    "lif_backward",
    "lif_bytes_per_neuron_step",
    "lif_saved_bytes_per_neuron_step",
    "lif_min_bytes_per_neuron_step",
]

_RESET_IDS = {"zero": 0, "subtract": 1, "none": 2}
_FLOAT16_MAX = 65504.0


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
def _decay(beta_ptr, offs, mask, beta, beta_inner, beta_size, BETA_MODE: tl.constexpr):
    """The decay as the kernels read it: a python float (0), one value in memory (1), one value
    per neuron (2), or ``P = beta_size`` values broadcast over the step (3): neuron ``offs`` reads
    ``beta[(offs // beta_inner) % P]``, ``beta_inner`` the neurons per decay value in a row."""
    if BETA_MODE == 2:
        b = tl.load(beta_ptr + offs, mask=mask, other=1.0)
    elif BETA_MODE == 3:
        b = tl.load(beta_ptr + (offs // beta_inner) % beta_size, mask=mask, other=1.0)
    elif BETA_MODE == 1:
        b = tl.load(beta_ptr)
    else:
        b = beta
    return b


@triton.jit
def _add_broadcast_decay_grad(grad_beta_ptr, gbeta, offs, mask, M, beta_inner, beta_size,
                              BLOCK: tl.constexpr):
    """Adds this program's per-neuron ``gbeta`` into the ``[P]`` gradient of a broadcast decay
    (mode 3), zeroed by the launcher. When a run of neurons sharing a value is at least a block
    long (a per-channel decay over a feature map), the block meets at most two runs: each is
    summed in registers and added with one atomic, instead of ``BLOCK`` atomics on one address.
    Otherwise every neuron adds its own term (masked lanes are left out)."""
    if beta_inner >= BLOCK:
        start = tl.program_id(0) * BLOCK
        first = start // beta_inner
        head = offs // beta_inner == first
        tl.atomic_add(grad_beta_ptr + first % beta_size,
                      tl.sum(tl.where(head, gbeta, 0.0), axis=0), sem="relaxed")
        last = tl.minimum(start + BLOCK, M) - 1
        tl.atomic_add(grad_beta_ptr + (first + 1) % beta_size,
                      tl.sum(tl.where(head, 0.0, gbeta), axis=0),
                      mask=last // beta_inner != first, sem="relaxed")
    else:
        tl.atomic_add(grad_beta_ptr + (offs // beta_inner) % beta_size, gbeta, mask=mask,
                      sem="relaxed")


@triton.jit(do_not_specialize=["T", "M_div", "XS_div"])
def _lif_fwd_kernel(
    x_ptr, v0_ptr, beta_ptr,                 # in: [T, M], [M] (HAS_V0), [M] / [1] / [P] (BETA_MODE)
    spikes_ptr, saved_ptr, v_last_ptr,       # out: [T, M], [T, M] (SAVE), [M]
    flags_ptr,                               # out: [programs] int32, 1 where x held NaN/Inf
    T, M_div, XS_div, beta, threshold,       # x[t] starts XS = XS_div * VEC elements after x[t-1]
    reset_amount,                            # what the subtractive reset takes away
    beta_inner, beta_size,                   # BETA_MODE 3: beta[(offs // beta_inner) % beta_size]
    VEC: tl.constexpr, HAS_V0: tl.constexpr, BETA_MODE: tl.constexpr,
    SAVE: tl.constexpr, SAVE_SHIFTED: tl.constexpr, SAVE_MAX: tl.constexpr,
    RESET: tl.constexpr, CHECK_FINITE: tl.constexpr, NATIVE_ROUND: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # M = M_div * VEC: the compiler then knows M's power-of-two divisor, so a pointer that
    # advances by M per step keeps its alignment and the accesses stay 16-byte vectors whenever
    # M allows them (M_div itself is not specialized: see _vector_width).
    M = M_div * VEC
    XS = XS_div * VEC
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    if HAS_V0:
        v = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    else:
        v = tl.zeros([BLOCK], dtype=tl.float32)
    b = _decay(beta_ptr, offs, mask, beta, beta_inner, beta_size, BETA_MODE)
    bad = tl.zeros([BLOCK], dtype=tl.int32)
    x_ptrs = x_ptr + offs
    s_ptrs = spikes_ptr + offs
    k_ptrs = saved_ptr + offs
    x_next = tl.load(x_ptrs, mask=mask, other=0.0, eviction_policy="evict_first")
    for t in range(T):
        x = x_next.to(tl.float32)
        x_ptrs += XS
        x_next = tl.load(x_ptrs, mask=offs < tl.where(t + 1 < T, M, 0), other=0.0,
                         eviction_policy="evict_first")
        if CHECK_FINITE:
            bad = tl.maximum(bad, ((x - x) != 0).to(tl.int32))   # x - x is NaN for NaN and Inf
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
                tl.store(k_ptrs, _round_to(d, saved_ptr.dtype.element_ty, NATIVE_ROUND), mask=mask)
            else:
                tl.store(k_ptrs, u, mask=mask)
        if RESET == 0:  # zero
            v = tl.where(fired, 0.0, u)
        elif RESET == 1:  # subtract: one rounding, u - reset_amount, as the reference's
            v = tl.where(fired, u - reset_amount, u)
        else:  # none
            v = u
        s_ptrs += M
        k_ptrs += M
    tl.store(v_last_ptr + offs, _round_to(v, v_last_ptr.dtype.element_ty, NATIVE_ROUND), mask=mask)
    if CHECK_FINITE:
        tl.store(flags_ptr + tl.program_id(0), tl.max(bad, axis=0))


@triton.jit(do_not_specialize=["T", "M_div", "GS_div"])
def _lif_bwd_kernel(
    saved_ptr, grad_spikes_ptr, grad_v_last_ptr, v0_ptr, beta_ptr,   # in
    grad_x_ptr, grad_v0_ptr, grad_beta_ptr,   # out: [T, M], [M], [M] / [P] / [programs] (BETA_MODE)
    T, M_div, GS_div, beta, threshold, reset_amount, c0, c1,   # grad_spikes[t]: GS_div * VEC on
    beta_inner, beta_size,
    VEC: tl.constexpr,
    HAS_GRAD_SPIKES: tl.constexpr, GRAD_SPIKES_SCALAR: tl.constexpr,
    HAS_GRAD_V_LAST: tl.constexpr, HAS_V0: tl.constexpr, BETA_MODE: tl.constexpr,
    NEED_GRAD_X: tl.constexpr, NEED_GRAD_V0: tl.constexpr, NEED_GRAD_BETA: tl.constexpr,
    SAVE_SHIFTED: tl.constexpr, RESET: tl.constexpr, DETACH_RESET: tl.constexpr,
    SURROGATE: tl.constexpr, NATIVE_ROUND: tl.constexpr, BLOCK: tl.constexpr,
):
    M = M_div * VEC
    GS = GS_div * VEC
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    b = _decay(beta_ptr, offs, mask, beta, beta_inner, beta_size, BETA_MODE)
    # v = u - reset_amount after a spike, formed as d + (threshold - reset_amount) from the kept
    # d = u - threshold of half inputs: exactly d for the default amount (the threshold), and no
    # worse than d itself otherwise (u = d + threshold would add a rounding at |u|'s scale)
    reset_shift = threshold - reset_amount
    if HAS_GRAD_V_LAST:
        gv = tl.load(grad_v_last_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # dL/dv[t]
    else:
        gv = tl.zeros([BLOCK], dtype=tl.float32)
    if GRAD_SPIKES_SCALAR:  # an expanded gradient (e.g. from spikes.sum()): one value, read once
        gs_all = tl.load(grad_spikes_ptr).to(tl.float32)
    gu_next = tl.zeros([BLOCK], dtype=tl.float32)     # dL/du[t+1]
    gbeta = tl.zeros([BLOCK], dtype=tl.float32)

    last = (T - 1).to(tl.int64) * M
    k_ptrs = saved_ptr + last + offs
    gs_ptrs = grad_spikes_ptr + (T - 1).to(tl.int64) * GS + offs
    gx_ptrs = grad_x_ptr + last + offs
    k_next = tl.load(k_ptrs, mask=mask, other=0.0, eviction_policy="evict_first")
    if HAS_GRAD_SPIKES and not GRAD_SPIKES_SCALAR:
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
            if GRAD_SPIKES_SCALAR:
                gu = gs_all * sg
            else:
                gs = gs_next.to(tl.float32)
                gs_ptrs -= GS
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
        elif RESET == 1:  # subtract: v = u - reset_amount * s
            if SAVE_SHIFTED:
                v = tl.where(fired, d + reset_shift, u)
            else:  # u is the forward's own: the forward's rounding of u - reset_amount
                v = tl.where(fired, u - reset_amount, u)
            if DETACH_RESET:
                gu = gu + gv
            else:
                gu = gu + gv * (1.0 - reset_amount * sg)
        else:  # none: v = u
            v = u
            gu = gu + gv

        if NEED_GRAD_X:
            tl.store(gx_ptrs, _round_to(gu, grad_x_ptr.dtype.element_ty, NATIVE_ROUND), mask=mask)
            gx_ptrs -= M
        if NEED_GRAD_BETA:
            gbeta += gu_next * v                          # u[t+1] = beta * v[t] + x[t+1]
        gv = gu * b
        gu_next = gu

    if NEED_GRAD_BETA:
        if HAS_V0:
            gbeta += gu_next * tl.load(v0_ptr + offs, mask=mask, other=0.0)
        if BETA_MODE == 2:
            tl.store(grad_beta_ptr + offs, gbeta, mask=mask)
        elif BETA_MODE == 3:
            _add_broadcast_decay_grad(grad_beta_ptr, gbeta, offs, mask, M, beta_inner, beta_size,
                                      BLOCK)
        else:  # one decay for all neurons: this program's partial sum (masked lanes hold 0)
            tl.store(grad_beta_ptr + tl.program_id(0), tl.sum(gbeta, axis=0))
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
    kid = _check_has_kernel(surrogate)
    p0, p1 = (float(p) for p in surrogate.kernel_params)
    if kid == 0:
        return kid, math.pi / 2 * p0, p0 / 2
    if kid == 3:
        return kid, p0 / p1, p1
    return kid, p0, p1


def _check_has_kernel(surrogate: Surrogate) -> int:
    kid = surrogate.kernel_id
    if kid not in (0, 1, 2, 3, 4):
        raise ValueError(
            f"surrogate: {type(surrogate).__name__} has no Triton kernel (kernel_id={kid}); "
            "use backend='torch'"
        )
    return kid


def _fwd_options(device: torch.device) -> dict:
    # No FMA contraction of v * beta + x: the reference rounds the product, and the spikes must
    # agree bit for bit.
    return {"enable_fp_fusion": False} if device.type == "cuda" else {}


def _bwd_options(device: torch.device) -> dict:
    # The backward may contract: its products feed gradients (equal to rounding), never spikes,
    # which it reads back from the kept value. Explicit, since Triton's default is changing.
    return {"enable_fp_fusion": True} if device.type == "cuda" else {}


_ALIGN = 16  # bytes of one vector access


def _vector_width(m: int, *tensors: Optional[torch.Tensor], steps: tuple = ()) -> int:
    """The largest power of two ``VEC <= 16`` dividing ``m`` and the step strides ``steps`` (the
    kernels take ``M = M_div * VEC``, likewise the strides), or 1 when one of the ``[T, M]``
    tensors the loop reads does not start on a 16-byte boundary (a time slice ``x[1:]`` with
    ``M * b`` not a multiple of 16, say): then every per-step access is a scalar one alike,
    instead of vectors for some and scalars for others, which would cost a layout conversion (a
    round trip through shared memory) every step."""
    if any(t is not None and t.data_ptr() % _ALIGN for t in tensors):
        return 1
    vec = 1
    while vec < 16 and all(n % (2 * vec) == 0 for n in (m, *steps)):
        vec *= 2
    return vec


def _step_stride(t: torch.Tensor) -> Optional[int]:
    """Elements from ``t[i]`` to ``t[i + 1]`` when every step of ``t [T, ...]`` is one contiguous
    run (so the kernels read it by stride, without a copy: a slice of a longer buffer, or a
    gradient expanded over time, stride 0), else None."""
    expected = 1
    for size, stride in reversed(list(zip(t.shape[1:], t.stride()[1:]))):
        if size != 1 and stride != expected:
            return None
        expected *= size
    step = t.stride(0) if t.shape[0] > 1 else expected
    return step if 0 <= step < 2**31 - 1 else None


def _per_neuron(t: Optional[torch.Tensor], vec: int) -> Optional[torch.Tensor]:
    """A per-neuron input as the kernels read it (float32, contiguous; the alignment of
    :func:`_per_neuron_empty`)."""
    if t is None:
        return None
    t = t.detach().to(torch.float32).contiguous()
    if vec > 1 or t.data_ptr() % _ALIGN:
        return t
    return _per_neuron_empty(t.shape, torch.float32, t.device, vec).copy_(t)


def _per_neuron_empty(shape, dtype: torch.dtype, device: torch.device, vec: int) -> torch.Tensor:
    """A per-neuron buffer. When the per-step accesses are scalar (``vec == 1``) it starts one
    element off a 16-byte boundary on purpose: Triton then lays out its accesses like the
    per-step ones, instead of as vectors that the time loop would convert every step."""
    if vec > 1:
        return torch.empty(shape, dtype=dtype, device=device)
    n = math.prod(shape)
    return torch.empty(n + 1, dtype=dtype, device=device)[1:].view(shape)


class _DecayInputs(NamedTuple):
    """The decay as the kernels take it: ``tensor`` (float32, or None for mode 0), ``mode`` (the
    kernels' ``BETA_MODE``), ``value`` (the python float of mode 0), and for mode 3 ``inner`` and
    ``size`` (neuron ``i`` reads ``tensor[(i // inner) % size]``)."""

    tensor: Optional[torch.Tensor]
    mode: int
    value: float = 1.0
    inner: int = 1
    size: int = 1


def _broadcast_run(shape, step_shape) -> Optional[tuple[int, int]]:
    """``(inner, size)`` when a decay of ``shape``, broadcast to ``step_shape``, varies along one
    contiguous run of step dims and is broadcast over all others (``[N]``, ``[C, 1, 1]``,
    ``[1, C, 1, 1]``, ``[H, W]`` over ``[B, C, H, W]``): ``inner`` is the product of the step dims
    after the run, ``size`` that of the run (the decay's numel). None when a broadcast dim lies
    inside the run (``[C, 1, W]`` over ``[B, C, H, W]`` with ``H > 1``)."""
    shape = (1,) * (len(step_shape) - len(shape)) + tuple(shape)
    own = [d for d, n in enumerate(shape) if n != 1]
    if not own:
        return None
    lo, hi = own[0], own[-1] + 1
    if any(shape[d] != step_shape[d] for d in range(lo, hi)):
        return None
    return math.prod(step_shape[hi:]), math.prod(shape[lo:hi])


def _decay_inputs(beta: Optional[torch.Tensor], beta_value: float, step_shape,
                  vec: int) -> _DecayInputs:
    """The decay as the kernels read it: a python float (mode 0); one float32 value (mode 1:
    0-dim or single-element tensors); a decay broadcast along one run of the step's dims (mode 3,
    see :func:`_broadcast_run`: its own values only, gradient reduced in the kernel); otherwise
    one float32 value per neuron (mode 2: a decay of the full step shape, or one broadcast in a
    way mode 3 cannot index, expanded to the step shape, its gradient summed to the decay's shape
    afterwards). Mode 3's atomic adds sum in no fixed order, so under
    ``torch.use_deterministic_algorithms(True)`` mode 2 serves instead."""
    if beta is None:
        return _DecayInputs(None, 0, float(beta_value))
    if beta.numel() == 1:
        return _DecayInputs(beta.detach().to(torch.float32).reshape(1), 1)
    run = None
    deterministic = torch.are_deterministic_algorithms_enabled()
    if 0 < beta.numel() < math.prod(step_shape) and not deterministic:
        run = _broadcast_run(beta.shape, step_shape)
    if run is not None:
        flat = beta.detach().to(torch.float32).reshape(-1).contiguous()
        return _DecayInputs(flat, 3, 1.0, *run)
    return _DecayInputs(_per_neuron(beta.detach().expand(step_shape), vec), 2)


# --------------------------------------------------------------------------------------------- #
# The kernels as torch custom ops (schema and autograd: spikegate.kernels.ops)
# --------------------------------------------------------------------------------------------- #


def _kernel_forward(
    x: torch.Tensor, v0: Optional[torch.Tensor], beta: Optional[torch.Tensor], beta_value: float,
    threshold: float, reset: str, reset_amount: float, surrogate: str,
    surrogate_params: list[float], detach_reset: bool, save: bool, check_finite: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward launch: ``(spikes, v_last, kept or [0], nonfinite)`` (see the module
    docstring for ``kept``); ``nonfinite`` folds the NaN/Inf check of x into the same pass."""
    _check_kernel_dtype(x.dtype)
    x_step = _step_stride(x)
    if x_step is None:
        x = x.contiguous()
        x_step = x[0].numel()
    T, step_shape = x.shape[0], x.shape[1:]
    m = step_shape.numel()
    if m > _MAX_NEURONS:
        raise ValueError(
            f"x: the LIF kernels take at most {_MAX_NEURONS} neurons per step (int32 offsets "
            f"within a step), got {m} (shape {tuple(x.shape)})"
        )
    vec = _vector_width(m, x, steps=(x_step,))
    v0_f32 = _per_neuron(v0, vec)
    decay = _decay_inputs(beta, beta_value, step_shape, vec)
    spikes = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    v_last = _per_neuron_empty(step_shape, x.dtype, x.device, vec)
    kept = torch.empty(x.shape, dtype=x.dtype, device=x.device) if save else None
    block, num_warps = _launch_config(m, x.device)
    programs = triton.cdiv(m, block)
    flags = torch.zeros(programs if check_finite else 1, dtype=torch.int32, device=x.device)
    if m > 0:
        with _on_device(x.device):
            _lif_fwd_kernel[(programs,)](
                x, _or(v0_f32, x), _or(decay.tensor, x), spikes, _or(kept, spikes), v_last, flags,
                T, m // vec, x_step // vec, decay.value, threshold, reset_amount,
                decay.inner, decay.size,
                VEC=vec, HAS_V0=v0_f32 is not None, BETA_MODE=decay.mode,
                SAVE=save, SAVE_SHIFTED=x.dtype != torch.float32,
                SAVE_MAX=_FLOAT16_MAX if x.dtype == torch.float16 else 0.0,
                RESET=_RESET_IDS[reset], CHECK_FINITE=check_finite, NATIVE_ROUND=_native_round(),
                BLOCK=block, num_warps=num_warps, **_fwd_options(x.device),
            )
    return spikes, v_last, _or(kept, _nothing(x)), flags.any()


def _fake_forward(x, v0, beta, beta_value, threshold, reset, reset_amount, surrogate,
                  surrogate_params, detach_reset, save, check_finite):
    kept = x.new_empty(x.shape) if save else _nothing(x)
    return (x.new_empty(x.shape), x.new_empty(x.shape[1:]), kept,
            x.new_empty((), dtype=torch.bool))


def _kernel_backward(
    kept: torch.Tensor, grad_spikes: Optional[torch.Tensor], grad_v_last: Optional[torch.Tensor],
    v0: Optional[torch.Tensor], beta: Optional[torch.Tensor], beta_value: float, threshold: float,
    reset: str, reset_amount: float, surrogate: str, surrogate_params: list[float],
    detach_reset: bool, need_x: bool, need_v0: bool, need_beta: bool, x_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One backward launch from the kept value: ``(grad_x, grad_v0, grad_beta)``, ``[0]`` for
    those not needed. Gradients that do not arrive (None) are not read."""
    T, step_shape, device = kept.shape[0], kept.shape[1:], kept.device
    m = step_shape.numel()
    scalar_gs = grad_spikes is not None and grad_spikes.numel() > 0 and all(
        st == 0 for st in grad_spikes.stride()
    )
    gs_step = m
    if grad_spikes is not None and not scalar_gs:
        gs_step = _step_stride(grad_spikes)
        if gs_step is None:
            grad_spikes, gs_step = grad_spikes.contiguous(), m
    vec = _vector_width(m, kept, None if scalar_gs else grad_spikes, steps=(gs_step,))
    v0_f32 = _per_neuron(v0, vec)
    decay = _decay_inputs(beta, beta_value, step_shape, vec)
    block, num_warps = _launch_config(m, device)
    programs = triton.cdiv(m, block)
    grad_x = torch.empty(kept.shape, dtype=x_dtype, device=device) if need_x else None
    grad_v0 = _per_neuron_empty(step_shape, torch.float32, device, vec) if need_v0 else None
    # per neuron (mode 2), the decay's own values added up by the kernel (3), or one partial sum
    # per program when a single decay serves all neurons (1)
    grad_beta = None
    if need_beta and decay.mode == 2:
        grad_beta = _per_neuron_empty(step_shape, torch.float32, device, vec)
    elif need_beta and decay.mode == 3:
        grad_beta = torch.zeros(decay.size, dtype=torch.float32, device=device)
    elif need_beta:
        grad_beta = torch.zeros(max(programs, 1), dtype=torch.float32, device=device)
    if grad_v_last is not None:
        grad_v_last = grad_v_last.contiguous()
        if vec == 1 and grad_v_last.data_ptr() % _ALIGN == 0:
            aligned_off = _per_neuron_empty(step_shape, grad_v_last.dtype, device, vec)
            grad_v_last = aligned_off.copy_(grad_v_last)

    if m > 0:
        kid, c0, c1 = _surrogate_constants(surrogate_from_args(surrogate, surrogate_params))
        with _on_device(device):
            _lif_bwd_kernel[(programs,)](
                kept, _or(grad_spikes, kept), _or(grad_v_last, kept),
                _or(v0_f32, kept), _or(decay.tensor, kept),
                _or(grad_x, kept), _or(grad_v0, kept), _or(grad_beta, kept),
                T, m // vec, gs_step // vec, decay.value, threshold, reset_amount, c0, c1,
                decay.inner, decay.size,
                VEC=vec, HAS_GRAD_SPIKES=grad_spikes is not None, GRAD_SPIKES_SCALAR=scalar_gs,
                HAS_GRAD_V_LAST=grad_v_last is not None,
                HAS_V0=v0_f32 is not None, BETA_MODE=decay.mode,
                NEED_GRAD_X=need_x, NEED_GRAD_V0=need_v0, NEED_GRAD_BETA=need_beta,
                SAVE_SHIFTED=kept.dtype != torch.float32, RESET=_RESET_IDS[reset],
                DETACH_RESET=detach_reset, SURROGATE=kid, NATIVE_ROUND=_native_round(),
                BLOCK=block, num_warps=num_warps, **_bwd_options(device),
            )

    out_v0 = grad_v0.to(v0.dtype) if need_v0 else _nothing(kept)
    if need_beta:
        if decay.mode == 2:
            reduced = grad_beta.sum_to_size(beta.shape)
        elif decay.mode == 3:
            reduced = grad_beta.view(beta.shape)
        else:
            reduced = grad_beta.sum().reshape(beta.shape)
        out_beta = reduced.to(beta.dtype)
    else:
        out_beta = _nothing(kept)
    return _or(grad_x, _nothing(kept)), out_v0, out_beta


lif_kernels = LIFOps("lif", _kernel_forward, _kernel_backward, _fake_forward)
lif_forward = lif_kernels.forward
lif_backward = lif_kernels.backward


def lif_triton(
    x: torch.Tensor,
    v0: Optional[torch.Tensor],
    beta: Union[float, torch.Tensor],
    *,
    threshold: float,
    reset: str,
    surrogate: Surrogate,
    detach_reset: bool,
    reset_amount: Optional[float] = None,
    check_finite: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LIF on the Triton kernels (the ``spikegate::lif_forward`` op and its backward); arguments
    already validated by ``lif_sequence``.

    Args:
        x: ``[T, B, ...]`` input current (float32, float16, bfloat16; any strides).
        v0: ``[B, ...]`` initial membrane or None (zeros).
        beta: python float, or tensor broadcastable to ``[B, ...]`` (0-dim, per neuron or
            channel, full; see the module docstring's modes).
        threshold, reset, surrogate, detach_reset: as in ``lif_sequence``.
        reset_amount: what ``reset="subtract"`` takes away; None for the threshold.
        check_finite: raise the ``lif_sequence`` error for NaN or Inf in x, from a flag the
            forward launch sets (no extra pass over x; reading the flag waits for the launch).

    Returns:
        ``(spikes [T, B, ...] 0/1 in x.dtype, v_last [B, ...] in x.dtype)``.
    """
    _check_kernel_dtype(x.dtype)
    _check_has_kernel(surrogate)  # refuse a surrogate without a kernel, before any launch
    tensor_beta = beta if isinstance(beta, torch.Tensor) else None
    save = torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in (x, v0, beta)
    )
    amount = threshold if reset_amount is None else reset_amount
    spikes, v_last, _, nonfinite = lif_kernels(
        x, v0, tensor_beta, 1.0 if tensor_beta is not None else float(beta), threshold, reset,
        amount, *surrogate_args(surrogate), detach_reset, save, check_finite,
    )
    if check_finite and bool(nonfinite):
        raise nonfinite_error("x")
    return spikes, v_last


# --------------------------------------------------------------------------------------------- #
# Ahead-of-time compile cases (spikegate.kernels.aot, ``spikegate bench lif --compile-check``)
# --------------------------------------------------------------------------------------------- #

_TRITON_TYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def aot_cases() -> list:
    """The forward and backward kernels as a training step launches them (v0, a per-neuron
    decay, both incoming gradients, every gradient needed, ATan, zero reset, the finite check),
    per dtype, at an aligned step (``M`` a multiple of 16, every pointer 16-byte aligned) and an
    unaligned one (``M`` odd and the per-step input off alignment, as for a slice ``x[1:]``:
    the launcher then picks ``VEC = 1``); and at an aligned step with a per-channel decay read
    by its own values (``BETA_MODE = 3``, gradient added up in the kernel) and the subtractive
    reset (TESS's neurons)."""
    from spikegate.kernels.aot import CompileCase

    cases = []
    for dtype, tt in _TRITON_TYPES.items():
        half = dtype != "float32"
        for shape, vec, aligned_shape, beta_mode, reset in (
            ("aligned, M % 16 == 0", 16, True, 2, 0),
            ("unaligned, M odd, x[1:]", 1, False, 2, 0),
            ("aligned, per-channel beta, subtract", 16, True, 3, 1),
        ):
            fwd_sig = {
                "x_ptr": f"*{tt}", "v0_ptr": "*fp32", "beta_ptr": "*fp32", "spikes_ptr": f"*{tt}",
                "saved_ptr": f"*{tt}", "v_last_ptr": f"*{tt}", "flags_ptr": "*i32",
                "T": "i32", "M_div": "i32", "XS_div": "i32", "beta": "fp32", "threshold": "fp32",
                "reset_amount": "fp32", "beta_inner": "i32", "beta_size": "i32",
            }
            fwd_const = dict(VEC=vec, HAS_V0=True, BETA_MODE=beta_mode, SAVE=True,
                             SAVE_SHIFTED=half,
                             SAVE_MAX=_FLOAT16_MAX if dtype == "float16" else 0.0, RESET=reset,
                             CHECK_FINITE=True, NATIVE_ROUND=True, BLOCK=1024)
            bwd_sig = {
                "saved_ptr": f"*{tt}", "grad_spikes_ptr": f"*{tt}", "grad_v_last_ptr": f"*{tt}",
                "v0_ptr": "*fp32", "beta_ptr": "*fp32", "grad_x_ptr": f"*{tt}",
                "grad_v0_ptr": "*fp32", "grad_beta_ptr": "*fp32", "T": "i32", "M_div": "i32",
                "GS_div": "i32", "beta": "fp32", "threshold": "fp32", "reset_amount": "fp32",
                "c0": "fp32", "c1": "fp32", "beta_inner": "i32", "beta_size": "i32",
            }
            bwd_const = dict(VEC=vec, HAS_GRAD_SPIKES=True, GRAD_SPIKES_SCALAR=False,
                             HAS_GRAD_V_LAST=True, HAS_V0=True, BETA_MODE=beta_mode,
                             NEED_GRAD_X=True, NEED_GRAD_V0=True, NEED_GRAD_BETA=True,
                             SAVE_SHIFTED=half, RESET=reset,
                             DETACH_RESET=False, SURROGATE=0, NATIVE_ROUND=True, BLOCK=1024)
            # VEC = 1: the launcher also starts the per-neuron buffers off alignment
            unaligned_in = {"x_ptr", "grad_spikes_ptr", "v0_ptr", "beta_ptr", "v_last_ptr",
                            "grad_v_last_ptr", "grad_v0_ptr", "grad_beta_ptr"}
            for kernel, fn, sig, const, options in (
                ("_lif_fwd_kernel", "_lif_fwd_kernel", fwd_sig, fwd_const,
                 {"enable_fp_fusion": False}),
                ("_lif_bwd_kernel", "_lif_bwd_kernel", bwd_sig, bwd_const,
                 {"enable_fp_fusion": True}),
            ):
                aligned = tuple(p for p, kind in sig.items() if kind.startswith("*")
                                and (aligned_shape or p not in unaligned_in))
                cases.append(CompileCase(
                    kernel=kernel, module=__name__, function=fn, shape=shape, dtype=dtype,
                    signature={**sig, **{k: "constexpr" for k in const}}, constexprs=const,
                    aligned=aligned, num_warps=4, options=options, aligned_shape=aligned_shape,
                ))
    return cases
