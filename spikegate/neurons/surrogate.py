"""Surrogate derivatives for the Heaviside spike.

The forward pass of a spiking neuron is always the Heaviside step ``s = (x >= 0)`` with
``x = u - threshold``; a surrogate only replaces its derivative in the backward pass.
Each surrogate is a small frozen dataclass that knows

* ``grad_(x)``: the surrogate derivative ds/dx, computed in place over ``x`` (the torch backend
  calls it on scratch buffers, so the time loop allocates nothing); ``grad(x)`` is its copying twin;
* ``kernel_id`` / ``kernel_params``: the same function as an integer tag and two floats, which the
  Triton kernels evaluate with identical formulas (see ``spikegate/kernels/lif.py``).

Surrogates are given by name (``"atan"``) or as objects (``ATan(alpha=3.0)``); ``get_surrogate``
turns either into an object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Union

import torch

from spikegate.arguments import check_real

__all__ = [
    "Surrogate",
    "ATan",
    "Sigmoid",
    "FastSigmoid",
    "Triangle",
    "STE",
    "SURROGATES",
    "get_surrogate",
    "spike",
]


@dataclass(frozen=True)
class Surrogate:
    """Base class: Heaviside forward, ``grad(x)`` backward."""

    name: ClassVar[str] = ""
    kernel_id: ClassVar[int] = -1

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """ds/dx at ``x``, as a new tensor."""
        return self.grad_(x.clone())

    def grad_(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """ds/dx at ``x``, written over ``x`` (which is returned)."""
        raise NotImplementedError

    @property
    def kernel_params(self) -> tuple[float, float]:
        """Two floats the Triton kernels read as (p0, p1)."""
        raise NotImplementedError  # pragma: no cover - abstract


@dataclass(frozen=True)
class ATan(Surrogate):
    """``alpha/2 / (1 + (pi/2 * alpha * x)^2)`` (SpikingJelly's ``surrogate.ATan``)."""

    alpha: float = 2.0
    name: ClassVar[str] = "atan"
    kernel_id: ClassVar[int] = 0

    def grad_(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(math.pi / 2 * self.alpha).square_().add_(1).reciprocal_().mul_(self.alpha / 2)

    @property
    def kernel_params(self) -> tuple[float, float]:
        return (float(self.alpha), 0.0)


@dataclass(frozen=True)
class Sigmoid(Surrogate):
    """``alpha * sig(alpha x) * (1 - sig(alpha x))``."""

    alpha: float = 4.0
    name: ClassVar[str] = "sigmoid"
    kernel_id: ClassVar[int] = 1

    def grad_(self, x: torch.Tensor) -> torch.Tensor:
        sg = x.mul_(self.alpha).sigmoid_()
        return sg.sub_(sg.square()).mul_(self.alpha)

    @property
    def kernel_params(self) -> tuple[float, float]:
        return (float(self.alpha), 0.0)


@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """SuperSpike: ``1 / (1 + slope * |x|)^2``."""

    slope: float = 25.0
    name: ClassVar[str] = "fast_sigmoid"
    kernel_id: ClassVar[int] = 2

    def grad_(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs_().mul_(self.slope).add_(1).square_().reciprocal_()

    @property
    def kernel_params(self) -> tuple[float, float]:
        return (float(self.slope), 0.0)


@dataclass(frozen=True)
class Triangle(Surrogate):
    """``gamma * max(0, 1 - |x| / width) / width``."""

    gamma: float = 0.3
    width: float = 1.0
    name: ClassVar[str] = "triangle"
    kernel_id: ClassVar[int] = 3

    def grad_(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs_().div_(-self.width).add_(1).clamp_min_(0).mul_(self.gamma / self.width)

    @property
    def kernel_params(self) -> tuple[float, float]:
        return (float(self.gamma), float(self.width))


@dataclass(frozen=True)
class STE(Surrogate):
    """Straight-through estimator: derivative 1 everywhere."""

    name: ClassVar[str] = "ste"
    kernel_id: ClassVar[int] = 4

    def grad_(self, x: torch.Tensor) -> torch.Tensor:
        return x.fill_(1)

    @property
    def kernel_params(self) -> tuple[float, float]:
        return (0.0, 0.0)


SURROGATES: dict[str, type[Surrogate]] = {
    cls.name: cls for cls in (ATan, Sigmoid, FastSigmoid, Triangle, STE)
}

SurrogateLike = Union[str, Surrogate]


def _check_positive(surrogate: Surrogate) -> None:
    for field in ("alpha", "slope", "width"):
        if hasattr(surrogate, field):
            check_real(getattr(surrogate, field), f"surrogate.{field}", strict=True)


def get_surrogate(surrogate: SurrogateLike, **params: float) -> Surrogate:
    """Return a surrogate object from a name (with optional parameters) or an object."""
    if isinstance(surrogate, Surrogate):
        if params:
            raise TypeError("surrogate: parameters may only be given with a surrogate name")
        _check_positive(surrogate)
        return surrogate
    if not isinstance(surrogate, str):
        raise TypeError(
            f"surrogate: expected a name in {sorted(SURROGATES)} or a Surrogate object, "
            f"got {type(surrogate).__name__}"
        )
    try:
        cls = SURROGATES[surrogate]
    except KeyError:
        raise ValueError(
            f"surrogate: expected one of {sorted(SURROGATES)}, got {surrogate!r}"
        ) from None
    try:
        obj = cls(**params)
    except TypeError as err:
        raise TypeError(f"surrogate: bad parameters for {surrogate!r}: {err}") from None
    _check_positive(obj)
    return obj


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.grad(x), None


def spike(x: torch.Tensor, surrogate: SurrogateLike = "atan") -> torch.Tensor:
    """Heaviside ``x >= 0`` with the surrogate derivative in the backward pass."""
    return _SpikeFunction.apply(x, get_surrogate(surrogate))
