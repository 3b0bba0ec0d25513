"""``spikegate energy RUN_DIR [preset=NAME] [CONSTANT=VALUE ...]``: price one inference of a trained run.

Rebuilds the run from its ``config.yaml`` and ``checkpoint.pt`` as ``spikegate evaluate`` does, runs
its test set through :func:`spikegate.energy.estimate_energy`, prints the per-layer table and writes
``energy.json``, ``energy.md`` and ``energy.png`` into the run directory (each atomically). The
preset is the run's ``energy`` config group (45nm-fp32 for runs older than it), with the
overrides given on the command line (``preset=45nm-int8``, ``e_ac_pj=0.5``, ``energy.memory=dram``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from omegaconf import OmegaConf

from spikegate.atomic import atomic_write

from .estimator import estimate_energy
from .plot import plot_layers
from .presets import preset_from_config
from .report import EnergyReport

__all__ = ["energy_run", "main"]

USAGE = "usage: spikegate energy RUN_DIR [preset=NAME] [CONSTANT=VALUE ...]   (e.g. preset=45nm-int8 e_ac_pj=0.5)"


def _energy_config(cfg, overrides: Sequence[str]):
    pairs = [item.removeprefix("energy.") for item in overrides]
    bad = [item for item in pairs if "=" not in item]
    if bad:
        raise ValueError(f"energy overrides: expected KEY=VALUE, got {bad}")
    return OmegaConf.merge(cfg.get("energy") or {}, OmegaConf.from_dotlist(pairs))


def energy_run(run_dir: str | Path, overrides: Sequence[str] = (), *, device: str = "auto") -> EnergyReport:
    """Estimate the energy of the run in ``run_dir`` on its test set and write its energy files."""
    from spikegate.checkpoint import CheckpointError
    from spikegate.train import _test_loader, load_run

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"energy: expected a run directory with config.yaml, got {run_dir}")
    preset = preset_from_config(_energy_config(OmegaConf.load(run_dir / "config.yaml"), overrides))  # before the slow part
    # the evaluate command's rebuild, with its checks (fingerprint, config digest)
    cfg, data, model, _, _ = load_run(run_dir, device=device, command="energy")
    report = estimate_energy(model, _test_loader(data, cfg.trainer), preset=preset)
    atomic_write(run_dir / "energy.json", lambda file: file.write(report.to_json().encode()))
    atomic_write(run_dir / "energy.md", lambda file: file.write(report.to_markdown().encode()))
    plot_layers(report, run_dir / "energy.png")
    return report


def main(args: Sequence[str]) -> int:
    """The ``spikegate energy`` command: 0 on success, 2 on a usage or input error (one line)."""
    from spikegate.checkpoint import CheckpointError

    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    try:
        report = energy_run(args[0], args[1:])
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"spikegate energy: {err}", file=sys.stderr)
        return 2
    print(report)
    print(f"\nwrote energy.json, energy.md, energy.png into {args[0]}")
    return 0
