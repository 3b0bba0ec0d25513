"""Figures of the energy estimate: energy per layer, and accuracy against energy across a sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from spikegate.atomic import atomic_write

from .report import EnergyReport

__all__ = ["plot_layers", "plot_accuracy_vs_energy"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = atomic_write(path, lambda file: fig.savefig(file, dpi=110, format="png"))
    _pyplot().close(fig)
    return path


def plot_layers(report: EnergyReport, path: str | Path) -> Path:
    """A PNG of each layer's energy per inference (pJ), compute and memory traffic stacked."""
    plt = _pyplot()
    rows = report.layers
    names = [f"{r.name} ({r.kind})" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    compute = [r.compute_pj for r in rows]
    ax.barh(names, compute, label="compute")
    ax.barh(names, [r.memory_pj for r in rows], left=compute, label="memory traffic")
    ax.invert_yaxis()
    ax.set(xlabel="energy per inference (pJ)",
           title=f"{report.preset.name}: {report.energy_pj:.4g} pJ per inference, T = {report.time_steps:g}")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_accuracy_vs_energy(rows: Sequence[dict], path: str | Path) -> Path:
    """A PNG of test accuracy (%) against energy per inference (pJ; a log axis when the energies
    span more than a decade), one point per run.

    ``rows``: dicts with ``test_accuracy``, ``energy_pj_per_inference`` and a label in
    ``overrides`` or ``run`` (as :func:`spikegate.report.collect_runs` returns them); runs missing
    either figure are left out."""
    plt = _pyplot()
    points = [r for r in rows if r.get("test_accuracy") is not None and r.get("energy_pj_per_inference")]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in points:
        x, y = r["energy_pj_per_inference"], 100 * r["test_accuracy"]
        ax.scatter(x, y)
        ax.annotate(r.get("overrides") or r.get("run", ""), (x, y), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    energies = [r["energy_pj_per_inference"] for r in points]
    if points and max(energies) > 10 * min(energies):  # a log axis over less than a decade labels badly
        ax.set_xscale("log")
    ax.set(xlabel="energy per inference (pJ)", ylabel="test accuracy (%)", title="accuracy vs energy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
