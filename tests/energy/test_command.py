"""``spikegate energy RUN_DIR`` on a run the trainer just wrote: same counting path, files, errors."""

import json

import pytest
from hydra import compose, initialize_config_module

from spikegate import train as train_module
from spikegate.energy.command import energy_run, main

QUICK = ["dataset=digits", "dataset.time_steps=4", "model.hidden=[16]", "trainer.epochs=1",
         "trainer.max_train_samples=64", "trainer.max_test_samples=40", "trainer.progress=false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=QUICK)
    train_module.run(cfg, path)
    return path


def test_energy_files_agree_with_the_trainers_metrics(run_dir, capsys):
    assert main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "wrote energy.json, energy.md, energy.png" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    energy = json.loads((run_dir / "energy.json").read_text())
    # one counting path: the trainer's evaluation and the command see the same activity
    assert energy["totals"]["synops"] == pytest.approx(metrics["synops_per_inference"])
    assert energy["totals"]["energy_pj"] == pytest.approx(metrics["energy_pj_per_inference"])
    assert energy["totals"]["bit_budget"] == pytest.approx(metrics["bit_budget_per_inference"])
    assert metrics["energy_preset"] == energy["preset"]["name"] == "45nm-fp32"
    assert energy["samples"] == 40
    assert (run_dir / "energy.md").read_text().startswith("| layer |")
    assert (run_dir / "energy.png").stat().st_size > 1000


def test_overrides_reprice_without_retraining(run_dir):
    base = energy_run(run_dir)
    int8 = energy_run(run_dir, ["preset=45nm-int8", "energy.e_ac_pj=0.01"])
    assert int8.preset.name == "45nm-int8" and int8.preset.e_ac_pj == 0.01
    assert int8.synops == pytest.approx(base.synops) and int8.energy_pj < base.energy_pj


def test_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main([str(run_dir), "preset=7nm"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "expected one of ['45nm-fp16'" in err
    assert main([str(tmp_path)]) == 2
    assert "expected a run directory with config.yaml" in capsys.readouterr().err
    assert main([str(run_dir), "e_ac_pj"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main([]) == 2


def test_energy_config_group_overrides_from_the_command_line(tmp_path):
    from spikegate.energy import preset_from_config

    with initialize_config_module(config_module="spikegate.conf", version_base="1.3"):
        default = compose(config_name="config")
        chosen = compose(config_name="config", overrides=["energy.preset=45nm-int8", "energy.e_ac_pj=0.5",
                                                          "energy.memory=dram"])
        bad = compose(config_name="config", overrides=[*QUICK, "energy.e_mac_pj=-1"])
    assert preset_from_config(default.energy).name == "45nm-fp32"
    preset = preset_from_config(chosen.energy)
    assert (preset.name, preset.e_ac_pj, preset.e_mac_pj, preset.memory) == ("45nm-int8", 0.5, 0.23, "dram")
    with pytest.raises(ValueError, match="e_mac_pj: expected an energy >= 0 pJ, got -1"):
        train_module.run(bad, tmp_path)          # refused before the first epoch
    assert not (tmp_path / "checkpoint.pt").exists()
