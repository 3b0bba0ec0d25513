"""Data-parallel training over several processes with ``torch.distributed``.

Started by ``torchrun --nproc_per_node=N -m spikegate.cli train ...``: every process trains a copy
of the model on its own shard of each global batch, and the gradients are averaged before each
optimiser step, so N processes with per-process batch ``trainer.batch_size / N`` take the same steps
as one process with batch ``trainer.batch_size``.

* ``trainer.distributed``: ``auto`` (on when torchrun's variables say there are several processes),
  ``true`` (torchrun's variables required) or ``false``. The backend is NCCL on CUDA, gloo on CPU;
  on CUDA each process uses the GPU ``cuda:LOCAL_RANK``.
* The training order is the single-process one: :class:`ShardSampler` draws the same permutation
  per epoch as the single-process loader (from the same seeded generator) and deals it out
  round-robin, so step ``k`` of all processes together covers exactly the single-process batch
  ``k`` (when the world size divides ``len(train set)``; otherwise, as in ``DistributedSampler``,
  the last indices repeat the first ones). Resume stays exact for the same reason.
* Gradients: a rule whose ``step`` calls ``backward`` (surrogate gradients) gets the model wrapped in
  ``DistributedDataParallel``, which averages them during the backward pass. A rule that writes
  ``.grad`` itself (a local rule) says so with ``local_gradients = True``; the model is then not
  wrapped, and the trainer calls :func:`average_gradients` after ``rule.step``: the same mean, taken
  explicitly. Either way the optimiser steps identically on every process.
* Rank 0 owns the run: it claims the run directory (its path is broadcast to the others), writes
  every file (config, checkpoint, metrics, plots, TensorBoard), prints, and scores the whole test
  set each epoch; the scores are broadcast so every process holds the same history.
* A process that fails (a bad setting, a diverged loss) exits, and torchrun then stops the others.
"""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from spikegate.run_directory import RunDirectory

__all__ = [
    "Context", "start", "stop", "context", "from_main", "wrap", "average_gradients", "ShardSampler",
    "sum_over_ranks", "check_batch_size", "device_for", "claim_on_main", "shuffled",
]

T = TypeVar("T")
# the variables torchrun sets in every process it starts
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# rank 0 scores the test set while the others wait in a broadcast: allow a long evaluation
_TIMEOUT = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0


_SINGLE = Context()


def _torchrun_world_size() -> Optional[int]:
    if not all(name in os.environ for name in _TORCHRUN_VARIABLES):
        return None
    return int(os.environ["WORLD_SIZE"])


def _wanted(setting: Any) -> bool:
    """Whether ``trainer.distributed`` (``auto``, true or false) asks for several processes."""
    world = _torchrun_world_size()
    if setting in ("auto", None):
        return world is not None and world > 1
    if setting in (True, "true"):
        if world is None:
            raise ValueError(
                "trainer.distributed: expected to be started by torchrun (variables "
                f"{', '.join(_TORCHRUN_VARIABLES)}), but they are not set; start with "
                "'torchrun --nproc_per_node=N -m spikegate.cli train ...' or use trainer.distributed=auto"
            )
        return True
    if setting in (False, "false"):
        if world is not None and world > 1:
            raise ValueError(
                f"trainer.distributed: false, but torchrun started {world} processes, which would "
                "each train alone and write into the same run directory; use trainer.distributed=auto"
            )
        return False
    raise ValueError(f"trainer.distributed: expected auto, true or false, got {setting!r}")


