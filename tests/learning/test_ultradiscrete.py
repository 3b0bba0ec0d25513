"""The ultradiscrete learning rule and the sparsity penalty (``spikegate.learning``), and the
trainer's soft + tropical evaluation of relaxed networks.

The rule's gradients are compared with autograd of a network written out here, step by step, from
the relaxed equations (the same ones forward and backward: no surrogate); the penalty with the
layer means computed by hand.
"""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module

from spikegate import train as train_module
from spikegate.learning import SparsityPenalty, SurrogateGradient, Ultradiscrete
from spikegate.models import SpikingMLP
from spikegate.neurons import LIF, UltraDLIF, UltraLIF, relaxed_neurons


def _mlp(neuron, hidden=(6,), seed=0):
    torch.manual_seed(seed)
    return SpikingMLP(input_shape=(4,), num_classes=3, neuron=neuron, hidden=hidden)


def _batch(seed=1, T=5, B=8):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, 4, generator=g) < 0.5).float(), torch.randint(0, 3, (B,), generator=g)


def relaxed_lif_by_hand(x, beta, theta, eps):
    """``u = eps*log(exp((v + log beta)/eps) + exp(x/eps))``, ``s = sigmoid((u - theta)/eps)``,
    ``v = u (1 - s)``, per step, naive (moderate values)."""
    v = torch.zeros_like(x[0])
    out = []
    for xt in x:
        u = eps * torch.log(torch.exp((v + math.log(beta)) / eps) + torch.exp(xt / eps))
        s = 1 / (1 + torch.exp(-(u - theta) / eps))
        v = u * (1 - s)
        out.append(s)
    return torch.stack(out)


