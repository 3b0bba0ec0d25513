"""Surrogate-gradient learning: backpropagation through time over the unrolled network.

The forward pass keeps the Heaviside spike; the backward pass replaces its derivative with the
named surrogate (``spikegate.neurons.surrogate``), which this rule installs in every LIF layer.

Every rule may add the sparsity penalty ``lambda * mean spike rate`` to its loss
(:class:`SparsityPenalty`, ``learning.sparsity``; 0 by default, which changes nothing).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from spikegate.arguments import check_real
from spikegate.neurons.lif import LIF
from spikegate.neurons.surrogate import Surrogate, get_surrogate

__all__ = ["SurrogateGradient", "StepResult", "SparsityPenalty"]


@dataclass
class StepResult:
    loss: torch.Tensor      # scalar, detached
    logits: torch.Tensor    # [B, classes] (language model: [T, B, vocab]), detached


class SparsityPenalty:
    """``weight * mean spike rate`` (UltraLIF paper, Sec. 6): the mean over neuron layers of each
    layer's mean output (soft spikes count their value), with its graph, so training lowers it.

    Neuron layers are the outermost modules with ``neuron_cost()``, as the energy counter sees
    them. With ``weight == 0`` nothing is hooked and the penalty is exactly 0.
    """

    def __init__(self, weight: float = 0.0) -> None:
        self.weight = check_real(weight, "learning.sparsity")

    @contextlib.contextmanager
    def recording(self, model: nn.Module) -> Iterator[list[torch.Tensor]]:
        """Within the block, every neuron layer's mean output is appended to the yielded list."""
        rates: list[torch.Tensor] = []
        if self.weight == 0:
            yield rates
            return
        handles, inside = [], ()
        for name, module in model.named_modules():
            if inside and any(name.startswith(prefix + ".") for prefix in inside):
                continue
            if callable(getattr(module, "neuron_cost", None)):
                inside += (name,)
                handles.append(module.register_forward_hook(
                    lambda mod, inputs, out: rates.append(
                        (out[0] if isinstance(out, (tuple, list)) else out).float().mean())))
        try:
            yield rates
        finally:
            for handle in handles:
                handle.remove()

    def __call__(self, rates: list[torch.Tensor]) -> torch.Tensor | float:
        if self.weight == 0 or not rates:
            return 0.0
        return self.weight * torch.stack(rates).mean()

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(objective + penalty, logits)`` of one forward pass of ``model`` on ``x``; the model
        may return its logits or an object with ``logits`` (the language model's output)."""
        with self.recording(model) as rates:
            output = model(x)
        logits = getattr(output, "logits", output)
        return objective(logits, y) + self(rates), logits


class SurrogateGradient:
    """BPTT with a surrogate spike derivative.

    Args:
        surrogate: a name (``atan``, ``sigmoid``, ``fast_sigmoid``, ``triangle``, ``ste``).
        sparsity: weight ``lambda`` of the spike-rate penalty (:class:`SparsityPenalty`).
        **params: the surrogate's parameters, e.g. ``alpha=2.0``.

    The loss is :attr:`loss` (``loss(logits, y) -> scalar``), cross entropy unless the trainer
    hands the rule its task's loss. A model may return its logits directly or an object with a
    ``logits`` attribute (the language model's output).
    """

    def __init__(self, surrogate: str = "atan", sparsity: float = 0.0, **params: float) -> None:
        self.surrogate: Surrogate = get_surrogate(surrogate, **params)
        self.loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
        self.sparsity = SparsityPenalty(sparsity)

    def prepare(self, model: nn.Module) -> None:
        """Install the surrogate in every LIF layer of ``model``."""
        for module in model.modules():
            if isinstance(module, LIF):
                module.surrogate = self.surrogate

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """Forward ``x [T, B, ...]``, :attr:`loss` against ``y`` (``[B]`` labels by default) plus
        the sparsity penalty, and backward into ``.grad``."""
        loss, logits = self.sparsity.loss(model, x, y, self.loss)
        loss.backward()
        return StepResult(loss.detach(), logits.detach())

    def __repr__(self) -> str:
        extra = f", sparsity={self.sparsity.weight}" if self.sparsity.weight else ""
        return f"SurrogateGradient({self.surrogate}{extra})"
