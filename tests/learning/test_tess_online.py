"""TESS with online per-step updates (``TESS(online=True)``): against a per-step loop of the
equations written here, against batch mode at T = 1, per-step averaging across processes, and a
run through the trainer."""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from torch import nn

from spikegate import train as train_module
from spikegate.distributed import average_gradients
from spikegate.learning import TESS
from spikegate.learning.tess import square_wave_projection
from spikegate.models import SpikingConvNet, SpikingMLP, SpikingVGG
from spikegate.neurons import LIF, SpikesOnly
from quick_run import QUICK

TH, BETA = 0.6, 0.5
NEURON = functools.partial(LIF, beta=BETA, threshold=TH, reset="subtract", backend="torch")


def trainer_step(rule, optimizer, model, x, y):
    """What spikegate.train does per batch (one process)."""
    optimizer.zero_grad(set_to_none=True)
    result = rule.step(model, x, y)
    average_gradients(model)
    optimizer.step()
    return result


def online_reference(weights, head, x, y, lr, lambda_pre=0.5, lambda_post=0.2, alpha_pre=1.0, alpha_post=1.0):
    """One batch of online TESS with plain SGD on an MLP, written out per step: the hidden layers'
    updates of step t (causal term with q[t], non-causal with h[t-1], bias sum(m psi); m the
    gradient of CE(s B^T, y) w.r.t. the spikes) are applied before step t + 1; the readout descends
    on the cross-entropy of its time-averaged logits once, after the sequence. Updates ``weights``
    ([(W, b)] per hidden layer) and ``head`` ((W, b)) in place."""
    T, B = x.shape[:2]
    classes = head[0].shape[0]
    n = len(weights)
    v, q, h = [0.0] * n, [0.0] * n, [0.0] * n
    features = 0.0
    for t in range(T):
        inp = x[t].flatten(1)
        updates = []
        for k, (W, b) in enumerate(weights):
            u = BETA * v[k] + inp @ W.T + b
            s = (u >= TH).to(u.dtype)
            v[k] = u - TH * s
            q[k] = lambda_pre * q[k] + inp
            psi = 0.3 * torch.clamp(1 - (u - TH).abs(), min=0)
            spikes = s.clone().requires_grad_(True)
            proj = square_wave_projection(classes, s.shape[1], dtype=s.dtype)
            (m,) = torch.autograd.grad(F.cross_entropy(spikes @ proj.T, y), spikes)
            dW = alpha_pre * (m * psi).T @ q[k] + alpha_post * (m * h[k]).T @ inp
            updates.append((dW, (m * psi).sum(0)))
            h[k] = lambda_post * h[k] + psi
            inp = s
        for (W, b), (dW, db) in zip(weights, updates):
            W -= lr * dW
            b -= lr * db
        features = features + inp
    Wh, bh = (p.clone().requires_grad_(True) for p in head)
    loss = F.cross_entropy((features / T) @ Wh.T + bh, y)
    gW, gb = torch.autograd.grad(loss, [Wh, bh])
    head[0].sub_(lr * gW)
    head[1].sub_(lr * gb)


def tiny_mlp():
    torch.manual_seed(0)
    model = SpikingMLP((1, 3, 3), 3, NEURON, hidden=(6, 5)).double()
    with torch.no_grad():
        for layer in (model.body[1], model.body[3]):
            layer.weight.mul_(3)  # enough spikes that the learning signals are not all zero
    return model


def batches(T, count=2, B=4):
    gen = torch.Generator().manual_seed(1)
    return [((torch.rand(T, B, 1, 3, 3, generator=gen) < 0.5).double(), torch.randint(0, 3, (B,), generator=gen))
            for _ in range(count)]


