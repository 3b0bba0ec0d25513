"""Neurons as layers of ``nn.Sequential``: a tensor in, the spikes out.

Every neuron module returns ``(spikes, state)`` so the state is never hidden; a feed-forward stack
only passes the spikes on. ``LIFSpikes`` is the LIF layer for such stacks, as SpikingJelly's
``LIFNode`` or snnTorch's ``Leaky(init_hidden=True)`` are used::

    nn.Sequential(nn.Linear(64, 128), LIFSpikes(beta=0.9), nn.Linear(128, 10))  # x: [T, B, 64]

``SpikesOnly(neuron)`` does the same for any neuron module.
"""

from __future__ import annotations

import torch
from torch import nn

from .lif import LIF

__all__ = ["SpikesOnly", "LIFSpikes"]


class SpikesOnly(nn.Module):
    """Wrap a neuron module returning ``(spikes, state)`` so it returns the spikes only.

    ``forward(x [T, B, ...]) -> spikes [T, B, ...]``; the wrapped module stays reachable as
    ``.neuron`` (its parameters are ``neuron.*`` in the state dict)."""

    def __init__(self, neuron: nn.Module) -> None:
        super().__init__()
        if not isinstance(neuron, nn.Module):
            raise TypeError(f"neuron: expected an nn.Module returning (spikes, state), got {type(neuron).__name__}")
        self.neuron = neuron

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spikes, _ = self.neuron(x)
        return spikes


class LIFSpikes(LIF):
    """:class:`~spikegate.neurons.LIF` returning only the spikes, for ``nn.Sequential``.

    Takes the arguments of ``LIF``; ``forward(x [T, B, *shape], v0=None) -> spikes [T, B, *shape]``.
    With ``stateful=True`` the final membrane is kept in ``.v`` as ``LIF`` keeps it."""

    def forward(self, x: torch.Tensor, v0: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        spikes, _ = super().forward(x, v0)
        return spikes
