"""The dual-path mixer block of SymbolicLight V1, with incremental decoding from cached state.

Inputs per block: spikes ``s [T, B, D]`` (0/1) and the continuous residual stream ``x [T, B, D]``.

* Token activity ``a[t] = 1[any spike in s[t]]`` (per batch row).
* Decay path: ``z = W_z (s * a)`` (``s * a`` is ``s``: a silent token has no spikes), split into
  ``H`` heads of ``Dh = D / H``; per head ``h[t] = lambda h[t-1] + (1 - lambda) z[t]``,
  ``lambda = sigmoid(r)``, ``r`` learnable, init 3
  (:func:`~spikegate.neurons.decay_scan.decay_scan_sequence`).
* Attention path: ``Q, K, V = W_q x, W_k x, W_v x`` per head, RoPE on Q and K at absolute
  positions, causal attention over active keys in a window plus anchors, rows of inactive queries
  zeroed (:func:`~spikegate.neurons.spike_attention.spike_gated_attention`).
* Fusion ``o = g attn + (1 - g) decay``, ``g = sigmoid(gamma)``, gamma init 0; then
  ``x' = LayerNorm(x + W_o o)``.

The recurrence, the attention and the fusion are small modules (:class:`DecayRecurrence`,
:class:`SpikeGatedAttention`, :class:`GatedFusion`; their parameters are ``decay.logit`` and
``fusion.logit``) so that the energy estimator prices each where it runs: the recurrence per state
value and token, the attention over the pairs it scores.

:class:`DualPathBlock` adds the spiking feed-forward and the block's output spikes
``H(x'' - threshold)``. A block called with a :class:`MixerState` continues a sequence: the decay
state, the keys/values/activity of the positions a later query can still see (the last
``window - 1`` and the anchors) and the position count are carried, so feeding tokens one by one
gives the parallel forward's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from spikegate.arguments import check_choice, check_int, check_real

from .checks import BACKENDS
from .cost import NeuronCost
from .decay_scan import decay_scan_sequence
from .dualpath import Cauchy, SpikingFeedForward, ThresholdNeuron
from .spike_attention import (
    ATTENTION_BACKENDS,
    attended_pairs,
    rope,
    spike_gated_attention,
    window_anchor_mask,
)
from .surrogate import SurrogateLike

__all__ = [
    "MixerState", "MixerActivity", "DecayRecurrence", "SpikeGatedAttention", "GatedFusion",
    "DualPathMixer", "DualPathBlock", "PATHS",
]

PATHS = ("both", "decay", "attention")


@dataclass
class MixerState:
    """What a mixer carries between calls (no gradient flows through it).

    Attributes:
        decay: ``[B, H, Dh]`` decay-path state after the last position.
        keys, values: ``[B, H, L, Dh]`` cached keys (RoPE applied) and values of the positions
            a later query can still see.
        active: ``[B, L]`` bool, those positions' token activity.
        positions: ``[L]`` int64, their absolute positions.
        length: positions seen so far (the next position).
    """

    decay: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    active: torch.Tensor
    positions: torch.Tensor
    length: int


@dataclass(frozen=True)
class MixerActivity:
    """Counts of the last forward, for sparsity metrics and the energy estimator (0-dim int64
    tensors on the input's device, so reading them is the only host sync).

    Attributes:
        tokens: query tokens (``T * B``).
        active_tokens: tokens with at least one input spike (they attend and are attended to).
        attended_pairs: (query, key) pairs the attention path scores, per head.
    """

    tokens: torch.Tensor
    active_tokens: torch.Tensor
    attended_pairs: torch.Tensor


class DecayRecurrence(nn.Module):
    """The decay path's per-head recurrence ``h[t] = lambda h[t-1] + (1 - lambda) z[t]``,
    ``lambda = sigmoid(logit)`` (one logit per head), on the fused scan.

    ``forward(z [T, B, H, Dh], h0 [B, H, Dh] or None) -> (h [T, B, H, Dh], h_last [B, H, Dh])``.
    """

    def __init__(self, heads: int, decay_init: float = 3.0, backend: str = "auto") -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.full((heads,), float(decay_init)))
        self.backend = check_choice(backend, "backend", BACKENDS)

    def forward(self, z: torch.Tensor, h0: Optional[torch.Tensor] = None):
        return decay_scan_sequence(z, self.logit, h0, backend=self.backend)

    def neuron_cost(self) -> NeuronCost:
        """Per state value and token: ``lambda h`` and ``(1 - lambda) z`` (2 muls), their sum
        (1 add); the state is read and written once. No spikes. (The per-head sigmoid of the
        logit, once per call, is left out.)"""
        return NeuronCost(muls=2, adds=1, state_values=1, spiking=False)


class SpikeGatedAttention(nn.Module):
    """:func:`~spikegate.neurons.spike_attention.spike_gated_attention` as a module that declares
    its products to the energy estimator, counting only the (query, key) pairs it scores.

    ``forward(q, k, v, q_pos, k_pos, key_active, query_active, pairs, backend, mask)`` with the
    shapes of ``spike_gated_attention``; ``pairs`` is the 0-dim count of scored pairs per head
    (active queries x their visible active keys). Returns ``[B, H, Tq, Dh]``.
    """

    def __init__(self, window: int, anchors: int) -> None:
        super().__init__()
        self.window, self.anchors = window, anchors

    def forward(self, q, k, v, q_pos, k_pos, key_active, query_active, pairs, backend, mask):
        return spike_gated_attention(
            q, k, v, q_pos, k_pos, key_active, query_active,
            window=self.window, anchors=self.anchors, backend=backend, mask=mask,
        )

    def attention_products(self, inputs, output):
        """``Q K^T`` and ``A V`` over the scored pairs of every head; Q, K and V come from the
        continuous stream, so each term is a multiply-accumulate. Left out: the softmax (an exp
        per scored pair) and RoPE (about 3 operations per element of Q and K), small beside the
        ``2 Dh`` MACs per pair and the ``D^2`` per token of the projections."""
        from spikegate.energy.attention import AttentionProducts

        q, k, pairs = inputs[0], inputs[1], inputs[7]
        B, H, Tq, Dh = q.shape
        return AttentionProducts(maps=B * H, queries=Tq, keys=k.shape[2], head_dim=Dh,
                                 active_pairs=pairs * H, spiking=False)


class GatedFusion(nn.Module):
    """``o = g attn + (1 - g) decay``, ``g = sigmoid(logit)``, one learnable logit.

    ``forward(attn [T, B, D], decay [T, B, D]) -> o [T, B, D]``."""

    def __init__(self, gate_init: float = 0.0) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.tensor([float(gate_init)]))

    def forward(self, attn: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.logit)
        return g * attn + (1 - g) * decay

    def neuron_cost(self) -> NeuronCost:
        """Per value: two muls and one add (``1 - g`` and the sigmoid, once per call, left out);
        no state, no spikes."""
        return NeuronCost(muls=2, adds=1, state_values=0, spiking=False)


class DualPathMixer(nn.Module):
    """Decay path + spike-gated attention path, gated, with residual and LayerNorm.

    Args:
        width: model width ``D``; heads: ``H``, must divide ``D`` (``D / H`` even, for RoPE).
        window: attention window in positions (>= 1), the query's own included.
        anchors: first positions every later query may see (>= 0).
        decay_init: initial decay logit ``r`` (lambda = sigmoid(3) = 0.95).
        gate_init: initial gate logit ``gamma`` (g = 0.5).
        rope_theta: RoPE base; dropout: on the fused output before ``W_o``.
        paths: ``"both"``, ``"decay"`` (no attention) or ``"attention"`` (no decay path).
        backend: decay-scan backend (``"auto"``, ``"triton"``, ``"torch"``).
        attention_backend: ``"auto"`` (flex_attention on CUDA), ``"sdpa"`` or ``"flex"``.

    ``forward(s [T, B, D], x [T, B, D], state=None, *, keep_state=False) ->
    (x' [T, B, D], state or None)``. After each forward, :attr:`activity` holds
    :class:`MixerActivity` counts.
    """

    def __init__(
        self, width: int, heads: int, window: int = 256, anchors: int = 4,
        decay_init: float = 3.0, gate_init: float = 0.0, rope_theta: float = 10000.0,
        dropout: float = 0.0, paths: str = "both", backend: str = "auto",
        attention_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.width = check_int(width, "width", minimum=1)
        self.heads = check_int(heads, "heads", minimum=1)
        if width % heads:
            raise ValueError(f"width: expected a multiple of heads={heads}, got {width}")
        self.head_dim = width // heads
        self.window = check_int(window, "window", minimum=1)
        self.anchors = check_int(anchors, "anchors", minimum=0)
        self.paths = check_choice(paths, "paths", PATHS)
        if self.paths != "decay" and self.head_dim % 2:
            raise ValueError(f"heads: width / heads must be even for RoPE, got {width} / {heads}")
        self.rope_theta = check_real(rope_theta, "rope_theta", strict=True)
        self.attention_backend = check_choice(
            attention_backend, "attention_backend", ATTENTION_BACKENDS
        )
        self.decay_proj = nn.Linear(width, width, bias=False)
        self.decay = DecayRecurrence(heads, decay_init, backend)
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.attend = SpikeGatedAttention(self.window, self.anchors)
        self.fusion = GatedFusion(gate_init)
        self.out_proj = nn.Linear(width, width, bias=False)
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(check_real(dropout, "dropout"))
        self.activity: Optional[MixerActivity] = None

    @property
    def decay_logit(self) -> nn.Parameter:
        """The decay logits ``r [H]`` (``lambda = sigmoid(r)``)."""
        return self.decay.logit

    @property
    def gate_logit(self) -> nn.Parameter:
        """The gate logit ``gamma [1]`` (``g = sigmoid(gamma)``)."""
        return self.fusion.logit

    @property
    def backend(self) -> str:
        return self.decay.backend

    # -- paths ---------------------------------------------------------------------------------

    def _decay(self, s: torch.Tensor, state: Optional[MixerState]):
        T, B, _ = s.shape
        z = self.decay_proj(s).view(T, B, self.heads, self.head_dim)
        h0 = None if state is None else state.decay.to(z.dtype)
        h, h_last = self.decay(z, h0)
        return h.reshape(T, B, self.width), h_last

    def _heads(self, y: torch.Tensor) -> torch.Tensor:
        T, B, _ = y.shape
        return y.view(T, B, self.heads, self.head_dim).permute(1, 2, 0, 3)      # [B, H, T, Dh]

    def _attention(self, x, active, state, offset):
        T, B, _ = x.shape
        positions = torch.arange(offset, offset + T, device=x.device)
        q = rope(self._heads(self.q_proj(x)), positions, self.rope_theta)
        k = rope(self._heads(self.k_proj(x)), positions, self.rope_theta)
        v = self._heads(self.v_proj(x))
        query_active = active.t()                                               # [B, T]
        k_all, v_all, key_active, k_pos = k, v, query_active, positions
        if state is not None:
            k_all = torch.cat([state.keys.to(k.dtype), k], 2)
            v_all = torch.cat([state.values.to(v.dtype), v], 2)
            key_active = torch.cat([state.active, query_active], 1)
            k_pos = torch.cat([state.positions, positions])
        mask = None
        use_flex = self.attention_backend == "flex" or (self.attention_backend == "auto" and x.is_cuda)
        span = dict(window=self.window, anchors=self.anchors)
        if state is None and not use_flex:
            pairs = attended_pairs(key_active, query_active, **span)
        else:            # decoding steps are short: SDPA with the explicit mask
            mask = window_anchor_mask(positions, k_pos, key_active, **span)
            pairs = (mask & query_active[..., None]).sum()
        backend = "sdpa" if mask is not None else self.attention_backend
        out = self.attend(q, k_all, v_all, positions, k_pos, key_active, query_active, pairs,
                          backend, mask)
        cache = (k_all, v_all, key_active, k_pos)
        return out.permute(2, 0, 1, 3).reshape(T, B, self.width), cache, pairs

    def _next_state(self, h_last, cache, length) -> MixerState:
        """Keep the positions a query at ``length`` or later can see: anchors and the last
        ``window - 1``."""
        k_all, v_all, key_active, k_pos = cache
        keep = (k_pos < self.anchors) | (k_pos > length - self.window)
        return MixerState(
            decay=h_last.detach(), keys=k_all[:, :, keep].detach(),
            values=v_all[:, :, keep].detach(),
            active=key_active[:, keep], positions=k_pos[keep], length=length,
        )

    def empty_state(self, batch: int, device=None, dtype=torch.float32) -> MixerState:
        """The state before the first position."""
        hd = (batch, self.heads, 0, self.head_dim)
        return MixerState(
            decay=torch.zeros(batch, self.heads, self.head_dim, device=device, dtype=dtype),
            keys=torch.zeros(hd, device=device, dtype=dtype),
            values=torch.zeros(hd, device=device, dtype=dtype),
            active=torch.zeros(batch, 0, dtype=torch.bool, device=device),
            positions=torch.zeros(0, dtype=torch.int64, device=device), length=0,
        )

    # -- forward -------------------------------------------------------------------------------

    def forward(
        self, s: torch.Tensor, x: torch.Tensor, state: Optional[MixerState] = None, *,
        keep_state: bool = False,
    ) -> tuple[torch.Tensor, Optional[MixerState]]:
        if s.shape != x.shape or s.dim() != 3 or s.shape[-1] != self.width:
            raise ValueError(
                f"s, x: expected two tensors [T, B, {self.width}] of one shape, got "
                f"{tuple(s.shape)} and {tuple(x.shape)}"
            )
        active = s.detach().amax(-1) > 0                                        # [T, B]
        offset = 0 if state is None else state.length
        h_last, cache, pairs = None, None, torch.zeros((), dtype=torch.int64, device=s.device)
        if self.paths != "attention":
            decay_out, h_last = self._decay(s, state)
        if self.paths != "decay":
            attn_out, cache, pairs = self._attention(x, active, state, offset)
        if self.paths == "both":
            o = self.fusion(attn_out, decay_out)
        else:
            o = decay_out if self.paths == "decay" else attn_out
        y = self.norm(x + self.out_proj(self.dropout(o)))
        self.activity = MixerActivity(
            tokens=torch.tensor(active.numel(), device=s.device), active_tokens=active.sum(),
            attended_pairs=pairs,
        )
        if not (keep_state or state is not None):
            return y, None
        return y, self._carry(s, state, h_last, cache, offset + s.shape[0])

    def _carry(self, s, state, h_last, cache, length) -> MixerState:
        B = s.shape[1]
        if state is None:
            state = self.empty_state(B, s.device, s.dtype)
        if h_last is None:
            h_last = state.decay
        if cache is None:
            cache = (state.keys, state.values, state.active, state.positions)
        return self._next_state(h_last, cache, length)

    def extra_repr(self) -> str:
        return (f"width={self.width}, heads={self.heads}, window={self.window}, "
                f"anchors={self.anchors}, paths={self.paths!r}")


class DualPathBlock(nn.Module):
    """Mixer, spiking feed-forward, and the block's output spikes ``H(x - threshold)``.

    ``forward(s [T, B, D], x [T, B, D], state=None, *, keep_state=False) ->
    (spikes [T, B, D], x [T, B, D], state or None)``; :attr:`hidden_spike_rate` holds the
    feed-forward hidden layer's spike fraction of the last forward (a 0-dim tensor, detached).
    """

    def __init__(
        self, width: int, heads: int, hidden: int, window: int = 256, anchors: int = 4,
        threshold: float = 1.0, surrogate: SurrogateLike = Cauchy(), dropout: float = 0.0,
        **mixer: object,
    ) -> None:
        super().__init__()
        self.mixer = DualPathMixer(
            width, heads, window=window, anchors=anchors, dropout=dropout, **mixer
        )
        self.ffn = SpikingFeedForward(
            width, hidden, threshold=threshold, surrogate=surrogate, dropout=dropout
        )
        self.spike = ThresholdNeuron(threshold, surrogate)
        self.hidden_spike_rate: Optional[torch.Tensor] = None

    def forward(self, s, x, state: Optional[MixerState] = None, *, keep_state: bool = False):
        x, state = self.mixer(s, x, state, keep_state=keep_state)
        x, hidden = self.ffn(x)
        self.hidden_spike_rate = hidden.detach().mean()
        return self.spike(x), x, state
