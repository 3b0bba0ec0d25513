"""Neuron models: pure sequence functions over time and thin nn.Module wrappers."""

from .cost import NeuronCost
from .lif import LIF, lif_sequence
from .surrogate import ATan, FastSigmoid, Sigmoid, STE, Surrogate, Triangle, get_surrogate, spike

__all__ = [
    "LIF",
    "lif_sequence",
    "NeuronCost",
    "Surrogate",
    "ATan",
    "Sigmoid",
    "FastSigmoid",
    "Triangle",
    "STE",
    "get_surrogate",
    "spike",
]
