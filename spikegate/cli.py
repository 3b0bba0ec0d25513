"""The ``spikegate`` command.

    spikegate train [OVERRIDES...]         train with Hydra (``-m`` sweeps, ``--cfg job`` shows the config)
    spikegate evaluate RUN_DIR             score a finished run's checkpoint on its test set again
    spikegate energy RUN_DIR [preset=...]  energy per inference, layer by layer (energy.json/.md/.png)
    spikegate bench lif [ARGS...]          LIF speed and memory against the peers (benchmarks/lif.py)
    spikegate report DIR [--format csv]    tabulate the runs under DIR (a sweep): per run, mean/std over seeds,
                                           learning curves, accuracy vs energy, the runs that failed
    spikegate plot RUN_DIR [OPTIONS]       one test sample: input, spike raster, membrane traces, firing rates
                                           (--sample N, --layer NAME, --out PATH; into RUN_DIR/sample_N.png)
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
    from spikegate.train import run

    run_dir = HydraConfig.get().runtime.output_dir
    metrics = run(cfg, run_dir)
    print(f"\n{_summary(metrics)}  |  {metrics['epochs']} epochs in {metrics['wall_s']:.0f} s\n"
          f"run directory: {run_dir}")
    return metrics["test_accuracy"]


def _summary(scores: dict) -> str:
    return (
        f"test accuracy {100 * scores['test_accuracy']:.1f}%  |  spike rate {scores['spike_rate']:.3f}  |  "
        f"SynOps/inference {scores['synops_per_inference']:.3g}  |  "
        f"energy/inference {scores['energy_pj_per_inference'] / 1e6:.3g} uJ"
    )


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
    from spikegate.checkpoint import CheckpointError
    from spikegate.train import evaluate_run

    if len(args) != 1:
        print("usage: spikegate evaluate RUN_DIR", file=sys.stderr)
        return 2
    try:
        scores = evaluate_run(args[0])
    except CheckpointError as err:
        print(err, file=sys.stderr)
        return 2
    print(f"{_summary(scores)}  |  after {scores['epochs']} epochs")
    return 0


def _report(args: list[str]) -> int:
    from spikegate.report import main as report_main

    return report_main(args)


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
    if command == "energy":
        from spikegate.energy.command import main as energy_main

        return energy_main(rest)
    if command == "plot":
        from spikegate.plot import main as plot_main

        return plot_main(rest)
    print(f"spikegate: unknown command {command!r}; expected one of ['train', 'evaluate', 'energy', 'bench', 'report', 'plot']\n\nusage:\n{USAGE}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
