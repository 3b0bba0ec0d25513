"""``trainer.compile``: the default training run with the model compiled by torch.compile.

The LIF layers trace as custom ops, so the compiled run must train like the eager one. The check
uses the quick ``aot_eager`` backend (the graph dynamo and AOT autograd build, run without code
generation); ``trainer.compile=true`` (inductor) compiles the same graph, and inductor around the
LIF op is tested on a small model in tests/kernels/test_ops.py, at a fraction of the time.
"""

import pytest
from hydra import compose, initialize_config_module

from spikegate import train as train_module
from spikegate.checkpoint import load_checkpoint

QUICK = [
    "dataset=digits", "dataset.time_steps=4", "model.hidden=[32]", "trainer.batch_size=32",
    "trainer.max_train_samples=96", "trainer.max_test_samples=64", "trainer.progress=false",
    "trainer.epochs=1",
]


def config(*overrides):
    with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[*QUICK, *overrides])


def test_the_default_config_does_not_compile():
    assert config().trainer.compile is False


def test_a_compiled_run_trains_like_the_eager_one(tmp_path):
    eager = train_module.run(config(), tmp_path / "eager")
    compiled = train_module.run(config("trainer.compile=aot_eager"), tmp_path / "compiled")
    for key in ("train_loss", "train_accuracy", "test_accuracy", "spike_rate"):
        assert compiled["history"][0][key] == pytest.approx(eager["history"][0][key], rel=1e-4), key
    # the checkpoint holds the plain model's parameter names: it loads into an uncompiled model
    state = load_checkpoint(tmp_path / "compiled")["model"]
    assert state.keys() == load_checkpoint(tmp_path / "eager")["model"].keys()
    assert not any(k.startswith("_orig_mod") for k in state)
