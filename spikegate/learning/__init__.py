"""Learning rules: each a small object with ``prepare(model)`` and ``step(model, x, y)``; a rule
that changes with training progress also has ``on_epoch(epoch, epochs)``, which the trainer calls
before every epoch."""

from .surrogate import SparsityPenalty, StepResult, SurrogateGradient
from .tess import TESS
from .ultradiscrete import Ultradiscrete

__all__ = ["SurrogateGradient", "Ultradiscrete", "TESS", "SparsityPenalty", "StepResult"]
