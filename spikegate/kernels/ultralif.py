"""Fused Triton kernels for the UltraLIF family: one launch walks all T steps forward, one back.

The math is :func:`spikegate.neurons.ultralif_sequence` and :func:`ultradlif_sequence`
(the UltraLIF paper, Defs. 4.1 and 4.2); their torch references ``ultralif_reference`` and
``ultradlif_reference`` are the oracles these kernels are tested against.

The kernels run as the torch custom ops ``spikegate::ultra_forward`` / ``spikegate::ultra_backward``
(schema, fakes and autograd: :mod:`spikegate.kernels.ultralif_ops`; ``coupled`` selects UltraDLIF),
so torch.compile and torch.export see one op per direction.

Layout. ``i [T, B, ...]`` is made contiguous and seen as ``[T, M]``. UltraLIF is elementwise: the
grid covers the ``M`` neurons of a step, ``BLOCK`` per program, each program looping over ``t``
with the membrane in registers (the pattern of ``spikegate.kernels.lif``). UltraDLIF couples
neighbours along the last dim ``N`` (rows ``R = M / N``): a program owns ``BLOCK_R`` whole rows
(a ``[BLOCK_R, next_pow2(N)]`` tile) and trades each step's membrane with its neighbours through
a small per-row scratch buffer (``[2, R, N]`` float32 forward, ``[3, R, N]`` backward) behind a
CTA barrier, so rows never wait on each other. Rows are limited to ``N <= 8192`` neurons.

Numerics. The LSE is the stable ``m + eps * log(sum_j exp((x_j - m)/eps))`` with ``m`` the max
(no overflow for any ``|i|/eps``); state and all arithmetic are float32 for float32, float16 and
bfloat16 inputs; spikes, ``v_last`` and ``grad_i`` come back in the input dtype. The backward
never reads ``i``: the softmax weights of the LSE are recovered from the kept membrane,
``p_a = exp((a - u)/eps)`` for UltraLIF and by recomputing the neighbours' LSE for UltraDLIF,
and ``d(eps*LSE(x/eps))/d eps`` is the entropy ``-sum_j p_j log p_j`` of those weights. For
UltraLIF this costs a relative error of about ``ulp(u)/eps`` in the weights (float32: ``1e-6`` for
``|u| ~ 1``, ``eps ~ 0.1``), inside the tolerance of the kernel tests.

Kept for backward, per neuron-step (the only ``[T, ...]`` tensor a layer holds): the membrane
``u[t]`` (UltraLIF, UltraDLIF) or the pre-LSE ``w[t]`` (``leak_before_lse``) in float32,
**4 bytes** for every input dtype (:func:`ultra_saved_bytes_per_neuron_step`). Spikes, ``v[t]``
and the LSE weights are recomputed from it.

Memory traffic per neuron-step (``b`` bytes per input element), :func:`ultra_bytes_per_neuron_step`:
forward ``2b + 4`` in training (read i, write spikes, write the kept value), ``2b`` in inference;
backward ``4 + 2b`` (read the kept value and ``grad_spikes``, write ``grad_i``). UltraDLIF adds
its scratch traffic, which stays in L1/L2 (one row plane per step, reused). Per-neuron traffic
(``v0``, ``eps``, ``tau0``, ``v_last`` and their gradients) is once per launch.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import triton
import triton.language as tl

from spikegate.kernels.common import (
    MAX_NEURONS, launch_config, native_round, on_device, or_placeholder, round_to,
)
from spikegate.kernels.ops import nothing
from spikegate.kernels.ultralif_ops import (
    UltraOps, check_differentiable, gradient_outputs, ultra_call,
)
from spikegate.neurons.checks import KERNEL_DTYPES

__all__ = [
    "ultra_kernels",
    "ultra_forward",
    "ultra_backward",
    "ultralif_triton",
    "ultradlif_triton",
    "ultra_saved_bytes_per_neuron_step",
    "ultra_bytes_per_neuron_step",
]

Param = Union[float, torch.Tensor]
MAX_ROW = 8192


# --------------------------------------------------------------------------------------------- #
# Kernels: UltraLIF (elementwise)
# --------------------------------------------------------------------------------------------- #


@triton.jit
def _param(ptr, offs, mask, scalar, PER_NEURON: tl.constexpr, other):
    if PER_NEURON:
        p = tl.load(ptr + offs, mask=mask, other=other)
    else:
        p = tl.full(offs.shape, scalar, tl.float32)
    return p


@triton.jit
def _sigmoid(y):
    """``1 / (1 + exp(-y))`` from ``exp(-|y|)``, which never overflows."""
    z = tl.exp(-tl.abs(y))
    return tl.where(y >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


@triton.jit
def _soft_spike(u, e, threshold, HARD: tl.constexpr):
    if HARD:
        s = tl.where(u >= threshold, 1.0, 0.0)
    else:
        s = _sigmoid((u - threshold) / e)
    return s


@triton.jit(do_not_specialize=["T"])
def _ultralif_fwd_kernel(
    i_ptr, v0_ptr, eps_ptr, tau_ptr,            # in: [T, M], [M] (HAS_V0), [M] (per neuron)
    spikes_ptr, saved_ptr, v_last_ptr,          # out: [T, M], [T, M] f32 (SAVE), [M]
    T, M, eps, tau0, threshold,
    HAS_V0: tl.constexpr, EPS_PER_NEURON: tl.constexpr, TAU_PER_NEURON: tl.constexpr,
    SAVE: tl.constexpr, RESET: tl.constexpr, HARD: tl.constexpr, NATIVE_ROUND: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    if HAS_V0:
        v = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    else:
        v = tl.zeros([BLOCK], dtype=tl.float32)
    e = _param(eps_ptr, offs, mask, eps, EPS_PER_NEURON, 1.0)
    log_tau = tl.log(_param(tau_ptr, offs, mask, tau0, TAU_PER_NEURON, 1.0))
    # Half inputs: 8-byte accesses to i and the spikes, as wide in elements as the 16-byte ones
    # to the float32 kept value, so all three share one layout (mixed widths cost a layout
    # conversion through shared memory every step)
    half_offs = tl.max_contiguous(offs, 4) if i_ptr.dtype.element_ty.primitive_bitwidth == 16 else offs
    x_ptrs = i_ptr + half_offs
    s_ptrs = spikes_ptr + half_offs
    k_ptrs = saved_ptr + offs
    for t in range(T):
        x = tl.load(x_ptrs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
        a = v + log_tau
        m = tl.maximum(a, x)
        if HARD:
            u = m
        else:
            u = m + e * tl.log(1.0 + tl.exp(-tl.abs(a - x) / e))
        s = _soft_spike(u, e, threshold, HARD)
        tl.store(s_ptrs, round_to(s, spikes_ptr.dtype.element_ty, NATIVE_ROUND), mask=mask)
        if SAVE:
            tl.store(k_ptrs, u, mask=mask)
        if RESET:
            v = u * (1.0 - s)
        else:
            v = u
        x_ptrs += M
        s_ptrs += M
        k_ptrs += M
    tl.store(v_last_ptr + offs, round_to(v, v_last_ptr.dtype.element_ty, NATIVE_ROUND), mask=mask)


@triton.jit
def _spike_grads(u, s, gs, gv, r, e, threshold, RESET: tl.constexpr):
    """Through ``s = sigmoid((u - threshold)/e)`` and ``v = r * (1 - s)`` (``v = r`` without the
    reset): ``(dL/du via s and -r*ds, dL/de at fixed u, dL/dr)``."""
    ds = s * (1.0 - s)
    y = (u - threshold) / e
    if RESET:
        gu = (gs - gv * r) * ds / e
        geps = (gv * r - gs) * ds * y / e
        gr = gv * (1.0 - s)
    else:
        gu = gs * ds / e
        geps = -gs * ds * y / e
        gr = gv
    return gu, geps, gr


@triton.jit(do_not_specialize=["T"])
def _ultralif_bwd_kernel(
    saved_ptr, grad_spikes_ptr, grad_v_last_ptr, v0_ptr, eps_ptr, tau_ptr,     # in
    grad_i_ptr, grad_v0_ptr, grad_eps_ptr, grad_tau_ptr,                       # out
    T, M, eps, tau0, threshold,
    HAS_GRAD_SPIKES: tl.constexpr, HAS_GRAD_V_LAST: tl.constexpr, HAS_V0: tl.constexpr,
    EPS_PER_NEURON: tl.constexpr, TAU_PER_NEURON: tl.constexpr, NEED_GRAD_I: tl.constexpr,
    RESET: tl.constexpr, NATIVE_ROUND: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    e = _param(eps_ptr, offs, mask, eps, EPS_PER_NEURON, 1.0)
    tau = _param(tau_ptr, offs, mask, tau0, TAU_PER_NEURON, 1.0)
    log_tau = tl.log(tau)
    if HAS_GRAD_V_LAST:
        gv = tl.load(grad_v_last_ptr + offs, mask=mask, other=0.0).to(tl.float32)   # dL/dv[t]
    else:
        gv = tl.zeros([BLOCK], dtype=tl.float32)
    if HAS_V0:
        v_init = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    else:
        v_init = tl.zeros([BLOCK], dtype=tl.float32)
    geps = tl.zeros([BLOCK], dtype=tl.float32)
    ga_sum = tl.zeros([BLOCK], dtype=tl.float32)

    last = (T - 1).to(tl.int64) * M
    k_ptrs = saved_ptr + last + offs
    gs_ptrs = grad_spikes_ptr + last + offs
    gi_ptrs = grad_i_ptr + last + offs
    u = tl.load(k_ptrs, mask=mask, other=0.0)
    s = _sigmoid((u - threshold) / e)
    for k in range(T):
        t = T - 1 - k
        k_ptrs -= M
        u_prev = tl.load(k_ptrs, mask=offs < tl.where(t > 0, M, 0), other=0.0)
        s_prev = _sigmoid((u_prev - threshold) / e)
        if RESET:
            v_prev = u_prev * (1.0 - s_prev)
        else:
            v_prev = u_prev
        v_prev = tl.where(t > 0, v_prev, v_init)
        # weights of the 2-term LSE, from u = a + eps*log(1 + exp((i - a)/eps))
        a = v_prev + log_tau
        log_p = tl.minimum((a - u) / e, 0.0)
        p = tl.exp(log_p)
        q = 1.0 - p
        entropy = -(p * log_p) - tl.where(q > 0.0, q * tl.log(tl.maximum(q, 1e-38)), 0.0)
        if HAS_GRAD_SPIKES:
            gs = tl.load(gs_ptrs, mask=mask, other=0.0).to(tl.float32)
            gs_ptrs -= M
        else:
            gs = tl.zeros([BLOCK], dtype=tl.float32)
        gu, ge, gr = _spike_grads(u, s, gs, gv, u, e, threshold, RESET)
        gu = gu + gr
        geps += ge + gu * entropy
        if NEED_GRAD_I:
            tl.store(gi_ptrs, round_to(gu * q, grad_i_ptr.dtype.element_ty, NATIVE_ROUND), mask=mask)
            gi_ptrs -= M
        gv = gu * p
        ga_sum += gv
        u = u_prev
        s = s_prev
    tl.store(grad_v0_ptr + offs, gv, mask=mask)
    tl.store(grad_eps_ptr + offs, geps, mask=mask)
    tl.store(grad_tau_ptr + offs, ga_sum / tau, mask=mask)     # a = v + log tau0


# --------------------------------------------------------------------------------------------- #
# Kernels: UltraDLIF (rows of N coupled neurons)
# --------------------------------------------------------------------------------------------- #


@triton.jit
def _lse3(left, centre, right, e):
    """``(eps*LSE, p_left, p_centre, p_right, entropy)`` of three terms, stable."""
    m = tl.maximum(tl.maximum(left, centre), right)
    zl = (left - m) / e
    zc = (centre - m) / e
    zr = (right - m) / e
    el = tl.exp(zl)
    ec = tl.exp(zc)
    er = tl.exp(zr)
    total = el + ec + er
    log_total = tl.log(total)
    pl = el / total
    pc = ec / total
    pr = er / total
    entropy = log_total - (pl * zl + pc * zc + pr * zr)
    return m + e * log_total, pl, pc, pr, entropy


@triton.jit
def _rows(BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, R, N):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_N)
    mask = (rows < R)[:, None] & (cols < N)[None, :]
    idx = rows[:, None] * N + cols[None, :]
    left = rows[:, None] * N + ((cols + N - 1) % N)[None, :]
    right = rows[:, None] * N + ((cols + 1) % N)[None, :]
    return idx, left, right, mask


@triton.jit(do_not_specialize=["T"])
def _ultradlif_fwd_kernel(
    i_ptr, v0_ptr, eps_ptr, tau_ptr,            # in: [T, R, N], [R, N], per neuron
    spikes_ptr, saved_ptr, v_last_ptr, scratch_ptr,   # out; scratch [2, R, N] f32
    T, R, N, eps, tau0, threshold,
    HAS_V0: tl.constexpr, EPS_PER_NEURON: tl.constexpr, TAU_PER_NEURON: tl.constexpr,
    SAVE: tl.constexpr, RESET: tl.constexpr, HARD: tl.constexpr,
    LEAK_BEFORE: tl.constexpr, RESET_PRE: tl.constexpr, NATIVE_ROUND: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    idx, left, right, mask = _rows(BLOCK_R, BLOCK_N, R, N)
    M = R * N
    if HAS_V0:
        v = tl.load(v0_ptr + idx, mask=mask, other=0.0)
    else:
        v = tl.zeros([BLOCK_R, BLOCK_N], dtype=tl.float32)
    e = _param(eps_ptr, idx, mask, eps, EPS_PER_NEURON, 1.0)
    tau = _param(tau_ptr, idx, mask, tau0, TAU_PER_NEURON, 1.0)
    log_tau = tl.log(tau)
    x_ptrs = i_ptr + idx
    s_ptrs = spikes_ptr + idx
    k_ptrs = saved_ptr + idx
    for t in range(T):
        x = tl.load(x_ptrs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
        if LEAK_BEFORE:
            w = tau * v + x
            c = w
        else:
            w = v
            c = v
        # double-buffered by step parity: one barrier per step keeps reads and writes apart
        buf = scratch_ptr + (t % 2) * M
        tl.store(buf + idx, c, mask=mask)
        tl.debug_barrier()
        cl = tl.load(buf + left, mask=mask, other=0.0)
        cr = tl.load(buf + right, mask=mask, other=0.0)
        if not LEAK_BEFORE:
            c = c + log_tau
        if HARD:
            lse = tl.maximum(tl.maximum(cl, c), cr)
        else:
            lse, pl, pc, pr, h = _lse3(cl, c, cr, e)
        if LEAK_BEFORE:
            u = lse
        else:
            u = lse + x
        s = _soft_spike(u, e, threshold, HARD)
        tl.store(s_ptrs, round_to(s, spikes_ptr.dtype.element_ty, NATIVE_ROUND), mask=mask)
        if SAVE:
            if LEAK_BEFORE:
                tl.store(k_ptrs, w, mask=mask)
            else:
                tl.store(k_ptrs, u, mask=mask)
        if RESET_PRE:
            r = w
        else:
            r = u
        if RESET:
            v = r * (1.0 - s)
        else:
            v = r
        x_ptrs += M
        s_ptrs += M
        k_ptrs += M
    tl.store(v_last_ptr + idx, round_to(v, v_last_ptr.dtype.element_ty, NATIVE_ROUND), mask=mask)


@triton.jit(do_not_specialize=["T"])
def _ultradlif_bwd_kernel(
    saved_ptr, grad_spikes_ptr, grad_v_last_ptr, v0_ptr, eps_ptr, tau_ptr, scratch_ptr,   # in
    grad_i_ptr, grad_v0_ptr, grad_eps_ptr, grad_tau_ptr,                                 # out
    T, R, N, eps, tau0, threshold,
    HAS_GRAD_SPIKES: tl.constexpr, HAS_GRAD_V_LAST: tl.constexpr, HAS_V0: tl.constexpr,
    EPS_PER_NEURON: tl.constexpr, TAU_PER_NEURON: tl.constexpr, NEED_GRAD_I: tl.constexpr,
    RESET: tl.constexpr, LEAK_BEFORE: tl.constexpr, RESET_PRE: tl.constexpr, NATIVE_ROUND: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    idx, left, right, mask = _rows(BLOCK_R, BLOCK_N, R, N)
    M = R * N
    plane_v = scratch_ptr              # the step's membrane (or w), traded with the neighbours
    plane_l = scratch_ptr + M          # gu * p_left, sent to the left neighbour
    plane_r = scratch_ptr + 2 * M      # gu * p_right, sent to the right neighbour
    e = _param(eps_ptr, idx, mask, eps, EPS_PER_NEURON, 1.0)
    tau = _param(tau_ptr, idx, mask, tau0, TAU_PER_NEURON, 1.0)
    log_tau = tl.log(tau)
    if HAS_GRAD_V_LAST:
        gv = tl.load(grad_v_last_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    else:
        gv = tl.zeros([BLOCK_R, BLOCK_N], dtype=tl.float32)
    if HAS_V0:
        v_init = tl.load(v0_ptr + idx, mask=mask, other=0.0)
    else:
        v_init = tl.zeros([BLOCK_R, BLOCK_N], dtype=tl.float32)
    geps = tl.zeros([BLOCK_R, BLOCK_N], dtype=tl.float32)
    gtau = tl.zeros([BLOCK_R, BLOCK_N], dtype=tl.float32)
    gw_next = tl.zeros([BLOCK_R, BLOCK_N], dtype=tl.float32)   # dL/dw[t+1] (leak before LSE)

    last = (T - 1).to(tl.int64) * M
    k_ptrs = saved_ptr + last + idx
    gs_ptrs = grad_spikes_ptr + last + idx
    gi_ptrs = grad_i_ptr + last + idx
    kept = tl.load(k_ptrs, mask=mask, other=0.0)
    if not LEAK_BEFORE:
        s = _sigmoid((kept - threshold) / e)
    for k in range(T):
        t = T - 1 - k
        k_ptrs -= M
        if HAS_GRAD_SPIKES:
            gs = tl.load(gs_ptrs, mask=mask, other=0.0).to(tl.float32)
            gs_ptrs -= M
        else:
            gs = tl.zeros([BLOCK_R, BLOCK_N], dtype=tl.float32)
        if LEAK_BEFORE:
            # kept = w[t]; u = LSE over the neighbours of w, recomputed
            w = kept
            tl.store(plane_v + idx, w, mask=mask)
            tl.debug_barrier()
            wl = tl.load(plane_v + left, mask=mask, other=0.0)
            wr = tl.load(plane_v + right, mask=mask, other=0.0)
            u, pl, pc, pr, h = _lse3(wl, w, wr, e)
            s = _sigmoid((u - threshold) / e)
            if RESET_PRE:
                r = w
            else:
                r = u
            if RESET:
                v_t = r * (1.0 - s)
            else:
                v_t = r
            gtau += gw_next * v_t                      # w[t+1] = tau * v[t] + i[t+1]
            gl, ge, gr = _spike_grads(u, s, gs, gv, r, e, threshold, RESET)
            if RESET_PRE:
                g_own = gr
            else:
                gl = gl + gr
                g_own = tl.zeros([BLOCK_R, BLOCK_N], dtype=tl.float32)
            geps += ge + gl * h
            tl.store(plane_l + idx, gl * pl, mask=mask)
            tl.store(plane_r + idx, gl * pr, mask=mask)
            tl.debug_barrier()
            gw = g_own + gl * pc + tl.load(plane_l + right, mask=mask, other=0.0) \
                + tl.load(plane_r + left, mask=mask, other=0.0)
            if NEED_GRAD_I:
                tl.store(gi_ptrs, round_to(gw, grad_i_ptr.dtype.element_ty, NATIVE_ROUND), mask=mask)
                gi_ptrs -= M
            gv = gw * tau
            gw_next = gw
            kept = tl.load(k_ptrs, mask=mask & (idx < tl.where(t > 0, M, 0)), other=0.0)
        else:
            # kept = u[t]; the LSE weights come from the neighbours' v[t-1]
            u = kept
            u_prev = tl.load(k_ptrs, mask=mask & (idx < tl.where(t > 0, M, 0)), other=0.0)
            s_prev = _sigmoid((u_prev - threshold) / e)
            if RESET:
                v_prev = u_prev * (1.0 - s_prev)
            else:
                v_prev = u_prev
            v_prev = tl.where(t > 0, v_prev, v_init)
            tl.store(plane_v + idx, v_prev, mask=mask)
            tl.debug_barrier()
            vl = tl.load(plane_v + left, mask=mask, other=0.0)
            vr = tl.load(plane_v + right, mask=mask, other=0.0)
            lse, pl, pc, pr, h = _lse3(vl, v_prev + log_tau, vr, e)
            gu, ge, gr = _spike_grads(u, s, gs, gv, u, e, threshold, RESET)
            gu = gu + gr
            geps += ge + gu * h
            if NEED_GRAD_I:
                tl.store(gi_ptrs, round_to(gu, grad_i_ptr.dtype.element_ty, NATIVE_ROUND), mask=mask)
                gi_ptrs -= M
            gtau += gu * pc / tau                      # centre term v + log tau0
            tl.store(plane_l + idx, gu * pl, mask=mask)
            tl.store(plane_r + idx, gu * pr, mask=mask)
            tl.debug_barrier()
            gv = gu * pc + tl.load(plane_l + right, mask=mask, other=0.0) \
                + tl.load(plane_r + left, mask=mask, other=0.0)
            kept = u_prev
            s = s_prev
    if LEAK_BEFORE:
        gtau += gw_next * v_init
    tl.store(grad_v0_ptr + idx, gv, mask=mask)
    tl.store(grad_eps_ptr + idx, geps, mask=mask)
    tl.store(grad_tau_ptr + idx, gtau, mask=mask)


# --------------------------------------------------------------------------------------------- #
# Launchers, registered as the torch custom ops spikegate::ultra_forward / ultra_backward
# (schema, fakes and autograd: spikegate.kernels.ultralif_ops)
# --------------------------------------------------------------------------------------------- #


def ultra_saved_bytes_per_neuron_step(dtype: torch.dtype) -> int:
    """Bytes kept for backward per neuron-step: float32 ``u`` (or ``w``), for every input dtype."""
    _check_kernel_dtype(dtype)
    return 4


def ultra_bytes_per_neuron_step(dtype: torch.dtype, *, backward: bool, training: bool = True) -> int:
    """Global-memory bytes per neuron-step of one launch (module docstring): forward ``2b`` plus
    the kept value in training, backward kept value + ``grad_spikes`` + ``grad_i``."""
    b = torch.empty((), dtype=_check_kernel_dtype(dtype)).element_size()
    kept = ultra_saved_bytes_per_neuron_step(dtype)
    if backward:
        return kept + 2 * b
    return 2 * b + (kept if training else 0)


def _check_kernel_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in KERNEL_DTYPES:
        raise TypeError(f"dtype: the UltraLIF kernels take float32, float16, bfloat16, got {dtype}")
    return dtype


def _per_neuron(p: Optional[torch.Tensor], step_shape: torch.Size) -> Optional[torch.Tensor]:
    """A tensor input as the kernels read it, ``[M]`` float32; None stays None."""
    if p is None:
        return None
    return p.detach().to(torch.float32).expand(step_shape).contiguous()


def _dlif_config(rows: int, n: int, device: torch.device) -> tuple[int, int, int]:
    """``(BLOCK_R, BLOCK_N, num_warps)``: whole rows per program, about 1024 neurons a tile, on
    8 warps from 1024 on (4 or fewer elements a thread): with 4 warps the sm_90 compile of the
    backward, which holds three neighbours' state per element, took 253-255 registers and spilled
    at rows of 100 (``spikegate bench lif --compile-check``); with 8 it takes 128-198, no spills."""
    if n > MAX_ROW:
        raise ValueError(f"i: the UltraDLIF kernel takes rows of at most {MAX_ROW} neurons "
                         f"(the last dim), got {n}; use backend='torch'")
    block_n = triton.next_power_of_2(n)
    block_r = max(1, min(triton.next_power_of_2(max(rows, 1)), 1024 // block_n))
    return block_r, block_n, 4 if block_n * block_r <= 512 else 8


def _kernel_forward(
    i: torch.Tensor, v0: Optional[torch.Tensor], eps: Optional[torch.Tensor],
    tau0: Optional[torch.Tensor], eps_value: float, tau0_value: float, coupled: bool,
    threshold: float, reset: bool, hard: bool, leak_before_lse: bool, reset_pre_lse: bool,
    save: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward launch: ``(spikes [T, ...] dtype of i, v_last [...] dtype of i, kept [T, ...]
    float32 or [0])``. ``eps`` / ``tau0`` are read per neuron in float32 (None: the floats)."""
    _check_kernel_dtype(i.dtype)
    i = i.contiguous()
    T, step = i.shape[0], i.shape[1:]
    m = step.numel()
    if m > MAX_NEURONS:
        raise ValueError(f"i: the UltraLIF kernels take at most {MAX_NEURONS} neurons per step "
                         f"(int32 offsets within a step), got {m} (shape {tuple(i.shape)})")
    v0, eps, tau0 = (_per_neuron(p, step) for p in (v0, eps, tau0))
    spikes = torch.empty_like(i)
    v_last = torch.empty(step, dtype=i.dtype, device=i.device)
    kept = torch.empty(i.shape, dtype=torch.float32, device=i.device) if save else None
    if m > 0:
        flags = dict(HAS_V0=v0 is not None, EPS_PER_NEURON=eps is not None,
                     TAU_PER_NEURON=tau0 is not None, SAVE=save, RESET=reset, HARD=hard,
                     NATIVE_ROUND=native_round())
        args = (i, or_placeholder(v0, i), or_placeholder(eps, i), or_placeholder(tau0, i), spikes,
                or_placeholder(kept, spikes), v_last)
        with on_device(i.device):
            if not coupled:
                block, warps = launch_config(m, i.device)
                _ultralif_fwd_kernel[(triton.cdiv(m, block),)](
                    *args, T, m, eps_value, tau0_value, threshold, **flags, BLOCK=block,
                    num_warps=warps,
                )
            else:
                n = step[-1]
                rows = m // n
                block_r, block_n, warps = _dlif_config(rows, n, i.device)
                scratch = torch.empty((2, rows, n), dtype=torch.float32, device=i.device)
                _ultradlif_fwd_kernel[(triton.cdiv(rows, block_r),)](
                    *args, scratch, T, rows, n, eps_value, tau0_value, threshold, **flags,
                    LEAK_BEFORE=leak_before_lse, RESET_PRE=reset_pre_lse, BLOCK_R=block_r,
                    BLOCK_N=block_n, num_warps=warps,
                )
    return spikes, v_last, or_placeholder(kept, nothing(i))


