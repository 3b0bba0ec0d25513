"""``estimate_energy``: what one inference of a model costs, layer by layer."""

from __future__ import annotations

from typing import Any, Iterable, Union

import torch
from torch import nn

from .counter import EnergyCounter
from .presets import TechnologyPreset, resolve_preset
from .report import EnergyReport

__all__ = ["estimate_energy", "check_time_major"]


def check_time_major(x: Any, model: nn.Module, name: str = "inputs") -> torch.Tensor:
    """``x`` as a time-major batch ``[T, B, ...]`` (checked against ``model.input_shape`` if set;
    a model of token ids, such as the language model, declares ``()``: ``[T, B]``)."""
    input_shape = getattr(model, "input_shape", None)
    expected = "[T, B, ...]" if input_shape is None else f"[{', '.join(['T', 'B', *map(str, input_shape)])}]"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a time-major tensor {expected} or a DataLoader, got {type(x).__name__}")
    ok = x.dim() >= (3 if input_shape is None else 2) and x.shape[0] >= 1 and x.shape[1] >= 1
    if input_shape is not None:
        ok = ok and x.dim() == 2 + len(input_shape) and tuple(x.shape[2:]) == tuple(input_shape)
    if not ok:
        raise ValueError(
            f"{name}: expected a time-major batch {expected} with T, B >= 1, got shape {tuple(x.shape)}"
            "; for batch-major data [B, T, ...] pass x.transpose(0, 1)"
        )
    return x


def _batches(inputs: Union[torch.Tensor, Iterable], model: nn.Module, device: torch.device):
    if isinstance(inputs, torch.Tensor):
        yield check_time_major(inputs, model).to(device)
        return
    if not isinstance(inputs, torch.utils.data.DataLoader):
        raise ValueError(f"inputs: expected a time-major tensor [T, B, ...] or a DataLoader, got {type(inputs).__name__}")
    for batch in inputs:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"inputs: expected DataLoader batches [B, T, ...] (collated samples [T, ...]), got {got}")
        yield check_time_major(x.transpose(0, 1), model, "inputs (a DataLoader batch, transposed)").to(device)


def estimate_energy(
    model: nn.Module,
    inputs: Union[torch.Tensor, torch.utils.data.DataLoader],
    *,
    preset: Union[str, TechnologyPreset] = "45nm-fp32",
    **constants: Any,
) -> EnergyReport:
    """Run ``model`` on ``inputs`` in eval mode and price one inference with ``preset``.

    Args:
        model: any module taking ``[T, B, ...]``; its layers are found by what they are (see
            :mod:`spikegate.energy.counter`), wrappers are looked through.
        inputs: one time-major batch ``[T, B, ...]``, or a DataLoader of ``(x [B, T, ...], label)``
            batches as spikegate's datasets yield them (transposed here); figures are averaged over
            every sample, so each batch weighs by its size.
        preset: a name in :data:`spikegate.energy.PRESETS` (``45nm-fp32``, ``45nm-fp16``,
            ``45nm-int32``, ``45nm-int8``) or a :class:`TechnologyPreset`.
        constants: fields of the preset to replace, e.g. ``e_ac_pj=0.5, weight_bits=8``.

    Returns an :class:`EnergyReport` (pJ and bits per inference).
    """
    tech = resolve_preset(preset, **constants)  # fail on bad constants before running anything
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), EnergyCounter(model) as counter:
            for x in _batches(inputs, model, device):
                if not bool(torch.isfinite(x).all()):
                    raise ValueError("inputs: expected finite values, got NaN or Inf")
                model(x)
                counter.add_samples(x.shape[1], time_steps=x.shape[0])
    finally:
        model.train(was_training)
    if not counter.samples:
        raise ValueError("inputs: expected at least one sample, got an empty DataLoader")
    return EnergyReport.from_counts(counter.counts(), tech)
