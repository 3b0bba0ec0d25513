"""Learning rules: each a small object with ``prepare(model)`` and ``step(model, x, y)``."""

from .surrogate import StepResult, SurrogateGradient
from .tess import TESS

__all__ = ["SurrogateGradient", "StepResult", "TESS"]