def _fake_forward(i, v0, eps, tau0, eps_value, tau0_value, coupled, threshold, reset, hard,
                  leak_before_lse, reset_pre_lse, save):
    kept = i.new_empty(i.shape, dtype=torch.float32) if save else nothing(i)
    return i.new_empty(i.shape), i.new_empty(i.shape[1:]), kept


def _kernel_backward(
    kept: torch.Tensor, grad_spikes: Optional[torch.Tensor], grad_v_last: Optional[torch.Tensor],
    v0: Optional[torch.Tensor], eps: Optional[torch.Tensor], tau0: Optional[torch.Tensor],
    eps_value: float, tau0_value: float, coupled: bool, threshold: float, reset: bool,
    hard: bool, leak_before_lse: bool, reset_pre_lse: bool, need_i: bool, need_v0: bool,
    need_eps: bool, need_tau0: bool, i_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One backward launch from the kept ``[T, ...]`` float32 value: ``(grad_i in i_dtype,
    grad_v0, grad_eps, grad_tau0)`` summed to the inputs' shapes, ``[0]`` for those not needed.
    Gradients that do not arrive (None) are not read."""
    check_differentiable(hard)
    T, step, device = kept.shape[0], kept.shape[1:], kept.device
    m = step.numel()
    v0_f32, eps_f32, tau_f32 = (_per_neuron(p, step) for p in (v0, eps, tau0))
    grad_i = torch.empty(kept.shape, dtype=i_dtype, device=device) if need_i else None
    grad_v0, grad_eps, grad_tau = (torch.zeros(step, dtype=torch.float32, device=device)
                                   for _ in range(3))
    if m > 0:
        grad_spikes = None if grad_spikes is None else grad_spikes.contiguous()
        grad_v_last = None if grad_v_last is None else grad_v_last.contiguous()
        ins = (kept, or_placeholder(grad_spikes, kept), or_placeholder(grad_v_last, kept),
               or_placeholder(v0_f32, kept), or_placeholder(eps_f32, kept),
               or_placeholder(tau_f32, kept))
        outs = (or_placeholder(grad_i, kept), grad_v0, grad_eps, grad_tau)
        flags = dict(HAS_GRAD_SPIKES=grad_spikes is not None,
                     HAS_GRAD_V_LAST=grad_v_last is not None, HAS_V0=v0_f32 is not None,
                     EPS_PER_NEURON=eps_f32 is not None, TAU_PER_NEURON=tau_f32 is not None,
                     NEED_GRAD_I=need_i, RESET=reset, NATIVE_ROUND=native_round())
        with on_device(device):
            if not coupled:
                block, warps = launch_config(m, device)
                _ultralif_bwd_kernel[(triton.cdiv(m, block),)](
                    *ins, *outs, T, m, eps_value, tau0_value, threshold, **flags, BLOCK=block,
                    num_warps=warps,
                )
            else:
                n = step[-1]
                rows = m // n
                block_r, block_n, warps = _dlif_config(rows, n, device)
                scratch = torch.empty((3, rows, n), dtype=torch.float32, device=device)
                _ultradlif_bwd_kernel[(triton.cdiv(rows, block_r),)](
                    *ins, scratch, *outs, T, rows, n, eps_value, tau0_value, threshold,
                    **flags, LEAK_BEFORE=leak_before_lse, RESET_PRE=reset_pre_lse,
                    BLOCK_R=block_r, BLOCK_N=block_n, num_warps=warps,
                )
    return gradient_outputs(kept, grad_i, grad_v0, grad_eps, grad_tau, v0, eps, tau0, need_i,
                            need_v0, need_eps, need_tau0)


ultra_kernels = UltraOps("ultra", _kernel_forward, _kernel_backward, _fake_forward)
ultra_forward = ultra_kernels.forward
ultra_backward = ultra_kernels.backward


def ultralif_triton(i: torch.Tensor, v0: Optional[torch.Tensor], eps: Param, tau0: Param, *,
                    threshold: float, reset: bool, hard: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """UltraLIF on the Triton kernels (the ``spikegate::ultra_forward`` op and its backward);
    arguments already validated by ``ultralif_sequence``. ``eps`` / ``tau0``: floats, or tensors
    broadcastable to the step shape (gradients summed to their shapes)."""
    return ultra_call(ultra_kernels, i, v0, eps, tau0, coupled=False, threshold=threshold,
                      reset=reset, hard=hard)


def ultradlif_triton(i: torch.Tensor, v0: Optional[torch.Tensor], eps: Param, tau0: Param, *,
                     threshold: float, reset: bool, hard: bool, leak_before_lse: bool,
                     reset_pre_lse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """UltraDLIF on the Triton kernels (the same ops, ``coupled=True``); arguments already
    validated by ``ultradlif_sequence``."""
    return ultra_call(ultra_kernels, i, v0, eps, tau0, coupled=True, threshold=threshold,
                      reset=reset, hard=hard, leak_before_lse=leak_before_lse,
                      reset_pre_lse=reset_pre_lse)


# --------------------------------------------------------------------------------------------- #
# Ahead-of-time compile cases (spikegate.kernels.aot, ``spikegate bench lif --compile-check``)
# --------------------------------------------------------------------------------------------- #

_TRITON_TYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def aot_cases() -> list:
    """The four kernels as a training step launches them (v0, per-neuron eps and tau0, both
    incoming gradients, reset, soft spikes), per dtype. UltraLIF at an aligned step (``M`` a
    multiple of 16, every pointer 16-byte aligned; 1024 neurons and 4 warps per program, as on a
    large layer) and an unaligned one (``M`` odd, ``i`` a slice off alignment); UltraDLIF in the
    paper's form at rows of ``N = 64`` (aligned: 16 rows a program) and ``N = 100`` (128 lanes a
    row, 8 rows), and in the released code's form (``leak_before_lse``, ``reset_pre_lse``) at
    ``N = 64``."""
    from spikegate.kernels.aot import CompileCase

    cases = []
    for dtype, tt in _TRITON_TYPES.items():
        lif_fwd = {"i_ptr": f"*{tt}", "v0_ptr": "*fp32", "eps_ptr": "*fp32", "tau_ptr": "*fp32",
                   "spikes_ptr": f"*{tt}", "saved_ptr": "*fp32", "v_last_ptr": f"*{tt}"}
        lif_bwd = {"saved_ptr": "*fp32", "grad_spikes_ptr": f"*{tt}", "grad_v_last_ptr": f"*{tt}",
                   "v0_ptr": "*fp32", "eps_ptr": "*fp32", "tau_ptr": "*fp32"}
        grads = {"grad_i_ptr": f"*{tt}", "grad_v0_ptr": "*fp32", "grad_eps_ptr": "*fp32",
                 "grad_tau_ptr": "*fp32"}
        scalars = {"eps": "fp32", "tau0": "fp32", "threshold": "fp32"}
        fwd_flags = dict(HAS_V0=True, EPS_PER_NEURON=True, TAU_PER_NEURON=True, SAVE=True,
                         RESET=True, HARD=False)
        bwd_flags = dict(HAS_GRAD_SPIKES=True, HAS_GRAD_V_LAST=True, HAS_V0=True,
                         EPS_PER_NEURON=True, TAU_PER_NEURON=True, NEED_GRAD_I=True, RESET=True)
        specs = []
        for shape, aligned_shape in (("aligned, M % 16 == 0", True),
                                     ("unaligned, M odd, i[1:]", False)):
            ints = {"T": "i32", "M": "i32"}
            tiles = dict(BLOCK=1024)
            specs += [
                ("_ultralif_fwd_kernel", shape, aligned_shape, {**lif_fwd, **ints, **scalars},
                 {**fwd_flags, "NATIVE_ROUND": True, **tiles}, 4, {"i_ptr"}),
                ("_ultralif_bwd_kernel", shape, aligned_shape,
                 {**lif_bwd, **grads, **ints, **scalars},
                 {**bwd_flags, "NATIVE_ROUND": True, **tiles}, 4, set()),
            ]
        for shape, aligned_shape, n, leak in (("rows N = 64", True, 64, False),
                                              ("rows N = 100", False, 100, False),
                                              ("rows N = 64, released form", True, 64, True)):
            block_r, block_n, warps = _dlif_config(1 << 16, n, torch.device("cuda"))
            ints = {"T": "i32", "R": "i32", "N": "i32"}
            variant = dict(LEAK_BEFORE=leak, RESET_PRE=leak, NATIVE_ROUND=True, BLOCK_R=block_r,
                           BLOCK_N=block_n)
            specs += [
                ("_ultradlif_fwd_kernel", shape, aligned_shape,
                 {**lif_fwd, "scratch_ptr": "*fp32", **ints, **scalars},
                 {**fwd_flags, **variant}, warps, set()),
                ("_ultradlif_bwd_kernel", shape, aligned_shape,
                 {**lif_bwd, "scratch_ptr": "*fp32", **grads, **ints, **scalars},
                 {**bwd_flags, **variant}, warps, set()),
            ]
        for kernel, shape, aligned_shape, sig, const, warps, off_when_unaligned in specs:
            # pointers from torch allocations are 16-byte aligned, ints divisible by 16 are
            # specialized at launch: both only at the aligned shapes (but the row length N = 64)
            pointers = [p for p, kind in sig.items() if kind.startswith("*")
                        and (aligned_shape or p not in off_when_unaligned)]
            ints = [p for p in ("M", "R", "N") if aligned_shape and p in sig]
            aligned = tuple(pointers + ints)
            cases.append(CompileCase(
                kernel=kernel, module=__name__, function=kernel, shape=shape, dtype=dtype,
                signature={**sig, **{k: "constexpr" for k in const}}, constexprs=const,
                aligned=aligned, num_warps=warps, aligned_shape=aligned_shape,
            ))
    return cases
