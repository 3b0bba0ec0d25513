"""TESS: a temporally and spatially local learning rule (Apolinario, Roy, Frenkel, arXiv 2502.01837).

Every spiking layer learns from signals available at the layer and at the current time step only:

* spatially local: each block's input is detached, and its learning signal ``m[t]`` comes from a
  local loss, ``CE(a[t] B^T, label)``, where ``a[t]`` is the block's output spikes average-pooled
  to ``p x p`` and flattened to ``D`` features, and ``B [C, D] = sign(sin(f_c * d)) / D`` is a
  fixed square-wave projection with ``f_c = linspace(50, 512, C)``;
* temporally local: the neuron state is detached at every step; two traces per layer carry what the
  update needs from the past,

  ::

      q[t]   = lambda_pre * q[t-1] + o_in[t]                 presynaptic trace (includes the input now)
      psi[t] = 0.3 * max(0, 1 - |u[t] - theta|)             secondary activation (pre-reset membrane u)
      dW    += alpha_pre  * (m[t] * psi[t]) (x) q[t]        causal term
             + alpha_post * (m[t] * h[t-1]) (x) o_in[t]     non-causal term, h before adding psi[t]
      h[t]   = lambda_post * h[t-1] + psi[t]                postsynaptic trace

  with ``(x)`` the outer product summed over the batch (linear layers) or
  ``torch.nn.grad.conv2d_weight`` (conv layers). A bias gets ``sum(m * psi)``, as in the authors' code.

The rule streams over time: at each step it runs one step of every layer (the LIF equations of
the model's own neurons, so training and evaluation compute the same network), forms ``m[t]`` in
closed form (:func:`fast_learning_signal`: softmax minus one-hot, times ``B``, back through the
block's pooling; :func:`learning_signal` is the same by autograd), and updates the traces (both
terms in one outer product over the batch stacked twice). No autograd graph crosses a layer or a
time step, so training memory does not grow with ``T``. The updates are
summed over the sequence and written into ``.grad`` once per batch; the trainer's optimizer then
applies them (as the authors do). The readout is trained by the global loss (cross-entropy of the
time-averaged logits, as the models compute them) on its detached input.

Online updates (``TESS(online=True)``, ``learning.online=true``): each time step's updates of the
spiking layers are applied right away by the training optimizer, which the trainer hands the rule
as ``rule.optimizer``; the weights used at step ``t + 1`` include the updates of steps ``<= t``.
At every step with a learning signal the rule writes that step's update into ``.grad`` (chained
through the weight standardisation and BatchNorm's evaluation form, whose effective weights are
then recomputed from the updated parameters), calls ``optimizer.step()`` and sets those ``.grad``
back to None, so the trainer's own ``optimizer.step()`` after the rule's step applies the readout's
gradient only: the readout is updated once per batch, as its loss (of the time-averaged logits)
exists only after the last step. Whatever ``.grad`` held before the rule's step is set aside during
the sequence and restored after it. The optimizer thus steps the spiking layers ``T`` times per
batch (or ``signal_steps`` times): its state (Adam's moments and step count) advances per time
step, while the trainer's learning-rate schedule advances per batch, so the rate is constant within
a batch. BatchNorm's running statistics are streamed from each step's current with that step's
effective gain and shift.

Layers TESS trains (found by walking ``model.body``): ``nn.Linear`` and ``PerStep(Conv2d)``
(including :class:`spikegate.models.WSConv2d`, whose update is chained through the weight
standardisation by autograd) followed by ``SpikesOnly(LIF)``. ``PerStep(Conv2d -> BatchNorm2d)``
is trained with the BatchNorm in its evaluation form, a per-channel affine map from the running
statistics (batch statistics over ``[T*B]`` would couple the time steps); its gain and bias are
trained through the same chain, and in training mode its running statistics are updated after each
batch from per-channel moments streamed over all the batch's steps, as training-mode BatchNorm
would compute them. Between layers: pooling, Identity and Flatten. The last module must
be the ``nn.Linear`` readout.

Fidelity to the authors' code (mapolinario94/TESS): leak 0.5, threshold 0.6 and the factors
``[lambda_post, lambda_pre, alpha_post, alpha_pre] = [0.2, 0.5, 1, 1]`` (static images) or
``[0.2, 0.5, 0, 1]`` (DVS data) are the defaults of ``learning=tess`` / ``learning=tess_dvs``, which
set the neuron (``neuron.beta``, ``neuron.threshold``, ``neuron.reset=subtract``); the rule itself
reads every neuron's parameters from the model. Differences: the spike is ``u >= theta`` (theirs
``u > theta``); the reset subtracts ``round(theta)`` as their conv layers do (``learning=tess``
sets ``neuron.reset_amount=1.0``, round(0.6)), in linear hidden layers too (theirs subtract
``theta`` there); linear layers use the triangle ``psi`` unless
``linear_activation="fast_sigmoid"`` (theirs: ``1 / (100 |u - theta| + 1)^2``); the readout's loss
is on the time-averaged logits (theirs: per step over the last ``delay_ls`` steps); ``signal_steps``
is their ``delay_ls`` (local signals only in the last ``k`` steps).

Distributed data parallel: because TESS writes ``.grad`` itself, DDP's gradient hooks do not
average it. The rule says so (``TESS.local_gradients = True``): the trainer then leaves the model
unwrapped and, after every step, calls :func:`spikegate.distributed.average_gradients`, which
all-reduces every parameter's ``.grad`` (sum) and divides it by the world size, so the local
updates are averaged across processes exactly as DDP averages gradients. Online, the rule averages
each step's update the same way itself before applying it (one all-reduce per spiking layer's
parameter and step), so every process applies the same updates; the trainer's averaging after the
step then covers the readout's gradient. A model already wrapped
in ``DistributedDataParallel`` or ``DataParallel`` is trained through its inner module.
"""

