"""``spikegate plot``: what is recorded from one sample is checked against LIF's equations written
out here, and the command draws a PNG of a trained run."""

import functools

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from torch import nn

from spikegate import train as train_module
from spikegate.models import SpikingMLP
from spikegate.neurons import LIF
from spikegate.plot import lif_membrane, main, plot_sample, record_sample

PNG = b"\x89PNG\r\n\x1a\n"


def lif_by_hand(x, beta, threshold, reset, v0=None):
    """The neuron's equations step by step: u = beta v + x; s = [u >= threshold]; reset v."""
    v = torch.zeros_like(x[0]) if v0 is None else v0.clone()
    us, ss = [], []
    for x_t in x:
        u = beta * v + x_t
        s = (u >= threshold).to(x.dtype)
        v = {"zero": u * (1 - s), "subtract": u - threshold * s, "none": u}[reset]
        us.append(u)
        ss.append(s)
    return torch.stack(us), torch.stack(ss)


@pytest.mark.parametrize("reset", ["zero", "subtract", "none"])
def test_membrane_is_the_equations_before_reset(reset):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(12, 3, 5, generator=gen, dtype=torch.float64) * 0.9
    v0 = torch.rand(3, 5, generator=gen, dtype=torch.float64)
    neuron = LIF(beta=0.8, threshold=0.7, reset=reset, backend="torch")
    u, spikes = lif_membrane(neuron, x, v0)
    want_u, want_s = lif_by_hand(x, 0.8, 0.7, reset, v0)
    assert torch.equal(spikes, want_s)
    assert 0 < spikes.mean() < 1  # some neurons fire, some do not: the reset matters
    torch.testing.assert_close(u, want_u, rtol=0, atol=1e-12)
    # and the whole-sequence neuron gives the same spikes
    assert torch.equal(neuron(x, v0)[0], spikes)


def test_learned_per_neuron_decay_is_used():
    neuron = LIF(beta=0.7, learn_beta=True, shape=(5,), backend="torch")
    with torch.no_grad():
        neuron.beta_logit.copy_(torch.linspace(-1, 2, 5))
    x = torch.rand(9, 2, 5, generator=torch.Generator().manual_seed(4)) * 1.5
    u, spikes = lif_membrane(neuron, x)
    want_u, want_s = lif_by_hand(x, torch.sigmoid(torch.linspace(-1, 2, 5)), 1.0, "zero")
    assert torch.equal(spikes, want_s)
    torch.testing.assert_close(u, want_u, rtol=0, atol=1e-6)


def small_mlp():
    torch.manual_seed(0)
    neuron = functools.partial(LIF, beta=0.9, threshold=1.0, backend="torch")
    return SpikingMLP(input_shape=(2, 3, 4), num_classes=5, neuron=neuron, hidden=(16, 8))


def test_record_sample_keeps_every_layer_as_the_equations_give_it():
    model = small_mlp()
    x = (torch.rand(10, 2, 3, 4, generator=torch.Generator().manual_seed(2)) < 0.4).float() * 2
    rec = record_sample(model, x, label=3)
    assert [t.name for t in rec.layers] == ["body.2.neuron", "body.4.neuron"]
    # the first layer by hand: its current is the Linear applied to the flattened input
    linear = model.body[1]
    current = linear(x.flatten(1)).detach()
    u, s = lif_by_hand(current, 0.9, 1.0, "zero")
    first = rec.layer("body.2.neuron")
    np.testing.assert_array_equal(first.spikes, s.numpy())
    np.testing.assert_allclose(first.membrane, u.numpy(), rtol=0, atol=1e-6)
    assert first.rate == pytest.approx(float(s.mean()))
    assert first.shape == (16,) and first.threshold == 1.0
    # the second layer takes the first one's spikes
    u2, s2 = lif_by_hand(model.body[3](s).detach(), 0.9, 1.0, "zero")
    np.testing.assert_array_equal(rec.layers[1].spikes, s2.numpy())
    np.testing.assert_allclose(rec.layers[1].membrane, u2.numpy(), rtol=0, atol=1e-6)
    assert rec.prediction == int(model(x.unsqueeze(1))[0].argmax())
    assert rec.layer(None) is first
    with pytest.raises(ValueError, match=r"layer: expected one of \['body.2.neuron', 'body.4.neuron'\], got 'nope'"):
        rec.layer("nope")
    with pytest.raises(ValueError, match=r"x: expected one sample \[T, \*input_shape\], got \(4,\)"):
        record_sample(model, torch.zeros(4))


def test_record_sample_leaves_no_hooks_behind():
    model = small_mlp()
    record_sample(model, torch.ones(4, 2, 3, 4))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class _Channels(nn.Module):
    """A model on ``[T, B, 6]`` channel input (SHD-like) with one stateful LIF layer."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 4)
        self.lif = LIF(beta=0.5, shape=(4,), stateful=True, backend="torch")

    def forward(self, x):
        spikes, _ = self.lif(self.linear(x))
        return spikes.mean(0)


def test_stateful_neuron_starts_from_its_kept_membrane():
    model = _Channels()
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(3)) * 3
    model(x.unsqueeze(1))  # leaves v in the neuron
    v0 = model.lif.v.clone()
    rec = record_sample(model, x)
    u, s = lif_by_hand(model.linear(x.unsqueeze(1)).detach(), 0.5, 1.0, "zero", v0)
    np.testing.assert_allclose(rec.layers[0].membrane, u[:, 0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(rec.layers[0].spikes, s[:, 0].numpy())


@pytest.mark.parametrize("shape", [(2, 3, 4), (6,)])
def test_plot_sample_writes_one_png_atomically(tmp_path, shape):
    model = small_mlp() if len(shape) == 3 else _Channels()
    rec = record_sample(model, torch.rand(10, *shape) * 2, label=1)
    path = plot_sample(rec, tmp_path / "sample.png", rec.layers[-1].name, title="t: ")
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["sample.png"]


def test_plot_command_draws_a_trained_run(tmp_path, capsys):
    with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "dataset=digits", "dataset.time_steps=4", "model.hidden=[16,8]", "trainer.epochs=1",
            "trainer.max_train_samples=64", "trainer.max_test_samples=32", "trainer.progress=false",
            "trainer.device=cpu"])
    run_dir = tmp_path / "run"
    train_module.run(cfg, run_dir)
    assert main([str(run_dir), "--sample", "2", "--layer", "body.4.neuron"]) == 0
    assert (run_dir / "sample_2.png").read_bytes()[:8] == PNG
    assert main([str(run_dir), "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").is_file()
    capsys.readouterr()
    assert main([str(run_dir), "--sample", "1000"]) == 2
    assert "--sample: expected an index into the" in capsys.readouterr().err
    assert main([str(run_dir), "--layer", "body.0"]) == 2
    assert "layer: expected one of ['body.2.neuron', 'body.4.neuron'], got 'body.0'" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "plot: expected a run directory with config.yaml" in capsys.readouterr().err
    assert main([str(run_dir), "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_cli_dispatches_plot():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "spikegate.cli", "plot"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "usage: spikegate plot RUN_DIR" in out.stderr
