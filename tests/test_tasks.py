"""The trainer's tasks: a language-model run through the same loop as classification (files,
scores recomputed independently, exact resume), the rule taking the task's loss, and
``spikegate generate`` on the trained run."""

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from spikegate import train as train_module
from spikegate.checkpoint import load_checkpoint
from spikegate.datasets import PythonSourceData
from spikegate.language_model import SpikingByteLM, generate_from_run
from spikegate.learning import SurrogateGradient
from spikegate.tasks import ClassificationTask, LanguageModelTask, task_from_config

TINY_LM = [
    "experiment=dualpath_lm",
    "dataset.context=24",
    "dataset.max_train_bytes=3000",
    "dataset.max_validation_bytes=1200",
    "model.width=16",
    "model.heads=2",
    "model.layers=2",
    "model.hidden=32",
    "model.window=6",
    "model.anchors=2",
    "trainer.batch_size=16",
    "trainer.lr=0.01",
    "trainer.progress=false",
]


def config(*overrides):
    with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY_LM, *overrides])


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lm_run")
    metrics = train_module.run(config("trainer.epochs=2"), run_dir)
    return run_dir, metrics


def _trained_model(run_dir):
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = SpikingByteLM(vocab_size=256, context=cfg.dataset.context, width=16, heads=2, layers=2,
                          hidden=32, window=6, anchors=2)
    model.load_state_dict(load_checkpoint(run_dir)["model"])
    return model.eval(), cfg


def test_lm_run_writes_the_same_files_and_its_scores(lm_run):
    run_dir, metrics = lm_run
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["epochs"] == 2 and len(on_disk["history"]) == 2
    for key in ("val_loss", "val_bpb", "perplexity", "encoder_zero_fraction", "block_spike_rates",
                "hidden_spike_rates", "inactive_token_fractions", "inactive_token_fraction",
                "energy_pj_per_token", "synops_per_token", "energy_preset", "wall_s"):
        assert key in on_disk, key
    assert "test_accuracy" not in on_disk
    assert on_disk["val_bpb"] == pytest.approx(on_disk["val_loss"] / math.log(2))
    assert on_disk["perplexity"] == pytest.approx(math.exp(on_disk["val_loss"]))
    assert len(on_disk["block_spike_rates"]) == 2 and len(on_disk["inactive_token_fractions"]) == 2
    assert on_disk["val_bpb"] < 8.0          # below a uniform guess over 256 bytes after 2 epochs
    assert on_disk["energy_pj_per_token"] > 0 and on_disk["synops_per_token"] > 0
    assert "spikegate.tasks.LanguageModelTask" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "training_curves.png").stat().st_size > 1000
    assert load_checkpoint(run_dir)["epoch"] == 2


def test_lm_scores_match_an_independent_pass_over_the_validation_bytes(lm_run):
    run_dir, metrics = lm_run
    model, cfg = _trained_model(run_dir)
    data = PythonSourceData(context=cfg.dataset.context, max_train_bytes=cfg.dataset.max_train_bytes,
                            max_validation_bytes=cfg.dataset.max_validation_bytes)
    nats, tokens, silent, encoder_steps = 0.0, 0, 0.0, 0
    with torch.no_grad():
        for i in range(len(data.test)):          # one window at a time, summed by hand
            x, y = data.test[i]
            logits = model(x[:, None]).logits[:, 0]
            nats += float(F.cross_entropy(logits, y, reduction="sum"))
            tokens += y.numel()
            spikes, _ = model.encoder(model.embedding_norm(model.embedding(x[:, None])))
            silent += float((spikes == 0).sum())
            encoder_steps += spikes.numel()
    assert metrics["val_loss"] == pytest.approx(nats / tokens, rel=1e-5)
    assert metrics["encoder_zero_fraction"] == pytest.approx(silent / encoder_steps, rel=1e-5)


