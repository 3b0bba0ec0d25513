"""Energy accounting: SynOps, AC/MAC energy, memory traffic and the bit budget, per layer and per
inference, priced with named technology presets."""

from .attention import AttentionProducts
from .counter import EnergyCounter, LayerCounts, ModelCounts
from .estimator import estimate_energy
from .presets import PRESETS, TechnologyPreset, preset_from_config, resolve_preset
from .report import EnergyReport, LayerRow, matched_ann_bits

__all__ = [
    "estimate_energy",
    "EnergyReport",
    "LayerRow",
    "EnergyCounter",
    "LayerCounts",
    "ModelCounts",
    "AttentionProducts",
    "TechnologyPreset",
    "PRESETS",
    "resolve_preset",
    "preset_from_config",
    "matched_ann_bits",
]
