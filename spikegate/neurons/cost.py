"""What one neuron costs per time step, declared beside each neuron (read by spikegate.energy).

Every neuron module in spikegate has a method ``neuron_cost() -> NeuronCost`` that states the
arithmetic one neuron performs per time step and the state it keeps. The energy estimator prices
these counts with a technology preset; a new neuron only declares its own cost, and the
estimator's core needs no edit.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NeuronCost"]


@dataclass(frozen=True)
class NeuronCost:
    """Operations of one neuron in one time step (counts, not energies).

    Attributes:
        muls: multiplications (e.g. the leak ``beta * v``).
        adds: additions and subtractions (input integration, a subtractive reset).
        compares: comparisons and selects (the threshold test, a zero reset).
        transcendentals: exp, log and sigmoid evaluations (the log-sum-exp of relaxed neurons).
        state_values: values of neuron state read and written once per step (the membrane: 1).
        relaxed: the neuron emits soft spikes in [0, 1]; its hard spikes are ``output >= 0.5``.
        spiking: False for an element-wise unit that emits analog values, not spikes (the
            dual-path block's decay recurrence and gate): priced per value and step like a
            neuron, left out of spike counts and rates.
    """

    muls: float = 0.0
    adds: float = 0.0
    compares: float = 0.0
    transcendentals: float = 0.0
    state_values: int = 1
    relaxed: bool = False
    spiking: bool = True

    def __post_init__(self) -> None:
        for name in ("muls", "adds", "compares", "transcendentals", "state_values"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"NeuronCost.{name}: expected a count >= 0, got {value!r}")
