"""The training loop: files a run writes, exact resume, named failures."""

import json

import pytest
import torch
from hydra import compose, initialize_config_module

from spikegate import train as train_module
from spikegate.checkpoint import CheckpointError, load_checkpoint
from spikegate.learning import SurrogateGradient
from quick_run import QUICK


def config(*overrides):
    with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[*QUICK, *overrides])


def test_run_writes_config_metrics_checkpoint_and_plot(tmp_path):
    metrics = train_module.run(config("trainer.epochs=3"), tmp_path)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("test_accuracy", "spike_rate", "synops_per_inference", "energy_pj_per_inference",
                "epochs", "wall_s"):
        assert key in on_disk, key
    assert on_disk["epochs"] == 3 and len(on_disk["history"]) == 3
    assert on_disk["test_accuracy"] == metrics["test_accuracy"]
    assert metrics["test_accuracy"] > 0.3          # 10 classes: well above chance after 3 epochs
    assert 0 < metrics["spike_rate"] < 1
    assert metrics["synops_per_inference"] > 0
    assert "spikegate.models.SpikingMLP" in (tmp_path / "config.yaml").read_text()
    assert (tmp_path / "training_curves.png").stat().st_size > 1000
    assert load_checkpoint(tmp_path)["epoch"] == 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_resume_continues_exactly(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train_module.run(config("trainer.epochs=3"), straight)

    interrupted = tmp_path / "interrupted"
    real_save = train_module.save_checkpoint

    def save_then_crash(path, state):
        real_save(path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_module.run(config("trainer.epochs=3"), interrupted)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    assert load_checkpoint(interrupted)["epoch"] == 2

    resumed = train_module.run(config("trainer.epochs=3", "trainer.resume=true"), interrupted)
    a, b = load_checkpoint(straight)["model"], load_checkpoint(interrupted)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["epochs"] == 3 and len(resumed["history"]) == 3


def test_resume_refuses_checkpoint_of_another_model_and_keeps_its_config(tmp_path):
    train_module.run(config("trainer.epochs=1"), tmp_path)
    before = (tmp_path / "config.yaml").read_text()
    with pytest.raises(CheckpointError, match="another configuration"):
        train_module.run(config("trainer.epochs=2", "trainer.resume=true", "model.hidden=[16]"), tmp_path)
    assert (tmp_path / "config.yaml").read_text() == before


def test_resume_ignores_backend_and_data_location(tmp_path):
    train_module.run(config("trainer.epochs=1"), tmp_path)
    resumed = train_module.run(config("trainer.epochs=2", "trainer.resume=true", "neuron.backend=torch"), tmp_path)
    assert resumed["epochs"] == 2
    here, moved = (train_module._fingerprint(config("dataset=event_digits", f"dataset.root={root}"))
                   for root in (tmp_path / "a", tmp_path / "b"))
    assert here == moved and "root" not in here["dataset"]
    assert here != train_module._fingerprint(config("dataset=event_digits", "dataset.time_steps=9"))


def test_resume_of_a_finished_run_says_so(tmp_path):
    train_module.run(config("trainer.epochs=1"), tmp_path)
    with pytest.raises(CheckpointError, match=r"already holds 1 of trainer.epochs=1 epochs"):
        train_module.run(config("trainer.epochs=1", "trainer.resume=true"), tmp_path)


def test_non_finite_loss_right_after_resume_names_the_resumed_checkpoint(tmp_path, monkeypatch):
    train_module.run(config("trainer.epochs=1"), tmp_path / "first")
    real_step = SurrogateGradient.step

    def nan_step(self, model, x, y):
        result = real_step(self, model, x, y)
        result.loss = torch.tensor(float("inf"))
        return result

    monkeypatch.setattr(SurrogateGradient, "step", nan_step)
    source = tmp_path / "first" / "checkpoint.pt"
    with pytest.raises(train_module.NonFiniteLossError,
                       match=rf"loss is inf at epoch 2, step 1; last good checkpoint: {source}"):
        train_module.run(config("trainer.epochs=2", f"trainer.resume={source}"), tmp_path / "second")


def test_resume_without_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint: expected a file at .*checkpoint.pt"):
        train_module.run(config("trainer.resume=true"), tmp_path)


def test_non_finite_loss_stops_with_step_and_checkpoint(tmp_path, monkeypatch):
    real_step = SurrogateGradient.step
    calls = {"n": 0}

    def step(self, model, x, y):
        calls["n"] += 1
        result = real_step(self, model, x, y)
        if calls["n"] == 18:  # 16 steps per epoch: epoch 2, step 2
            result.loss = torch.tensor(float("nan"))
        return result

    monkeypatch.setattr(SurrogateGradient, "step", step)
    with pytest.raises(train_module.NonFiniteLossError,
                       match=r"loss is nan at epoch 2, step 2; last good checkpoint: .*checkpoint.pt"):
        train_module.run(config("trainer.epochs=3"), tmp_path)
    assert load_checkpoint(tmp_path)["epoch"] == 1


@pytest.mark.parametrize("override, pattern", [
    ("trainer.epochs=0", r"trainer.epochs: expected an int >= 1, got 0"),
    ("trainer.lr=-1", r"trainer.lr: expected a finite value > 0, got -1"),
])
def test_bad_trainer_settings_are_named(tmp_path, override, pattern):
    with pytest.raises(ValueError, match=pattern):
        train_module.run(config(override), tmp_path)
