"""Tabulate the runs of a sweep: ``spikegate report multirun/2026-11-23/12-00-00``.

The columns follow what the runs' ``metrics.json`` hold: classification runs show accuracy and
energy per inference, language-model runs validation loss, bits per byte, perplexity, sparsity
and energy per token; a column appears when at least one run has it."""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from pathlib import Path
from typing import Optional

import yaml
from omegaconf import OmegaConf

from spikegate.atomic import atomic_write
from spikegate.run_directory import mixed_runs

__all__ = ["collect_runs", "columns", "format_table", "plot_sweep", "plot_loss_and_sparsity", "find_failures",
           "group_runs", "format_groups", "format_csv", "format_groups_csv", "plot_learning_curves",
           "write_report", "main"]

# every column a run may have, in table order (classification, then language modelling, then both)
COLUMNS = ("test_accuracy", "hard_test_accuracy", "val_loss", "val_bpb", "perplexity",
           "encoder_zero_fraction", "inactive_token_fraction", "block_spike_rates", "spike_rate",
           "soft_spike_rate", "hard_spike_rate", "synops_per_inference", "energy_pj_per_inference",
           "bit_budget_per_inference", "synops_per_token", "energy_pj_per_token", "epochs", "wall_s")


def _mixed_files(run_dir: Path, metrics: dict) -> Optional[str]:
    """Why ``metrics.json`` and ``config.yaml`` of ``run_dir`` come from different runs, or None
    (runs older than the digest cannot be checked and pass)."""
    config_path = run_dir / "config.yaml"
    if metrics.get("config_digest") is None or not config_path.is_file():
        return None
    return mixed_runs(run_dir, OmegaConf.load(config_path), metrics["config_digest"], "metrics.json")


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
        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, ValueError):
            continue  # listed by find_failures
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
    if key in ("test_accuracy", "hard_test_accuracy"):
        return f"{100 * value:.1f}%"
    if isinstance(value, list):  # per block
        return "/".join(f"{v:.3g}" for v in value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _overrides_label(row: dict) -> str:
    """A run's overrides; a run of the defaults says so (with its path inside a sweep)."""
    if row["overrides"]:
        return row["overrides"]
    return "(defaults)" if row["run"] == "." else f"(defaults) {row['run']}"


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
        lines.append("| " + " | ".join([_overrides_label(r), *(_cell(k, r.get(k)) for k in keys)]) + " |")
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

    keys = swept_keys(rows)  # label each point by what was swept, not by every override
    labelled = [{**r, "overrides": _label(r, keys)} for r in rows]
    return plot_accuracy_vs_energy(labelled, Path(root) / "accuracy_vs_energy.png")


# -- failed runs, seed groups, CSV, learning curves and the command (additions for issue 10) -----

SEED_KEYS = ("seed",)  # overrides that repeat a configuration rather than change it


def _overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        return list(yaml.safe_load(path.read_text()) or []) if path.is_file() else []
    except (OSError, yaml.YAMLError):
        return []


def find_failures(root: str | Path) -> list[dict]:
    """The runs under ``root`` that did not finish: a directory Hydra started a job in (it holds
    ``.hydra/``) or that holds a ``config.yaml`` or ``checkpoint.pt``, whose ``metrics.json`` is
    missing or unreadable. Each as ``{"run", "overrides", "reason"}``."""
    root = Path(root)
    markers = (".hydra/overrides.yaml", "config.yaml", "checkpoint.pt")
    candidates = sorted({p.parent.parent if p.parent.name == ".hydra" else p.parent
                         for marker in markers for p in root.rglob(marker)})
    failures = []
    for run_dir in candidates:
        metrics = run_dir / "metrics.json"
        if metrics.is_file():
            try:
                json.loads(metrics.read_text())
                continue
            except (OSError, ValueError) as err:
                reason = f"metrics.json is unreadable ({type(err).__name__}: {err})"
        elif (run_dir / "checkpoint.pt").is_file():
            reason = "no metrics.json; checkpoint.pt is there, so it stopped after an epoch (failed, killed or still running)"
        else:
            reason = "no metrics.json and no checkpoint: it failed before its first epoch ended (or is still running)"
        failures.append({"run": "." if run_dir == root else str(run_dir.relative_to(root)),
                         "overrides": " ".join(_overrides(run_dir)), "reason": reason})
    return failures


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def swept_keys(rows: list[dict]) -> list[str]:
    """The override keys whose value differs between the runs (seeds excluded), in first-seen order;
    a run that does not set a key has the value ``(default)``."""
    per_run = [dict(_split(o) for o in r["overrides"].split()) for r in rows]
    keys = list(dict.fromkeys(k for run in per_run for k in run))
    return [k for k in keys if k not in SEED_KEYS
            and len({run.get(k, "(default)") for run in per_run}) > 1]


def _label(row: dict, keys: list[str], seed: bool = True) -> str:
    """A run named by its swept keys' values (and its seed, if it has one and ``seed``)."""
    run = dict(_split(o) for o in row["overrides"].split())
    parts = [f"{k}={run.get(k, '(default)')}" for k in keys]
    if seed and "seed" in run:
        parts.append(f"seed={run['seed']}")
    return " ".join(parts) or ("all runs" if not seed else row["overrides"] or row["run"])


def _metric_columns(rows: list[dict]) -> list[str]:
    return [k for k in COLUMNS if any(isinstance(r.get(k), (int, float)) for r in rows)]


def group_runs(rows: list[dict]) -> tuple[list[str], list[dict]]:
    """Runs that differ only in their seed, pooled: ``(swept keys, groups)``. Each group has the
    swept keys' values, ``runs`` (how many), ``seeds``, and ``<metric>_mean`` and ``<metric>_std``
    (sample standard deviation, ``None`` for one run) for each metric column; best mean accuracy first."""
    keys = swept_keys(rows)
    pooled: dict[tuple, list[dict]] = {}
    for r in rows:
        run = dict(_split(o) for o in r["overrides"].split())
        pooled.setdefault(tuple(run.get(k, "(default)") for k in keys), []).append({**r, "_o": run})
    groups = []
    for values, members in pooled.items():
        group = {**dict(zip(keys, values)), "runs": len(members),
                 "seeds": " ".join(m["_o"].get("seed", "(default)") for m in members)}
        for column in _metric_columns(rows):
            found = [float(m[column]) for m in members if isinstance(m.get(column), (int, float))]
            group[f"{column}_mean"] = statistics.fmean(found) if found else None
            group[f"{column}_std"] = statistics.stdev(found) if len(found) > 1 else None
        groups.append(group)
    groups.sort(key=lambda g: -(g.get("test_accuracy_mean") or 0))
    return keys, groups


def _mean_std(column: str, mean, std) -> str:
    if mean is None:
        return "-"
    if std is None:
        return _cell(column, mean)
    if column == "test_accuracy":
        return f"{100 * mean:.1f} ± {100 * std:.1f}%"
    return f"{mean:.3g} ± {std:.2g}"


def format_groups(rows: list[dict]) -> str:
    """A markdown table of :func:`group_runs`, columns padded so it reads in a terminal too."""
    keys, groups = group_runs(rows)
    columns = _metric_columns(rows)
    head = [*(keys or ["configuration"]), "runs", *columns]
    body = [[*(g[k] for k in keys), *([] if keys else ["all"]), str(g["runs"]),
             *(_mean_std(c, g[f"{c}_mean"], g[f"{c}_std"]) for c in columns)] for g in groups]
    widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head))]
    lines = [_padded(head, widths), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join([*lines, *(_padded(line, widths) for line in body)])


def _padded(line: list, widths: list[int]) -> str:
    return "| " + " | ".join(str(v).ljust(w) for v, w in zip(line, widths)) + " |"


def _csv(head: list[str], body: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(head)
    writer.writerows([["" if v is None else v for v in line] for line in body])
    return out.getvalue()


def format_csv(rows: list[dict]) -> str:
    """One CSV line per run: run directory, overrides, each swept key, the metrics' raw values."""
    keys = swept_keys(rows)
    keys += [k for k in SEED_KEYS if any(k in dict(_split(o) for o in r["overrides"].split()) for r in rows)]
    columns = _metric_columns(rows)
    body = []
    for r in rows:
        run = dict(_split(o) for o in r["overrides"].split())
        body.append([r["run"], r["overrides"], *(run.get(k, "(default)") for k in keys), *(r.get(c) for c in columns)])
    return _csv(["run", "overrides", *keys, *columns], body)


def format_groups_csv(rows: list[dict]) -> str:
    """One CSV line per group of :func:`group_runs`, with each metric's mean and std."""
    keys, groups = group_runs(rows)
    stats = [f"{c}_{s}" for c in _metric_columns(rows) for s in ("mean", "std")]
    return _csv([*keys, "runs", "seeds", *stats], [[g[k] for k in [*keys, "runs", "seeds", *stats]] for g in groups])


CURVES = (("train_loss", "train loss", 1), ("test_accuracy", "test accuracy (%)", 100),
          ("val_bpb", "validation bits per byte", 1),
          ("spike_rate", "spike rate (spikes per neuron per step)", 1))


def plot_learning_curves(root: str | Path, rows: list[dict], path: str | Path) -> Path | None:
    """A PNG of each run's per-epoch history (``metrics.json``): train loss, test accuracy (%) and
    spike rate against epoch, one line per run, one colour per group of seeds. ``None`` (and no
    file) when no run has a history."""
    from spikegate.energy.plot import _pyplot, _save

    root = Path(root)
    keys = swept_keys(rows)
    histories = []
    for r in rows:
        try:
            history = json.loads((root / r["run"] / "metrics.json").read_text()).get("history") or []
        except (OSError, ValueError):
            continue
        histories.append((_label(r, keys, seed=False), [h for h in history if isinstance(h, dict) and "epoch" in h]))
    panels = [c for c in CURVES if any(c[0] in h for _, hist in histories for h in hist)]
    if not panels:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    colours = {label: f"C{i % 10}" for i, label in enumerate(dict.fromkeys(label for label, _ in histories))}
    for ax, (key, name, scale) in zip(axes[0], panels):
        shown = set()
        for label, history in histories:
            points = [(h["epoch"], scale * h[key]) for h in history if isinstance(h.get(key), (int, float))]
            if points:
                ax.plot(*zip(*points), marker="o", ms=3, lw=1.2, color=colours[label],
                        label=None if label in shown else label)
                shown.add(label)
        ax.set(xlabel="epoch", ylabel=name, title=name.split(" (")[0])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(f"learning curves: {len(histories)} runs (one colour per group of seeds)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def format_failures(failures: list[dict]) -> str:
    return "\n".join([f"{len(failures)} run(s) did not finish:",
                      *(f"- {f['run']}: {f['reason']}" for f in failures)])


def write_report(root: str | Path, rows: list[dict], failures: list[dict]) -> list[Path]:
    """Into ``root``: ``report.md`` (per-run table, seed groups, failures), ``runs.csv``,
    ``groups.csv``, ``learning_curves.png`` and ``accuracy_vs_energy.png``, each atomically."""
    root = Path(root)
    text = ["# Sweep report", "", "## Runs", "", format_table(rows), "", "## Mean and std over seeds", "",
            format_groups(rows), ""]
    if failures:
        text += ["## Runs that did not finish", "", format_failures(failures), ""]
    written = [
        save_text(root / "report.md", "\n".join(text)),
        save_text(root / "runs.csv", format_csv(rows)),
        save_text(root / "groups.csv", format_groups_csv(rows)),
    ]
    curves = plot_learning_curves(root, rows, root / "learning_curves.png")
    return [*written, *([curves] if curves else []), plot_sweep(root, rows)]


def save_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda file: file.write(text.encode()))


REPORT_USAGE = "usage: spikegate report DIR [--format markdown|csv]"


def main(args: list[str]) -> int:
    """``spikegate report DIR [--format markdown|csv]``: the table of runs on stdout (markdown, or
    CSV), then the seed groups when some configuration ran with several seeds; the report files
    (see :func:`write_report`) and the runs that did not finish go to stderr. 0 when at least one
    run finished, 2 otherwise (or on a usage error)."""
    args = list(args)
    fmt = "markdown"
    if "--format" in args:
        i = args.index("--format")
        fmt = args[i + 1] if i + 1 < len(args) else ""
        del args[i:i + 2]
    if len(args) != 1 or fmt not in ("markdown", "csv"):
        print(REPORT_USAGE, file=sys.stderr)
        return 2
    root = args[0]
    mixed: list[str] = []
    try:
        rows = collect_runs(root, mixed=mixed)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        failures = find_failures(root) if Path(root).is_dir() else []
        if failures:
            print(format_failures(failures), file=sys.stderr)
        return 2
    failures = find_failures(root)
    for problem in mixed:
        print(f"spikegate report: {problem}; left out of the table", file=sys.stderr)
    if fmt == "csv":
        print(format_csv(rows), end="")
    else:
        print(format_table(rows))
        if any(g["runs"] > 1 for g in group_runs(rows)[1]):
            print(f"\nmean ± std over seeds:\n{format_groups(rows)}")
    for path in write_report(root, rows, failures):
        print(f"wrote {path}", file=sys.stderr)  # stdout: the table
    if failures:
        print(format_failures(failures), file=sys.stderr)
    return 0


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
