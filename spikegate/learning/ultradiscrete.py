"""Ultradiscrete learning (UltraLIF paper, arXiv 2602.11206): train through the eps-relaxation.

Forward and backward both run the eps-relaxed max-plus dynamics of the UltraLIF family
(``spikegate.neurons.ultralif``): the soft spike ``sigmoid((u - theta)/eps)`` is what the network
computes and what is differentiated, so there is no surrogate mismatch. Plain LIF layers are
relaxed the same way when the rule is prepared: each becomes the UltraLIF with tau0 = the LIF's
beta (learnable when beta is), same threshold and zero reset,
``u = eps*log(exp((v + log beta)/eps) + exp(x/eps))``.

eps is, per ``eps_mode``:

* ``learned``: each neuron layer learns ``eps = exp(log_eps)`` clamped to [0.1, 20] (the paper);
* ``fixed``: held at ``eps`` for the whole run;
* ``anneal``: held, and moved from ``eps`` at the first epoch to ``eps_final`` at the last by the
  ``schedule`` (``linear``, ``cosine`` or ``exponential``); the trainer calls
  :meth:`Ultradiscrete.on_epoch` before every epoch. Annealed values may go below 0.1, toward
  the tropical limit.

Evaluation also scores the tropical network (``spikegate.neurons.tropical``: max-plus membrane,
Heaviside spikes), the network as a deployed chip would run it.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from spikegate.arguments import check_choice, check_real
from spikegate.neurons.lif import LIF
from spikegate.neurons.ultralif import UltraLIF, relaxed_neurons

from .surrogate import SparsityPenalty, StepResult

__all__ = ["Ultradiscrete", "EPS_MODES", "SCHEDULES"]

EPS_MODES = ("learned", "fixed", "anneal")
SCHEDULES = ("linear", "cosine", "exponential")


class Ultradiscrete:
    """The ultradiscrete rule: ``prepare(model)``, ``on_epoch(epoch, epochs)``, ``step(model, x, y)``.

    Args:
        eps: starting eps (> 0); None keeps each neuron's own (relaxed LIF layers, and an
            annealed eps, start at 1).
        eps_mode: ``learned``, ``fixed`` or ``anneal`` (module docstring).
        eps_final: the annealed eps at the last epoch (> 0).
        schedule: ``linear``, ``cosine`` or ``exponential`` (geometric) annealing.
        sparsity: weight ``lambda`` of the spike-rate penalty (``SparsityPenalty``).
    """

    def __init__(
        self,
        eps: Optional[float] = None,
        eps_mode: str = "learned",
        eps_final: float = 0.05,
        schedule: str = "cosine",
        sparsity: float = 0.0,
    ) -> None:
        self.eps = None if eps is None else check_real(eps, "learning.eps", strict=True)
        self.eps_mode = check_choice(eps_mode, "learning.eps_mode", EPS_MODES)
        self.eps_final = check_real(eps_final, "learning.eps_final", strict=True)
        self.schedule = check_choice(schedule, "learning.schedule", SCHEDULES)
        self.sparsity = SparsityPenalty(sparsity)
        self.loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
        self._model: Optional[nn.Module] = None

    def prepare(self, model: nn.Module) -> None:
        """Relax every LIF layer of ``model`` and set eps on every UltraLIF-family layer."""
        device = next(iter(model.parameters()), torch.empty(0)).device
        start = 1.0 if self.eps is None else self.eps
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, LIF):
                    relaxed = UltraLIF.from_lif(child, eps=start, learn_eps=self.eps_mode == "learned")
                    setattr(parent, name, relaxed.to(device))
        neurons = relaxed_neurons(model)
        if not neurons:
            raise ValueError(
                "learning=ultradiscrete: expected a model with LIF or UltraLIF-family neurons, "
                f"got none in {type(model).__name__}"
            )
        for neuron in neurons:
            if self.eps_mode == "learned":
                if self.eps is not None:
                    with torch.no_grad():
                        neuron.log_eps.fill_(math.log(self.eps))
            else:
                own = float(neuron.eps.detach().mean()) if self.eps is None else self.eps
                neuron.fix_eps(own)
        self._model = model

    def eps_at(self, progress: float, start: float) -> float:
        """The annealed eps at ``progress`` in [0, 1] of training, from ``start`` to ``eps_final``."""
        end = self.eps_final
        if self.schedule == "linear":
            return start + (end - start) * progress
        if self.schedule == "cosine":
            return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2
        return start * (end / start) ** progress

    def on_epoch(self, epoch: int, epochs: int) -> None:
        """Before epoch ``epoch`` (0-based) of ``epochs``: move an annealed eps along its schedule."""
        if self.eps_mode != "anneal" or self._model is None:
            return
        progress = epoch / max(epochs - 1, 1)
        start = 1.0 if self.eps is None else self.eps
        for neuron in relaxed_neurons(self._model):
            neuron.fix_eps(self.eps_at(progress, start))

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """Forward ``x [T, B, ...]`` through the relaxed network, cross-entropy against ``y [B]``
        plus the sparsity penalty, and backward into ``.grad`` (eps included when learned)."""
        loss, logits = self.sparsity.loss(model, x, y, self.loss)
        loss.backward()
        return StepResult(loss.detach(), logits.detach())

    def __repr__(self) -> str:
        return (f"Ultradiscrete(eps={self.eps}, eps_mode={self.eps_mode!r}, eps_final={self.eps_final}, "
                f"schedule={self.schedule!r}, sparsity={self.sparsity.weight})")