from __future__ import annotations

import functools
import math
import numbers
import weakref
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from spikegate import distributed
from spikegate.arguments import check_choice, check_int, check_real
from spikegate.models import check_input
from spikegate.neurons.lif import LIF
from spikegate.neurons.sequential import SpikesOnly

from .surrogate import StepResult

__all__ = [
    "TESS",
    "TraceFactors",
    "EligibilityTraces",
    "secondary_activation",
    "tess_linear_grad",
    "tess_conv2d_grad",
    "square_wave_projection",
    "learning_signal",
    "fast_learning_signal",
    "LocalSignal",
]

ACTIVATIONS = ("triangle", "fast_sigmoid")
Outer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def secondary_activation(u: torch.Tensor, threshold: float, form: str = "triangle") -> torch.Tensor:
    """``psi(u)``: ``triangle`` = ``0.3 * max(0, 1 - |u - threshold|)`` (the paper's, conv layers);
    ``fast_sigmoid`` = ``1 / (100 |u - threshold| + 1)^2`` (the authors' code for linear layers).
    ``u``: pre-reset membrane, any shape; returns the same shape (a new tensor; differentiable)."""
    check_choice(form, "activation", ACTIVATIONS)
    if torch.is_grad_enabled() and u.requires_grad:
        distance = (u - threshold).abs()
        if form == "triangle":
            return 0.3 * (1 - distance).clamp_min(0)
        return 1 / (100 * distance + 1) ** 2
    distance = (u - threshold).abs_()  # the same operations, in one buffer
    if form == "triangle":
        return distance.neg_().add_(1).clamp_min_(0).mul_(0.3)
    return distance.mul_(100).add_(1).square_().reciprocal_()


