"""Per-head exponential decay over a sequence: the decay path of the dual-path mixer.

Semantics (time-major, ``z: [T, B, H, Dh]``, one decay per head)::

    lambda = sigmoid(r)                                  r: [H], learnable logit
    h[t]   = lambda * h[t-1] + (1 - lambda) * z[t]       h[-1] = h0 (or 0)

Two backends compute it: the fused Triton scan (``spikegate.kernels.decay_scan``, CUDA) and the
torch reference below, which is the CPU path and the kernel's oracle. The reference is a chunked
parallel scan that autograd differentiates: inside a chunk of ``C`` steps,
``h[k] = sum_{j<=k} lambda^(k-j) x[j] + lambda^(k+1) h_in`` is one batched matrix product with the
``[H, C, C]`` lower-triangular matrix of powers (no division by powers of lambda, so no overflow
for small lambda or long chunks); the chunks' end states obey the same recurrence with decay
``lambda^C``, which is solved by the same function, recursively, until one chunk is left.
"""

from __future__ import annotations

from typing import Optional

import torch

from .checks import BACKENDS, check_choice, check_sequence, resolve_backend

__all__ = ["decay_scan_sequence", "decay_scan_torch", "linear_scan_torch", "check_decay_inputs"]

# Steps per chunk of the reference scan: the matrix product costs C multiply-adds per element and
# the recursion log_C(T) levels; 32 balances the two on a CPU.
CHUNK = 32


def _powers(a: torch.Tensor, n: int) -> torch.Tensor:
    """``[H, n, n]`` lower-triangular ``a^(k-j)`` for ``j <= k`` and 0 above the diagonal."""
    k = torch.arange(n, device=a.device)
    exponent = (k[:, None] - k[None, :]).to(a.dtype)
    lower = exponent >= 0
    power = a[:, None, None] ** exponent.clamp_min(0)
    return power * lower


def linear_scan_torch(
    x: torch.Tensor, a: torch.Tensor, h0: Optional[torch.Tensor] = None, *,
    scale: Optional[torch.Tensor] = None, chunk: int = CHUNK,
) -> torch.Tensor:
    """``h[t] = a * h[t-1] + scale * x[t]`` per head, by chunked matrix products.

    Args:
        x: ``[T, B, H, Dh]`` input of each step.
        a: ``[H]`` decay per head, in (0, 1].
        h0: ``[B, H, Dh]`` state before the first step, or None for zeros.
        scale: ``[H]`` input scale per head (folded into the matrix of powers), or None for 1.

    Returns:
        ``h [T, B, H, Dh]``.
    """
    T, B, H, Dh = x.shape
    n = min(chunk, T)
    pad = (-T) % n
    xp = torch.cat([x, x.new_zeros(pad, B, H, Dh)]) if pad else x
    chunks = xp.shape[0] // n
    # [H, n, n] @ [H, n, chunks * B * Dh]: every chunk from a zero state
    xc = xp.reshape(chunks, n, B, H, Dh).permute(3, 1, 0, 2, 4).reshape(H, n, -1)
    powers = _powers(a, n) if scale is None else _powers(a, n) * scale[:, None, None]
    local = torch.matmul(powers, xc).reshape(H, n, chunks, B, Dh).permute(2, 1, 3, 0, 4)
    ends = local[:, -1]                                             # [chunks, B, H, Dh]
    if chunks == 1:
        starts = (h0 if h0 is not None else ends.new_zeros(B, H, Dh))[None]
    else:
        # end state of every chunk: E[c] = a^n E[c-1] + ends[c], the same recurrence, shorter
        carried = linear_scan_torch(ends[:-1], a**n, h0, chunk=chunk)
        first = (h0 if h0 is not None else ends.new_zeros(B, H, Dh))[None]
        starts = torch.cat([first, carried])                        # state entering each chunk
    steps = torch.arange(1, n + 1, device=x.device, dtype=a.dtype)
    decay_in = (a[None, :] ** steps[:, None])[None, :, None, :, None]  # [1, n, 1, H, 1]
    h = torch.addcmul(local, decay_in, starts[:, None])
    return h.reshape(chunks * n, B, H, Dh)[:T]


def decay_scan_torch(
    z: torch.Tensor, r: torch.Tensor, h0: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Reference decay scan: ``h[t] = sigmoid(r) h[t-1] + (1 - sigmoid(r)) z[t]``, differentiable
    in ``z``, ``r`` and ``h0`` by autograd. Half inputs are computed in float32."""
    cdt = torch.float64 if z.dtype == torch.float64 else torch.float32
    lam = torch.sigmoid(r.to(cdt))
    h = linear_scan_torch(z.to(cdt), lam, None if h0 is None else h0.to(cdt), scale=1 - lam)
    return h.to(z.dtype)


def check_decay_inputs(z: object, r: object, h0: object) -> None:
    """``z [T, B, H, Dh]``, ``r [H]``, ``h0 [B, H, Dh]`` or None, on one device."""
    check_sequence(z, "z")
    if z.dim() != 4:
        raise ValueError(f"z: expected [T, B, H, Dh] (time-major), got shape {tuple(z.shape)}")
    if not isinstance(r, torch.Tensor) or tuple(r.shape) != (z.shape[2],):
        got = tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__
        raise ValueError(
            f"r: expected a tensor of shape ({z.shape[2]},) (one logit per head), got {got}"
        )
    if r.device != z.device:
        raise ValueError(f"r: expected device {z.device}, got {r.device}")
    if h0 is not None:
        if not isinstance(h0, torch.Tensor) or tuple(h0.shape) != tuple(z.shape[1:]):
            got = tuple(h0.shape) if isinstance(h0, torch.Tensor) else type(h0).__name__
            raise ValueError(f"h0: expected shape {tuple(z.shape[1:])} ([B, H, Dh]), got {got}")
        if h0.device != z.device:
            raise ValueError(f"h0: expected device {z.device}, got {h0.device}")


def decay_scan_sequence(
    z: torch.Tensor,
    r: torch.Tensor,
    h0: Optional[torch.Tensor] = None,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the per-head decay recurrence over a sequence.

    Args:
        z: ``[T, B, H, Dh]`` input per step (float32, float16, bfloat16; float64 on torch).
        r: ``[H]`` decay logits, ``lambda = sigmoid(r)`` (may require grad).
        h0: ``[B, H, Dh]`` state before the first step, or None for zeros.
        backend: ``"auto"`` (Triton on CUDA, torch elsewhere), ``"triton"`` or ``"torch"``.

    Returns:
        ``(h [T, B, H, Dh] in z's dtype, h_last [B, H, Dh])``, ``h_last`` a view of ``h[-1]``.
    """
    check_decay_inputs(z, r, h0)
    check_choice(backend, "backend", BACKENDS)
    if resolve_backend(backend, z) == "triton":
        from spikegate.kernels.decay_scan import decay_scan_triton

        h = decay_scan_triton(z, r, h0)
    else:
        h = decay_scan_torch(z, r, h0)
    return h, h[-1]
