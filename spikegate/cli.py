"""The ``spikegate`` command.

    spikegate train [OVERRIDES...]         train with Hydra (``-m`` sweeps, ``--cfg job`` shows the config)
    spikegate evaluate RUN_DIR             score a finished run's checkpoint on its test set again
    spikegate energy RUN_DIR [preset=...]  energy per inference, layer by layer (energy.json/.md/.png)
    spikegate bench lif [ARGS...]          LIF speed and memory against the peers (benchmarks/lif.py)
    spikegate report DIR                   tabulate the metrics.json of the runs under DIR (a sweep)
    spikegate generate RUN_DIR --prompt P  sample text from a trained language-model run
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

USAGE = __doc__.split("\n", 2)[2]
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _train(cfg: DictConfig) -> float:
    from spikegate.tasks import task_from_config
    from spikegate.train import run

    run_dir = HydraConfig.get().runtime.output_dir
    task = task_from_config(cfg)
    metrics = run(cfg, run_dir)
    print(f"\n{task.summary(metrics)}  |  {metrics['epochs']} epochs in {metrics['wall_s']:.0f} s\n"
          f"run directory: {run_dir}")
    return metrics[task.primary]


def _bench(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print("usage: spikegate bench lif [ARGS...]   (spikegate bench lif --help for the arguments)")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    script = BENCHMARKS / f"{name}.py"
    if not script.is_file():
        available = sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_"))
        print(f"spikegate bench: unknown benchmark {name!r}; expected one of {available} "
              f"(looked in {BENCHMARKS}; the benchmarks ship with a source checkout)", file=sys.stderr)
        return 2
    module = runpy.run_path(str(script), run_name="spikegate_bench")
    return int(module["main"](rest) or 0)


def _evaluate(args: list[str]) -> int:
    from omegaconf import OmegaConf

    from spikegate.checkpoint import CheckpointError
    from spikegate.tasks import task_from_config
    from spikegate.train import evaluate_run

    if len(args) != 1:
        print("usage: spikegate evaluate RUN_DIR", file=sys.stderr)
        return 2
    try:
        scores = evaluate_run(args[0])
    except CheckpointError as err:
        print(err, file=sys.stderr)
        return 2
    task = task_from_config(OmegaConf.load(Path(args[0]) / "config.yaml"))
    print(f"{task.summary(scores)}  |  after {scores['epochs']} epochs")
    return 0


def _generate(args: list[str]) -> int:
    import argparse

    from spikegate.checkpoint import CheckpointError
    from spikegate.language_model import generate_from_run

    parser = argparse.ArgumentParser(prog="spikegate generate",
                                     description="Sample bytes from a trained language-model run.")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--prompt", required=True, help="text to continue (UTF-8)")
    parser.add_argument("--tokens", type=int, default=200, help="bytes to sample (default 200)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--top-k", type=int, default=40, help="sample from the k likeliest (default 40; 0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(args)
    try:
        text = generate_from_run(ns.run_dir, ns.prompt, tokens=ns.tokens, temperature=ns.temperature,
                                 top_k=ns.top_k or None, seed=ns.seed)
    except (CheckpointError, ValueError, TypeError, FileNotFoundError) as err:
        print(f"spikegate generate: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0


def _report(args: list[str]) -> int:
    from spikegate.report import collect_runs, format_table, plot_sweep

    if len(args) != 1:
        print("usage: spikegate report DIR", file=sys.stderr)
        return 2
    try:
        rows = collect_runs(args[0])
        print(format_table(rows))
        print(f"plot: {plot_sweep(args[0], rows)}", file=sys.stderr)  # stdout: the table
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage:\n" + USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        sys.argv = ["spikegate train", *rest]
        _train()
        return 0
    if command == "bench":
        return _bench(rest)
    if command == "report":
        return _report(rest)
    if command == "evaluate":
        return _evaluate(rest)
    if command == "generate":
        return _generate(rest)
    if command == "energy":
        from spikegate.energy.command import main as energy_main

        return energy_main(rest)
    print(f"spikegate: unknown command {command!r}; expected one of ['train', 'evaluate', 'energy', 'generate', 'bench', 'report']\n\nusage:\n{USAGE}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
