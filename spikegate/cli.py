"""The spikegate command (this docstring is its usage text, so it is written for a terminal).

    spikegate train [OVERRIDES...]         train with Hydra (-m sweeps, --cfg job shows the config)
    spikegate evaluate RUN_DIR             score a finished run's checkpoint on its test set again
    spikegate energy RUN_DIR [preset=...]  energy per inference, layer by layer (energy.json/.md/.png)
    spikegate bench NAME [ARGS...]         benchmarks/NAME.py, NAME lif | ultralif | learning | dualpath
    spikegate report DIR [--format csv]    tabulate the runs under DIR (a sweep): per run, mean/std over seeds,
                                           learning curves, accuracy vs energy, the runs that failed
    spikegate generate RUN_DIR --prompt P  sample text from a trained language-model run
    spikegate plot RUN_DIR [OPTIONS]       one test sample: input, spike raster, membrane traces, firing rates
                                           (--sample N, --layer NAME, --out PATH; into RUN_DIR/sample_N.png)

    --verbose (any command) shows the traceback of an error instead of its one-line message.
"""

from __future__ import annotations

import os
import runpy
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from spikegate.atomic import atomic_write
from spikegate.run_directory import RunDirectory, claim_run_directory
from spikegate.user_errors import EXIT_USER_ERROR, one_line_errors

USAGE = __doc__.split("\n", 2)[2]
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _train(cfg: DictConfig) -> float:
    with one_line_errors("spikegate train"):
        from spikegate import distributed
        from spikegate.tasks import task_from_config
        from spikegate.train import run

        task = task_from_config(cfg)

        asked = Path(HydraConfig.get().runtime.output_dir)
        resuming = cfg.trainer.resume is True or cfg.trainer.resume == "true"
        # under torchrun: rank 0 claims the directory, the other processes train into the same one
        is_main = distributed.start(cfg.trainer.get("distributed", "auto"), str(cfg.trainer.device)).is_main
        claim = distributed.claim_on_main(asked, lambda: claim_run_directory(asked, fresh=not resuming))
        if claim.path != asked and is_main:
            print(f"spikegate train: {_shown(asked)} holds another run; this run writes into "
                  f"{_shown(claim.path)}", file=sys.stderr)
        try:
            metrics = run(cfg, claim.path, on_start=lambda: _write_hydra_files(cfg, claim.path))
        except KeyboardInterrupt:
            claim.release(keep=(claim.path / "checkpoint.pt").is_file())
            if is_main:
                print(f"spikegate train: interrupted; {_resume_hint(cfg, claim)}", file=sys.stderr)
            raise SystemExit(130) from None
        except BaseException:
            claim.release(keep=(claim.path / "checkpoint.pt").is_file())
            raise
        claim.release()
        distributed.stop()
    if not is_main:
        return metrics[task.primary]
    print(f"\n{task.summary(metrics)}  |  {_count(metrics['epochs'], 'epoch')} in {metrics['wall_s']:.0f} s\n"
          f"run directory: {_shown(claim.path)}")
    return metrics[task.primary]


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if Path.cwd() in path.parents else str(path)


def _write_hydra_files(cfg: DictConfig, run_dir: Path) -> None:
    """What Hydra writes into ``.hydra/`` (config, hydra config, overrides), written here once the
    run owns ``run_dir`` and its checks have passed."""
    hydra_cfg = OmegaConf.create({"hydra": OmegaConf.to_container(HydraConfig.get())})  # a writable copy
    hydra_cfg.hydra.runtime.output_dir = str(Path(run_dir).resolve())
    files = {"config.yaml": cfg, "hydra.yaml": hydra_cfg, "overrides.yaml": HydraConfig.get().overrides.task}
    for name, content in files.items():
        text = OmegaConf.to_yaml(content)
        atomic_write(Path(run_dir) / ".hydra" / name, lambda file: file.write(text.encode()))


def _resume_hint(cfg: DictConfig, claim: RunDirectory) -> str:
    """Where the run stopped and the command that continues it."""
    typed = [o for o in HydraConfig.get().overrides.task if not o.startswith("trainer.resume=")]
    checkpoint = claim.path / "checkpoint.pt"
    if checkpoint.is_file():
        again = [*typed, "trainer.resume=true", f"hydra.run.dir={_shown(claim.path)}"]
        return (f"last checkpoint: {_shown(checkpoint)}; resume with: "
                f"spikegate train {' '.join(shlex.quote(o) for o in again)}")
    resume = cfg.trainer.resume
    if resume not in (None, False, "false", "", True, "true"):
        again = [*typed, f"trainer.resume={resume}"]
        return (f"no new checkpoint; last checkpoint: {resume}; resume with: "
                f"spikegate train {' '.join(shlex.quote(o) for o in again)}")
    return "stopped before the first checkpoint, nothing to resume (the run directory was removed)"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"



def _benchmarks() -> list[str]:
    """The benchmark scripts beside the package (the shared harness is not one)."""
    return sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_") and p.stem != "harness")


def _bench(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: spikegate bench NAME [ARGS...]   NAME one of {_benchmarks()}; "
              "spikegate bench NAME --help for its arguments")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    script = BENCHMARKS / f"{name}.py"
    if not script.is_file() or name not in _benchmarks():
        available = _benchmarks()
        print(f"spikegate bench: unknown benchmark {name!r}; expected one of {available} "
              f"(looked in {BENCHMARKS}; the benchmarks ship with a source checkout)", file=sys.stderr)
        return 2
    module = runpy.run_path(str(script), run_name="spikegate_bench")
    return int(module["main"](rest) or 0)


def _evaluate(args: list[str]) -> int:
    asked = args[:1] in (["-h"], ["--help"])
    if len(args) != 1 or asked:  # before the slow imports
        print("usage: spikegate evaluate RUN_DIR", file=sys.stdout if asked else sys.stderr)
        return 0 if asked else EXIT_USER_ERROR
    with one_line_errors("spikegate evaluate"):
        from omegaconf import OmegaConf

        from spikegate.tasks import task_from_config
        from spikegate.train import evaluate_run

        run_dir = Path(args[0])
        # held while scoring: a run still writing there (or a resume starting) would mix the files
        claim = claim_run_directory(run_dir, fresh=False) if (run_dir / "config.yaml").is_file() else None
        try:
            scores = evaluate_run(run_dir)
        finally:
            if claim is not None:
                claim.release()
        task = task_from_config(OmegaConf.load(run_dir / "config.yaml"))
    print(f"{task.summary(scores)}  |  after {_count(scores['epochs'], 'epoch')}")
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
    from spikegate.report import main as report_main

    with one_line_errors("spikegate report"):
        return report_main(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--verbose" in argv:
        argv = [a for a in argv if a != "--verbose"]
        os.environ["HYDRA_FULL_ERROR"] = "1"  # one switch for spikegate's errors and Hydra's
    try:
        return _dispatch(argv)
    except SystemExit as stop:  # Hydra's one-line config errors and spikegate's user errors
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)


def _dispatch(argv: list[str]) -> int:
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
    if command == "plot":
        from spikegate.plot import main as plot_main

        return plot_main(rest)
    print(f"spikegate: unknown command {command!r}; expected one of ['train', 'evaluate', 'energy', 'bench', 'report', 'plot', 'generate']\n\nusage:\n{USAGE}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
