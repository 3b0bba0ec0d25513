"""Data-parallel training: two CPU processes (gloo) take the steps of one process with the same
global batch.

Tolerance: the two runs train on the same global batches in the same order (the shard sampler
deals the single-process permutation out), so the only difference is where the batch mean of the
gradient is summed (two half-batch means averaged vs one full-batch mean): float32 rounding,
amplified a little by Adam over 8 steps. Weights are compared to 1e-4 absolute, losses to 1e-4
relative; the test accuracy, a count of argmax decisions, must be equal (MLP, no BatchNorm, and
256 samples split evenly, so no sampler padding).
"""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hydra import compose, initialize_config_module
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from spikegate import distributed
from spikegate import train as train_module
from spikegate.checkpoint import load_checkpoint
from spikegate.learning import StepResult, SurrogateGradient

TINY = [
    "dataset=digits",
    "dataset.time_steps=4",
    "model.hidden=[32]",
    "trainer.batch_size=64",
    "trainer.max_train_samples=256",
    "trainer.max_test_samples=128",
    "trainer.epochs=2",
    "trainer.lr=0.01",
    "trainer.progress=false",
    "trainer.device=cpu",
]


def config(*overrides):
    with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, *overrides])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_env(rank: int, world: int, port: int) -> dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


# --- the sampler: the single-process order, dealt out ---------------------------------------------

def visit(loader) -> list[int]:
    # through tqdm.auto as the trainer does: its constructor opens an iterator of its own
    return [int(i) for (i,) in tqdm(loader, disable=True)]


def loader_order(n: int, seed: int) -> list[int]:
    """The order the single-process trainer's loader visits ``range(n)`` in."""
    order = torch.Generator().manual_seed(seed)
    return visit(DataLoader(range(n), batch_size=1, shuffle=True, generator=order))


def shard(n: int, seed: int, world: int, rank: int) -> list[int]:
    order = torch.Generator().manual_seed(seed)
    sampler = distributed.ShardSampler(range(n), order, num_replicas=world, rank=rank)
    return visit(DataLoader(range(n), batch_size=1, sampler=sampler, generator=order))


@pytest.mark.parametrize("n", [256, 37])
def test_one_shard_is_the_single_process_order(n):
    assert shard(n, 123, 1, 0) == loader_order(n, 123)


def test_shards_of_each_step_make_up_the_single_process_batch():
    n, world, batch = 256, 4, 64
    order = loader_order(n, 7)
    shards = [shard(n, 7, world, r) for r in range(world)]
    per_rank = batch // world
    for step in range(n // batch):
        together = sorted(i for part in shards for i in part[step * per_rank:(step + 1) * per_rank])
        assert together == sorted(order[step * batch:(step + 1) * batch])


def test_uneven_set_is_padded_with_its_first_indices():
    shards = [shard(5, 0, 2, r) for r in range(2)]
    order = loader_order(5, 0)
    assert len(shards[0]) == len(shards[1]) == 3
    assert sorted(shards[0] + shards[1]) == sorted(order + order[:1])


# --- settings ---------------------------------------------------------------------------------------

def test_auto_is_single_process_without_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.start("auto", "cpu")
    assert not ctx.enabled and ctx.is_main and not dist.is_initialized()


def test_true_without_torchrun_names_the_setting(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="trainer.distributed: expected to be started by torchrun"):
        distributed.start(True, "cpu")


def test_false_under_torchrun_with_several_processes_is_refused(monkeypatch):
    for name, value in torchrun_env(1, 2, 1).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="trainer.distributed: false, but torchrun started 2 processes"):
        distributed.start(False, "cpu")
    with pytest.raises(ValueError, match="expected auto, true or false, got 'often'"):
        distributed.start("often", "cpu")


# --- two processes ----------------------------------------------------------------------------------

class LocalSurrogate(SurrogateGradient):
    """A rule that writes ``.grad`` itself (no autograd hooks reach DDP): the surrogate gradient
    taken with ``torch.autograd.grad`` and assigned, so its mean over processes must be taken by
    ``average_gradients``."""

    local_gradients = True

    def step(self, model, x, y):
        assert not isinstance(model, torch.nn.parallel.DistributedDataParallel)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        params = [p for p in model.parameters() if p.requires_grad]
        for param, grad in zip(params, torch.autograd.grad(loss, params)):
            param.grad = grad
        return StepResult(loss.detach(), logits.detach())


class Interrupted(Exception):
    pass


def interrupting_sampler(real, at_epoch: int):
    """``ShardSampler`` that stops the run (on every process) as epoch ``at_epoch`` (0-based)
    begins, after rank 0 has written the checkpoint of the epoch before."""
    def build(dataset, generator, *args, **kwargs):
        if generator.initial_seed() == at_epoch:  # the trainer seeds epoch e with seed * 100_003 + e, seed 0
            raise Interrupted
        return real(dataset, generator, *args, **kwargs)
    return build


def _worker(rank: int, world: int, port: int, run_dir: str, overrides: list[str]) -> None:
    """Train with a local rule on 2 processes, stopped after epoch 1 and resumed."""
    os.environ.update(torchrun_env(rank, world, port))
    real = distributed.ShardSampler
    try:
        distributed.ShardSampler = interrupting_sampler(real, at_epoch=1)
        with pytest.raises(Interrupted):
            train_module.run(config(*overrides), run_dir)
        distributed.ShardSampler = real
        train_module.run(config(*overrides, "trainer.resume=true"), run_dir)
        grads = torch.nn.Parameter(torch.zeros(3))
        grads.grad = torch.full((3,), float(rank + 1))
        distributed.average_gradients(torch.nn.ParameterList([grads]))
        assert torch.equal(grads.grad, torch.full((3,), (world + 1) / 2))
    finally:
        distributed.stop()


def assert_same_training(single: dict, single_dir, parallel_dir) -> None:
    ours, theirs = load_checkpoint(single_dir), load_checkpoint(parallel_dir)
    for name, weight in ours["model"].items():
        torch.testing.assert_close(theirs["model"][name], weight, atol=1e-4, rtol=0, msg=name)
    for a, b in zip(ours["history"], theirs["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["train_accuracy"] == a["train_accuracy"]
        assert b["test_accuracy"] == a["test_accuracy"]
    assert theirs["epoch"] == single["epochs"] == 2


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single")
    return train_module.run(config(), run_dir), run_dir


def test_local_rule_on_two_processes_matches_one(single_run, tmp_path):
    """A local rule's gradients, averaged explicitly, give the single-process steps, across a
    stop after epoch 1 and a resume (spawned processes calling the trainer; ``average_gradients``
    also checked on its own: ranks 1 and 2 average to 1.5, a sum without the division would not)."""
    single, single_dir = single_run
    target = f"{LocalSurrogate.__module__}.{LocalSurrogate.__qualname__}"
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), [f"learning._target_={target}"]), nprocs=2)
    assert_same_training(single, single_dir, tmp_path)


def test_torchrun_two_processes_match_one(single_run, tmp_path):
    """``torchrun -m spikegate train`` as a user types it: surrogate gradients averaged by DDP,
    one run directory written by rank 0 only, the summary printed once."""
    single, single_dir = single_run
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
         "-m", "spikegate", "train", *TINY, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("run directory:") == 1 and out.stdout.count("epoch   2/2") == 1, out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no second rank's directory
    assert {"config.yaml", "checkpoint.pt", "metrics.json", "training_curves.png", ".hydra"} <= {
        p.name for p in run_dir.iterdir()}
    assert_same_training(single, single_dir, run_dir)
