"""The 8x8 handwritten digits that ship with scikit-learn, split and rate-coded (no download).

``sklearn.datasets.load_digits`` holds 1797 images ``[8, 8]`` with integer intensities 0..16.
Both offline sets (this one and ``event_digits``) use the same fixed, stratified 80/20 split
(``digits_split``), so their test accuracies are comparable.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .checks import check_seed, check_split, check_time_steps
from .frames import FrameDataset

__all__ = [
    "SPLIT_SEED",
    "TEST_FRACTION",
    "DIGIT_CLASSES",
    "MAX_INTENSITY",
    "digits_split",
    "load_digits_split",
    "rate_code",
    "DigitsData",
]

SPLIT_SEED = 0
TEST_FRACTION = 0.2
MAX_INTENSITY = 16
DIGIT_CLASSES = [
    "0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
    "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine",
]


@lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@lru_cache(maxsize=2)
def _split_indices(split: str) -> np.ndarray:
    _, labels = _all_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    test = []
    for label in range(len(DIGIT_CLASSES)):
        members = np.flatnonzero(labels == label)
        n_test = int(round(TEST_FRACTION * len(members)))
        test.append(rng.permutation(members)[:n_test])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test)] = True
    indices = np.flatnonzero(is_test if split == "test" else ~is_test)
    indices.setflags(write=False)
    return indices


def digits_split(split: str) -> np.ndarray:
    """Sorted int64 indices into ``load_digits()`` of ``split`` ("train" or "test").

    Fixed: per class, ``round(0.2 * n_class)`` images drawn with ``SPLIT_SEED`` go to test, the
    rest to train (1438 train, 359 test).
    """
    return _split_indices(check_split(split))


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images of ``split``: ``(images [N, 8, 8] uint8 in 0..16, labels [N] int64,
    indices [N] int64 into load_digits)``."""
    indices = digits_split(split)
    images, labels = _all_digits()
    return images[indices], labels[indices], indices


def rate_code(
    intensity: torch.Tensor, time_steps: int, generator: torch.Generator
) -> torch.Tensor:
    """Bernoulli rate code: ``intensity [N, ...]`` in [0, 1] (spike probability per step) to
    spikes ``[N, time_steps, ...]`` uint8 (0/1), independent over steps and pixels."""
    check_time_steps(time_steps)
    if not bool(((intensity >= 0) & (intensity <= 1)).all()):
        raise ValueError("intensity: expected probabilities in [0, 1], got values outside")
    shape = (intensity.shape[0], time_steps, *intensity.shape[1:])
    uniform = torch.rand(shape, generator=generator, dtype=torch.float32)
    return (uniform < intensity.unsqueeze(1).float()).to(torch.uint8)


class DigitsData:
    """Rate-coded scikit-learn digits for the trainer (``_target_: spikegate.datasets.DigitsData``).

    Each pixel spikes with probability ``intensity / 16`` at every one of ``time_steps`` steps.
    The spike trains are drawn once, from ``seed`` over all 1797 images in their original order
    (so a sample's spikes do not depend on the split), and kept in memory: every epoch sees the
    same spikes.

    train, test: ``FrameDataset`` of ``(x float32 [T, 1, 8, 8] in {0, 1}, label)``.
    input_shape: ``(1, 8, 8)``; num_classes: 10; time_steps: ``T``.
    """

    num_classes = len(DIGIT_CLASSES)
    input_shape = (1, 8, 8)
    classes = DIGIT_CLASSES

    def __init__(self, time_steps: int = 16, seed: int = 0) -> None:
        self.time_steps = check_time_steps(time_steps)
        self.seed = check_seed(seed)
        images, labels = _all_digits()
        intensity = torch.from_numpy(images.astype(np.float32) / MAX_INTENSITY).unsqueeze(1)
        generator = torch.Generator().manual_seed(seed)
        spikes = rate_code(intensity, time_steps, generator)
        labels_t = torch.from_numpy(labels.copy())
        self.train = self._subset(spikes, labels_t, "train")
        self.test = self._subset(spikes, labels_t, "test")

    @staticmethod
    def _subset(spikes: torch.Tensor, labels: torch.Tensor, split: str) -> FrameDataset:
        index = torch.from_numpy(digits_split(split).copy())
        return FrameDataset(spikes[index].contiguous(), labels[index])
