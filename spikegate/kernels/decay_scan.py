"""Fused Triton scan for the per-head decay recurrence of the dual-path mixer.

The math is :func:`spikegate.neurons.decay_scan.decay_scan_sequence` (its torch reference,
``decay_scan_torch``, is the oracle these kernels are tested against)::

    lambda = sigmoid(r)          h[t] = lambda * h[t-1] + (1 - lambda) * z[t]      h[-1] = h0

Layout. ``z [T, B, H, Dh]`` is made contiguous and seen as ``[T, M]``, ``M = B * H * Dh``; column
``m`` belongs to head ``(m // Dh) % H``. A program owns ``BLOCK`` neighbouring columns and one
chunk of ``C`` time steps, and walks its chunk with the state in float32 registers; every load
and store of a step is one contiguous run of ``BLOCK`` elements.

Chunked over time. With few columns (a small batch) one program per column block cannot fill a
GPU, so time is cut into ``n`` chunks that run in parallel in two launches:

1. ``_chunk_ends_kernel``: every chunk but the last scans from a zero state and writes only its
   end state ``E[c]`` (``[n - 1, M]`` float32, no ``[T, M]`` writes).
2. ``_scan_kernel``: chunk ``c`` forms its true entering state from ``h0`` and the ends of the
   chunks before it, ``s = lambda^C s + E[j]`` (``c`` cheap steps), then scans its chunk from
   there and writes ``h``.

Traffic per element: read ``z`` twice and write ``h`` once (12 bytes in float32) when ``n > 1``;
with ``n = 1`` (enough columns to fill the GPU) the first launch is skipped: 8 bytes.

Backward. The adjoint is the same recurrence backwards in time,
``g[t] = dL/dh[t] + lambda g[t+1]``, chunked the same way (chunk ends now gathered from the
chunks after ``c``). The second launch also writes ``dz[t] = (1 - lambda) g[t]`` and accumulates
``dlambda = sum_t g[t] (h[t-1] - z[t])`` per column and chunk (reduced over chunks, batch and
``Dh`` by torch), and the chunk holding ``t = 0`` writes ``dh0 = lambda g[0]``. It reads the
saved output ``h`` (in z's dtype: for half inputs ``dlambda`` carries that dtype's rounding of
``h``). ``dr = dlambda * lambda * (1 - lambda)``.

The launches run as the torch custom ops ``spikegate::decay_scan_forward`` / ``_backward`` (the
pattern described in :mod:`spikegate.kernels`), so torch.compile and torch.export trace the scan
as one op per direction. The forward keeps ``z``, ``h``, ``r`` and ``h0``; the backward recomputes
``lambda`` and the launch plan from them.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from spikegate.kernels.common import on_device, or_placeholder, sm_count
from spikegate.kernels.ops import KernelOps, nothing
from spikegate.neurons.checks import KERNEL_DTYPES

__all__ = [
    "decay_scan_triton", "decay_scan_kernels", "decay_scan_forward", "decay_scan_backward",
    "DecayScanTritonFunction",
    "decay_scan_bytes_per_element",
]

_MAX_CHUNKS = 64      # the carry loop of the second launch costs up to n steps per program
_MIN_CHUNK = 64       # a chunk shorter than this is dominated by the carry loop


@triton.jit
def _head_decay(lam_ptr, offs, mask, H, Dh):
    return tl.load(lam_ptr + (offs // Dh) % H, mask=mask, other=1.0)


@triton.jit(do_not_specialize=["T", "C"])
def _chunk_ends_kernel(
    x_ptr, lam_ptr, ends_ptr,       # in [T, M], [H] float32; out [n - 1, M] float32
    T, M, H, Dh, C,
    REVERSE: tl.constexpr, INPUT_SCALED: tl.constexpr, BLOCK: tl.constexpr,
):
    """End state of one chunk scanned from zero. Forward: chunks 0..n-2, ends[c] at chunk c.
    Reverse: chunks 1..n-1, ends[c - 1] holds chunk c's state at its first step."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    shift = 1 if REVERSE else 0
    c = tl.program_id(1) + shift
    lam = _head_decay(lam_ptr, offs, mask, H, Dh)
    scale = 1.0 - lam if INPUT_SCALED else tl.full([BLOCK], 1.0, tl.float32)
    t0 = c * C
    t1 = tl.minimum(t0 + C, T)
    s = tl.zeros([BLOCK], dtype=tl.float32)
    if REVERSE:
        x_ptrs = x_ptr + (t1 - 1).to(tl.int64) * M + offs
        step = -M
    else:
        x_ptrs = x_ptr + t0.to(tl.int64) * M + offs
        step = M
    for i in range(t1 - t0):
        s = lam * s + scale * tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
        x_ptrs += step
    tl.store(ends_ptr + (c - shift).to(tl.int64) * M + offs, s, mask=mask)


