"""Surrogate-gradient learning: backpropagation through time over the unrolled network.

The forward pass keeps the Heaviside spike; the backward pass replaces its derivative with the
named surrogate (``spikegate.neurons.surrogate``), which this rule installs in every LIF layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from spikegate.neurons.lif import LIF
from spikegate.neurons.surrogate import Surrogate, get_surrogate

__all__ = ["SurrogateGradient", "StepResult"]


@dataclass
class StepResult:
    loss: torch.Tensor      # scalar, detached
    logits: torch.Tensor    # [B, classes] (language model: [T, B, vocab]), detached


class SurrogateGradient:
    """BPTT with a surrogate spike derivative.

    Args:
        surrogate: a name (``atan``, ``sigmoid``, ``fast_sigmoid``, ``triangle``, ``ste``).
        **params: the surrogate's parameters, e.g. ``alpha=2.0``.

    The loss is :attr:`loss` (``loss(logits, y) -> scalar``), cross entropy unless the trainer
    hands the rule its task's loss. A model may return its logits directly or an object with a
    ``logits`` attribute (the language model's output).
    """

    def __init__(self, surrogate: str = "atan", **params: float) -> None:
        self.surrogate: Surrogate = get_surrogate(surrogate, **params)
        self.loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy

    def prepare(self, model: nn.Module) -> None:
        """Install the surrogate in every LIF layer of ``model``."""
        for module in model.modules():
            if isinstance(module, LIF):
                module.surrogate = self.surrogate

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """Forward ``x [T, B, ...]``, :attr:`loss` against ``y`` (``[B]`` labels by default), and
        backward into ``.grad``."""
        output = model(x)
        logits = getattr(output, "logits", output)
        loss = self.loss(logits, y)
        loss.backward()
        return StepResult(loss.detach(), logits.detach())

    def __repr__(self) -> str:
        return f"SurrogateGradient({self.surrogate})"
