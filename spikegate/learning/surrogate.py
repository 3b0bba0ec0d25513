"""Surrogate-gradient learning: backpropagation through time over the unrolled network.

The forward pass keeps the Heaviside spike; the backward pass replaces its derivative with the
named surrogate (``spikegate.neurons.surrogate``), which this rule installs in every LIF layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spikegate.neurons.lif import LIF
from spikegate.neurons.surrogate import Surrogate, get_surrogate

__all__ = ["SurrogateGradient", "StepResult"]


@dataclass
class StepResult:
    loss: torch.Tensor      # scalar, detached
    logits: torch.Tensor    # [B, classes], detached


class SurrogateGradient:
    """BPTT with a surrogate spike derivative.

    Args:
        surrogate: a name (``atan``, ``sigmoid``, ``fast_sigmoid``, ``triangle``, ``ste``).
        **params: the surrogate's parameters, e.g. ``alpha=2.0``.
    """

    def __init__(self, surrogate: str = "atan", **params: float) -> None:
        self.surrogate: Surrogate = get_surrogate(surrogate, **params)

    def prepare(self, model: nn.Module) -> None:
        """Install the surrogate in every LIF layer of ``model``."""
        for module in model.modules():
            if isinstance(module, LIF):
                module.surrogate = self.surrogate

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """Forward ``x [T, B, ...]``, cross-entropy against ``y [B]``, and backward into ``.grad``."""
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        return StepResult(loss.detach(), logits.detach())

    def __repr__(self) -> str:
        return f"SurrogateGradient({self.surrogate})"
