"""``experiment=ultralif_t`` (the UltraLIF paper's T = 1 / 10 / 30 sweep) and its report script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module

REPORT = Path(__file__).resolve().parents[2] / "experiments" / "ultralif" / "report.py"
ARMS = {"lif": ("spikegate.neurons.LIF", "spikegate.learning.SurrogateGradient"),
        "plif": ("spikegate.neurons.LIF", "spikegate.learning.SurrogateGradient"),
        "ultralif": ("spikegate.neurons.UltraLIF", "spikegate.learning.Ultradiscrete"),
        "ultraplif": ("spikegate.neurons.UltraPLIF", "spikegate.learning.Ultradiscrete"),
        "ultradlif": ("spikegate.neurons.UltraDLIF", "spikegate.learning.Ultradiscrete"),
        "ultradplif": ("spikegate.neurons.UltraDPLIF", "spikegate.learning.Ultradiscrete")}


def _compose(*overrides, hydra=False):
    with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def test_sweep_covers_the_papers_grid_with_three_seeds():
    cfg = _compose("experiment=ultralif_t", hydra=True)
    params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    assert params["dataset.time_steps"] == ["1", "10", "30"]
    assert set(params["+ultralif_arm"]) == set(ARMS)
    assert params["learning.sparsity"] == ["0", "0.01", "0.1"]
    assert len(params["seed"]) >= 3 and set(params["dataset"]) == {"digits", "event_digits"}
    assert list(cfg.model.hidden) == [64] and cfg.trainer.lr == 1e-3 and cfg.trainer.batch_size == 128


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_each_arm_pairs_its_neuron_with_its_rule(arm):
    cfg = _compose("experiment=ultralif_t", f"+ultralif_arm={arm}", "learning.sparsity=0.1")
    assert (cfg.neuron._target_, cfg.learning._target_) == ARMS[arm]
    assert cfg.learning.sparsity == 0.1
    if cfg.learning._target_.endswith("SurrogateGradient"):
        assert cfg.learning.surrogate == "sigmoid" and cfg.learning.alpha == 10.0
        assert cfg.neuron.learn_beta == (arm == "plif")


def test_report_gives_mean_and_std_over_seeds(tmp_path):
    spec = importlib.util.spec_from_file_location("ultralif_report", REPORT)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    ultra = ({"soft_spike_rate": 0.4, "hard_test_accuracy": 0.6, "hard_spike_rate": 0.1},
             {"soft_spike_rate": 0.2, "hard_test_accuracy": 0.8, "hard_spike_rate": 0.3})
    runs = [("LIF", False, 0.50, {}), ("LIF", False, 0.70, {}),
            ("UltraLIF", False, 0.80, ultra[0]), ("UltraLIF", False, 0.90, ultra[1])]
    for k, (name, learn, acc, extra) in enumerate(runs):
        run = tmp_path / str(k)
        run.mkdir()
        config = {"neuron": {"_target_": f"spikegate.neurons.{name}", "learn_beta": learn},
                  "dataset": {"_target_": "spikegate.datasets.DigitsData", "time_steps": 10},
                  "learning": {"sparsity": 0.0}}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        (run / "metrics.json").write_text(json.dumps({"test_accuracy": acc, "spike_rate": 0.25, **extra}))
    rows = {r["arm"]: r for r in report.summarize(report.collect(tmp_path))}
    assert rows["LIF"]["acc"] == pytest.approx((0.6, 0.1414213562))
    assert rows["UltraLIF"]["hard_acc"] == pytest.approx((0.7, 0.1414213562))
    assert rows["UltraLIF"]["energy"][0] == pytest.approx(10 * 0.3)        # T x mean soft rate
    assert rows["UltraLIF"]["vs_lif"] == pytest.approx(3.0 / 2.5)           # LIF: 10 x 0.25
    report.main([str(tmp_path)])
    assert (tmp_path / "ultralif_t.png").stat().st_size > 1000
    table = (tmp_path / "ultralif_t.md").read_text()
    assert "| Digits | 10 | UltraLIF | 0 | 2 | 85.0 ± 7.1 | 70.0 ± 14.1 |" in table
