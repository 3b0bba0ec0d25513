"""Spike-gated dual-path mixing (SymbolicLight V1): the spike encoder, the threshold neurons of
the blocks, and the spiking feed-forward layer. The mixer itself is in ``dualpath_mixer.py``.

Spike encoder, per channel (time-major ``x: [T, B, D]``, the normalised token embeddings)::

    u[t] = clamp(leak * v[t-1] + x[t], -bound, bound)       v[-1] = v0 (or 0)
    s[t] = H(u[t] - threshold)                               H(0) = 1
    v[t] = u[t] * (1 - s[t])                                 hard reset to 0
    ds/du = 1 / (1 + (2 (u - threshold))^2)                  (the Cauchy surrogate, scale 2)

Defaults leak 0.95, bound 3, threshold 1 (the authors'). By default, as in the authors' code,
no gradient flows through the membrane recurrence: ``v[t-1]`` is a constant for step ``t``, so
``ds[t]/dx[t] = surrogate(u[t] - threshold) * 1[|leak v[t-1] + x[t]| <= bound]`` and nothing
else; ``bptt=True`` differentiates through leak, clamp and reset as well. The membrane is
returned, so a long sequence can be encoded in chunks.

Threshold neurons (the spikes between blocks and the feed-forward's hidden layer) are stateless:
``s = H(x - threshold)`` with the same surrogate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import nn

from spikegate.arguments import check_int, check_real

from .checks import check_sequence, check_state
from .cost import NeuronCost
from .surrogate import Surrogate, SurrogateLike, get_surrogate, spike

__all__ = [
    "Cauchy",
    "spike_encoder_sequence",
    "SpikeEncoder",
    "TopKEncoder",
    "ThresholdNeuron",
    "threshold_spikes",
    "SpikingFeedForward",
]


@dataclass(frozen=True)
class Cauchy(Surrogate):
    """``1 / (1 + (scale * x)^2)``; scale 2 is the SymbolicLight encoder's surrogate.
    Torch backend only (no Triton kernel id)."""

    scale: float = 2.0
    name: ClassVar[str] = "cauchy"

    def __post_init__(self) -> None:
        check_real(self.scale, "surrogate.scale", strict=True)

    def grad_(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(self.scale).square_().add_(1).reciprocal_()

    @property
    def kernel_params(self) -> tuple[float, float]:
        return (float(self.scale), 0.0)


def threshold_spikes(x: torch.Tensor, threshold: float, surrogate: SurrogateLike) -> torch.Tensor:
    """Stateless threshold neuron: ``H(x - threshold)`` with a surrogate derivative."""
    return spike(x - threshold, surrogate)


@torch.no_grad()
def _carried_leak(x: torch.Tensor, v0: Optional[torch.Tensor], leak, threshold, bound):
    """``leak * v[t-1]`` for every step (``[T, B, ...]``) and ``v_last``, without a graph."""
    v = torch.zeros_like(x[0]) if v0 is None else v0.to(x.dtype).clone()
    carried = torch.empty_like(x)
    for t in range(x.shape[0]):
        torch.mul(v, leak, out=carried[t])
        u = (carried[t] + x[t]).clamp_(-bound, bound)
        v = u.masked_fill_(u >= threshold, 0.0)
    return carried, v


def spike_encoder_sequence(
    x: torch.Tensor,
    v0: Optional[torch.Tensor] = None,
    *,
    leak: float = 0.95,
    threshold: float = 1.0,
    bound: float = 3.0,
    surrogate: SurrogateLike = Cauchy(),
    bptt: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the spike encoder over a sequence (equations in the module docstring).

    Args:
        x: ``[T, B, ...]`` input per step (the normalised embeddings).
        v0: ``[B, ...]`` membrane before the first step, or None for zeros.
        leak: membrane leak in (0, 1]; threshold: > 0; bound: clamp bound, > 0.
        surrogate: ds/du (default ``Cauchy(2)``).
        bptt: differentiate through the membrane recurrence (default: no, as the authors).

    Returns:
        ``(spikes [T, B, ...] (0/1, x's dtype), v_last [B, ...])``; ``v_last`` carries no
        gradient unless ``bptt``.
    """
    check_sequence(x, "x")
    check_state(v0, x, "v0")
    leak = check_real(leak, "leak", strict=True)
    if leak > 1:
        raise ValueError(f"leak: expected a value in (0, 1], got {leak!r}")
    threshold = check_real(threshold, "threshold", strict=True)
    bound = check_real(bound, "bound", strict=True)
    surrogate = get_surrogate(surrogate)
    if bptt:
        v = torch.zeros_like(x[0]) if v0 is None else v0.to(x.dtype)
        out = []
        for x_t in x.unbind(0):
            u = torch.clamp(leak * v + x_t, -bound, bound)
            s = spike(u - threshold, surrogate)
            v = u * (1 - s)
            out.append(s)
        return torch.stack(out), v
    carried, v_last = _carried_leak(x, v0, leak, threshold, bound)
    # the loop's float ops again, now with a graph (v[t-1] a constant)
    u = torch.clamp(carried + x, -bound, bound)
    return spike(u - threshold, surrogate), v_last


