"""In-memory dataset of precomputed spike or event frames, shared by the offline data containers."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

__all__ = ["FrameDataset"]


class FrameDataset(Dataset):
    """Samples held as one tensor, so that an epoch costs no data preparation.

    frames: ``[N, T, *input_shape]`` uint8 (spikes 0/1 or event counts).
    labels: ``[N]`` int64 class indices.
    Items are ``(x, label)``: ``x`` float32 ``[T, *input_shape]``, ``label`` an int. The default
    collate gives ``[B, T, *input_shape]``; a time-major model transposes to ``[T, B, ...]``.
    """

    def __init__(self, frames: torch.Tensor, labels: torch.Tensor) -> None:
        if frames.dim() < 2 or frames.dtype != torch.uint8:
            raise ValueError(
                f"frames: expected a uint8 tensor [N, T, ...], got {frames.dtype} "
                f"{tuple(frames.shape)}"
            )
        if labels.shape != frames.shape[:1]:
            raise ValueError(
                f"labels: expected shape ({frames.shape[0]},) to match frames, "
                f"got {tuple(labels.shape)}"
            )
        self.frames = frames
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return self.frames.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.frames[index].float(), int(self.labels[index])
