"""Count what every layer of a model does while it runs: the one counting path of spikegate.

:class:`EnergyCounter` hooks the modules that do the work (not the wrappers around them) and
accumulates per-layer sums on the model's device; :meth:`EnergyCounter.counts` reads them back with
one host synchronisation. Training, ``spikegate evaluate``, ``spikegate energy`` and
:func:`spikegate.energy.estimate_energy` all count through this class.

What is counted, per layer (sums over every sample seen; :meth:`counts` divides by the samples):

* Linear, Conv1d/2d/3d (grouped and depthwise too): the dense MACs an ANN would do; when the input
  holds only non-negative integers (spikes, or event counts) the layer is spike-driven and its
  SynOps are ``sum over input events of the event's fan-out`` (exact at padded borders, as
  SpikingJelly counts them), otherwise every MAC is performed (a MAC-priced layer: the encoding
  layer, a layer fed soft spikes).
* BatchNorm: folded into the conv/linear whose output it takes directly (free at inference), else
  one multiply-add per element.
* LayerNorm (statistics of each input, so never folded): 4 MAC-priced operations per element (the
  mean's accumulate, the variance's multiply-accumulate, ``(x - mean) * rstd`` and the affine
  ``gamma * y + beta``; the mean's add is priced as a MAC, an overestimate of ``e_mac - e_ac`` per
  element, and the one ``rsqrt`` per normalised row is left out), and a read of ``gamma`` and
  ``beta`` per element.
* Embedding: no arithmetic; one weight read per output value (a row of the table per token).
* Pooling: ``window - 1`` comparisons (max) or additions (average) per output.
* Neurons: any module with ``neuron_cost()`` (see :mod:`spikegate.neurons.cost`): neuron steps,
  hard spikes (``output >= 0.5``) and the soft sum of the output (relaxed neurons); a unit whose
  cost says ``spiking=False`` (the dual-path block's decay recurrence and gate) counts its steps
  only.
* Attention: any module with ``attention_products()`` (see :mod:`spikegate.energy.attention`).
* Anything else that holds parameters or is a leaf is listed as not counted, with name and type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from spikegate.neurons.cost import NeuronCost

__all__ = ["EnergyCounter", "LayerCounts", "ModelCounts"]

# slots of a layer's device accumulator
SYNOPS, EVENT_MACS, MAC_OPS, EVENT_SUM, EVENT_ELEMS, VALUE_SUM, HARD_COUNT = range(7)
_SLOTS = 7

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
              nn.AdaptiveMaxPool3d)
_AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
              nn.AdaptiveAvgPool3d)
# cost nothing at inference: reshapes and identities
_FREE = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


@dataclass
class LayerCounts:
    """One layer's counts per inference (operations and values, not energies).

    ``role`` is ``"synapse"`` (Linear, conv, attention), ``"norm"``, ``"layer_norm"``,
    ``"embedding"``, ``"pool"`` or ``"neuron"``.
    ``macs``: dense MACs; ``event_macs``: the part of them whose input was events; ``synops``:
    accumulates done for events; ``mac_ops``: multiply-accumulates done on analog input;
    ``pool_ops``: comparisons (max) or additions (average); ``weight_reads``: weights and biases
    read (one per operation); ``rate_in``: events per input element and step (None for analog
    input); ``rate_in_soft``: mean input of a layer fed soft spikes. Neurons: ``neuron_steps`` (neurons
    x steps), ``spikes`` (hard), ``spikes_soft``, ``cost`` per neuron and step.
    """

    name: str
    kind: str
    role: str
    params: int = 0
    macs: float = 0.0
    event_macs: float = 0.0
    synops: float = 0.0
    mac_ops: float = 0.0
    pool_ops: float = 0.0
    pool_is_max: bool = True
    weight_reads: float = 0.0
    rate_in: Optional[float] = None
    rate_in_soft: Optional[float] = None
    neuron_steps: float = 0.0
    spikes: float = 0.0
    spikes_soft: float = 0.0
    cost: Optional[NeuronCost] = None
    note: str = ""


@dataclass
class ModelCounts:
    """What an :class:`EnergyCounter` saw, per inference."""

    layers: list[LayerCounts]
    samples: int
    time_steps: float
    not_counted: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Layer:
    name: str
    module: nn.Module
    role: str
    calls: int = 0
    macs: int = 0
    reads: int = 0            # weight reads known from shapes (biases, unfolded norms)
    in_elems: int = 0
    pool_ops: int = 0
    neuron_steps: int = 0
    soft_fed: bool = False
    folded_into: str = ""
    sums: Optional[torch.Tensor] = None     # [_SLOTS] float64 on the device
    known: list = field(default_factory=lambda: [0.0] * _SLOTS)  # the same slots, known on the host

    def add(self, values: dict[int, object]) -> None:
        """Add device tensors on the device and Python numbers on the host: no copy either way
        (a Python number sent to a GPU would be a blocking copy on every call)."""
        tensors = {slot: v for slot, v in values.items() if isinstance(v, torch.Tensor)}
        for slot, v in values.items():
            if slot not in tensors:
                self.known[slot] += float(v)  # type: ignore[arg-type]
        if not tensors:
            return
        device = next(iter(tensors.values())).device
        zero = torch.zeros((), dtype=torch.float64, device=device)
        row = torch.stack([tensors[slot].to(torch.float64) if slot in tensors else zero for slot in range(_SLOTS)])
        self.sums = row if self.sums is None else self.sums + row


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _is_events(x: torch.Tensor) -> torch.Tensor:
    """A device bool: ``x`` holds only non-negative integers (no host sync)."""
    return ((x >= 0) & (x == torch.round(x))).all()


def _conv_fanout(module: nn.Module, spatial: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``[*spatial]``: how many (output position, kernel tap) pairs read each input position.

    The gradient of ``sum(conv(x, ones))`` with respect to ``x``; through ``F.pad`` for the
    reflect/replicate/circular padding modes, whose padded copies count for their source."""
    conv = (F.conv1d, F.conv2d, F.conv3d)[len(spatial) - 1]
    x0 = torch.zeros(1, 1, *spatial, dtype=torch.float64, device=device, requires_grad=True)
    kernel = torch.ones(1, 1, *module.kernel_size, dtype=torch.float64, device=device)
    with torch.enable_grad():
        if module.padding_mode != "zeros":
            padded = F.pad(x0, module._reversed_padding_repeated_twice, mode=module.padding_mode)
            y = conv(padded, kernel, None, module.stride, 0, module.dilation)
        else:
            y = conv(x0, kernel, None, module.stride, module.padding, module.dilation)
        (grad,) = torch.autograd.grad(y.sum(), x0)
    return grad[0, 0]