def test_online_sgd_is_the_per_step_loop_of_the_equations():
    model, lr = tiny_mlp(), 0.5
    hidden = [model.body[1], model.body[3]]
    weights = [(layer.weight.detach().clone(), layer.bias.detach().clone()) for layer in hidden]
    head = (model.body[-1].weight.detach().clone(), model.body[-1].bias.detach().clone())
    rule = TESS(online=True)
    rule.optimizer = optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    data = batches(T=5)
    for x, y in data:
        trainer_step(rule, optimizer, model, x, y)
        online_reference(weights, head, x, y, lr)
    for layer, (W, b) in zip(hidden, weights):
        torch.testing.assert_close(layer.weight.detach(), W)
        torch.testing.assert_close(layer.bias.detach(), b)
    torch.testing.assert_close(model.body[-1].weight.detach(), head[0])
    torch.testing.assert_close(model.body[-1].bias.detach(), head[1])
    # and the per-step application matters here: batch mode ends elsewhere
    batch_model = tiny_mlp()
    rule = TESS()
    optimizer = torch.optim.SGD(batch_model.parameters(), lr=lr)
    for x, y in data:
        trainer_step(rule, optimizer, batch_model, x, y)
    assert not torch.allclose(batch_model.body[1].weight, model.body[1].weight)


def test_online_leaves_no_grad_of_what_it_applied_and_restores_what_was_there():
    """The trainer's optimizer.step() after the rule's must apply the readout's gradient only:
    the spiking layers' .grad is None (or what it was before the step, set aside meanwhile)."""
    model = tiny_mlp()
    rule = TESS(online=True)
    rule.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(T=4, count=1)[0]
    before = torch.full_like(model.body[3].bias, 7.0)
    model.body[3].bias.grad = before.clone()
    rule.step(model, x, y)
    assert model.body[1].weight.grad is None and model.body[1].bias.grad is None
    assert model.body[3].weight.grad is None
    torch.testing.assert_close(model.body[3].bias.grad, before)
    assert model.body[-1].weight.grad is not None and model.body[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("build", [
    lambda: SpikingMLP((2, 4, 4), 3, NEURON, hidden=(6, 5)),
    lambda: SpikingConvNet((2, 8, 8), 3, NEURON, channels=(3, 4)),  # BatchNorm, running statistics
    lambda: SpikingVGG((2, 8, 8), 3, NEURON, layers=(3, "M", 4), global_pool=2),  # weight standardisation
])
def test_at_one_step_online_is_batch_mode(build):
    """T = 1: one update per batch either way, so online and batch mode take the same Adam steps
    (weights, BatchNorm gains and running statistics, WS gains), over two batches."""
    y = torch.tensor([0, 1, 2, 1])
    models = []
    for online in (False, True):
        torch.manual_seed(3)
        model = build().train()
        rule = TESS(online=online)
        rule.optimizer = optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        shape = model.input_shape
        for k in range(2):
            inputs = (torch.rand(1, 4, *shape, generator=torch.Generator().manual_seed(4 + k)) < 0.5).float()
            trainer_step(rule, optimizer, model, inputs, y)
        models.append(model)
    batch, online = (m.state_dict() for m in models)
    start = build().state_dict()
    for name, value in batch.items():
        torch.testing.assert_close(online[name], value, msg=name)
    assert any(not torch.equal(batch[name], start[name]) for name in batch if "weight" in name)


@pytest.mark.parametrize("build", [
    lambda: SpikingConvNet((2, 8, 8), 3, NEURON, channels=(3, 4)),
    lambda: SpikingVGG((2, 8, 8), 3, NEURON, layers=(3, "M", 4), global_pool=2),
])
def test_online_steps_compute_with_the_weights_updated_so_far(build):
    """Through weight standardisation and BatchNorm's evaluation form: step t of the streamed
    network is the model's own layers with the parameters after the updates of steps < t (taken
    from the optimizer's steps), so the logits are those of that per-step forward; and BatchNorm's
    running statistics (training mode) are those of the conv outputs of every step as computed
    with that step's weights (torch's momentum 0.1 from mean 0, variance 1)."""
    torch.manual_seed(5)
    model = build().double().train()
    T = 4
    x = (torch.rand(T, 3, *model.input_shape, dtype=torch.float64) < 0.5).double()
    y = torch.tensor([0, 1, 2])
    rule = TESS(online=True)
    rule.optimizer = optimizer = torch.optim.SGD(model.parameters(), lr=2.0)
    snapshots = [copy.deepcopy(model.state_dict())]
    optimizer.register_step_post_hook(lambda *_: snapshots.append(copy.deepcopy(model.state_dict())))
    result = rule.step(model, x, y)
    assert len(snapshots) == T + 1
    reference = copy.deepcopy(model).eval()  # BatchNorm in its evaluation form, as TESS computes
    v, features, conv_outputs = {}, 0.0, {}
    with torch.no_grad():
        for t in range(T):
            reference.load_state_dict(snapshots[t])
            h = x[t:t + 1]
            for k, layer in enumerate(reference.body[:-1]):
                inner = getattr(layer, "layer", None)
                if isinstance(layer, SpikesOnly):
                    u = BETA * v.get(k, 0.0) + h
                    h = (u >= TH).double()
                    v[k] = u - TH * h
                elif isinstance(inner, nn.Sequential):  # conv -> BatchNorm
                    z = inner[0](h[0])
                    conv_outputs.setdefault(k, []).append(z)
                    h = inner[1](z).unsqueeze(0)
                else:
                    h = layer(h)
            features = features + h[0]
        logits = reference.body[-1](features / T)
    torch.testing.assert_close(result.logits, logits)
    first = next(name for name, _ in model.named_parameters())
    assert not torch.allclose(snapshots[1][first], snapshots[0][first])  # the steps did change it
    for k, outputs in conv_outputs.items():
        z, norm = torch.cat(outputs), model.body[k].layer[1]
        torch.testing.assert_close(norm.running_mean, 0.1 * z.mean((0, 2, 3)))
        torch.testing.assert_close(norm.running_var, 0.9 + 0.1 * z.var((0, 2, 3)))


def test_online_steps_with_the_step_count_of_the_signal():
    """signal_steps=2 of T = 5: the optimizer steps the spiking layers twice, then the readout
    once (Adam's step count per parameter)."""
    model = tiny_mlp()
    rule = TESS(online=True, signal_steps=2)
    rule.optimizer = optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    trainer_step(rule, optimizer, model, *batches(T=5, count=1)[0])
    steps = {name: int(optimizer.state[p]["step"]) for name, p in model.named_parameters()}
    assert steps == {"body.1.weight": 2, "body.1.bias": 2, "body.3.weight": 2, "body.3.bias": 2,
                     "body.5.weight": 1, "body.5.bias": 1}


def test_online_averages_each_steps_update_across_processes(monkeypatch):
    """Distributed, each step's update is averaged before it is applied: two simulated processes
    whose other half holds 3x our update (all-reduce sum = 4x, mean = 2x) train as one process
    with twice the learning rate (plain SGD), and the all-reduce runs once per hidden parameter
    and step, plus the trainer's once per readout parameter."""
    lr, T = 0.2, 4
    alone = tiny_mlp()
    rule = TESS(online=True)
    rule.optimizer = optimizer = torch.optim.SGD(alone.parameters(), lr=2 * lr)
    data = batches(T=T, count=1)
    trainer_step(rule, optimizer, alone, *data[0])

    dist = torch.distributed
    reduced = []
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None: reduced.append(t) or t.mul_(4))
    model = tiny_mlp()
    rule = TESS(online=True)
    rule.optimizer = optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    trainer_step(rule, optimizer, model, *data[0])
    assert len(reduced) == 4 * T + 2
    for (name, p), q in zip(model.named_parameters(), alone.parameters()):
        torch.testing.assert_close(p, q, msg=name)