@triton.jit
def _entering_state(ends_ptr, lam_full_ptr, lam_last_ptr, offs, mask, s, c, n, M, H, Dh,
                    REVERSE: tl.constexpr):
    """State entering chunk ``c``: ``s`` (h0 or 0) carried over the chunks scanned before it."""
    lam_full = _head_decay(lam_full_ptr, offs, mask, H, Dh)
    if REVERSE:
        lam_last = _head_decay(lam_last_ptr, offs, mask, H, Dh)
        e_ptrs = ends_ptr + (n - 2).to(tl.int64) * M + offs    # ends[j - 1] of chunk j = n - 1
        for i in range(n - 1 - c):
            a = tl.where(i == 0, lam_last, lam_full)           # only chunk n - 1 may be short
            s = a * s + tl.load(e_ptrs, mask=mask, other=0.0)
            e_ptrs -= M
    else:
        e_ptrs = ends_ptr + offs
        for j in range(c):
            s = lam_full * s + tl.load(e_ptrs, mask=mask, other=0.0)
            e_ptrs += M
    return s


@triton.jit(do_not_specialize=["T", "C", "n"])
def _scan_fwd_kernel(
    z_ptr, lam_ptr, lam_full_ptr, h0_ptr, ends_ptr,     # in
    h_ptr,                                              # out [T, M], z's dtype
    T, M, H, Dh, C, n,
    HAS_H0: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    c = tl.program_id(1)
    lam = _head_decay(lam_ptr, offs, mask, H, Dh)
    if HAS_H0:
        s = tl.load(h0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        s = tl.zeros([BLOCK], dtype=tl.float32)
    s = _entering_state(ends_ptr, lam_full_ptr, lam_full_ptr, offs, mask, s, c, n, M, H, Dh,
                        REVERSE=False)
    t0 = c * C
    t1 = tl.minimum(t0 + C, T)
    start = t0.to(tl.int64) * M + offs
    z_ptrs = z_ptr + start
    h_ptrs = h_ptr + start
    for i in range(t1 - t0):
        z = tl.load(z_ptrs, mask=mask, other=0.0).to(tl.float32)
        s = lam * s + (1.0 - lam) * z
        tl.store(h_ptrs, s.to(h_ptr.dtype.element_ty), mask=mask)
        z_ptrs += M
        h_ptrs += M


@triton.jit(do_not_specialize=["T", "C", "n"])
def _scan_bwd_kernel(
    g_ptr, z_ptr, h_ptr, h0_ptr, lam_ptr, lam_full_ptr, lam_last_ptr, ends_ptr,   # in
    dz_ptr, dh0_ptr, dlam_ptr,       # out [T, M] z's dtype, [M] float32, [n, M] float32
    T, M, H, Dh, C, n,
    HAS_H0: tl.constexpr, NEED_DZ: tl.constexpr, NEED_DH0: tl.constexpr,
    NEED_DLAM: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    c = tl.program_id(1)
    lam = _head_decay(lam_ptr, offs, mask, H, Dh)
    s = tl.zeros([BLOCK], dtype=tl.float32)
    s = _entering_state(ends_ptr, lam_full_ptr, lam_last_ptr, offs, mask, s, c, n, M, H, Dh,
                        REVERSE=True)
    dlam = tl.zeros([BLOCK], dtype=tl.float32)
    t0 = c * C
    t1 = tl.minimum(t0 + C, T)
    row = (t1 - 1).to(tl.int64) * M + offs
    g_ptrs = g_ptr + row
    z_ptrs = z_ptr + row
    dz_ptrs = dz_ptr + row
    prev_ptrs = h_ptr + row - M          # h[t - 1]; read only while t >= 1
    if HAS_H0:
        first = tl.load(h0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        first = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(t1 - t0):
        s = lam * s + tl.load(g_ptrs, mask=mask, other=0.0).to(tl.float32)
        if NEED_DZ:
            tl.store(dz_ptrs, ((1.0 - lam) * s).to(dz_ptr.dtype.element_ty), mask=mask)
        if NEED_DLAM:
            z = tl.load(z_ptrs, mask=mask, other=0.0).to(tl.float32)
            t = t1 - 1 - i
            prev = tl.load(prev_ptrs, mask=offs < tl.where(t > 0, M, 0), other=0.0)
            prev = tl.where(t > 0, prev.to(tl.float32), first)
            dlam += s * (prev - z)
        g_ptrs -= M
        z_ptrs -= M
        dz_ptrs -= M
        prev_ptrs -= M
    if NEED_DLAM:
        tl.store(dlam_ptr + c.to(tl.int64) * M + offs, dlam, mask=mask)
    if NEED_DH0:
        if c == 0:
            tl.store(dh0_ptr + offs, lam * s, mask=mask)


# --------------------------------------------------------------------------------------------- #
# Launchers
# --------------------------------------------------------------------------------------------- #


def decay_scan_bytes_per_element(
    dtype: torch.dtype, *, chunked: bool, backward: bool = False
) -> int:
    """Global-memory bytes per element of ``z`` one pass moves (see the module docstring):
    forward ``2b`` (read z, write h) plus ``b`` for the chunk ends' read of z when chunked;
    backward (dz and dlambda needed) reads g, z, h and writes dz, ``4b``, plus ``b`` when
    chunked."""
    b = torch.empty((), dtype=dtype).element_size()
    return (4 * b if backward else 2 * b) + (b if chunked else 0)


def _launch_plan(T: int, m: int, device: torch.device, chunk: Optional[int]):
    """``(BLOCK, C, n)``: columns per program, steps per chunk, chunks. On CUDA, 256 columns per
    program and as many chunks (of at least 64 steps, at most 64 of them) as it takes to give
    every SM about four programs; on the interpreter one block covers the columns."""
    if device.type != "cuda":
        block = min(1024, max(16, triton.next_power_of_2(m)))
        programs = triton.cdiv(m, block)
        n = 1
    else:
        block = 256
        programs = triton.cdiv(m, block)
        index = device.index if device.index is not None else torch.cuda.current_device()
        n = max(1, min(_MAX_CHUNKS, T // _MIN_CHUNK, triton.cdiv(4 * sm_count(index), programs)))
    C = triton.cdiv(T, n) if chunk is None else chunk
    return block, C, triton.cdiv(T, C)


def _chunk_ends(x, lam, T, m, H, Dh, block, C, n, *, reverse, scaled):
    ends = torch.empty((max(n - 1, 1), m), dtype=torch.float32, device=x.device)
    if n > 1:
        _chunk_ends_kernel[(triton.cdiv(m, block), n - 1)](
            x, lam, ends, T, m, H, Dh, C, REVERSE=reverse, INPUT_SCALED=scaled, BLOCK=block,
        )
    return ends


# The launches as torch custom ops (the pattern of spikegate/kernels/__init__.py, registered with
# ops.KernelOps): torch.compile and torch.export see one op per direction. ``chunk`` 0 lets the
# launch plan choose.


def _scan_forward(
    z: torch.Tensor, r: torch.Tensor, h0: Optional[torch.Tensor], chunk: int,
) -> torch.Tensor:
    """``h [T, B, H, Dh]`` in z's dtype: two launches (one when a single chunk covers T)."""
    z = z.contiguous()
    T, B, H, Dh = z.shape
    m = B * H * Dh
    lam = torch.sigmoid(r.detach().to(torch.float32)).contiguous()
    h0_f = None if h0 is None else h0.detach().contiguous()
    h = torch.empty_like(z)
    block, C, n = _launch_plan(T, m, z.device, chunk or None)
    if m > 0:
        with on_device(z.device):
            ends = _chunk_ends(z, lam, T, m, H, Dh, block, C, n, reverse=False, scaled=True)
            _scan_fwd_kernel[(triton.cdiv(m, block), n)](
                z, lam, (lam**C).contiguous(), or_placeholder(h0_f, z), ends, h,
                T, m, H, Dh, C, n, HAS_H0=h0_f is not None, BLOCK=block,
            )
    return h


def _scan_backward(
    grad_h: torch.Tensor, z: torch.Tensor, h: torch.Tensor, r: torch.Tensor,
    h0: Optional[torch.Tensor], chunk: int, need_dz: bool, need_dr: bool, need_dh0: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dz, dr, dh0)``, ``[0]`` for those not needed: two launches, as the forward."""
    z = z.contiguous()
    T, B, H, Dh = z.shape
    m = B * H * Dh
    lam = torch.sigmoid(r.detach().to(torch.float32)).contiguous()
    h0_f = None if h0 is None else h0.detach().contiguous()
    block, C, n = _launch_plan(T, m, z.device, chunk or None)
    g = grad_h.contiguous()
    dz = torch.empty_like(z) if need_dz else None
    dh0 = torch.empty((B, H, Dh), dtype=torch.float32, device=z.device) if need_dh0 else None
    dlam = torch.empty((n, m), dtype=torch.float32, device=z.device) if need_dr else None
    if m > 0:
        last = T - (n - 1) * C
        with on_device(z.device):
            ends = _chunk_ends(g, lam, T, m, H, Dh, block, C, n, reverse=True, scaled=False)
            _scan_bwd_kernel[(triton.cdiv(m, block), n)](
                g, z, h, or_placeholder(h0_f, z), lam, (lam**C).contiguous(),
                (lam**last).contiguous(), ends,
                or_placeholder(dz, z), or_placeholder(dh0, lam), or_placeholder(dlam, lam),
                T, m, H, Dh, C, n,
                HAS_H0=h0_f is not None, NEED_DZ=need_dz, NEED_DH0=need_dh0,
                NEED_DLAM=need_dr, BLOCK=block,
            )
    dr = nothing(z)
    if dlam is not None:
        per_head = dlam.sum(0).view(B, H, Dh).sum((0, 2)) if m > 0 else lam.new_zeros(H)
        dr = (per_head * lam * (1 - lam)).to(r.dtype)
    return (nothing(z) if dz is None else dz, dr,
            nothing(z) if dh0 is None else dh0.to(h0.dtype))


def _fake_forward(z, r, h0, chunk):
    return z.new_empty(z.shape)


def _fake_backward(grad_h, z, h, r, h0, chunk, need_dz, need_dr, need_dh0):
    return (z.new_empty(z.shape) if need_dz else nothing(z),
            r.new_empty(r.shape) if need_dr else nothing(z),
            h0.new_empty(h0.shape) if need_dh0 else nothing(z))


def _setup_context(ctx, inputs, output):
    z, r, h0, chunk = inputs
    ctx.save_for_backward(z, output, r, h0)
    ctx.chunk = chunk


def _autograd_backward(backward_fn):
    def backward(ctx, grad_h):
        z, h, r, h0 = ctx.saved_tensors
        need_dz, need_dr, need_dh0 = ctx.needs_input_grad[:3]
        need_dh0 = need_dh0 and h0 is not None
        dz, dr, dh0 = backward_fn(grad_h, z, h, r, h0, ctx.chunk, need_dz, need_dr, need_dh0)
        return (dz if need_dz else None, dr if need_dr else None, dh0 if need_dh0 else None,
                None)

    return backward


decay_scan_kernels = KernelOps(
    "decay_scan", _scan_forward, _scan_backward, fake_forward=_fake_forward,
    fake_backward=_fake_backward, setup_context=_setup_context,
    autograd_backward=_autograd_backward,
)
decay_scan_forward = decay_scan_kernels.forward
decay_scan_backward = decay_scan_kernels.backward
# The eager route: the ops' own functions without the dispatcher, whose Python costs more than
# these launches at small sizes (``decay_scan_triton`` takes the op while tracing).
DecayScanTritonFunction = decay_scan_kernels.eager


def decay_scan_triton(
    z: torch.Tensor, r: torch.Tensor, h0: Optional[torch.Tensor] = None, *,
    chunk: Optional[int] = None,
) -> torch.Tensor:
    """Decay scan on the Triton kernels; arguments already checked by ``decay_scan_sequence``.

    Args:
        z: ``[T, B, H, Dh]`` (float32, float16, bfloat16).
        r: ``[H]`` decay logits.
        h0: ``[B, H, Dh]`` or None.
        chunk: steps per time chunk (None: chosen to fill the GPU); tests set it to exercise
            the chunked path on the interpreter.

    Returns:
        ``h [T, B, H, Dh]`` in z's dtype.
    """
    if z.dtype not in KERNEL_DTYPES:
        raise TypeError(f"z: the decay-scan kernels take float32, float16, bfloat16, got {z.dtype}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk: expected an int >= 1 or None, got {chunk!r}")
    return decay_scan_kernels(z, r, h0, chunk or 0)