class EnergyCounter:
    """Context manager that counts every layer of ``model`` while it runs.

    >>> with torch.no_grad(), EnergyCounter(model) as counter:
    ...     model(x)                              # x: [T, B, ...]
    ...     counter.add_samples(B, time_steps=T)
    >>> counter.counts()                          # per inference; one host sync

    Accumulation stays on the device; nothing reads a value back until :meth:`counts`.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.samples = 0
        self._time_step_sum = 0.0
        self._layers: list[_Layer] = []
        self._not_counted: list[tuple[str, str]] = []
        self._handles: list = []
        self._fanouts: dict[tuple, torch.Tensor] = {}
        self._last_synapse: Optional[tuple[int, int, str]] = None  # storage, numel, name
        self._soft: set[int] = set()

    def add_samples(self, n: int, time_steps: int) -> None:
        """Record that the calls since the last one covered ``n`` samples of ``time_steps`` steps."""
        self.samples += int(n)
        self._time_step_sum += int(n) * int(time_steps)

    # ---------------------------------------------------------------- hooking
    def __enter__(self) -> "EnergyCounter":
        self._handles.append(self.model.register_forward_pre_hook(self._on_model_call))
        skip: tuple[str, ...] = ()
        for name, module in self.model.named_modules():
            if skip and any(name.startswith(prefix + ".") for prefix in skip):
                continue
            role = self._role(module)
            if role is None:
                own_params = any(True for _ in module.parameters(recurse=False))
                is_leaf = not any(True for _ in module.children())
                if (is_leaf and not isinstance(module, _FREE)) or own_params:
                    self._not_counted.append((name or "(model)", type(module).__name__))
                continue
            if role in ("neuron", "synapse"):
                skip += (name,)  # a neuron's or an attention block's insides are its own business
            layer = _Layer(name or "(model)", module, role)
            self._layers.append(layer)
            self._handles.append(module.register_forward_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._last_synapse = None
        self._soft.clear()

    @staticmethod
    def _role(module: nn.Module) -> Optional[str]:
        if callable(getattr(module, "neuron_cost", None)):
            return "neuron"
        if callable(getattr(module, "attention_products", None)):
            return "synapse"
        if isinstance(module, (nn.Linear, *_CONVS)):
            return "synapse"
        if isinstance(module, _NORMS):
            return "norm"
        if isinstance(module, nn.LayerNorm):
            return "layer_norm"
        if isinstance(module, nn.Embedding):
            return "embedding"
        if isinstance(module, (*_MAX_POOLS, *_AVG_POOLS)):
            return "pool"
        return None

    def _on_model_call(self, module, inputs) -> None:
        self._soft.clear()  # storages are reused between calls

    def _hook(self, layer: _Layer):
        on_call = {"neuron": self._on_neuron, "synapse": self._on_synapse, "norm": self._on_norm,
                   "layer_norm": self._on_layer_norm, "embedding": self._on_embedding,
                   "pool": self._on_pool}[layer.role]

        def hook(module, inputs, output):
            layer.calls += 1
            x = inputs[0].detach() if inputs and isinstance(inputs[0], torch.Tensor) else None
            out = output[0] if isinstance(output, (tuple, list)) else output
            on_call(layer, x, out.detach(), inputs, output)

        return hook

    # ---------------------------------------------------------------- per kind
    def _on_neuron(self, layer: _Layer, x, out, inputs, output) -> None:
        layer.neuron_steps += out.numel()
        cost = layer.module.neuron_cost()
        if not cost.spiking:
            return
        if cost.relaxed:
            self._soft.add(_storage(out))
        layer.add({VALUE_SUM: out.sum(dtype=torch.float64), HARD_COUNT: (out >= 0.5).sum()})

    def _on_synapse(self, layer: _Layer, x, out, inputs, output) -> None:
        module = layer.module
        if callable(getattr(module, "attention_products", None)):
            self._on_attention(layer, module.attention_products(inputs, output), out)
            return
        fed_soft = _storage(x) in self._soft
        layer.soft_fed |= fed_soft
        if isinstance(module, nn.Linear):
            macs = x.numel() * module.out_features
            fanout_ops = x.sum(dtype=torch.float64) * module.out_features
        else:
            spatial = tuple(x.shape[-len(module.kernel_size):])
            macs = out.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
            key = (id(module), spatial, x.device)
            if key not in self._fanouts:
                self._fanouts[key] = _conv_fanout(module, spatial, x.device)
            per_position = x.sum(dim=tuple(range(x.dim() - len(spatial))), dtype=torch.float64)
            fanout_ops = (per_position * self._fanouts[key]).sum() * (module.out_channels // module.groups)
        events = _is_events(x)
        zero = torch.zeros((), dtype=torch.float64, device=x.device)
        x_sum = x.sum(dtype=torch.float64)
        layer.add({
            SYNOPS: torch.where(events, fanout_ops, zero), EVENT_MACS: events * macs,
            MAC_OPS: torch.where(events, zero, zero + macs), EVENT_SUM: torch.where(events, x_sum, zero),
            EVENT_ELEMS: events * x.numel(), VALUE_SUM: x_sum, HARD_COUNT: (x >= 0.5).sum(),
        })
        layer.macs += macs
        layer.in_elems += x.numel()
        layer.reads += out.numel() if getattr(module, "bias", None) is not None else 0
        self._last_synapse = (_storage(out), out.numel(), layer.name)

    def _on_attention(self, layer: _Layer, products, out) -> None:
        ops = products.active_ops()
        layer.macs += products.dense_ops
        if products.spiking:
            layer.add({SYNOPS: ops, EVENT_MACS: products.dense_ops})
        else:
            layer.add({MAC_OPS: ops})

    def _on_norm(self, layer: _Layer, x, out, inputs, output) -> None:
        last = self._last_synapse
        if last is not None and last[0] == _storage(x) and last[1] == x.numel():
            layer.folded_into = last[2]
            return
        layer.macs += x.numel()
        layer.reads += 2 * x.numel()  # scale and shift
        layer.add({MAC_OPS: x.numel()})

    def _on_layer_norm(self, layer: _Layer, x, out, inputs, output) -> None:
        layer.macs += 4 * x.numel()
        affine = sum(p is not None for p in (layer.module.weight, layer.module.bias))
        layer.reads += affine * x.numel()
        layer.add({MAC_OPS: 4 * x.numel()})

    def _on_embedding(self, layer: _Layer, x, out, inputs, output) -> None:
        layer.reads += out.numel()

    def _on_pool(self, layer: _Layer, x, out, inputs, output) -> None:
        dims = int(type(layer.module).__name__[-2])  # MaxPool2d -> 2
        kernel = getattr(layer.module, "kernel_size", None)
        if kernel is None:  # adaptive: the widest window
            kernel = [math.ceil(i / o) for i, o in zip(x.shape[-dims:], out.shape[-dims:])]
        window = math.prod(kernel) if isinstance(kernel, (tuple, list)) else kernel ** dims
        layer.pool_ops += out.numel() * (window - 1)
        if _storage(x) in self._soft:
            self._soft.add(_storage(out))

    # ---------------------------------------------------------------- read back
    def counts(self) -> ModelCounts:
        """Per-inference counts of every layer that ran; the one host synchronisation."""
        ran = [layer for layer in self._layers if layer.calls]
        by_device: dict[torch.device, list[int]] = {}
        for i, layer in enumerate(ran):
            if layer.sums is not None:
                by_device.setdefault(layer.sums.device, []).append(i)
        sums = {i: list(layer.known) for i, layer in enumerate(ran)}
        for indices in by_device.values():
            values = torch.stack([ran[i].sums for i in indices]).tolist()
            for i, row in zip(indices, values):
                sums[i] = [a + b for a, b in zip(sums[i], row)]
        n = max(self.samples, 1)
        layers = [self._layer_counts(layer, sums[i], n) for i, layer in enumerate(ran)]
        notes = []
        idle = [layer.name for layer in self._layers if not layer.calls]
        if idle:
            notes.append(f"hooked but never called (not in the forward pass, or called functionally): {idle}")
        spiking = [l for l in layers if l.role == "neuron" and l.cost.spiking]
        if self.samples and spiking and not any(l.spikes for l in spiking):
            notes.append("no neuron spiked: SynOps are zero")
        return ModelCounts(layers, self.samples, self._time_step_sum / n, list(self._not_counted), notes)

    @staticmethod
    def _layer_counts(layer: _Layer, s: list[float], n: int) -> LayerCounts:
        module = layer.module
        row = LayerCounts(
            name=layer.name, kind=type(module).__name__, role=layer.role,
            params=sum(p.numel() for p in module.parameters()),
            macs=layer.macs / n, event_macs=s[EVENT_MACS] / n, synops=s[SYNOPS] / n,
            mac_ops=s[MAC_OPS] / n, pool_ops=layer.pool_ops / n,
            pool_is_max=isinstance(module, _MAX_POOLS),
        )
        if layer.role == "neuron":
            row.cost = module.neuron_cost()
            row.neuron_steps = layer.neuron_steps / n
            row.spikes, row.spikes_soft = s[HARD_COUNT] / n, s[VALUE_SUM] / n
            return row
        row.weight_reads = (s[SYNOPS] + s[MAC_OPS] + layer.reads) / n
        if layer.role == "layer_norm":  # its arithmetic reads no weights; gamma and beta are reads
            row.weight_reads = layer.reads / n
        if layer.folded_into:
            row.params, row.note = 0, f"folded into {layer.folded_into}"
        if layer.soft_fed and layer.in_elems:
            row.rate_in, row.rate_in_soft = s[HARD_COUNT] / layer.in_elems, s[VALUE_SUM] / layer.in_elems
            row.note = "fed soft spikes: MAC-priced as run"
        elif s[EVENT_ELEMS]:
            row.rate_in = s[EVENT_SUM] / s[EVENT_ELEMS]
        return row
