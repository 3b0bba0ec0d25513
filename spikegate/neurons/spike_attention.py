"""Spike-gated local attention: the attention path of the dual-path mixer.

A query at absolute position ``i`` sees the key at position ``j`` when all of these hold::

    j <= i                                   causal
    i - j < window   or   j < anchors        a sliding window of ``window`` positions (the query's
                                             own included) plus the first ``anchors`` positions
    key j is active                          its token fired at least one encoder/block spike

A row with no visible key gives 0 (never NaN), and the output row of an inactive query is 0.
An active query always sees itself, so only inactive queries can have empty rows.

(The authors' released mask keeps ``i - j <= window``, ``window + 1`` positions; here ``window``
counts the positions, so their window 256 is our 257.)

Two implementations give the same result: ``torch.nn.functional.scaled_dot_product_attention``
with an explicit boolean mask (any device; the oracle) and, on CUDA, ``flex_attention`` with a
block mask, compiled to a Triton kernel that skips the blocks the window and anchors exclude.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F

from spikegate.arguments import check_choice

__all__ = [
    "rope", "window_anchor_mask", "flex_mask_mod", "spike_gated_attention", "attended_pairs",
    "ATTENTION_BACKENDS",
]

ATTENTION_BACKENDS = ("auto", "sdpa", "flex")


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding, rotate-half form: ``x [..., T, Dh]`` (Dh even) at absolute
    ``positions [T]``; frequencies ``theta^(-2i/Dh)``, computed in float32."""
    dh = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, dh, 2, device=x.device, dtype=torch.float32) / dh)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]        # [T, Dh/2]
    cos = torch.cat([angles.cos(), angles.cos()], -1).to(x.dtype)
    sin = torch.cat([angles.sin(), angles.sin()], -1).to(x.dtype)
    half = dh // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def window_anchor_mask(
    q_pos: torch.Tensor, k_pos: torch.Tensor, key_active: torch.Tensor, *, window: int, anchors: int
) -> torch.Tensor:
    """``[B, Tq, Tk]`` bool, True where query ``q_pos [Tq]`` may see key ``k_pos [Tk]`` of batch
    row ``b`` (``key_active [B, Tk]`` bool): causal, in the window or an anchor, and active."""
    distance = q_pos[:, None] - k_pos[None, :]
    allowed = (distance >= 0) & ((distance < window) | (k_pos[None, :] < anchors))
    return allowed[None] & key_active[:, None, :]


def attended_pairs(
    key_active: torch.Tensor, query_active: torch.Tensor, *, window: int, anchors: int
) -> torch.Tensor:
    """Number of (query, key) pairs the attention computes in a parallel forward from position 0,
    ``key_active``/``query_active [B, T]`` bool, in O(B T) without building the mask: per active
    query, its active keys in the window plus the active anchors before the window. Returns a
    0-dim int64 tensor."""
    T = key_active.shape[1]
    counts = F.pad(key_active.to(torch.int64).cumsum(1), (1, 0))          # counts[:, j] = keys < j
    i = torch.arange(T, device=key_active.device)
    lo = (i - window + 1).clamp_min(0)
    in_window = counts[:, i + 1] - counts[:, lo]
    anchor_end = torch.minimum(lo, torch.tensor(anchors, device=lo.device))
    in_anchors = counts[:, anchor_end]
    return ((in_window + in_anchors) * query_active).sum()


def _sdpa(q, k, v, mask):
    empty = ~mask.any(-1)                                                  # [B, Tq]
    safe = mask | empty[..., None]         # an empty row attends to everything, then is zeroed
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None])
    return out * (~empty)[:, None, :, None].to(out.dtype)


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_mask_mod(q_pos: torch.Tensor, k_pos: torch.Tensor, key_active: torch.Tensor, *,
                  window: int, anchors: int):
    """The mask of :func:`window_anchor_mask` as a flex_attention ``mask_mod(b, h, q_idx,
    kv_idx) -> bool`` (index tensors into ``q_pos``, ``k_pos`` and ``key_active``)."""

    def mask_mod(b, h, qi, ki):
        i, j = q_pos[qi], k_pos[ki]
        distance = i - j
        return (distance >= 0) & ((distance < window) | (j < anchors)) & key_active[b, ki]

    return mask_mod


def _flex(q, k, v, q_pos, k_pos, key_active, window, anchors):
    from torch.nn.attention.flex_attention import create_block_mask

    mask_mod = flex_mask_mod(q_pos, k_pos, key_active, window=window, anchors=anchors)
    B, _, Tq, _ = q.shape
    block_mask = create_block_mask(mask_mod, B, None, Tq, k.shape[2], device=q.device)
    # flex_attention returns 0 for a row whose keys are all masked
    return _compiled_flex()(q, k, v, block_mask=block_mask)


def spike_gated_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    key_active: torch.Tensor,
    query_active: torch.Tensor,
    *,
    window: int,
    anchors: int,
    backend: str = "auto",
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Attention over active keys in a causal window plus anchors, scale ``Dh^-1/2``.

    Args:
        q: ``[B, H, Tq, Dh]`` queries (RoPE applied); k, v: ``[B, H, Tk, Dh]``.
        q_pos, k_pos: ``[Tq]``, ``[Tk]`` absolute positions (int64).
        key_active: ``[B, Tk]`` bool; query_active: ``[B, Tq]`` bool.
        window, anchors: see the module docstring.
        backend: ``"sdpa"`` (explicit mask), ``"flex"`` (CUDA only) or ``"auto"`` (flex on CUDA).
        mask: the ``[B, Tq, Tk]`` mask when the caller already built it (SDPA only).

    Returns:
        ``[B, H, Tq, Dh]``: 0 on rows without a visible key and on inactive queries.
    """
    check_choice(backend, "attention_backend", ATTENTION_BACKENDS)
    if backend == "flex" and not q.is_cuda:
        raise ValueError(
            f"attention_backend: 'flex' needs CUDA tensors, got {q.device}; use 'sdpa'"
        )
    if backend == "flex" or (backend == "auto" and q.is_cuda):
        out = _flex(q, k, v, q_pos, k_pos, key_active, window, anchors)
    else:
        if mask is None:
            mask = window_anchor_mask(q_pos, k_pos, key_active, window=window, anchors=anchors)
        out = _sdpa(q, k, v, mask)
    return out * query_active[:, None, :, None].to(out.dtype)
