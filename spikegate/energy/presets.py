"""Technology presets: the energy of one operation and of one memory bit, with each figure's source.

All energies are in picojoules (pJ). The arithmetic figures are Horowitz, "Computing's energy
problem (and what we can do about it)", ISSCC 2014, table for a 45 nm process at 0.9 V:

=========  =========  =========  ==============================
operation  add (pJ)   mul (pJ)   MAC = mul + add (pJ)
=========  =========  =========  ==============================
int8       0.03       0.2        0.23
int32      0.1        3.1        3.2
fp16       0.4        1.1        1.5
fp32       0.9        3.7        4.6
=========  =========  =========  ==============================

Memory (same table): a 64-bit read from a 32 KB SRAM costs 20 pJ (0.3125 pJ/bit), from DRAM
1.3-2.6 nJ (the low end, 1300/64 = 20.3 pJ/bit, is used here). A spike-driven synaptic operation is
an accumulate (AC, one add); an analog-fed one a multiply-accumulate (MAC), as in SpikingJelly's
``estimate_simple_energy`` (MAC 4.6 pJ, AC 0.9 pJ at fp32).

Two figures are assumptions, not measurements, and are marked so in each preset's ``sources``: a
comparison (threshold test, max-pool) costs one add, and a transcendental (exp, log, sigmoid) costs
a range-reduced degree-4 polynomial, 4 muls + 4 adds (Horowitz gives no figure for either).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from spikegate.arguments import check_choice

__all__ = ["TechnologyPreset", "PRESETS", "resolve_preset", "preset_from_config"]

HOROWITZ = "Horowitz, Computing's energy problem, ISSCC 2014, 45 nm 0.9 V"
ASSUMED_CMP = "assumption: a comparison costs one add"
ASSUMED_EXP = "assumption: exp/log/sigmoid = range-reduced degree-4 polynomial, 4 muls + 4 adds"
SRAM = f"{HOROWITZ}: 32 KB SRAM, 20 pJ per 64-bit read"
DRAM = f"{HOROWITZ}: DRAM, 1.3-2.6 nJ per 64-bit access (low end)"


@dataclass(frozen=True)
class TechnologyPreset:
    """Named energy constants (pJ) and bit widths; any field can be overridden by name.

    Attributes:
        e_mac_pj: one multiply-accumulate (a synaptic op fed analog values, a BatchNorm element).
        e_ac_pj: one accumulate (a spike-driven synaptic op; a neuron's add).
        e_mul_pj: one multiplication in a neuron update (the leak).
        e_cmp_pj: one comparison or select (threshold test, zero reset, max-pool).
        e_exp_pj: one transcendental (exp, log, sigmoid) of a relaxed neuron.
        e_sram_pj_per_bit, e_dram_pj_per_bit: one bit read or written in on-chip SRAM / in DRAM.
        memory: which of the two prices the memory traffic, ``"sram"`` or ``"dram"``.
        weight_bits: bits per weight; state_bits: bits per membrane value; spike_bits: bits per spike;
        activation_bits: bits of an analog value fed to a layer (the encoding layer's input, the ANN).
        sources: where each figure comes from, by field name.
    """

    name: str
    e_mac_pj: float
    e_ac_pj: float
    e_mul_pj: float
    e_cmp_pj: float
    e_exp_pj: float
    weight_bits: int
    state_bits: int
    activation_bits: int
    spike_bits: int = 1
    e_sram_pj_per_bit: float = 20.0 / 64
    e_dram_pj_per_bit: float = 1300.0 / 64
    memory: str = "sram"
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def e_mem_pj_per_bit(self) -> float:
        return self.e_sram_pj_per_bit if self.memory == "sram" else self.e_dram_pj_per_bit

    def constants(self) -> dict[str, Any]:
        """Every field but ``sources``, for JSON and tables."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sources"}


def _preset(name: str, add: float, mul: float, bits: int) -> TechnologyPreset:
    op = f"{HOROWITZ}: {name.split('-')[1]} add {add} pJ, mul {mul} pJ"
    return TechnologyPreset(
        name=name, e_mac_pj=round(mul + add, 4), e_ac_pj=add, e_mul_pj=mul, e_cmp_pj=add,
        e_exp_pj=round(4 * (mul + add), 4), weight_bits=bits, state_bits=bits, activation_bits=bits,
        sources={
            "e_mac_pj": f"{op}; MAC = mul + add", "e_ac_pj": op, "e_mul_pj": op,
            "e_cmp_pj": ASSUMED_CMP, "e_exp_pj": ASSUMED_EXP,
            "e_sram_pj_per_bit": SRAM, "e_dram_pj_per_bit": DRAM,
        },
    )


PRESETS: dict[str, TechnologyPreset] = {
    p.name: p
    for p in (
        _preset("45nm-fp32", add=0.9, mul=3.7, bits=32),
        _preset("45nm-fp16", add=0.4, mul=1.1, bits=16),
        _preset("45nm-int32", add=0.1, mul=3.1, bits=32),
        _preset("45nm-int8", add=0.03, mul=0.2, bits=8),
    )
}

_BIT_FIELDS = ("weight_bits", "state_bits", "activation_bits", "spike_bits")


def _check_constant(name: str, value: Any) -> Any:
    if name == "memory":
        return check_choice(value, "memory", ("sram", "dram"))
    if value is None:
        raise ValueError(f"{name}: expected a number, got None (leave it out to use the preset's value)")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if name in _BIT_FIELDS:
        if value != int(value) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        return int(value)
    if value < 0:
        raise ValueError(f"{name}: expected an energy >= 0 pJ, got {value!r}")
    return float(value)


def resolve_preset(preset: str | TechnologyPreset = "45nm-fp32", **constants: Any) -> TechnologyPreset:
    """The preset named ``preset`` with ``constants`` (fields of :class:`TechnologyPreset`) replaced.

    A replaced figure's source becomes ``"user constant"``. Raises ValueError on an unknown preset
    (listing the known ones), an unknown constant, or a missing, negative or non-finite value."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
        preset = PRESETS[preset]
    elif not isinstance(preset, TechnologyPreset):
        raise ValueError(f"preset: expected a preset name or a TechnologyPreset, got {type(preset).__name__}")
    known = set(preset.constants()) - {"name"}
    unknown = sorted(set(constants) - known)
    if unknown:
        raise ValueError(f"energy constants: expected names among {sorted(known)}, got {unknown}")
    if not constants:
        return preset
    checked = {k: _check_constant(k, v) for k, v in constants.items()}
    sources = {**preset.sources, **{k: "user constant" for k in checked}}
    return dataclasses.replace(preset, **checked, sources=sources)


def preset_from_config(energy: Optional[Mapping[str, Any]]) -> TechnologyPreset:
    """The preset an ``energy`` config group names (``preset`` plus constants; null keeps the
    preset's figure). ``None`` (a run configured before the group existed) gives ``45nm-fp32``."""
    if energy is None:
        return resolve_preset()
    constants = {k: v for k, v in dict(energy).items() if k != "preset" and v is not None}
    return resolve_preset(energy.get("preset", "45nm-fp32"), **constants)
