"""Count spikes, SynOps and dense MACs while a model runs.

A synaptic layer (``nn.Linear``, ``nn.Conv2d``) whose input holds only non-negative integers
(spikes, or event counts) is spike-driven: it costs ``rate_in * MACs`` accumulates (SynOps), where
``rate_in`` is the mean input value, i.e. the events per input element. Any other input costs the
full ``MACs`` multiply-accumulates. Energy uses the 45 nm figures of Horowitz (ISSCC 2014), as
SpikingJelly's ``estimate_simple_energy`` does: MAC 4.6 pJ, AC 0.9 pJ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from spikegate.neurons.lif import LIF

__all__ = ["ActivityMonitor", "ActivityTotals", "E_MAC_PJ", "E_AC_PJ"]

E_MAC_PJ = 4.6
E_AC_PJ = 0.9


def _macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(module, nn.Linear):
        return inp.numel() * module.out_features
    assert isinstance(module, nn.Conv2d)
    per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
    return out.numel() * per_output


@dataclass
class ActivityTotals:
    """Sums over everything the monitor saw; divide by ``samples`` for per-inference figures."""

    samples: int = 0
    spikes: float = 0.0
    neuron_steps: int = 0
    synops: float = 0.0
    dense_macs: float = 0.0

    @property
    def spike_rate(self) -> float:
        return self.spikes / self.neuron_steps if self.neuron_steps else 0.0

    def per_inference(self) -> dict[str, float]:
        n = max(self.samples, 1)
        synops, macs = self.synops / n, self.dense_macs / n
        return {
            "spike_rate": self.spike_rate,
            "synops_per_inference": synops,
            "dense_macs_per_inference": macs,
            "energy_pj_per_inference": synops * E_AC_PJ + macs * E_MAC_PJ,
        }


class ActivityMonitor:
    """Context manager that hooks every LIF, Linear and Conv2d module of ``model``.

    >>> with ActivityMonitor(model) as monitor:
    ...     model(x)                     # x: [T, B, ...]
    ...     monitor.add_samples(x.shape[1])
    >>> monitor.totals.per_inference()
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.totals = ActivityTotals()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def add_samples(self, n: int) -> None:
        self.totals.samples += int(n)

    def __enter__(self) -> "ActivityMonitor":
        for module in self.model.modules():
            if isinstance(module, LIF):
                self._handles.append(module.register_forward_hook(self._on_neuron))
            elif isinstance(module, (nn.Linear, nn.Conv2d)):
                self._handles.append(module.register_forward_hook(self._on_synapse))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _on_neuron(self, module, inputs, output) -> None:
        spikes = output[0]
        self.totals.spikes += float(spikes.detach().sum())
        self.totals.neuron_steps += spikes.numel()

    def _on_synapse(self, module, inputs, output) -> None:
        x = inputs[0].detach()
        macs = _macs(module, x, output)
        if bool(((x >= 0) & (x == x.round())).all()):  # one pass, one host sync
            self.totals.synops += macs * float(x.sum()) / x.numel()
        else:
            self.totals.dense_macs += macs
