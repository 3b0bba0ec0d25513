"""The training loop behind ``spikegate train``.

``run(cfg, run_dir)`` builds the task, dataset, model and learning rule from the Hydra config
(``hydra.utils.instantiate`` on each group's ``_target_``), trains with Adam and a cosine schedule,
evaluates every epoch, and writes into ``run_dir``:

* ``config.yaml``: the resolved configuration,
* ``checkpoint.pt``: model, optimiser, schedule and history after every epoch (atomic),
* ``metrics.json``: the task's scores (classification: ``test_accuracy``, ``spike_rate``,
  ``synops_per_inference``, ``energy_pj_per_inference``, ``bit_budget_per_inference``,
  ``energy_preset``; language modelling: ``val_bpb``, ``perplexity``, sparsity and energy per
  token, see :mod:`spikegate.tasks`), ``epochs``, ``wall_s``, ``config_digest``
  (``spikegate.run_directory.run_digest``, also in the checkpoint) and the per-epoch history (atomic),
* ``training_curves.png``: loss and accuracy per epoch.
* ``tensorboard/``: the same per-epoch metrics as TensorBoard scalars, with ``trainer.tensorboard=true``.

The task (``task`` config group, :mod:`spikegate.tasks`) supplies the model's build, the batch
layout, the loss (handed to the learning rule) and the evaluation; the loop is the same for all.

``trainer.resume=true`` continues from ``run_dir/checkpoint.pt`` (or from a given path) exactly where
it stopped: shuffling is seeded per epoch, so epoch ``k`` sees the same batches either way.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from spikegate import distributed
from spikegate.arguments import check_int, check_real
from spikegate.atomic import atomic_write, save_json
from spikegate.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from spikegate.energy import preset_from_config
from spikegate.run_checks import check_run_setup
from spikegate.run_directory import mixed_runs, run_digest
from spikegate.tasks import ClassificationTask, task_from_config
from spikegate.tensorboard_log import open_tensorboard

__all__ = ["run", "evaluate", "evaluate_run", "load_run", "NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _limit(dataset: Dataset, n: int | None) -> Dataset:
    return dataset if n is None or n >= len(dataset) else Subset(dataset, range(n))


def _loader_options(trainer_cfg: DictConfig) -> dict[str, Any]:
    """DataLoader worker processes and pinned host memory, from ``trainer.num_workers`` and
    ``trainer.pin_memory`` (absent keys: 0 workers, no pinning)."""
    workers = check_int(trainer_cfg.get("num_workers", 0), "trainer.num_workers", minimum=0)
    return {"num_workers": workers, "pin_memory": bool(trainer_cfg.get("pin_memory", False))}


def _test_loader(data, trainer_cfg: DictConfig) -> DataLoader:
    return DataLoader(_limit(data.test, trainer_cfg.max_test_samples), batch_size=256,
                      **_loader_options(trainer_cfg))


# Settings that change where or how fast a run computes, not what its checkpoint holds.
_NOT_FINGERPRINTED = {"neuron": ("backend",), "dataset": ("root",)}


def _fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """What a checkpoint must agree on to be loaded into this run's model."""
    keep = OmegaConf.to_container(
        OmegaConf.create({k: cfg[k] for k in ("model", "neuron", "dataset") if k in cfg}), resolve=True
    )
    for group, keys in _NOT_FINGERPRINTED.items():
        for key in keys:
            keep.get(group, {}).pop(key, None)  # type: ignore[union-attr]
    return keep  # type: ignore[return-value]


def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, energy=None,
             task=None) -> dict[str, Any]:
    """The task's scores on ``loader`` (default classification: accuracy and activity, i.e. spike
    rate, SynOps, energy and bit budget per inference, priced with the ``energy`` config group's
    preset)."""
    return (task or ClassificationTask()).evaluate(model, loader, device, energy)


