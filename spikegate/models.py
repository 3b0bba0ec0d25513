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

__all__ = ["SpikingMLP", "SpikingConvNet", "SpikingVGG", "WSConv2d", "check_input"]

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


class WSConv2d(nn.Conv2d):
    """Conv2d with weight standardisation and a learned per-channel gain (the TESS authors' form).

    ``w_hat = gain * (w - mean(w)) / sqrt(var(w) * fan_in + eps)`` per output channel (mean and
    unbiased variance over ``[C_in/groups, kH, kW]``), which keeps each channel's input current
    at a scale the neuron threshold can use without batch statistics (unlike BatchNorm, it does
    not couple the samples or time steps of a batch).
    """

    def __init__(self, *args, eps: float = 1e-4, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def standardized_weight(self) -> torch.Tensor:
        """The weight the convolution uses, ``[C_out, C_in/groups, kH, kW]``."""
        w = self.weight
        fan_in = w[0].numel()
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True)
        return self.gain * (w - mean) / torch.sqrt(var * fan_in + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)


class SpikingVGG(_SpikingNet):
    """VGG-style spiking net: (WSConv3x3 -> spiking neuron [-> MaxPool2]) per entry, then an
    adaptive average pool to ``global_pool x global_pool`` and a Linear readout.

    ``layers`` lists output channels; an ``"M"`` after an entry adds a 2x2 max pool to that block.
    The default is the VGG-9 of the TESS paper: 64C3, 128C3-MP2, 256C3, 256C3-MP2, 512C3,
    512C3-MP2, 512C3, 512C3, avg-pool, linear. ``weight_standardization=False`` uses plain Conv2d.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        neuron: NeuronFactory,
        layers: Sequence[int | str] = (64, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
        global_pool: int = 1,
        weight_standardization: bool = True,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        c, h, w = self.input_shape
        conv = WSConv2d if weight_standardization else nn.Conv2d
        body: list[nn.Module] = []
        for i, entry in enumerate(layers):
            if entry == "M":
                if i == 0 or layers[i - 1] == "M":
                    raise ValueError(f"layers: expected 'M' only after a channel count, got {list(layers)}")
                body.append(PerStep(nn.MaxPool2d(2)))
                h, w = h // 2, w // 2
                continue
            if isinstance(entry, bool) or not isinstance(entry, int) or entry < 1:
                raise ValueError(f"layers: expected channel counts >= 1 or 'M', got {entry!r} in {list(layers)}")
            body += [PerStep(conv(c, entry, 3, padding=1, bias=False)), SpikesOnly(neuron(shape=(entry, h, w)))]
            c = entry
        body += [PerStep(nn.AdaptiveAvgPool2d(global_pool)), nn.Flatten(2), nn.Linear(c * global_pool**2, num_classes)]
        self.body = nn.Sequential(*body)