def start(setting: Any = "auto", device: str = "auto") -> Context:
    """Join the process group that torchrun set up, if ``setting`` asks for it (idempotent: a second
    call returns the context of the first). ``device`` is ``trainer.device``: NCCL for CUDA, gloo for
    CPU. Returns the single-process context when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return context()
    if not _wanted(setting):
        return _SINGLE
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = device == "cuda" or device.startswith("cuda:") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=_TIMEOUT)
    return context()


def stop() -> None:
    """Leave the process group (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def context() -> Context:
    """This process's :class:`Context` (the single-process one outside a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return _SINGLE
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def device_for(device: torch.device) -> torch.device:
    """``device`` with this process's GPU index on CUDA (``cuda:LOCAL_RANK``)."""
    ctx = context()
    if device.type == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return device


def from_main(compute: Callable[[], T]) -> T:
    """``compute()`` run on rank 0 only, its (picklable) result given to every process."""
    ctx = context()
    if not ctx.enabled:
        return compute()
    box = [compute() if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def wrap(model: nn.Module, rule: Any) -> nn.Module:
    """What ``rule.step`` should be given: ``model`` in ``DistributedDataParallel`` (gradients
    averaged in backward) for an autograd rule; for a rule with ``local_gradients = True`` the model
    itself, its parameters and buffers copied from rank 0 (the trainer averages the gradients with
    :func:`average_gradients`). Outside a process group: ``model``."""
    ctx = context()
    if not ctx.enabled:
        return model
    if getattr(rule, "local_gradients", False):
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)
        return model
    on_gpu = next(model.parameters()).device
    ids = [on_gpu.index] if on_gpu.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def average_gradients(model: nn.Module) -> None:
    """Replace each parameter's ``.grad`` by its mean over the processes (all-reduce SUM, then
    divide by the world size), for rules that write ``.grad`` themselves.

    Every process must hold a ``.grad`` for the same parameters (the rule runs the same code on
    each); parameters without one are skipped. A no-op outside a process group."""
    ctx = context()
    if not ctx.enabled:
        return
    for param in model.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad.div_(ctx.world_size)


def sum_over_ranks(*values: float) -> list[float]:
    """Each of ``values`` summed over the processes (float64; no-op outside a process group)."""
    ctx = context()
    if not ctx.enabled:
        return list(values)
    device = torch.device("cuda", ctx.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.tolist()


def check_batch_size(batch_size: int) -> int:
    """The per-process batch for the global ``trainer.batch_size``."""
    world = context().world_size
    if batch_size % world:
        raise ValueError(
            f"trainer.batch_size: expected a multiple of the {world} processes (the batch is split "
            f"evenly between them), got {batch_size}"
        )
    return batch_size // world


def shuffled(dataset: Dataset, batch_size: int, generator: torch.Generator) -> dict[str, Any]:
    """The ``DataLoader`` arguments of one epoch's shuffled batches of the global ``batch_size``:
    all of them in one process; this process's :class:`ShardSampler` share (``batch_size / W``
    per step) in a group of ``W``. ``generator``: the epoch's seeded generator."""
    if not context().enabled:
        return {"batch_size": batch_size, "shuffle": True, "generator": generator}
    return {"batch_size": check_batch_size(batch_size), "sampler": ShardSampler(dataset, generator),
            "generator": generator}


class ShardSampler(DistributedSampler):
    """This process's share of one epoch's shuffled training order.

    The permutation is drawn from ``generator``, which must also be the ``DataLoader``'s own
    ``generator``: the loader takes its worker seeds from it before the sampler draws (as it does
    for the single-process ``shuffle=True`` loader's ``RandomSampler``), so a generator seeded as
    the single-process trainer seeds it yields the same permutation, and a distributed run trains
    on the same global batches as a single-process run with the same seed. Indices are dealt
    round-robin: process ``r`` gets positions ``r, r + W, r + 2W, ...``; with per-process batch
    ``b = B / W``, its batch ``k`` is its part of the single-process batch ``k`` of size ``B``.
    When ``W`` does not divide the set, the first indices are repeated (as ``DistributedSampler``
    does) so that every process takes as many steps.

    Args:
        dataset: the training set.
        generator: the epoch's generator, shared with the loader.
        num_replicas, rank: as in ``DistributedSampler`` (default: the process group's).
    """

    def __init__(self, dataset: Dataset, generator: torch.Generator, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None) -> None:
        ctx = context()
        super().__init__(dataset, num_replicas=ctx.world_size if num_replicas is None else num_replicas,
                         rank=ctx.rank if rank is None else rank, shuffle=True)
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        indices = torch.randperm(len(self.dataset), generator=self.generator).tolist()  # type: ignore[arg-type]
        indices += (indices * math.ceil(self.total_size / len(indices)))[: self.total_size - len(indices)]
        return iter(indices[self.rank:self.total_size:self.num_replicas])


def claim_on_main(asked: Path, claim: Callable[[], RunDirectory]) -> RunDirectory:
    """The run directory of this run on every process: rank 0 ``claim()``s it (and holds its lock);
    the others get its path, as a directory they hold no lock on (``release`` does nothing), and
    remove the empty directory ``asked`` that Hydra created for them if it is another one."""
    ctx = context()
    if not ctx.enabled:
        return claim()
    mine = claim() if ctx.is_main else None
    path = from_main(lambda: mine.path)  # type: ignore[union-attr]
    if mine is not None:
        return mine
    if Path(asked).resolve() != Path(path).resolve():
        try:
            Path(asked).rmdir()
        except OSError:  # not empty: another run's
            pass
    return RunDirectory(Path(path), pristine=False, run_id="")