def _build(cfg: DictConfig, device: torch.device):
    """The dataset container and the model (with its learning rule prepared, and given the task's
    loss when the rule takes one) that ``cfg`` names."""
    task = task_from_config(cfg)
    data = instantiate(cfg.dataset)
    neuron = instantiate(cfg.neuron)
    model = task.build_model(cfg.model, data, neuron).to(device)
    rule = instantiate(cfg.learning)
    if hasattr(rule, "loss"):
        rule.loss = task.loss
    rule.prepare(model)
    backend = cfg.trainer.get("compile", False)  # false, true (inductor) or a backend's name
    if backend:
        # in place: parameter names, and so checkpoints, stay the plain model's
        model.compile(**({} if backend is True else {"backend": str(backend)}))
    return data, model, rule


def load_run(run_dir: str | Path, *, device: str = "auto", command: str = "evaluate"):
    """A finished run rebuilt from its ``config.yaml`` and ``checkpoint.pt``: ``(cfg, data, model,
    state, device)``, the model holding the trained weights. ``command`` names the caller in errors."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise CheckpointError(f"{command}: expected a run directory with config.yaml, got {run_dir}")
    cfg = OmegaConf.load(config_path)
    dev = _device(device)
    data, model, _ = _build(cfg, dev)
    state = load_checkpoint(run_dir, fingerprint=_fingerprint(cfg))
    _check_same_run(run_dir, cfg, state, command)
    model.load_state_dict(state["model"])
    return cfg, data, model, state, dev


def evaluate_run(run_dir: str | Path, *, device: str = "auto") -> dict[str, float]:
    """Rebuild a finished run from its ``config.yaml`` and ``checkpoint.pt`` and score its test set.

    Writes ``evaluation.json`` into ``run_dir`` (atomically) and returns the same scores."""
    run_dir = Path(run_dir)
    cfg, data, model, state, dev = load_run(run_dir, device=device)
    scores = {**evaluate(model, _test_loader(data, cfg.trainer), dev, cfg.get("energy"), task_from_config(cfg)),
              "epochs": state["epoch"]}
    save_json(run_dir / "evaluation.json", scores)
    return scores


def _check_same_run(run_dir: Path, cfg: DictConfig, state: dict[str, Any], command: str) -> None:
    """The checkpoint was written by the run that ``config.yaml`` describes (checkpoints older than
    the digest pass)."""
    problem = mixed_runs(run_dir, cfg, state.get("config_digest"), "checkpoint.pt")
    if problem is not None:
        raise CheckpointError(f"{command}: {problem}")


def _resume_path(resume: Any, run_dir: Path) -> Path | None:
    if resume in (None, False, "false", ""):
        return None
    if resume is True or resume == "true":
        return run_dir / "checkpoint.pt"
    return Path(str(resume))


def _plot_history(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    held_out = "test" if "test_accuracy" in history[0] else "val"  # classification / language model
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="loss")
    ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], marker="o", label="train")
    ax_acc.plot(epochs, [100 * h[f"{held_out}_accuracy"] for h in history], marker="o", label=held_out)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda file: fig.savefig(file, dpi=110, format="png"))
    plt.close(fig)


def run(cfg: DictConfig, run_dir: str | Path, *, on_start: Optional[Callable[[], None]] = None) -> dict[str, Any]:
    """Train as configured by ``cfg`` and write the run's files into ``run_dir``.

    ``on_start()`` is called once every check has passed (a resume's checkpoint fits), right after
    ``config.yaml`` is written and before the first epoch: ``spikegate train`` writes ``.hydra/``
    then, so a refused run leaves a directory as it was."""
    run_dir = Path(run_dir)
    tcfg = cfg.trainer
    ctx = distributed.start(tcfg.get("distributed", "auto"), str(tcfg.device))  # rank 0 writes, alone
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    for key in ("epochs", "batch_size"):
        check_int(tcfg[key], f"trainer.{key}", minimum=1)
    check_real(tcfg.lr, "trainer.lr", strict=True)
    preset_from_config(cfg.get("energy"))  # bad energy constants fail before training, not after it
    check_run_setup(cfg)
    board = open_tensorboard(tcfg.get("tensorboard", False), run_dir)  # no package: fails here, early
    distributed.check_batch_size(tcfg.batch_size)  # before training, not at its first epoch
    torch.manual_seed(cfg.seed)
    device = distributed.device_for(_device(tcfg.device))
    task = task_from_config(cfg)
    data, model, rule = _build(cfg, device)
    train_set = _limit(data.train, tcfg.max_train_samples)

    steps_per_epoch = math.ceil(len(train_set) / tcfg.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    if hasattr(rule, "optimizer"):  # a rule that applies updates within its step (TESS online)
        rule.optimizer = optimizer
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=tcfg.epochs * steps_per_epoch)
    test_loader = _test_loader(data, tcfg)

    fingerprint, digest = _fingerprint(cfg), run_digest(cfg)
    ckpt_path = run_dir / "checkpoint.pt"
    history: list[dict[str, float]] = []
    start_epoch, wall_before = 0, 0.0
    resume_from = _resume_path(tcfg.resume, run_dir)
    if resume_from is not None:
        # read by rank 0 and broadcast: the other nodes need no copy of the file
        state = distributed.from_main(lambda: load_checkpoint(resume_from, fingerprint=fingerprint))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        history, start_epoch, wall_before = state["history"], state["epoch"], state["wall_s"]
        if start_epoch >= tcfg.epochs:
            raise CheckpointError(
                f"trainer.resume: {resume_from} already holds {start_epoch} of trainer.epochs="
                f"{tcfg.epochs} epochs; nothing left to train"
            )
        if ctx.is_main:
            print(f"resumed from {resume_from} after epoch {start_epoch}")
    stepped = distributed.wrap(model, rule)  # what rule.step trains: DDP, or the model itself
    # written once the checkpoint is known to fit, so a refused resume leaves the old config
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    if ctx.is_main:
        atomic_write(run_dir / "config.yaml", lambda file: file.write(resolved.encode()))
    if on_start is not None and ctx.is_main:
        on_start()
    last_good = resume_from

    t0 = time.perf_counter()
    for epoch in range(start_epoch, tcfg.epochs):
        if callable(getattr(rule, "on_epoch", None)):  # rules that change with progress (eps annealing)
            rule.on_epoch(epoch, tcfg.epochs)
        model.train()
        order = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        # under torchrun: this process's share of the same shuffle
        loader = DataLoader(train_set, **distributed.shuffled(train_set, tcfg.batch_size, order),
                            **_loader_options(tcfg))
        loss_sum, seen = 0.0, 0
        correct = torch.zeros((), device=device)
        # no bar into a log file: its carriage-return frames would fill it
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{tcfg.epochs}", leave=False,
                   disable=not (tcfg.progress and sys.stderr.isatty() and ctx.is_main))
        for step, (x, y) in enumerate(bar):
            x, y = task.batch(x, y, device)
            optimizer.zero_grad(set_to_none=True)
            result = rule.step(stepped, x, y)
            if getattr(rule, "local_gradients", False):
                distributed.average_gradients(model)  # the rule's own .grad (DDP averages autograd's)
            loss = float(result.loss)  # the one host sync per step
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"training stopped: loss is {loss} at epoch {epoch + 1}, step {step + 1}; "
                    f"last good checkpoint: {last_good or 'none yet'}"
                )
            optimizer.step()
            schedule.step()
            loss_sum += loss * task.samples(y)
            correct += task.train_correct(result.logits, y)
            seen += task.samples(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        scores = distributed.from_main(lambda: evaluate(model, test_loader, device, cfg.get("energy"), task))
        loss_sum, right, seen = distributed.sum_over_ranks(loss_sum, float(correct), seen)
        row = {"epoch": epoch + 1, **task.train_row(loss_sum / seen, right, seen), **scores}
        history.append(row)
        wall = wall_before + time.perf_counter() - t0
        last_good = ckpt_path
        if not ctx.is_main:
            continue
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "epoch": epoch + 1, "history": history,
            "wall_s": wall, "fingerprint": fingerprint, "config_digest": digest,
        })
        board.log(row)
        tqdm.write(f"epoch {epoch + 1:>3}/{tcfg.epochs}  loss {row['train_loss']:.4f}  {task.epoch_line(row)}")

    board.close()
    final = history[-1]
    metrics = {
        **task.final_metrics(final),
        "epochs": final["epoch"],
        "wall_s": wall_before + time.perf_counter() - t0,
        "config_digest": digest,
        "history": history,
    }
    if ctx.is_main:
        save_json(run_dir / "metrics.json", metrics)
        _plot_history(history, run_dir / "training_curves.png")
    return metrics
