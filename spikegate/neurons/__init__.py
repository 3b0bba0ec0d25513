"""Neuron models: pure sequence functions over time and thin nn.Module wrappers."""

from .cost import NeuronCost
from .decay_scan import decay_scan_sequence
from .dualpath import Cauchy, SpikeEncoder, SpikingFeedForward, spike_encoder_sequence
from .dualpath_mixer import DualPathBlock, DualPathMixer, MixerState
from .lif import LIF, lif_sequence
from .sequential import LIFSpikes, SpikesOnly
from .ultralif import (
    UltraDLIF,
    UltraDPLIF,
    UltraLIF,
    UltraPLIF,
    relaxed_neurons,
    soft_max_plus,
    tropical,
    ultradlif_sequence,
    ultralif_sequence,
)
from .surrogate import ATan, FastSigmoid, Sigmoid, STE, Surrogate, Triangle, get_surrogate, spike

__all__ = [
    "LIF",
    "LIFSpikes",
    "SpikesOnly",
    "lif_sequence",
    "NeuronCost",
    "ultralif_sequence",
    "ultradlif_sequence",
    "soft_max_plus",
    "UltraLIF",
    "UltraPLIF",
    "UltraDLIF",
    "UltraDPLIF",
    "relaxed_neurons",
    "tropical",
    "decay_scan_sequence",
    "Cauchy",
    "SpikeEncoder",
    "SpikingFeedForward",
    "spike_encoder_sequence",
    "DualPathBlock",
    "DualPathMixer",
    "MixerState",
    "Surrogate",
    "ATan",
    "Sigmoid",
    "FastSigmoid",
    "Triangle",
    "STE",
    "get_surrogate",
    "spike",
]