class SpikeEncoder(nn.Module):
    """The spike encoder as a module; math in :func:`spike_encoder_sequence`.

    ``forward(x [T, B, D], v0=None) -> (spikes [T, B, D], v_last [B, D])``.
    """

    def __init__(
        self,
        leak: float = 0.95,
        threshold: float = 1.0,
        bound: float = 3.0,
        surrogate: SurrogateLike = Cauchy(),
        bptt: bool = False,
    ) -> None:
        super().__init__()
        self.leak = check_real(leak, "leak", strict=True)
        self.threshold = check_real(threshold, "threshold", strict=True)
        self.bound = check_real(bound, "bound", strict=True)
        self.surrogate = get_surrogate(surrogate)
        self.bptt = bool(bptt)

    def forward(self, x: torch.Tensor, v0: Optional[torch.Tensor] = None):
        return spike_encoder_sequence(
            x, v0, leak=self.leak, threshold=self.threshold, bound=self.bound,
            surrogate=self.surrogate, bptt=self.bptt,
        )

    def neuron_cost(self) -> NeuronCost:
        """Per neuron and step: ``leak * v`` (1 mul), ``+ x`` (1 add), the clamp (2 compares),
        the threshold test (1 compare) and the zero reset (1 select)."""
        return NeuronCost(muls=1, adds=1, compares=4)

    def extra_repr(self) -> str:
        return (f"leak={self.leak}, threshold={self.threshold}, bound={self.bound}, "
                f"surrogate={self.surrogate}, bptt={self.bptt}")


class TopKEncoder(nn.Module):
    """Ablation of the spike encoder: per token, a spike on the ``k`` channels with the largest
    input, none elsewhere (no membrane, no threshold); straight-through gradient ``ds/dx = 1``.

    ``forward(x [T, B, D], v0=None) -> (spikes [T, B, D], v0 or zeros [B, D])``: the second
    output keeps :class:`SpikeEncoder`'s interface (there is no state to carry). Ties at the
    ``k``-th value keep the lower channel index (``torch.topk``'s order).
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = check_int(k, "topk", minimum=1)

    def forward(self, x: torch.Tensor, v0: Optional[torch.Tensor] = None):
        check_sequence(x, "x")
        if self.k > x.shape[-1]:
            raise ValueError(f"topk: expected at most the width {x.shape[-1]}, got {self.k}")
        index = x.detach().topk(self.k, dim=-1).indices
        hard = torch.zeros_like(x).scatter_(-1, index, 1.0)
        state = torch.zeros_like(x[0]) if v0 is None else v0
        return hard + (x - x.detach()), state

    def neuron_cost(self) -> NeuronCost:
        """Per channel and step: about one compare to find the ``k``-th largest value (a
        linear-time selection) and one to test against it; no state."""
        return NeuronCost(compares=2, state_values=0)

    def extra_repr(self) -> str:
        return f"k={self.k}"


class ThresholdNeuron(nn.Module):
    """Stateless threshold neuron ``H(x - threshold)`` with a surrogate derivative (the blocks'
    output spikes and the feed-forward's hidden layer), as a module so the energy estimator counts
    it. ``forward(x [T, B, ...]) -> spikes`` of the same shape."""

    def __init__(self, threshold: float = 1.0, surrogate: SurrogateLike = Cauchy()) -> None:
        super().__init__()
        self.threshold = check_real(threshold, "threshold", strict=True)
        self.surrogate = get_surrogate(surrogate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return threshold_spikes(x, self.threshold, self.surrogate)

    def neuron_cost(self) -> NeuronCost:
        """Per neuron and step: one threshold compare; no state."""
        return NeuronCost(compares=1, state_values=0)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, surrogate={self.surrogate}"


class SpikingFeedForward(nn.Module):
    """``y = LayerNorm(x + W_down H(W_up x - threshold))`` over ``x [T, B, D]`` (no biases, as
    the authors); the hidden layer is a stateless threshold neuron with a surrogate derivative.

    ``forward(x [T, B, D]) -> (y [T, B, D], hidden spikes [T, B, hidden])``.
    """

    def __init__(
        self, width: int, hidden: int, threshold: float = 1.0,
        surrogate: SurrogateLike = Cauchy(), dropout: float = 0.0,
    ) -> None:
        super().__init__()
        width = check_int(width, "width", minimum=1)
        hidden = check_int(hidden, "hidden", minimum=1)
        self.up = nn.Linear(width, hidden, bias=False)
        self.spike = ThresholdNeuron(threshold, surrogate)
        self.down = nn.Linear(hidden, width, bias=False)
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(check_real(dropout, "dropout"))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.spike(self.up(x))
        return self.norm(x + self.down(self.dropout(s))), s
