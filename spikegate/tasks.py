"""What a run learns: the trainer's one loop runs over a task and a learning rule.

A task knows what the data and the model look like for one kind of problem, and nothing about
optimisers, checkpoints or run directories:

* ``build_model(model_cfg, data, neuron)``: the model for the dataset container ``data``;
* ``batch(x, y, device)``: a collated batch (``[B, T, ...]``) as the model takes it (time-major);
* ``loss(logits, y)``: the scalar the learning rule minimises (given to the rule, see
  :mod:`spikegate.learning`);
* ``samples(y)``, ``train_correct(logits, y)`` and ``train_row(loss, correct, seen)``: the
  epoch's training row (loss and accuracy, averaged over samples);
* ``evaluate(model, loader, device, energy)``: the scores written per epoch and into
  ``metrics.json`` (accuracy or bits per byte, activity, energy);
* ``final_metrics(row)``, ``summary(scores)``, ``epoch_line(row)`` and ``primary``: what the run
  reports, on the terminal and to Hydra (a sweep's objective).

Tasks are built from the ``task`` config group (``_target_``); a run directory without one (older
runs) is a classification run.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from spikegate.energy import EnergyCounter, EnergyReport, preset_from_config

__all__ = ["ClassificationTask", "LanguageModelTask", "task_from_config"]

# per-inference energy keys of EnergyReport.metrics(); the LM writes them per token
_ENERGY_KEYS = ("synops", "dense_macs", "energy_pj", "bit_budget")


def task_from_config(cfg: DictConfig):
    """The run's task: its ``task`` group, or classification when the config has none."""
    spec = cfg.get("task")
    return ClassificationTask() if spec is None else instantiate(spec)


def _soft_spike_rate(report: EnergyReport) -> float:
    """Mean soft spike value over the relaxed neuron layers' steps."""
    rows = [r for r in report.layers if r.rate_out_soft is not None]
    steps = sum(r.neuron_steps for r in rows)
    return sum(r.rate_out_soft * r.neuron_steps for r in rows) / steps if steps else 0.0


