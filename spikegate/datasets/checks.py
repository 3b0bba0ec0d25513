"""Argument checks shared by the offline datasets. Each message names the argument, what was
expected and what came."""

from __future__ import annotations

SPLITS = ("train", "test")

__all__ = ["SPLITS", "check_split", "check_time_steps", "check_seed"]


def check_split(split: object) -> str:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    return split  # type: ignore[return-value]


def check_time_steps(time_steps: object) -> int:
    """``time_steps`` must be an int >= 1 (bools are refused)."""
    if isinstance(time_steps, bool) or not isinstance(time_steps, int):
        raise TypeError(f"time_steps: expected an int >= 1, got {type(time_steps).__name__}")
    if time_steps <= 0:
        raise ValueError(f"time_steps: expected an int >= 1, got {time_steps}")
    return time_steps


def check_seed(seed: object) -> int:
    """``seed`` must be an int >= 0 (numpy's SeedSequence refuses negative entropy)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int >= 0, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed}")
    return seed
