"""The TESS config group and the learning-rules experiment compose, and a short run learns."""

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from spikegate import train as train_module
from spikegate.learning import TESS
from spikegate.learning.tess import _lif_step
from spikegate.neurons import LIF
from quick_run import QUICK


def config(*overrides, hydra=False):
    with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def test_tess_configs_set_the_authors_neuron_and_factors():
    cfg = config("learning=tess")
    assert (cfg.neuron.beta, cfg.neuron.threshold, cfg.neuron.reset) == (0.5, 0.6, "subtract")
    rule = instantiate(cfg.learning)
    assert isinstance(rule, TESS) and rule.factors.alpha_post == 1.0 and rule.pool_sizes == (4, 2, 1)
    assert instantiate(config("learning=tess_dvs").learning).factors.alpha_post == 0.0
    assert config("learning=tess", "neuron.beta=0.8").neuron.beta == 0.8  # the command line wins


def test_learning_rules_experiment_sweeps_rules_and_seeds():
    cfg = config("experiment=learning_rules", hydra=True)
    assert cfg.model._target_ == "spikegate.models.SpikingConvNet"
    assert cfg.hydra.sweeper.params.learning == "surrogate,tess"
    assert cfg.hydra.sweeper.params.seed == "0,1,2"


def test_a_short_tess_run_learns(tmp_path):
    metrics = train_module.run(config(*QUICK, "learning=tess", "trainer.epochs=2"), tmp_path)
    assert metrics["test_accuracy"] > 0.3  # 10 classes
    assert 0 < metrics["spike_rate"] < 1


def test_model_configs_for_tess_build_and_tess_accepts_them():
    for name, shape in (("vgg9", (2, 32, 32)), ("conv_ws", (2, 24, 24)), ("conv", (2, 24, 24)), ("mlp", (2, 24, 24))):
        cfg = config("learning=tess", f"model={name}", "neuron.backend=torch")
        model = instantiate(cfg.model, input_shape=shape, num_classes=11, neuron=instantiate(cfg.neuron))
        instantiate(cfg.learning).prepare(model)


def test_tess_configs_reset_by_round_theta():
    """The authors' conv layers subtract round(theta) = round(0.6) = 1, not theta: every LIF of a
    model built from learning=tess (or tess_dvs) does, in its own forward and in the rule's step."""
    for name in ("tess", "tess_dvs"):
        cfg = config(f"learning={name}", "model=conv", "neuron.backend=torch")
        model = instantiate(cfg.model, input_shape=(2, 24, 24), num_classes=11,
                            neuron=instantiate(cfg.neuron))
        lifs = [m for m in model.modules() if isinstance(m, LIF)]
        assert lifs and all((m.threshold, m.reset, m.reset_amount) == (0.6, "subtract", 1.0)
                            for m in lifs)
    neuron = instantiate(cfg.neuron)()
    current = torch.tensor([[1.3, 0.5]])  # from v = 0, u = the current: 1.3 fires, 0.5 does not
    spikes, v_last = neuron(current[None])
    u, s, v = _lif_step(neuron, torch.zeros_like(current), current)
    want = current - torch.tensor([[1.0, 0.0]])  # 1.3 - 1.0 = 0.3 (not 1.3 - 0.6 = 0.7)
    assert spikes[0].tolist() == s.tolist() == [[1.0, 0.0]]
    assert torch.equal(v_last, want) and torch.equal(v, want)
    torch.testing.assert_close(v_last, torch.tensor([[0.3, 0.5]]))
    assert config("learning=tess", "neuron.reset_amount=null").neuron.reset_amount is None
