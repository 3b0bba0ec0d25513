"""Tabulate and plot a ``spikegate train experiment=ultralif_t`` sweep.

    python experiments/ultralif/report.py multirun/ultralif_t/<date>/<time>

Groups the runs by dataset, T, neuron (arm) and lambda, and over the seeds of each group gives
the mean and standard deviation of the test accuracy (soft network) and, for the Ultra neurons,
of the tropical hard-spike network's accuracy; the spike rates (soft: the mean soft spike, as the
paper reports; hard: the deployed network's); and the relative energy ``T x rate`` (the soft rate
for Ultra neurons, the binary rate for LIF/PLIF), also as a multiple of LIF's at the same dataset,
T and lambda. Writes ``ultralif_t.md`` and ``ultralif_t.png`` (accuracy against T, one panel per
dataset, lambda = 0) into the sweep directory and prints the table.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

ARMS = ("LIF", "PLIF", "UltraLIF", "UltraPLIF", "UltraDLIF", "UltraDPLIF")


def _arm(config: dict) -> str:
    name = config["neuron"]["_target_"].rsplit(".", 1)[-1]
    if name == "LIF" and config["neuron"].get("learn_beta"):
        return "PLIF"
    return name


def collect(root: Path) -> dict[tuple, list[dict]]:
    """``{(dataset, T, arm, lambda): [metrics of each seed]}`` from every run under ``root``."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for metrics_path in sorted(root.rglob("metrics.json")):
        config = yaml.safe_load((metrics_path.parent / "config.yaml").read_text())
        dataset = config["dataset"]["_target_"].rsplit(".", 1)[-1].removesuffix("Data")
        key = (dataset, int(config["dataset"]["time_steps"]), _arm(config),
               float(config["learning"].get("sparsity", 0.0)))
        groups[key].append(json.loads(metrics_path.read_text()))
    if not groups:
        raise SystemExit(f"report: no metrics.json under {root}")
    return groups


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(groups: dict[tuple, list[dict]]) -> list[dict]:
    rows = []
    for (dataset, T, arm, lam), runs in groups.items():
        soft = [r.get("soft_spike_rate", r["spike_rate"]) for r in runs]
        row = {"dataset": dataset, "T": T, "arm": arm, "lambda": lam, "seeds": len(runs),
               "acc": _stats([r["test_accuracy"] for r in runs]), "soft_rate": _stats(soft),
               "hard_rate": _stats([r.get("hard_spike_rate", r["spike_rate"]) for r in runs]),
               "energy": _stats([T * s for s in soft])}
        if all("hard_test_accuracy" in r for r in runs):
            row["hard_acc"] = _stats([r["hard_test_accuracy"] for r in runs])
        rows.append(row)
    order = {a: k for k, a in enumerate(ARMS)}
    rows.sort(key=lambda r: (r["dataset"], r["T"], r["lambda"], order.get(r["arm"], 99)))
    lif = {(r["dataset"], r["T"], r["lambda"]): r["energy"][0] for r in rows if r["arm"] == "LIF"}
    for r in rows:
        base = lif.get((r["dataset"], r["T"], r["lambda"]))
        r["vs_lif"] = r["energy"][0] / base if base else None
    return rows


def _pm(stat, percent=False) -> str:
    if stat is None:
        return "-"
    if percent:
        return f"{100 * stat[0]:.1f} ± {100 * stat[1]:.1f}"
    return f"{stat[0]:.3f} ± {stat[1]:.3f}"


def table(rows: list[dict]) -> str:
    head = ["dataset", "T", "neuron", "lambda", "seeds", "accuracy %", "hard accuracy %",
            "soft rate", "hard rate", "T x rate", "x LIF"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["dataset"], str(r["T"]), r["arm"], f"{r['lambda']:g}", str(r["seeds"]),
                 _pm(r["acc"], True), _pm(r.get("hard_acc"), True), _pm(r["soft_rate"]),
                 _pm(r["hard_rate"]), f"{r['energy'][0]:.3g}",
                 "-" if r["vs_lif"] is None else f"{r['vs_lif']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for arm in ARMS:
            pts = sorted((r["T"], r["acc"]) for r in rows
                         if r["dataset"] == dataset and r["arm"] == arm and r["lambda"] == 0)
            if pts:
                ax.errorbar([t for t, _ in pts], [100 * a[0] for _, a in pts],
                            yerr=[100 * a[1] for _, a in pts], marker="o", capsize=3, label=arm)
        ax.set(xscale="log", xlabel="time steps T", ylabel="test accuracy (%)", title=dataset)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python experiments/ultralif/report.py SWEEP_DIR")
    root = Path(argv[0])
    rows = summarize(collect(root))
    text = table(rows)
    (root / "ultralif_t.md").write_text(text + "\n")
    plot(rows, root / "ultralif_t.png")
    print(text)
    print(f"\nwritten: {root / 'ultralif_t.md'}, {root / 'ultralif_t.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
