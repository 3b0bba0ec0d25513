"""Small spiking networks the trainer builds from the ``model`` config group.

Every model takes a time-major input ``x: [T, B, *input_shape]`` and returns logits ``[B, classes]``:
the readout is a non-spiking integrator, the mean over time of the last layer's synaptic current.
Neurons come from a factory (the ``neuron`` config group, a ``functools.partial`` of e.g.
:class:`spikegate.neurons.LIF`) called with the neuron shape of each layer.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from spikegate.neurons.sequential import SpikesOnly

__all__ = ["SpikingMLP", "SpikingConvNet", "check_input"]

NeuronFactory = Callable[..., nn.Module]


def check_input(x: torch.Tensor, input_shape: tuple[int, ...]) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 + len(input_shape) or tuple(x.shape[2:]) != input_shape:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"x: expected a time-major batch [T, B, {', '.join(map(str, input_shape))}], got {got}"
            "; for batch-major data [B, T, ...] pass x.transpose(0, 1)"
        )


class PerStep(nn.Module):
    """Apply a stateless layer to every time step at once by folding T into the batch."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        y = self.layer(x.flatten(0, 1))
        return y.reshape(T, B, *y.shape[1:])


# the neuron layer of a feed-forward stack; the old name stays for code that imports it
SpikingNeuron = SpikesOnly


class _SpikingNet(nn.Module):
    input_shape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [T, B, *input_shape]`` -> logits ``[B, num_classes]``."""
        check_input(x, self.input_shape)
        return self.body(x).mean(0)


class SpikingMLP(_SpikingNet):
    """Flatten -> (Linear -> spiking neuron) x len(hidden) -> Linear readout."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        neuron: NeuronFactory,
        hidden: Sequence[int] = (256,),
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        layers: list[nn.Module] = [nn.Flatten(2)]
        width = int(torch.tensor(self.input_shape).prod())
        for h in hidden:
            layers += [nn.Linear(width, h), SpikesOnly(neuron(shape=(h,)))]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.body = nn.Sequential(*layers)


class SpikingConvNet(_SpikingNet):
    """(Conv3x3 -> BatchNorm -> spiking neuron -> MaxPool2) per entry of ``channels`` -> Linear readout."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        neuron: NeuronFactory,
        channels: Sequence[int] = (16, 32),
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        c, h, w = self.input_shape
        layers: list[nn.Module] = []
        for out in channels:
            layers += [
                PerStep(nn.Sequential(nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out))),
                SpikesOnly(neuron(shape=(out, h, w))),
                PerStep(nn.MaxPool2d(2)),
            ]
            c, h, w = out, h // 2, w // 2
        layers += [nn.Flatten(2), nn.Linear(c * h * w, num_classes)]
        self.body = nn.Sequential(*layers)
