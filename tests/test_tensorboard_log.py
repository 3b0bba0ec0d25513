"""``trainer.tensorboard=true``: the per-epoch metrics read back with TensorBoard's own event reader
equal metrics.json's history; without the package, one clear error before training."""

import json
import sys

import pytest
from hydra import compose, initialize_config_module

from spikegate import train as train_module
from spikegate.tensorboard_log import TensorBoardUnavailable, open_tensorboard

QUICK = ["dataset=digits", "dataset.time_steps=4", "model.hidden=[16]", "trainer.max_train_samples=64",
         "trainer.max_test_samples=32", "trainer.progress=false", "trainer.device=cpu"]


def config(*overrides):
    with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[*QUICK, *overrides])


def scalars(log_dir):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_epochs_are_logged_as_in_metrics_json_and_resume_appends(tmp_path):
    pytest.importorskip("tensorboard")
    train_module.run(config("trainer.epochs=2", "trainer.tensorboard=true"), tmp_path)
    train_module.run(config("trainer.epochs=3", "trainer.tensorboard=true", "trainer.resume=true"), tmp_path)
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    logged = scalars(tmp_path / "tensorboard")
    for key in ("train_loss", "train_accuracy", "test_accuracy", "spike_rate", "energy_pj_per_inference"):
        assert [step for step, _ in logged[key]] == [1, 2, 3], key
        assert [value for _, value in logged[key]] == pytest.approx([h[key] for h in history], rel=1e-6), key
    assert "energy_preset" not in logged  # a string, not a scalar


def test_off_by_default_writes_nothing(tmp_path):
    train_module.run(config("trainer.epochs=1"), tmp_path)
    assert not (tmp_path / "tensorboard").exists()


def test_missing_package_fails_before_training_with_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    built = []
    monkeypatch.setattr(train_module, "_build", lambda *a: built.append(a))
    with pytest.raises(TensorBoardUnavailable, match=r"pip install tensorboard") as error:
        train_module.run(config("trainer.epochs=1", "trainer.tensorboard=true"), tmp_path)
    assert "\n" not in str(error.value) and "trainer.tensorboard=true" in str(error.value)
    assert not built


def test_setting_must_be_a_bool(tmp_path):
    with pytest.raises(TypeError, match="trainer.tensorboard: expected true or false, got 'yes'"):
        open_tensorboard("yes", tmp_path)