def test_online_without_an_optimizer_or_with_one_that_lacks_a_parameter_is_refused():
    model = tiny_mlp()
    x, y = batches(T=2, count=1)[0]
    with pytest.raises(ValueError, match=r"optimizer: TESS\(online=True\) .* rule.optimizer .* got None"):
        TESS(online=True).step(model, x, y)
    rule = TESS(online=True)
    rule.optimizer = torch.optim.SGD(model.body[1].parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"it lacks body.3.weight, body.3.bias, body.5.weight"):
        rule.step(model, x, y)
    with pytest.raises(TypeError, match="learning.online: expected true or false, got 'yes'"):
        TESS(online="yes")


def test_the_trainer_hands_the_rule_its_optimizer_and_an_online_run_learns(tmp_path):
    with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
        assert compose(config_name="config", overrides=["learning=tess"]).learning.online is False
        assert compose(config_name="config", overrides=["learning=tess_dvs"]).learning.online is False
        cfg = compose(config_name="config", overrides=[*QUICK, "learning=tess", "learning.online=true",
                                                        "trainer.epochs=2"])
    metrics = train_module.run(cfg, tmp_path)
    assert metrics["epochs"] == 2
    assert metrics["test_accuracy"] > 0.3  # 10 classes
    assert "online: true" in (tmp_path / "config.yaml").read_text()
