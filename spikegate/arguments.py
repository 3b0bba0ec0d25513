"""Checks of scalar arguments, shared across the package. Each message names the argument, what
was expected and what came, e.g. ``time_steps: expected an int >= 1, got 0``."""

from __future__ import annotations

import math
import numbers
from typing import Sequence, TypeVar

__all__ = ["check_int", "check_real", "check_choice"]

Choice = TypeVar("Choice")


def check_int(value: object, name: str, *, minimum: int) -> int:
    """An integer (Python or numpy; not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def check_real(value: object, name: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite real number (not a bool) ``>= minimum``, or ``> minimum`` when ``strict``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    low_ok = value > minimum if strict else value >= minimum
    if not (math.isfinite(value) and low_ok):
        bound = f"{'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name}: expected a finite value {bound}, got {value!r}")
    return float(value)


def check_choice(value: Choice, name: str, choices: Sequence[Choice]) -> Choice:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return value
