"""Argument checks shared by the offline datasets. Each message names the argument, what was
expected and what came."""

from __future__ import annotations

from spikegate.arguments import check_choice, check_int

SPLITS = ("train", "test")

__all__ = ["SPLITS", "check_split", "check_time_steps", "check_seed"]


def check_split(split: object) -> str:
    return check_choice(split, "split", SPLITS)  # type: ignore[return-value]


def check_time_steps(time_steps: object) -> int:
    return check_int(time_steps, "time_steps", minimum=1)


def check_seed(seed: object) -> int:
    """numpy's SeedSequence refuses negative entropy."""
    return check_int(seed, "seed", minimum=0)
