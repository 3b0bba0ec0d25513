"""Tabulate the runs of a sweep: ``spikegate report multirun/2026-11-23/12-00-00``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import yaml
from omegaconf import OmegaConf

from spikegate.run_directory import run_digest

__all__ = ["collect_runs", "format_table", "plot_sweep"]

COLUMNS = ("test_accuracy", "spike_rate", "synops_per_inference", "energy_pj_per_inference",
           "bit_budget_per_inference", "epochs", "wall_s")


def _mixed_files(run_dir: Path, metrics: dict) -> Optional[str]:
    """Why ``metrics.json`` and ``config.yaml`` of ``run_dir`` come from different runs, or None
    (runs older than the digest cannot be checked and pass)."""
    written_by = metrics.get("config_digest")
    config_path = run_dir / "config.yaml"
    if written_by is None or not config_path.is_file():
        return None
    described = run_digest(OmegaConf.load(config_path))
    if written_by == described:
        return None
    return (f"{run_dir} mixes two runs: metrics.json was written by run {written_by}, "
            f"config.yaml describes run {described}")


def collect_runs(root: str | Path, *, mixed: Optional[list[str]] = None) -> list[dict]:
    """One row per ``metrics.json`` under ``root``: the run's overrides and its metrics.

    A run whose ``metrics.json`` and ``config.yaml`` come from different runs is left out, and the
    reason appended to ``mixed`` when given."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"report: expected a run or sweep directory, got {root} (not a directory)")
    rows, problems = [], []
    for metrics_path in sorted(root.rglob("metrics.json")):
        run_dir = metrics_path.parent
        overrides_path = run_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_path.read_text()) if overrides_path.is_file() else []
        metrics = json.loads(metrics_path.read_text())
        problem = _mixed_files(run_dir, metrics)
        if problem is not None:
            problems.append(problem)
            continue
        rows.append({"run": str(run_dir.relative_to(root)), "overrides": " ".join(overrides or []),
                     **{k: metrics.get(k) for k in COLUMNS}})
    if mixed is not None:
        mixed.extend(problems)
    if not rows:
        raise FileNotFoundError(f"report: {problems[0]}" if problems else f"report: no metrics.json under {root}")
    return rows


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "test_accuracy":
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _label(row: dict) -> str:
    """A run's overrides; a run of the defaults says so (with its path inside a sweep)."""
    if row["overrides"]:
        return row["overrides"]
    return "(defaults)" if row["run"] == "." else f"(defaults) {row['run']}"


def format_table(rows: list[dict]) -> str:
    """A markdown table, best accuracy first."""
    rows = sorted(rows, key=lambda r: -(r["test_accuracy"] or 0))
    head = ["overrides", *COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([_label(r), *(_cell(k, r[k]) for k in COLUMNS)]) + " |")
    return "\n".join(lines)


def plot_sweep(root: str | Path, rows: list[dict]) -> Path:
    """``accuracy_vs_energy.png`` in ``root``: one point per run (see spikegate.energy.plot)."""
    from spikegate.energy.plot import plot_accuracy_vs_energy

    return plot_accuracy_vs_energy(rows, Path(root) / "accuracy_vs_energy.png")
