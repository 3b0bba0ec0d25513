"""EnergyReport: counts priced with a technology preset, per layer and per inference (pJ, bits).

Energy of a layer = compute + memory traffic:

* compute: ``SynOps * e_ac + MAC ops * e_mac`` (synapses, attention, unfolded BatchNorm),
  ``ops * e_cmp`` (max-pool) or ``* e_ac`` (average-pool), and for neurons
  ``neuron steps * (muls * e_mul + adds * e_ac + compares * e_cmp + transcendentals * e_exp)``;
* memory traffic (bits): one weight read per operation done (plus a bias read per output), and the
  membrane state read and written once per neuron step; priced at ``e_mem`` per bit (SRAM by default).

Bit budget, after Shen et al., "Is Conventional SNN Really Efficient? A Perspective from Network
Quantization" (arXiv 2311.10802). The paper has no public code; the per-layer formula below is our
reconstruction from its text (a layer's compute bits = operations x weight bits x input bits, over
all T steps), not a copy of the authors' implementation:

* dense: ``MACs_per_step * T * weight_bits * spike_bits`` for spike-fed layers (``activation_bits``
  for analog-fed ones), i.e. ``MACs * weight_bits * spike_bits * T`` as the paper writes it;
* sparsity-aware: ``SynOps * weight_bits * spike_bits + MAC ops * weight_bits * activation_bits``;
* storage: ``params * weight_bits + neurons * state values * state_bits``.

The quantized ANN of the same architecture runs once (T = 1) with ``b``-bit activations where the
SNN has spikes, and keeps no membrane. At matched levels an SNN of T steps carries T + 1 levels per
neuron (0..T spikes), a b-bit ANN 2^b, so ``b = ceil(log2(T + 1))`` (the mapping of Yan et al.,
arXiv 2409.08290, which 2311.10802 argues for in words).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .counter import LayerCounts, ModelCounts
from .presets import TechnologyPreset

__all__ = ["EnergyReport", "LayerRow"]


@dataclass
class LayerRow:
    """One layer, per inference. Energies in pJ, traffic and budgets in bits."""

    name: str
    kind: str
    macs: float
    rate_in: Optional[float]
    rate_in_soft: Optional[float]
    synops: float
    mac_ops: float
    neuron_ops: float
    rate_out: Optional[float]
    rate_out_soft: Optional[float]
    memory_bits: float
    compute_pj: float
    memory_pj: float
    energy_pj: float
    bit_budget: float
    bit_budget_dense: float
    ann_bit_budget: float
    params: int
    state_values: float
    neuron_steps: float
    spikes: float
    note: str = ""
    spiking: bool = True   # False: a neuron-priced unit without spikes (left out of spike rates)


def _price(c: LayerCounts, p: TechnologyPreset, time_steps: float, ann_bits: int) -> LayerRow:
    w = p.weight_bits
    neuron_ops = compute = state = 0.0
    rate_out = rate_out_soft = None
    if c.cost is not None:
        k = c.cost
        neuron_ops = c.neuron_steps * (k.muls + k.adds + k.compares + k.transcendentals)
        compute = c.neuron_steps * (k.muls * p.e_mul_pj + k.adds * p.e_ac_pj + k.compares * p.e_cmp_pj
                                    + k.transcendentals * p.e_exp_pj)
        traffic = c.neuron_steps * k.state_values * p.state_bits * 2  # read and write per step
        state = c.neuron_steps / max(time_steps, 1) * k.state_values
        if c.neuron_steps and k.spiking:
            rate_out = c.spikes / c.neuron_steps
            rate_out_soft = c.spikes_soft / c.neuron_steps if k.relaxed else None
    else:
        compute = c.synops * p.e_ac_pj + c.mac_ops * p.e_mac_pj
        compute += c.pool_ops * (p.e_cmp_pj if c.pool_is_max else p.e_ac_pj)
        traffic = c.weight_reads * w
    analog_macs = c.macs - c.event_macs
    spike_fed = c.event_macs / max(time_steps, 1)
    return LayerRow(
        name=c.name, kind=c.kind, macs=c.macs, rate_in=c.rate_in, rate_in_soft=c.rate_in_soft,
        synops=c.synops, mac_ops=c.mac_ops, neuron_ops=neuron_ops, rate_out=rate_out,
        rate_out_soft=rate_out_soft, memory_bits=traffic, compute_pj=compute,
        memory_pj=traffic * p.e_mem_pj_per_bit, energy_pj=compute + traffic * p.e_mem_pj_per_bit,
        bit_budget=(c.synops * p.spike_bits + c.mac_ops * p.activation_bits) * w,
        bit_budget_dense=(c.event_macs * p.spike_bits + analog_macs * p.activation_bits) * w,
        ann_bit_budget=(spike_fed * ann_bits + analog_macs / max(time_steps, 1) * p.activation_bits) * w,
        params=c.params, state_values=state, neuron_steps=c.neuron_steps, spikes=c.spikes, note=c.note,
        spiking=c.cost is None or c.cost.spiking,
    )


@dataclass
class EnergyReport:
    """What one inference costs, layer by layer, under a technology preset.

    Totals are per inference: ``energy_pj`` (= ``compute_pj + memory_pj``), ``macs`` (dense),
    ``synops``, ``mac_ops``, ``bit_budget`` (sparsity-aware) and ``bit_budget_dense``, ``spike_rate``
    (hard spikes per neuron and step), ``storage_bits``; and the quantized-ANN comparison at
    matched levels (``ann_activation_bits``, ``ann_bit_budget``, ``ann_storage_bits``).
    """

    preset: TechnologyPreset
    samples: int
    time_steps: float
    layers: list[LayerRow]
    not_counted: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_counts(cls, counts: ModelCounts, preset: TechnologyPreset) -> "EnergyReport":
        bits = matched_ann_bits(counts.time_steps)
        rows = [_price(c, preset, counts.time_steps, bits) for c in counts.layers]
        return cls(preset, counts.samples, counts.time_steps, rows, counts.not_counted, counts.notes)

    # ---------------------------------------------------------------- totals
    def _sum(self, key: str) -> float:
        return float(sum(getattr(r, key) for r in self.layers))

    energy_pj = property(lambda self: self._sum("energy_pj"))
    compute_pj = property(lambda self: self._sum("compute_pj"))
    memory_pj = property(lambda self: self._sum("memory_pj"))
    macs = property(lambda self: self._sum("macs"))
    synops = property(lambda self: self._sum("synops"))
    mac_ops = property(lambda self: self._sum("mac_ops"))
    bit_budget = property(lambda self: self._sum("bit_budget"))
    bit_budget_dense = property(lambda self: self._sum("bit_budget_dense"))
    ann_bit_budget = property(lambda self: self._sum("ann_bit_budget"))

    @property
    def spike_rate(self) -> float:
        steps = sum(r.neuron_steps for r in self.layers if r.spiking)
        return self._sum("spikes") / steps if steps else 0.0

    @property
    def ann_activation_bits(self) -> int:
        return matched_ann_bits(self.time_steps)

    @property
    def storage_bits(self) -> float:
        p = self.preset
        return sum(r.params for r in self.layers) * p.weight_bits + self._sum("state_values") * p.state_bits

    @property
    def ann_storage_bits(self) -> float:
        return sum(r.params for r in self.layers) * self.preset.weight_bits

    def totals(self) -> dict[str, Any]:
        """Every total per inference, by name."""
        keys = ("energy_pj", "compute_pj", "memory_pj", "macs", "synops", "mac_ops", "spike_rate",
                "bit_budget", "bit_budget_dense", "storage_bits", "ann_activation_bits",
                "ann_bit_budget", "ann_storage_bits")
        return {k: getattr(self, k) for k in keys}

    def metrics(self) -> dict[str, Any]:
        """The keys the trainer writes into metrics.json."""
        return {
            "spike_rate": self.spike_rate,
            "synops_per_inference": self.synops,
            "dense_macs_per_inference": self.macs,
            "energy_pj_per_inference": self.energy_pj,
            "bit_budget_per_inference": self.bit_budget,
            "energy_preset": self.preset.name,
        }

    # ---------------------------------------------------------------- output
    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset.constants(), "sources": dict(self.preset.sources),
            "samples": self.samples, "time_steps": self.time_steps, "units": UNITS,
            "totals": self.totals(), "layers": [asdict(r) for r in self.layers],
            "not_counted": [{"name": n, "type": t} for n, t in self.not_counted], "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def _table(self) -> tuple[list[str], list[list[str]]]:
        soft = any(r.rate_in_soft is not None or r.rate_out_soft is not None for r in self.layers)
        head = ["layer", "kind", "MACs", "rate in", *(["soft rate in"] if soft else []), "SynOps",
                "MAC ops", "neuron ops", "rate out", *(["soft rate out"] if soft else []),
                "memory bits", "energy pJ", "bit budget", "note"]
        body = []
        for r in self.layers:
            body.append([
                r.name, r.kind, _num(r.macs), _rate(r.rate_in), *([_rate(r.rate_in_soft)] if soft else []),
                _num(r.synops), _num(r.mac_ops), _num(r.neuron_ops), _rate(r.rate_out),
                *([_rate(r.rate_out_soft)] if soft else []), _num(r.memory_bits), _num(r.energy_pj),
                _num(r.bit_budget), r.note,
            ])
        total = ["total", "", _num(self.macs), "", *([""] if soft else []), _num(self.synops),
                 _num(self.mac_ops), _num(self._sum("neuron_ops")), _rate(self.spike_rate),
                 *([""] if soft else []), _num(self._sum("memory_bits")), _num(self.energy_pj),
                 _num(self.bit_budget), ""]
        return head, [*body, total]

    def _summary_lines(self) -> list[str]:
        t = self.totals()
        lines = [
            f"preset {self.preset.name} (memory: {self.preset.memory}); per inference over "
            f"{self.samples} samples, T = {self.time_steps:g}",
            f"energy {_num(t['energy_pj'])} pJ = compute {_num(t['compute_pj'])} pJ + memory "
            f"{_num(t['memory_pj'])} pJ; SynOps {_num(t['synops'])}, MAC ops {_num(t['mac_ops'])}, "
            f"dense MACs {_num(t['macs'])}, spike rate {t['spike_rate']:.4f}",
            f"bit budget (compute): SNN {_num(t['bit_budget'])} sparse / {_num(t['bit_budget_dense'])} "
            f"dense; ANN with {t['ann_activation_bits']}-bit activations (matched levels: T + 1 = "
            f"{self.time_steps + 1:g} <= 2^{t['ann_activation_bits']}), T = 1: {_num(t['ann_bit_budget'])}",
            f"storage bits: SNN {_num(t['storage_bits'])} (weights + membrane), ANN "
            f"{_num(t['ann_storage_bits'])}",
        ]
        lines += [f"not counted: {name} ({kind})" for name, kind in self.not_counted]
        lines += [f"note: {note}" for note in self.notes]
        return lines

    def to_markdown(self) -> str:
        head, body = self._table()
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join([*lines, "", *(f"- {line}" for line in self._summary_lines())]) + "\n"

    def __str__(self) -> str:
        head, body = self._table()
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        fmt = lambda row: "  ".join(c.ljust(w) if i < 2 or i == len(row) - 1 else c.rjust(w)
                                    for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        rule = "-" * len(fmt(head))
        return "\n".join([fmt(head), rule, *map(fmt, body[:-1]), rule, fmt(body[-1]), "",
                          *self._summary_lines()])


UNITS = {"energy": "pJ per inference", "memory, bit budget, storage": "bits per inference",
         "rates": "events per element and time step"}


def matched_ann_bits(time_steps: float) -> int:
    """Activation bits of the ANN at matched levels: the least b with 2^b >= T + 1."""
    return max(1, math.ceil(math.log2(time_steps + 1))) if time_steps > 0 else 1


def _num(value: float) -> str:
    return f"{value:.4g}" if value else "0"


def _rate(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"