def test_lm_resume_continues_exactly(tmp_path, monkeypatch, lm_run):
    _, straight = lm_run
    real_save = train_module.save_checkpoint

    def save_then_crash(path, state):
        real_save(path, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_module.run(config("trainer.epochs=2"), tmp_path)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    resumed = train_module.run(config("trainer.epochs=2", "trainer.resume=true"), tmp_path)
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], rel=1e-6)
    assert [h["train_loss"] for h in resumed["history"]] == pytest.approx(
        [h["train_loss"] for h in straight["history"]], rel=1e-6)


def test_rule_minimises_the_task_loss_on_a_structured_output():
    rule = SurrogateGradient()
    assert rule.loss is F.cross_entropy           # classification default
    rule.loss = LanguageModelTask.loss
    torch.manual_seed(0)
    model = SpikingByteLM(vocab_size=16, width=8, heads=2, layers=1, hidden=8, context=6, window=3)
    x, y = torch.randint(0, 16, (6, 2)), torch.randint(0, 16, (6, 2))
    result = rule.step(model, x, y)
    logits = model(x).logits
    want = -torch.log_softmax(logits, -1).gather(-1, y[..., None]).mean()  # written out
    assert float(result.loss) == pytest.approx(float(want.detach()), rel=1e-6)
    assert result.logits.shape == (6, 2, 16)
    assert model.head.weight.grad is not None


def test_a_config_without_a_task_is_classification():
    assert isinstance(task_from_config(OmegaConf.create({"model": {}})), ClassificationTask)


def test_greedy_generation_from_a_run_equals_rerunning_the_sequence(lm_run):
    run_dir, _ = lm_run
    model, _ = _trained_model(run_dir)
    prompt = "def f("
    seq = torch.tensor(list(prompt.encode()))[:, None]
    with torch.no_grad():
        for _ in range(10):       # the whole sequence again for every byte, no cached state
            seq = torch.cat([seq, model(seq).logits[-1].argmax(-1)[None]])
    want = bytes(seq[:, 0].tolist()).decode("utf-8", errors="replace")
    assert generate_from_run(run_dir, prompt, tokens=10, temperature=0, device="cpu") == want


def test_generate_command_samples_and_names_bad_input(lm_run, tmp_path):
    run_dir, _ = lm_run

    def generate(*args):
        return subprocess.run([sys.executable, "-m", "spikegate.cli", "generate", *args],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)

    out = generate(str(run_dir), "--prompt", "import ", "--tokens", "12", "--top-k", "5")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("import ")
    too_long = generate(str(run_dir), "--prompt", "x" * 25)
    assert too_long.returncode == 2
    assert too_long.stderr.strip().count("\n") == 0
    assert "context=24" in too_long.stderr and "got 25" in too_long.stderr
    not_a_run = generate(str(tmp_path), "--prompt", "a")
    assert not_a_run.returncode == 2 and "config.yaml" in not_a_run.stderr


def test_lm_energy_per_token_is_the_estimators_per_sequence_energy_over_its_length(lm_run):
    from torch.utils.data import DataLoader

    from spikegate.energy import estimate_energy

    run_dir, metrics = lm_run
    model, cfg = _trained_model(run_dir)
    data = PythonSourceData(context=cfg.dataset.context, max_train_bytes=cfg.dataset.max_train_bytes,
                            max_validation_bytes=cfg.dataset.max_validation_bytes)
    per_sequence = estimate_energy(model, DataLoader(data.test, batch_size=7))
    assert per_sequence.not_counted == []
    T = cfg.dataset.context
    assert metrics["energy_pj_per_token"] == pytest.approx(per_sequence.energy_pj / T, rel=1e-6)
    assert metrics["synops_per_token"] == pytest.approx(per_sequence.synops / T, rel=1e-6)


def test_evaluate_scores_an_lm_run_again(lm_run):
    run_dir, metrics = lm_run
    again = train_module.evaluate_run(run_dir, device="cpu")
    assert again["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-6)
    assert again["inactive_token_fractions"] == pytest.approx(metrics["inactive_token_fractions"])
    assert json.loads((run_dir / "evaluation.json").read_text())["epochs"] == 2