class ClassificationTask:
    """Labels ``y [B]`` of a time-major input ``x [T, B, ...]``; the model returns
    ``logits [B, classes]``. Loss: cross entropy; score: ``test_accuracy``."""

    primary = "test_accuracy"
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = staticmethod(F.cross_entropy)

    def build_model(self, model_cfg: DictConfig, data, neuron) -> torch.nn.Module:
        return instantiate(
            model_cfg, input_shape=tuple(data.input_shape), num_classes=data.num_classes, neuron=neuron
        )

    def batch(self, x: torch.Tensor, y: torch.Tensor, device: torch.device):
        """A collated batch ``[B, T, ...]`` as the models take it: ``[T, B, ...]`` on ``device``."""
        return x.transpose(0, 1).to(device), y.to(device)

    def samples(self, y: torch.Tensor) -> int:
        return y.shape[0]

    def train_correct(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Correct predictions in the batch (a device tensor: no host sync)."""
        return (logits.argmax(1) == y).sum()

    def train_row(self, loss_mean: float, correct: int, seen: int) -> dict[str, float]:
        return {"train_loss": loss_mean, "train_accuracy": correct / max(seen, 1)}

    def _score(self, model, loader: DataLoader, device: torch.device, energy) -> tuple[float, EnergyReport]:
        """Accuracy and the energy report of one pass over ``loader``."""
        correct = total = 0
        with torch.no_grad(), EnergyCounter(model) as counter:
            for x, y in loader:
                x, y = self.batch(x, y, device)
                logits = model(x)
                counter.add_samples(y.shape[0], time_steps=x.shape[0])
                correct += int((logits.argmax(1) == y).sum())
                total += y.shape[0]
        return correct / max(total, 1), EnergyReport.from_counts(counter.counts(), preset_from_config(energy))

    def evaluate(self, model, loader: DataLoader, device: torch.device, energy=None) -> dict[str, Any]:
        """Accuracy and activity (spike rate, SynOps, energy and bit budget per inference, priced
        with the ``energy`` config group's preset) on ``loader``. A network of relaxed
        (UltraLIF-family) neurons is scored twice: as trained (soft spikes; ``soft_spike_rate`` is
        their mean value) and in its tropical limit (``hard_test_accuracy``, ``hard_spike_rate``),
        the network as deployed."""
        from spikegate.neurons.ultralif import relaxed_neurons, tropical

        model.eval()
        accuracy, report = self._score(model, loader, device, energy)
        scores = {"test_accuracy": accuracy, **report.metrics()}
        if relaxed_neurons(model):
            with tropical(model):
                hard_accuracy, hard_report = self._score(model, loader, device, energy)
            scores.update(soft_spike_rate=_soft_spike_rate(report), hard_test_accuracy=hard_accuracy,
                          hard_spike_rate=hard_report.spike_rate)
        return scores

    def final_metrics(self, row: dict[str, Any]) -> dict[str, Any]:
        keys = ("test_accuracy", "spike_rate", "synops_per_inference", "dense_macs_per_inference",
                "energy_pj_per_inference", "bit_budget_per_inference", "energy_preset")
        relaxed = ("soft_spike_rate", "hard_test_accuracy", "hard_spike_rate")
        return {**{k: row[k] for k in keys}, **{k: row[k] for k in relaxed if k in row}}

    def summary(self, scores: dict[str, Any]) -> str:
        return (
            f"test accuracy {100 * scores['test_accuracy']:.1f}%  |  spike rate {scores['spike_rate']:.3f}  |  "
            f"SynOps/inference {scores['synops_per_inference']:.3g}  |  "
            f"energy/inference {scores['energy_pj_per_inference']:.3g} pJ"
        )

    def epoch_line(self, row: dict[str, Any]) -> str:
        return (f"train {100 * row['train_accuracy']:5.1f}%  test {100 * row['test_accuracy']:5.1f}%  "
                f"spike rate {row['spike_rate']:.3f}")


class LanguageModelTask:
    """Next-token prediction: ``x, y [T, B]`` int64 (``y`` is ``x`` shifted by one); the model
    returns an object with ``logits [T, B, vocab]`` (e.g.
    :class:`~spikegate.language_model.LanguageModelOutput`) and its activity.

    Loss: mean cross entropy per token in nats. Scores on the validation split: ``val_loss``
    (nats per byte), ``val_bpb`` (bits per byte), ``perplexity`` (``exp(val_loss)``), and
    sparsity: ``encoder_zero_fraction`` (encoder neuron-steps without a spike),
    ``block_spike_rates`` (each block's output spikes per neuron and step), ``hidden_spike_rates``
    (each block's feed-forward hidden layer), ``inactive_token_fractions`` (per block, input
    tokens with no spike: the attention skips them) and ``inactive_token_fraction`` (their mean).
    Energy per token: ``energy_pj_per_token``, ``synops_per_token``, ``dense_macs_per_token``,
    ``bit_budget_per_token`` (one token is one time step of the network).
    """

    primary = "val_bpb"

    def build_model(self, model_cfg: DictConfig, data, neuron) -> torch.nn.Module:
        """The LM sized to the data (vocabulary, context); ``neuron`` is unused: the LM's neurons
        are its own (the spike encoder and the blocks' threshold neurons)."""
        return instantiate(model_cfg, vocab_size=data.vocab_size, context=data.context)

    def batch(self, x: torch.Tensor, y: torch.Tensor, device: torch.device):
        """Collated windows ``[B, T]`` as ``[T, B]`` on ``device``."""
        return x.t().to(device), y.t().to(device)

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy in nats of ``logits [T, B, V]`` against ``targets [T, B]``."""
        from spikegate.language_model import next_token_loss

        return next_token_loss(logits, targets)

    def samples(self, y: torch.Tensor) -> int:
        return y.shape[1]

    def train_correct(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Next bytes predicted right, per sequence (averaged over positions, a device tensor)."""
        return (logits.argmax(-1) == y).float().mean(0).sum()

    def train_row(self, loss_mean: float, correct: float, seen: int) -> dict[str, float]:
        return {"train_loss": loss_mean, "train_bpb": loss_mean / math.log(2),
                "train_accuracy": correct / max(seen, 1)}

    def evaluate(self, model, loader: DataLoader, device: torch.device, energy=None) -> dict[str, Any]:
        """Validation scores (class docstring) on ``loader``; sums stay on the device until the
        end. Rates are token-weighted means over batches (every block sees every token)."""
        model.eval()
        sums: dict[str, torch.Tensor] = {}
        tokens = 0
        with torch.no_grad(), EnergyCounter(model) as counter:
            for x, y in loader:
                x, y = self.batch(x, y, device)
                out = model(x)
                n = y.numel()
                counter.add_samples(n, time_steps=1)  # one token = one inference of one step
                _accumulate(
                    sums,
                    nats=F.cross_entropy(out.logits.reshape(n, -1).float(), y.reshape(-1), reduction="sum"),
                    correct=(out.logits.argmax(-1) == y).sum(),
                    encoder=out.encoder_spike_rate * n,
                    blocks=torch.stack(out.block_spike_rates) * n,
                    hidden=torch.stack(out.hidden_spike_rates) * n,
                    inactive=torch.stack(out.inactive_token_fractions) * n,
                )
                tokens += n
        if not tokens:
            raise ValueError("loader: expected at least one validation window, got none")
        report = EnergyReport.from_counts(counter.counts(), preset_from_config(energy))
        mean = {k: (v / tokens).tolist() for k, v in sums.items()}
        loss = mean["nats"]
        per_token = {f"{k}_per_token": v for k, v in _per_token(report.metrics()).items()}
        return {
            "val_loss": loss, "val_bpb": loss / math.log(2), "perplexity": math.exp(min(loss, 700.0)),
            "val_accuracy": mean["correct"], "encoder_zero_fraction": 1 - mean["encoder"],
            "block_spike_rates": mean["blocks"], "hidden_spike_rates": mean["hidden"],
            "inactive_token_fractions": mean["inactive"],
            "inactive_token_fraction": sum(mean["inactive"]) / len(mean["inactive"]),
            "spike_rate": report.spike_rate, **per_token, "energy_preset": report.preset.name,
        }

    def final_metrics(self, row: dict[str, Any]) -> dict[str, Any]:
        keys = ("val_loss", "val_bpb", "perplexity", "val_accuracy", "encoder_zero_fraction",
                "block_spike_rates", "hidden_spike_rates", "inactive_token_fractions",
                "inactive_token_fraction", "spike_rate", *(f"{k}_per_token" for k in _ENERGY_KEYS),
                "energy_preset")
        return {k: row[k] for k in keys}

    def summary(self, scores: dict[str, Any]) -> str:
        return (
            f"val bpb {scores['val_bpb']:.3f}  |  perplexity {scores['perplexity']:.2f}  |  "
            f"encoder zero-spike fraction {scores['encoder_zero_fraction']:.3f}  |  "
            f"inactive tokens {scores['inactive_token_fraction']:.3f}  |  "
            f"energy/token {scores['energy_pj_per_token']:.3g} pJ"
        )

    def epoch_line(self, row: dict[str, Any]) -> str:
        return (f"train bpb {row['train_bpb']:.3f}  val bpb {row['val_bpb']:.3f}  "
                f"inactive tokens {row['inactive_token_fraction']:.3f}")


def _accumulate(sums: dict[str, torch.Tensor], **values: torch.Tensor) -> None:
    """Add each value into ``sums`` (float64, on the values' device: no host sync)."""
    for key, value in values.items():
        value = value.to(torch.float64)
        sums[key] = sums[key] + value if key in sums else value


def _per_token(energy_metrics: dict[str, Any]) -> dict[str, float]:
    """EnergyReport.metrics()'s ``*_per_inference`` figures, renamed (a sample is one token)."""
    return {k: energy_metrics[f"{k}_per_inference"] for k in _ENERGY_KEYS}