def _check_factor(value: object, name: str, *, decay: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    if decay and not 0 <= value < 1:
        raise ValueError(f"{name}: expected a trace decay in [0, 1), got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite value, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class TraceFactors:
    """The four TESS factors (the paper's ``[lambda_post, lambda_pre, alpha_post, alpha_pre]``).

    ``lambda_pre``, ``lambda_post``: trace decays per step, in [0, 1); ``alpha_pre``,
    ``alpha_post``: weights of the causal and non-causal terms (any finite value)."""

    lambda_pre: float = 0.5
    lambda_post: float = 0.2
    alpha_pre: float = 1.0
    alpha_post: float = 1.0

    def __post_init__(self) -> None:
        for name in ("lambda_pre", "lambda_post", "alpha_pre", "alpha_post"):
            object.__setattr__(self, name, _check_factor(getattr(self, name), name, decay=name.startswith("lambda")))


@dataclass
class EligibilityTraces:
    """One layer's streaming TESS state: traces ``q`` (input shape), ``h`` (output shape) and the
    update summed so far (``weight_grad``, ``bias_grad``).

    ``outer(g [B, *out], pre [B, *in]) -> [*weight_shape]`` pairs a postsynaptic factor with a
    presynaptic one, summed over the batch (a matrix product or ``conv2d_weight``)."""

    factors: TraceFactors
    outer: Outer
    threshold: float
    activation: str = "triangle"
    q: Optional[torch.Tensor] = None
    h: Optional[torch.Tensor] = None
    weight_grad: Optional[torch.Tensor] = None
    bias_grad: Optional[torch.Tensor] = None
    _bias_dims: tuple[int, ...] = field(default=(), repr=False)
    # with both terms: [q; o_in] and [alpha_pre m psi; alpha_post m h] stacked on the batch, so one
    # outer product over 2B samples gives both (q is the first half of _pres)
    _pres: Optional[torch.Tensor] = field(default=None, repr=False)
    _posts: Optional[torch.Tensor] = field(default=None, repr=False)

    def _start(self, pre: torch.Tensor, u: torch.Tensor) -> None:
        B = pre.shape[0]
        # conv layers: the outer product (conv2d_weight) is faster on channels-last operands
        layout = torch.channels_last if u.dim() == 4 else torch.contiguous_format
        if self.factors.alpha_post != 0:
            self._pres = pre.new_zeros((2 * B, *pre.shape[1:])).contiguous(memory_format=layout)
            self._posts = u.new_empty((2 * B, *u.shape[1:])).contiguous(memory_format=layout)
            self.q = self._pres[:B]
        else:
            self.q = torch.zeros_like(pre, memory_format=layout)
        self.h = torch.zeros_like(u, memory_format=torch.contiguous_format)
        self._bias_dims = (0, *range(2, u.dim()))

    @torch.no_grad()
    def step(self, pre: torch.Tensor, u: torch.Tensor, m: Optional[torch.Tensor]) -> None:
        """Advance one time step: ``pre [B, *in]`` input spikes, ``u [B, *out]`` pre-reset membrane,
        ``m [B, *out]`` learning signal (None: no signal at this step, the traces still advance)."""
        f = self.factors
        if self.q is None:
            self._start(pre, u)
        elif self.q.shape != pre.shape or self.h.shape != u.shape:
            raise ValueError(
                f"traces: expected pre {tuple(self.q.shape)} and u {tuple(self.h.shape)} as at the "
                f"previous step, got pre {tuple(pre.shape)} and u {tuple(u.shape)}"
            )
        if m is not None and m.shape != u.shape:
            raise ValueError(f"m: expected the shape of u {tuple(u.shape)}, got {tuple(m.shape)}")
        torch.add(pre, self.q, alpha=f.lambda_pre, out=self.q)  # q = lambda_pre * q + pre
        psi = secondary_activation(u, self.threshold, self.activation)
        if m is not None:
            if self._pres is None:  # causal term only
                causal = torch.mul(m, psi)
                bias = causal.sum(self._bias_dims)
                update = self.outer(causal, self.q)
                if f.alpha_pre != 1:
                    update.mul_(f.alpha_pre)
            else:
                B = pre.shape[0]
                causal, non_causal = self._posts[:B], self._posts[B:]
                torch.mul(m, psi, out=causal)
                torch.mul(m, self.h, out=non_causal)
                bias = causal.sum(self._bias_dims)
                if f.alpha_pre != 1:
                    causal.mul_(f.alpha_pre)
                if f.alpha_post != 1:
                    non_causal.mul_(f.alpha_post)
                self._pres[B:].copy_(pre)
                update = self.outer(self._posts, self._pres)
            self.weight_grad = update if self.weight_grad is None else self.weight_grad.add_(update)
            self.bias_grad = bias if self.bias_grad is None else self.bias_grad.add_(bias)
        torch.add(psi, self.h, alpha=f.lambda_post, out=self.h)  # h = lambda_post * h + psi


def _linear_outer(g: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    return g.transpose(0, 1) @ pre


def _conv_outer(weight_shape, stride, padding, dilation, groups) -> Outer:
    def outer(g: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        # contiguous: the weight's layout whatever the operands' (channels-last ones give a strided dW)
        return torch.nn.grad.conv2d_weight(pre, weight_shape, g, stride, padding, dilation, groups).contiguous()

    return outer


def _check_sequences(pre: object, u: object, m: object, pre_dims: int, out_dims: int) -> None:
    for name, value, dims in (("pre", pre, pre_dims), ("u", u, out_dims), ("m", m, out_dims)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
        if value.dim() != dims:
            raise ValueError(f"{name}: expected {dims} dims [T, B, ...], got shape {tuple(value.shape)}")
    if u.shape != m.shape:
        raise ValueError(f"m: expected the shape of u {tuple(u.shape)}, got {tuple(m.shape)}")
    if pre.shape[:2] != u.shape[:2]:
        raise ValueError(
            f"pre: expected the same [T, B] as u {tuple(u.shape[:2])}, got {tuple(pre.shape[:2])}"
        )
    if pre.shape[0] == 0:
        raise ValueError("pre: expected T >= 1 time steps, got T = 0")


def _run_traces(traces: EligibilityTraces, pre, u, m) -> torch.Tensor:
    for t in range(pre.shape[0]):
        traces.step(pre[t], u[t], m[t])
    return traces.weight_grad


def tess_linear_grad(
    pre: torch.Tensor,
    u: torch.Tensor,
    m: torch.Tensor,
    *,
    threshold: float,
    lambda_pre: float,
    lambda_post: float,
    alpha_pre: float,
    alpha_post: float,
    activation: str = "triangle",
) -> torch.Tensor:
    """TESS update of a linear layer over a sequence.

    Args:
        pre: ``[T, B, In]`` presynaptic spikes ``o_in``.
        u: ``[T, B, Out]`` pre-reset membrane of the layer's neurons.
        m: ``[T, B, Out]`` learning signal (gradient of the local loss w.r.t. the output spikes).
        threshold: the neurons' threshold ``theta``.
        lambda_pre, lambda_post: trace decays in [0, 1).
        alpha_pre, alpha_post: weights of the causal and non-causal terms.
        activation: ``psi``: ``triangle`` or ``fast_sigmoid`` (see :func:`secondary_activation`).

    Returns:
        ``dW [Out, In]``, summed over time and batch (the ``.grad`` convention: descend on it).
    """
    _check_sequences(pre, u, m, 3, 3)
    traces = EligibilityTraces(
        TraceFactors(lambda_pre, lambda_post, alpha_pre, alpha_post), _linear_outer, threshold, activation
    )
    return _run_traces(traces, pre, u, m)


def tess_conv2d_grad(
    pre: torch.Tensor,
    u: torch.Tensor,
    m: torch.Tensor,
    weight_shape: Sequence[int],
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    threshold: float,
    lambda_pre: float,
    lambda_post: float,
    alpha_pre: float,
    alpha_post: float,
    activation: str = "triangle",
) -> torch.Tensor:
    """TESS update of a 2-d convolution over a sequence: :func:`tess_linear_grad` with the outer
    product replaced by ``torch.nn.grad.conv2d_weight``.

    Args:
        pre: ``[T, B, C_in, H, W]`` presynaptic spikes.
        u, m: ``[T, B, C_out, H', W']`` pre-reset membrane and learning signal.
        weight_shape: ``(C_out, C_in / groups, kH, kW)``.
        stride, padding, dilation, groups: the convolution's, as in ``torch.nn.Conv2d``.
        Other arguments as in :func:`tess_linear_grad`.

    Returns:
        ``dW [C_out, C_in / groups, kH, kW]``, summed over time and batch.
    """
    _check_sequences(pre, u, m, 5, 5)
    weight_shape = tuple(int(s) for s in weight_shape)
    if len(weight_shape) != 4 or weight_shape[0] != u.shape[2]:
        raise ValueError(
            f"weight_shape: expected (C_out={u.shape[2]}, C_in/groups, kH, kW), got {weight_shape}"
        )
    outer = _conv_outer(weight_shape, stride, padding, dilation, groups)
    factors = TraceFactors(lambda_pre, lambda_post, alpha_pre, alpha_post)
    return _run_traces(EligibilityTraces(factors, outer, threshold, activation), pre, u, m)


def square_wave_projection(
    num_classes: int, features: int, *, low: float = 50.0, high: float = 512.0,
    dtype: torch.dtype = torch.float32, device=None,
) -> torch.Tensor:
    """The fixed learning-signal matrix ``B [C, D] = sign(sin(f_c * d)) / D``, ``f_c = linspace(low,
    high, C)``, ``d = 0 .. D-1`` (never trained)."""
    check_int(num_classes, "num_classes", minimum=1)
    check_int(features, "features", minimum=1)
    freq = torch.linspace(low, high, num_classes, dtype=torch.float64).unsqueeze(1)
    d = torch.arange(features, dtype=torch.float64).unsqueeze(0)
    return (torch.sign(torch.sin(freq * d)) / features).to(dtype=dtype, device=device)


def _pool_features(y: torch.Tensor, pool_size: Optional[int]) -> torch.Tensor:
    if y.dim() == 4 and pool_size is not None:
        y = F.adaptive_avg_pool2d(y, pool_size)
    return y.flatten(1)


class LocalSignal(NamedTuple):
    m: torch.Tensor       # gradient of the local loss w.r.t. the spikes, their shape
    loss: torch.Tensor    # the local loss, scalar
    output: torch.Tensor  # the block's post-neuron layers applied to the spikes (up to a Flatten)


def learning_signal(
    spikes: torch.Tensor,
    labels: torch.Tensor,
    projection: torch.Tensor,
    *,
    pool_size: Optional[int],
    post: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    sparsity: float = 0.0,
) -> LocalSignal:
    """``m = d (CE(a B^T, labels) + sparsity * mean(spikes)) / d spikes`` for one block at one step.

    Args:
        spikes: ``[B, C, H, W]`` or ``[B, N]`` output spikes of the block's neurons.
        labels: ``[B]`` class indices.
        projection: ``B [classes, D]`` (:func:`square_wave_projection`).
        pool_size: ``a`` is the block output average-pooled to ``pool_size x pool_size`` (4-d outputs;
            None or 2-d outputs: no pooling), flattened to ``D``.
        post: the block's stateless layers after the neurons (e.g. its max pool), differentiated through.
        sparsity: weight ``lambda`` of the block's mean spike rate at this step (the spike-rate
            penalty of the other rules, made local: it adds ``lambda / spikes.numel()`` to ``m``).

    Returns:
        ``LocalSignal(m [shape of spikes], loss (scalar), output = post(spikes))``, all detached.
    """
    with torch.enable_grad():
        s = spikes.detach().requires_grad_(True)
        out = post(s) if post is not None else s
        a = _pool_features(out, pool_size)
        if a.shape[1] != projection.shape[1]:
            raise ValueError(
                f"projection: expected [classes, D={a.shape[1]}] for this block, got {tuple(projection.shape)}"
            )
        loss = F.cross_entropy(a @ projection.transpose(0, 1), labels)
        if sparsity:
            loss = loss + sparsity * s.mean()
        (m,) = torch.autograd.grad(loss, s)
    return LocalSignal(m, loss.detach(), out.detach())


_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_aten = torch.ops.aten


def _pool_forward(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``layer(x)`` on ``[B, C, H, W]``, and the max pool's indices (None for the other layers)."""
    if isinstance(layer, nn.MaxPool2d):
        return F.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                            ceil_mode=layer.ceil_mode, return_indices=True)
    return layer(x), None


def _pool_backward(layer: nn.Module, grad: torch.Tensor, x: torch.Tensor,
                   indices: Optional[torch.Tensor]) -> torch.Tensor:
    """The gradient w.r.t. ``x`` of ``layer(x)`` given ``grad`` w.r.t. its output (the kernels
    autograd runs for these layers)."""
    if isinstance(layer, nn.MaxPool2d):
        return _aten.max_pool2d_with_indices_backward(
            grad, x, _pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding),
            _pair(layer.dilation), layer.ceil_mode, indices)
    if isinstance(layer, nn.AvgPool2d):
        return _aten.avg_pool2d_backward(
            grad, x, _pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding), layer.ceil_mode,
            layer.count_include_pad, layer.divisor_override)
    return _aten._adaptive_avg_pool2d_backward(grad, x)


def fast_learning_signal(
    spikes: torch.Tensor,
    targets: torch.Tensor,
    projection: torch.Tensor,
    *,
    pool_size: Optional[int],
    layers: Sequence[nn.Module] = (),
    sparsity: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`learning_signal`'s ``(m, output)`` in closed form, without building a graph.

    With ``a`` the pooled features and ``N`` the batch, the gradient of the mean cross-entropy
    w.r.t. the logits ``a B^T`` is ``(softmax(a B^T) - onehot) / N``; times ``B`` it is the
    gradient w.r.t. ``a``, which is taken back through the feature pooling and ``layers`` (in
    reverse) by their backward kernels, then ``sparsity / spikes.numel()`` is added.

    Args:
        spikes: ``[B, C, H, W]`` or ``[B, N]`` output spikes.
        targets: ``[B, classes]`` one-hot labels in the spikes' dtype (``F.one_hot(labels, classes)``).
        projection: ``B [classes, D]``.
        pool_size: as in :func:`learning_signal`.
        layers: the block's stateless layers after its neurons, each ``nn.MaxPool2d``,
            ``nn.AvgPool2d``, ``nn.AdaptiveAvgPool2d`` or ``nn.Identity`` on ``[B, C, H, W]``.
        sparsity: as in :func:`learning_signal`.

    Returns:
        ``(m [shape of spikes], output = layers(spikes))``.
    """
    layers = [layer for layer in layers if not isinstance(layer, nn.Identity)]
    for layer in layers:
        if not isinstance(layer, _POOLS):
            raise TypeError(
                f"layers: expected MaxPool2d, AvgPool2d, AdaptiveAvgPool2d or Identity, got {type(layer).__name__}"
            )
    with torch.no_grad():
        x = spikes
        if x.dim() == 4 and any(isinstance(layer, nn.MaxPool2d) for layer in layers):
            # channels-last: torch's CPU max pool is several times faster so (same values and indices)
            x = x.contiguous(memory_format=torch.channels_last)
        saved = []
        for layer in layers:
            y, indices = _pool_forward(layer, x)
            saved.append((layer, x, indices))
            x = y
        pooled = F.adaptive_avg_pool2d(x, pool_size) if x.dim() == 4 and pool_size is not None else x
        a = pooled.flatten(1)
        if a.shape[1] != projection.shape[1]:
            raise ValueError(
                f"projection: expected [classes, D={a.shape[1]}] for this block, got {tuple(projection.shape)}"
            )
        probs = torch.softmax(a @ projection.transpose(0, 1), dim=1)
        grad = (probs.sub_(targets).div_(a.shape[0]) @ projection).view(pooled.shape)
        if pooled is not x:
            grad = _aten._adaptive_avg_pool2d_backward(grad, x)
        for layer, inputs, indices in reversed(saved):
            grad = _pool_backward(layer, grad, inputs, indices)
        if sparsity:
            grad = grad + sparsity / spikes.numel()
        return grad.contiguous(), x.contiguous()


# --- walking a model block by block -------------------------------------------------------------

_STATELESS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Identity)


def _inner(module: nn.Module) -> nn.Module:
    """The layer a ``PerStep`` wrapper applies (``PerStep`` is recognised by its ``layer`` attribute)."""
    return module.layer if type(module).__name__ == "PerStep" and hasattr(module, "layer") else module


@dataclass
class _Synapse:
    """A trainable layer as an affine map of one step's input: ``current = op(x, W, b)``."""

    name: str
    params: Callable[[], tuple[torch.Tensor, Optional[torch.Tensor]]]  # (W, b) with autograd graph
    op: Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]
    outer: Outer
    norm: Optional[nn.BatchNorm2d] = None
    affine: Optional[Callable[[], tuple[torch.Tensor, torch.Tensor]]] = None  # BatchNorm's (scale, shift)


@dataclass
class _ChannelMoments:
    """Per-channel sums of a BatchNorm layer's input over a batch's steps, so its running
    statistics follow the data as in training mode without holding the ``[T*B]`` batch.

    The layer's input is the convolution's output ``z``; TESS computes ``current = scale * z +
    shift`` (BatchNorm folded in). The sums of ``current`` and ``current^2`` are collected while
    ``(scale, shift)`` stay the same (the whole batch, unless the updates are applied online) and
    turned into sums of ``z`` and ``z^2`` when they change and at the end."""

    count: int = 0
    total: Optional[torch.Tensor] = None    # sums of z, z^2 per channel (float64)
    squares: Optional[torch.Tensor] = None
    usable: Optional[torch.Tensor] = None   # channels whose gain was never 0 (z hidden otherwise)
    # current and current^2 summed element-wise (float64) over the steps since (scale, shift) last
    # changed: two passes per step, the reduction over the batch and pixels once at the flush
    _affine: Optional[tuple[torch.Tensor, torch.Tensor]] = None
    _pending_count: int = 0
    _pending_total: Optional[torch.Tensor] = None
    _pending_squares: Optional[torch.Tensor] = None

    @torch.no_grad()
    def use(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """The per-channel ``scale, shift [C]`` that the following currents are made with."""
        self._flush()
        self._affine = (scale.double(), shift.double())

    @torch.no_grad()
    def add(self, current: torch.Tensor) -> None:
        """One step's ``current [B, C, H, W]``."""
        if self._pending_total is None or self._pending_total.shape != current.shape:
            self._flush()
            self._pending_total = torch.zeros(current.shape, dtype=torch.float64, device=current.device)
            self._pending_squares = torch.zeros_like(self._pending_total)
        c = current.double()  # converted once: faster than mixed-precision arithmetic
        self._pending_total.add_(c)
        self._pending_squares.addcmul_(c, c)
        self._pending_count += current.numel() // current.shape[1]

    def _flush(self) -> None:
        """Turn the pending sums of ``current`` into sums of ``z = (current - shift) / scale``."""
        n = self._pending_count
        if n == 0:
            return
        dims = (0, 2, 3)
        c_sum, c_squares = self._pending_total.sum(dims), self._pending_squares.sum(dims)
        self._pending_total.zero_()
        self._pending_squares.zero_()
        scale, shift = self._affine
        usable = scale.abs() > 1e-12
        safe = torch.where(usable, scale, torch.ones_like(scale))
        total = (c_sum - n * shift) / safe
        squares = (c_squares - 2 * shift * c_sum + n * shift * shift) / safe**2
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares
        self.usable = usable if self.usable is None else self.usable & usable
        self.count += n
        self._pending_count = 0

    @torch.no_grad()
    def update_running_stats(self, norm: nn.BatchNorm2d) -> None:
        """Blend the batch's mean and unbiased variance of ``z`` into ``norm``'s running statistics
        (channels whose gain was 0 at some step keep theirs)."""
        self._flush()
        if self.count < 2:
            return
        mean = self.total / self.count
        var = (self.squares / self.count - mean * mean).clamp_min(0) * self.count / (self.count - 1)
        if norm.momentum is None:
            rate = 1.0 / (int(norm.num_batches_tracked) + 1)
        else:
            rate = norm.momentum
        for buffer, value in ((norm.running_mean, mean), (norm.running_var, var)):
            blended = (1 - rate) * buffer.double() + rate * value
            buffer.copy_(torch.where(self.usable, blended, buffer.double()).to(buffer.dtype))
        norm.num_batches_tracked += 1


def _conv_synapse(name: str, conv: nn.Conv2d, norm: Optional[nn.BatchNorm2d]) -> _Synapse:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(
            f"model: layer {name} ({type(conv).__name__}) uses padding={conv.padding!r}, "
            f"padding_mode={conv.padding_mode!r}; TESS needs numeric zero padding"
        )
    if norm is not None and norm.running_var is None:
        raise ValueError(
            f"model: layer {name} has a BatchNorm2d without running statistics; TESS uses BatchNorm "
            "in its evaluation form (track_running_stats=True)"
        )
    weight_of = getattr(conv, "standardized_weight", lambda: conv.weight)

    def affine():
        """BatchNorm in evaluation form after the conv: ``scale * conv(x, w) + shift`` (per channel)."""
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        b = conv.bias
        shift = -norm.running_mean * scale if b is None else (b - norm.running_mean) * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        return scale, shift

    def params():
        if norm is None:
            return weight_of(), conv.bias
        scale, shift = affine()
        return weight_of() * scale.view(-1, 1, 1, 1), shift

    def op(x, w, b):
        return F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)

    outer = _conv_outer(conv.weight.shape, conv.stride, conv.padding, conv.dilation, conv.groups)
    return _Synapse(name, params, op, outer, norm, affine if norm is not None else None)


def _synapse(name: str, module: nn.Module) -> Optional[_Synapse]:
    """The synapse ``module`` is, or None when it is not one TESS recognises."""
    layer = _inner(module)
    if isinstance(layer, nn.Linear) and layer is module:
        return _Synapse(name, lambda: (layer.weight, layer.bias), F.linear, _linear_outer)
    if isinstance(layer, nn.Conv2d) and layer is not module:
        return _conv_synapse(name, layer, None)
    if (layer is not module and isinstance(layer, nn.Sequential) and len(layer) == 2
            and isinstance(layer[0], nn.Conv2d) and isinstance(layer[1], nn.BatchNorm2d)):
        return _conv_synapse(name, layer[0], layer[1])
    return None


def _is_stateless(module: nn.Module) -> bool:
    return isinstance(module, nn.Flatten) or isinstance(module, nn.Identity) or (
        _inner(module) is not module and isinstance(_inner(module), _STATELESS)
    )


@dataclass
class _Block:
    synapse: _Synapse
    neuron: LIF
    post: list[nn.Module]
    pool_size: Optional[int] = None

    @functools.cached_property
    def _cut(self) -> int:
        """Where ``post`` splits: the layers before the first Flatten feed the learning signal."""
        return next((i for i, module in enumerate(self.post) if isinstance(module, nn.Flatten)), len(self.post))

    @functools.cached_property
    def signal_layers(self) -> list[nn.Module]:
        """The layers before the first Flatten as they apply to one step ``[B, ...]``."""
        return [_inner(module) for module in self.post[:self._cut]]

    def apply_post(self, y: torch.Tensor, *, part: str = "all") -> torch.Tensor:
        """The block's layers after its neurons on one step ``[B, ...]``: ``part="signal"`` up to
        the first Flatten (the output the learning signal pools), ``"rest"`` the others."""
        modules = {"all": self.post, "signal": self.post[:self._cut], "rest": self.post[self._cut:]}[part]
        if not modules:
            return y
        y = y.unsqueeze(0)
        for module in modules:
            y = module(y)
        return y.squeeze(0)


@dataclass
class _Plan:
    front: list[nn.Module]
    blocks: list[_Block]
    head: nn.Linear


def _unsupported(name: str, module: nn.Module, why: str) -> ValueError:
    return ValueError(f"model: TESS cannot train layer {name} ({type(module).__name__}): {why}")


def _neuron_of(name: str, module: nn.Module) -> LIF:
    neuron = getattr(module, "neuron", None)
    if not isinstance(module, SpikesOnly) or not isinstance(neuron, LIF):
        raise _unsupported(
            name, module, "expected SpikesOnly(LIF) after a synapse (TESS streams the LIF "
            f"equations one step at a time), got {type(neuron or module).__name__}"
        )
    if neuron.stateful:
        raise _unsupported(name, module, "a stateful LIF carries state across batches; TESS starts each batch at rest")
    return neuron


def plan_model(model: nn.Module, pool_sizes: Sequence[int] = (4, 2, 1)) -> _Plan:
    """Split ``model.body`` into TESS blocks (synapse, LIF, stateless layers) and the readout, or
    raise a ValueError naming the first layer TESS cannot train and why."""
    body = getattr(model, "body", None)
    if not isinstance(body, nn.Sequential):
        raise ValueError(
            f"model: TESS walks model.body, an nn.Sequential of synapses, SpikesOnly(LIF) and "
            f"pooling; got {type(model).__name__} with body={type(body).__name__}"
        )
    named = list(body.named_children())
    if not named or not isinstance(named[-1][1], nn.Linear):
        last = f"{named[-1][0]} ({type(named[-1][1]).__name__})" if named else "nothing"
        raise ValueError(f"model: TESS expects the last layer of model.body to be the nn.Linear readout, got {last}")
    front: list[nn.Module] = []
    blocks: list[_Block] = []
    i = 0
    while i < len(named) - 1:
        name, module = named[i]
        synapse = _synapse(f"body.{name}", module)
        if synapse is None:
            if not _is_stateless(module):
                raise _unsupported(
                    f"body.{name}", module, "only Linear, PerStep(Conv2d[, BatchNorm2d]) followed by "
                    "SpikesOnly(LIF), and pooling, Identity or Flatten between them are supported",
                )
            (blocks[-1].post if blocks else front).append(module)
            i += 1
            continue
        if i + 1 >= len(named) - 1:
            raise _unsupported(f"body.{name}", module, "a synapse must be followed by SpikesOnly(LIF)")
        neuron = _neuron_of(f"body.{named[i + 1][0]}", named[i + 1][1])
        blocks.append(_Block(synapse, neuron, []))
        i += 2
    if not blocks:
        raise ValueError("model: TESS found no spiking layer to train in model.body")
    first, middle, last = pool_sizes
    for k, block in enumerate(blocks):
        block.pool_size = first if k == 0 else last if k == len(blocks) - 1 else middle
    return _Plan(front, blocks, named[-1][1])


# --- the rule ------------------------------------------------------------------------------------


@dataclass
class _BlockState:
    """What one block carries from step to step within a batch (no autograd graph)."""

    traces: EligibilityTraces
    moments: Optional[_ChannelMoments]
    weight: Optional[torch.Tensor] = None  # the effective (W, b) the block computes with
    bias: Optional[torch.Tensor] = None
    v: Optional[torch.Tensor] = None
    projection: Optional[torch.Tensor] = None

    def use(self, synapse: _Synapse, w: torch.Tensor, b: Optional[torch.Tensor]) -> None:
        """Compute with the effective ``(w, b)`` (detached) from now on."""
        self.weight, self.bias = w.detach(), None if b is None else b.detach()
        if self.moments is not None:
            with torch.no_grad():
                self.moments.use(*synapse.affine())


def _lif_step(neuron: LIF, v: torch.Tensor, current: torch.Tensor):
    """One step of the model's LIF (DESIGN's equations): returns ``(u, spikes, v)``."""
    beta = neuron.beta
    beta = beta.detach() if isinstance(beta, torch.Tensor) else beta
    u = beta * v + current
    s = (u >= neuron.threshold).to(current.dtype)
    if neuron.reset == "zero":
        v = u * (1 - s)
    elif neuron.reset == "subtract":
        amount = neuron.threshold if neuron.reset_amount is None else neuron.reset_amount
        v = u - amount * s
    else:
        v = u
    return u, s, v


def _unwrapped(model: nn.Module) -> nn.Module:
    """The network inside a (Distributed)DataParallel wrapper, whose forward TESS does not use."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def _set_aside_grads(optimizer: torch.optim.Optimizer) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Take every ``.grad`` the optimizer's parameters hold out of its reach (set them to None)
    and return them, so that the steps taken within a batch apply that step's updates only."""
    kept = []
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.grad is not None:
                kept.append((param, param.grad))
                param.grad = None
    return kept


class TESS:
    """TESS as a learning rule for ``spikegate train learning=tess`` (see the module docstring).

    Args:
        lambda_pre, lambda_post: trace decays in [0, 1) (authors: 0.5, 0.2).
        alpha_pre, alpha_post: causal and non-causal weights (authors: 1 and 1 for static images,
            1 and 0 for DVS data).
        pool_sizes: ``(first, middle, last)`` block pooling for the local loss (authors: 4, 2, 1).
        linear_activation: ``psi`` of linear layers: ``triangle`` (as conv layers) or ``fast_sigmoid``.
        signal_steps: give local signals only in the last ``k`` steps of each sequence (the
            authors' ``delay_ls``); None: every step.
        low_freq, high_freq: frequency range of the square waves in ``B`` (50, 512).
        sparsity: ``learning.sparsity``, the spike-rate penalty ``lambda * mean spike rate`` of the
            other rules, made local: each block's local loss at each step adds ``lambda`` times
            that block's mean output spike (see :func:`learning_signal`); 0 (default) is off.
        online: False (default, the authors'): each layer's updates are summed over the sequence
            and written into ``.grad`` for the trainer's ``optimizer.step()``. True: each time
            step's updates of the spiking layers are applied at once with ``rule.optimizer``, so
            the weights at step ``t + 1`` include the updates of steps ``<= t`` (see the module
            docstring, "Online updates").

    ``optimizer``: the optimizer of the model's parameters, used by ``online=True`` (the trainer
    sets it after building the optimizer); None by default.

    ``step(model, x [T, B, ...], y [B]) -> StepResult(loss, logits)``: ``loss`` is the readout's
    cross-entropy, ``logits [B, classes]`` the time-averaged readout, as ``model(x)`` computes them.
    """

    local_gradients = True  # writes .grad itself: averaged across processes by the trainer, not DDP

    def __init__(
        self,
        lambda_pre: float = 0.5,
        lambda_post: float = 0.2,
        alpha_pre: float = 1.0,
        alpha_post: float = 1.0,
        pool_sizes: Sequence[int] = (4, 2, 1),
        linear_activation: str = "triangle",
        signal_steps: Optional[int] = None,
        low_freq: float = 50.0,
        high_freq: float = 512.0,
        sparsity: float = 0.0,
        online: bool = False,
    ) -> None:
        self.factors = TraceFactors(lambda_pre, lambda_post, alpha_pre, alpha_post)
        self.sparsity = check_real(sparsity, "learning.sparsity")
        pool_sizes = tuple(pool_sizes)
        if len(pool_sizes) != 3:
            raise ValueError(f"pool_sizes: expected (first, middle, last), got {pool_sizes}")
        self.pool_sizes = tuple(check_int(p, "pool_sizes", minimum=1) for p in pool_sizes)
        self.linear_activation = check_choice(linear_activation, "linear_activation", ACTIVATIONS)
        self.signal_steps = None if signal_steps is None else check_int(signal_steps, "signal_steps", minimum=1)
        self.freqs = (float(low_freq), float(high_freq))
        if not isinstance(online, bool):
            raise TypeError(f"learning.online: expected true or false, got {online!r}")
        self.online = online
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self._plans: weakref.WeakKeyDictionary[nn.Module, _Plan] = weakref.WeakKeyDictionary()

    def prepare(self, model: nn.Module) -> None:
        """Check that TESS can train every layer of ``model`` (ValueError naming the first it cannot)."""
        self._plan(model)

    def _plan(self, model: nn.Module) -> _Plan:
        model = _unwrapped(model)
        plan = self._plans.get(model)
        if plan is None:
            plan = self._plans[model] = plan_model(model, self.pool_sizes)
        return plan

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """Stream ``x [T, B, ...]`` through ``model`` one step at a time, write the TESS updates of
        every spiking layer (or, online, apply them step by step) and the readout's gradient into
        ``.grad``, and return the readout's loss and time-averaged logits."""
        plan = self._plan(model)
        net = _unwrapped(model)
        if hasattr(net, "input_shape"):
            check_input(x, net.input_shape)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape[1:2]:
            raise ValueError(f"y: expected labels [B={x.shape[1]}], got {getattr(y, 'shape', type(y).__name__)}")
        optimizer = self._online_optimizer(net) if self.online else None
        T = x.shape[0]
        first_signal = 0 if self.signal_steps is None else max(0, T - self.signal_steps)
        states = [self._state(block, net.training) for block in plan.blocks]
        params = self._effective(plan, states)  # graphs of size O(weights), not O(T)
        set_aside = _set_aside_grads(optimizer) if optimizer is not None else []
        targets = F.one_hot(y, plan.head.out_features).to(x.dtype)
        features = None
        try:
            for t in range(T):
                with torch.no_grad():
                    h = x[t:t + 1]
                    for module in plan.front:
                        h = module(h)
                    h = h.squeeze(0)
                for block, state in zip(plan.blocks, states):
                    h = self._advance(block, state, h, targets if t >= first_signal else None)
                features = h if features is None else features.add_(h)
                if optimizer is not None:
                    params = self._apply_now(net, plan, states, params, optimizer)
        finally:
            for param, grad in set_aside:
                param.grad = grad
        logits = plan.head(features.flatten(1) / T)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        if optimizer is None:
            self._write_updates(params, [state.traces for state in states])
        for block, state in zip(plan.blocks, states):
            if state.moments is not None:  # after the backward passes, which read the running statistics
                state.moments.update_running_stats(block.synapse.norm)
        return StepResult(loss.detach(), logits.detach())

    def _online_optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        """``self.optimizer``, checked to hold every trainable parameter of ``net``."""
        if self.optimizer is None:
            raise ValueError(
                "optimizer: TESS(online=True) applies each time step's update with the training "
                "optimizer; expected rule.optimizer to be set (spikegate train sets it), got None"
            )
        held = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        missing = [name for name, p in net.named_parameters() if p.requires_grad and id(p) not in held]
        if missing:
            raise ValueError(
                f"optimizer: expected rule.optimizer to hold every parameter TESS trains, it lacks "
                f"{', '.join(missing)}"
            )
        return self.optimizer

    def _state(self, block: _Block, training: bool) -> "_BlockState":
        linear = block.synapse.outer is _linear_outer
        activation = self.linear_activation if linear else "triangle"
        traces = EligibilityTraces(self.factors, block.synapse.outer, block.neuron.threshold, activation)
        moments = _ChannelMoments() if block.synapse.norm is not None and training else None
        return _BlockState(traces, moments)

    @staticmethod
    def _effective(plan: _Plan, states: list["_BlockState"]) -> list:
        """Every block's effective ``(W, b)`` with its graph to the parameters (weight
        standardisation, BatchNorm folded in), the states set to compute with them."""
        params = [block.synapse.params() for block in plan.blocks]
        for block, state, (w, b) in zip(plan.blocks, states, params):
            state.use(block.synapse, w, b)
        return params

    def _apply_now(self, net: nn.Module, plan: _Plan, states: list["_BlockState"], params: list,
                   optimizer: torch.optim.Optimizer) -> list:
        """Online: apply this step's updates of the spiking layers with ``optimizer`` (averaged over
        the processes first), leave their ``.grad`` None, and return the effective parameters
        recomputed from the updated ones (the old graphs hold the weights before the step)."""
        traces = [state.traces for state in states]
        if all(trace.weight_grad is None for trace in traces):
            return params  # no learning signal at this step (signal_steps)
        self._write_updates(params, traces)
        distributed.average_gradients(net)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for trace in traces:
            trace.weight_grad = trace.bias_grad = None
        return self._effective(plan, states)

    def _advance(self, block: _Block, state: "_BlockState", h: torch.Tensor,
                 targets: Optional[torch.Tensor]) -> torch.Tensor:
        """One time step of one block: input ``h [B, ...]`` (no graph) and one-hot labels
        ``targets [B, classes]`` (None: no learning signal at this step) -> the block's output."""
        with torch.no_grad():
            current = block.synapse.op(h, state.weight, state.bias)
            if state.moments is not None:
                state.moments.add(current)
            v = torch.zeros_like(current) if state.v is None else state.v
            u, s, state.v = _lif_step(block.neuron, v, current)
        if targets is None:
            state.traces.step(h, u, None)
            with torch.no_grad():
                return block.apply_post(s)
        if state.projection is None:
            with torch.no_grad():
                size = _pool_features(block.apply_post(s[:1], part="signal"), block.pool_size).shape[1]
            state.projection = square_wave_projection(
                targets.shape[1], size, low=self.freqs[0], high=self.freqs[1], dtype=s.dtype, device=s.device
            )
        m, output = fast_learning_signal(s, targets, state.projection, pool_size=block.pool_size,
                                         layers=block.signal_layers, sparsity=self.sparsity)
        state.traces.step(h, u, m)
        with torch.no_grad():
            return block.apply_post(output, part="rest")  # the pooling is done once

    @staticmethod
    def _write_updates(params, traces: list[EligibilityTraces]) -> None:
        """Chain each layer's update of its effective (W, b) to the parameters (weight
        standardisation, BatchNorm's gain), accumulating into ``.grad``."""
        outputs, grads = [], []
        for (w, b), trace in zip(params, traces):
            for tensor, grad in ((w, trace.weight_grad), (b, trace.bias_grad)):
                if tensor is not None and grad is not None and tensor.requires_grad:
                    outputs.append(tensor)
                    grads.append(grad.to(tensor.dtype))
        if outputs:
            torch.autograd.backward(outputs, grads)

    def __repr__(self) -> str:
        f = self.factors
        return (
            f"TESS(lambda_pre={f.lambda_pre}, lambda_post={f.lambda_post}, alpha_pre={f.alpha_pre}, "
            f"alpha_post={f.alpha_post}, pool_sizes={self.pool_sizes}, online={self.online})"
        )
