"""Tabulate the runs of a sweep: ``spikegate report multirun/2026-11-23/12-00-00``.

The columns follow what the runs' ``metrics.json`` hold: classification runs show accuracy and
energy per inference, language-model runs validation loss, bits per byte, perplexity, sparsity
and energy per token; a column appears when at least one run has it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

__all__ = ["collect_runs", "columns", "format_table", "plot_sweep", "plot_loss_and_sparsity"]

# every column a run may have, in table order (classification, then language modelling, then both)
COLUMNS = ("test_accuracy", "val_loss", "val_bpb", "perplexity", "encoder_zero_fraction",
           "inactive_token_fraction", "block_spike_rates", "spike_rate", "synops_per_inference",
           "energy_pj_per_inference", "bit_budget_per_inference", "synops_per_token",
           "energy_pj_per_token", "epochs", "wall_s")


def collect_runs(root: str | Path) -> list[dict]:
    """One row per ``metrics.json`` under ``root``: the run's overrides and its metrics."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"report: expected a run or sweep directory, got {root} (not a directory)")
    rows = []
    for metrics_path in sorted(root.rglob("metrics.json")):
        run_dir = metrics_path.parent
        overrides_path = run_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_path.read_text()) if overrides_path.is_file() else []
        metrics = json.loads(metrics_path.read_text())
        rows.append({"run": str(run_dir.relative_to(root)), "overrides": " ".join(overrides or []),
                     **{k: metrics.get(k) for k in COLUMNS}})
    if not rows:
        raise FileNotFoundError(f"report: no metrics.json under {root}")
    return rows


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "test_accuracy":
        return f"{100 * value:.1f}%"
    if isinstance(value, list):  # per block
        return "/".join(f"{v:.3g}" for v in value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def columns(rows: list[dict]) -> list[str]:
    """The columns of :data:`COLUMNS` that at least one row holds."""
    return [k for k in COLUMNS if any(r.get(k) is not None for r in rows)]


def _rank(row: dict) -> tuple:
    """Best first: highest accuracy, then lowest bits per byte (runs without either last)."""
    accuracy, bpb = row.get("test_accuracy"), row.get("val_bpb")
    return (-(accuracy if accuracy is not None else -1), bpb if bpb is not None else float("inf"))


def format_table(rows: list[dict]) -> str:
    """A markdown table of the columns the runs hold, best run first (accuracy, then val_bpb)."""
    rows = sorted(rows, key=_rank)
    keys = columns(rows)
    head = ["overrides", *keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["overrides"] or r["run"], *(_cell(k, r.get(k)) for k in keys)]) + " |")
    return "\n".join(lines)


def plot_sweep(root: str | Path, rows: list[dict]) -> Path:
    """One PNG in ``root``: ``accuracy_vs_energy.png`` (one point per run, see
    spikegate.energy.plot) for classification sweeps, ``loss_and_sparsity.png`` (validation bits
    per byte and sparsity per run) for language-model sweeps."""
    if any(r.get("val_bpb") is not None for r in rows) and not any(
        r.get("test_accuracy") is not None for r in rows
    ):
        return plot_loss_and_sparsity(rows, Path(root) / "loss_and_sparsity.png")
    from spikegate.energy.plot import plot_accuracy_vs_energy

    return plot_accuracy_vs_energy(rows, Path(root) / "accuracy_vs_energy.png")


def _varying_overrides(rows: list[dict]) -> list[str]:
    """Each row's overrides without those every row shares (short plot labels)."""
    split = [(r["overrides"] or "").split() for r in rows]
    shared = set.intersection(*map(set, split)) if len(split) > 1 else set()
    return [" ".join(o for o in s if o not in shared) or r["run"] for s, r in zip(split, rows)]


def plot_loss_and_sparsity(rows: list[dict], path: Path) -> Path:
    """Bars per language-model run: validation bits per byte, and the encoder's zero-spike
    fraction and the inactive-token fraction (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spikegate.atomic import atomic_write

    runs = sorted((r for r in rows if r.get("val_bpb") is not None), key=_rank)
    labels = _varying_overrides(runs)
    at = range(len(runs))
    fig, (ax_bpb, ax_sparse) = plt.subplots(1, 2, figsize=(10, 0.5 * len(runs) + 2.2))
    ax_bpb.barh(list(at), [r["val_bpb"] for r in runs])
    ax_bpb.set(xlabel="validation bits per byte", yticks=list(at), title="loss (lower is better)")
    ax_bpb.set_yticklabels(labels, fontsize=7)
    width = 0.4
    for shift, key in ((-width / 2, "encoder_zero_fraction"), (width / 2, "inactive_token_fraction")):
        ax_sparse.barh([i + shift for i in at], [r.get(key) or 0 for r in runs], height=width, label=key)
    ax_sparse.set(xlabel="fraction", yticks=list(at), title="sparsity")
    ax_sparse.set_yticklabels([])
    ax_sparse.legend(fontsize=7)
    for ax in (ax_bpb, ax_sparse):
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda file: fig.savefig(file, dpi=110, format="png"))
    plt.close(fig)
    return path