def test_rule_relaxes_lif_and_its_gradient_is_that_of_the_relaxed_network():
    model = _mlp(functools.partial(LIF, beta=0.8, threshold=1.0, backend="torch"), hidden=(6, 5))
    rule = Ultradiscrete(eps=0.7)
    rule.prepare(model)
    assert not any(isinstance(m, LIF) for m in model.modules())
    assert len(relaxed_neurons(model)) == 2
    x, y = _batch()
    rule.step(model, x, y)

    lin1, lin2, lin3 = (m for m in model.modules() if isinstance(m, torch.nn.Linear))
    params = [p.detach().clone().requires_grad_() for p in (lin1.weight, lin1.bias, lin2.weight,
                                                             lin2.bias, lin3.weight, lin3.bias)]
    eps = torch.tensor(0.7, requires_grad=True)
    h = relaxed_lif_by_hand(F.linear(x, params[0], params[1]), 0.8, 1.0, eps)
    h = relaxed_lif_by_hand(F.linear(h, params[2], params[3]), 0.8, 1.0, eps)
    loss = F.cross_entropy(F.linear(h, params[4], params[5]).mean(0), y)
    grads = torch.autograd.grad(loss, params)
    for lin, gw, gb in ((lin1, grads[0], grads[1]), (lin2, grads[2], grads[3]), (lin3, grads[4], grads[5])):
        torch.testing.assert_close(lin.weight.grad, gw, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(lin.bias.grad, gb, rtol=1e-4, atol=1e-6)
    for neuron in relaxed_neurons(model):
        assert neuron.log_eps.grad is not None and neuron.log_eps.grad.abs() > 0   # eps learned


def test_learnable_lif_beta_stays_learnable_through_the_relaxation():
    model = _mlp(functools.partial(LIF, beta=0.7, learn_beta=True, backend="torch"))
    before = {n for n, _ in model.named_parameters()}
    Ultradiscrete().prepare(model)
    neuron = relaxed_neurons(model)[0]
    torch.testing.assert_close(neuron.tau0, torch.full((6,), 0.7))
    x, y = _batch()
    Ultradiscrete().step(model, x, y)
    assert neuron.tau0_raw.grad is not None
    assert len(before) + 1 == len({n for n, _ in model.named_parameters()})  # + log_eps


def test_fixed_and_annealed_eps():
    model = _mlp(functools.partial(UltraDLIF, backend="torch"))
    fixed = Ultradiscrete(eps=0.3, eps_mode="fixed")
    fixed.prepare(model)
    neuron = relaxed_neurons(model)[0]
    assert neuron.eps == pytest.approx(0.3) and not neuron.log_eps.requires_grad

    for schedule, middle in (("linear", (1.0 + 0.04) / 2), ("cosine", (1.0 + 0.04) / 2),
                             ("exponential", math.sqrt(1.0 * 0.04))):
        rule = Ultradiscrete(eps=1.0, eps_mode="anneal", eps_final=0.04, schedule=schedule)
        rule.prepare(model)
        seen = []
        for epoch in range(5):
            rule.on_epoch(epoch, 5)
            seen.append(neuron.eps)
        assert seen[0] == pytest.approx(1.0) and seen[-1] == pytest.approx(0.04), schedule
        assert seen[2] == pytest.approx(middle), schedule
        assert seen == sorted(seen, reverse=True), schedule
    # the geometric schedule falls fastest early, the cosine one slowest
    assert rule.eps_at(0.1, 1.0) < Ultradiscrete(eps_mode="anneal", schedule="cosine").eps_at(0.1, 1.0)


def test_sparsity_penalty_is_lambda_times_the_mean_layer_rate():
    model = _mlp(functools.partial(UltraLIF, backend="torch"), hidden=(6, 5))
    x, y = _batch()
    none, _ = SparsityPenalty(0.0).loss(model, x, y)
    torch.testing.assert_close(none, F.cross_entropy(model(x), y))
    penalised, logits = SparsityPenalty(0.1).loss(model, x, y)
    layers = [m for m in model.modules() if isinstance(m, UltraLIF)]
    h1 = layers[0](model.body[1](model.body[0](x)))[0]
    h2 = layers[1](model.body[3](h1))[0]
    expected = F.cross_entropy(logits, y) + 0.1 * (h1.mean() + h2.mean()) / 2
    torch.testing.assert_close(penalised, expected)


def test_surrogate_rule_takes_the_sparsity_penalty_too():
    model = _mlp(functools.partial(LIF, beta=0.9, threshold=0.5, backend="torch"))
    x, y = _batch()
    rule = SurrogateGradient("sigmoid", sparsity=0.1, alpha=10.0)
    rule.prepare(model)
    result = rule.step(model, x, y)
    spikes = model.body[2].neuron(model.body[1](model.body[0](x)))[0]
    expected = F.cross_entropy(model(x), y) + 0.1 * spikes.mean()
    torch.testing.assert_close(result.loss, expected.detach())
    assert "sparsity=0.1" in repr(rule)


def test_rule_errors():
    with pytest.raises(ValueError, match=r"learning.eps_mode: expected one of \[.*\], got 'frozen'"):
        Ultradiscrete(eps_mode="frozen")
    with pytest.raises(ValueError, match=r"learning.eps: expected a finite value > 0, got 0"):
        Ultradiscrete(eps=0)
    with pytest.raises(ValueError, match=r"learning.sparsity: expected a finite value >= 0, got -0.1"):
        SparsityPenalty(-0.1)
    with pytest.raises(ValueError, match="learning=ultradiscrete: expected a model with LIF"):
        Ultradiscrete().prepare(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def _config(*overrides):
    quick = ["dataset=digits", "dataset.time_steps=4", "model.hidden=[16]", "trainer.batch_size=32",
             "trainer.max_train_samples=128", "trainer.max_test_samples=64", "trainer.progress=false"]
    with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[*quick, *overrides])


@pytest.mark.parametrize("overrides", [
    ["neuron=ultralif", "learning=ultradiscrete"],
    ["neuron=lif", "learning=ultradiscrete", "learning.eps_mode=anneal", "learning.sparsity=0.01"],
], ids=["ultralif", "relaxed-lif-annealed"])
def test_training_writes_soft_and_hard_scores(tmp_path, overrides):
    metrics = train_module.run(_config("trainer.epochs=2", *overrides), tmp_path)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("test_accuracy", "spike_rate", "soft_spike_rate", "hard_test_accuracy", "hard_spike_rate"):
        assert key in on_disk, key
    assert 0 <= on_disk["hard_test_accuracy"] <= 1 and 0 <= on_disk["hard_spike_rate"] <= 1
    assert 0 < on_disk["soft_spike_rate"] < 1
    again = train_module.evaluate_run(tmp_path)   # rebuilt from config + checkpoint: same scores
    assert again["hard_test_accuracy"] == pytest.approx(metrics["hard_test_accuracy"])
    assert again["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_surrogate_runs_report_no_hard_scores(tmp_path):
    metrics = train_module.run(_config("trainer.epochs=1"), tmp_path)
    assert "hard_test_accuracy" not in metrics
