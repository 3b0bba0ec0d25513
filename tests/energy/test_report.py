"""EnergyReport output: terminal table, markdown, JSON, and the per-layer and sweep plots."""

import json

import torch
from torch import nn

from spikegate.energy import PRESETS, estimate_energy
from spikegate.energy.plot import plot_accuracy_vs_energy, plot_layers
from spikegate.neurons import LIF, SpikesOnly


def small_report():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), SpikesOnly(LIF(beta=0.9, threshold=0.2, backend="torch")),
                          nn.Linear(6, 2), nn.ReLU())
    return estimate_energy(model, torch.rand(5, 3, 4))


def test_table_markdown_and_json_carry_the_same_figures():
    report = small_report()
    text, markdown = str(report), report.to_markdown()
    for name in ("0", "1.neuron", "2"):
        assert f"| {name} |" in markdown
    assert "not counted: 3 (ReLU)" in text and "not counted: 3 (ReLU)" in markdown
    assert "preset 45nm-fp32" in text and "bit budget" in text
    data = json.loads(report.to_json())
    assert data["totals"]["energy_pj"] == report.energy_pj
    assert data["totals"]["synops"] == report.synops
    assert [row["name"] for row in data["layers"]] == ["0", "1.neuron", "2"]
    assert data["preset"]["e_ac_pj"] == 0.9 and "Horowitz" in data["sources"]["e_ac_pj"]
    assert data["not_counted"] == [{"name": "3", "type": "ReLU"}]
    assert data["units"]["energy"] == "pJ per inference"
    # the total line of the table is the sum of the rows
    assert abs(sum(r["energy_pj"] for r in data["layers"]) - report.energy_pj) < 1e-6 * report.energy_pj


def test_presets_are_horowitz_figures_with_sources():
    # add / mul pJ at 45 nm typed from the paper's table; MAC = mul + add
    table = {"45nm-fp32": (0.9, 3.7), "45nm-fp16": (0.4, 1.1), "45nm-int32": (0.1, 3.1), "45nm-int8": (0.03, 0.2)}
    assert set(PRESETS) == set(table)
    for name, (add, mul) in table.items():
        preset = PRESETS[name]
        assert (preset.e_ac_pj, preset.e_mul_pj) == (add, mul)
        assert abs(preset.e_mac_pj - (add + mul)) < 1e-9
        for field in ("e_mac_pj", "e_ac_pj", "e_mul_pj", "e_cmp_pj", "e_exp_pj", "e_sram_pj_per_bit",
                      "e_dram_pj_per_bit"):
            assert preset.sources[field], (name, field)
    assert PRESETS["45nm-fp32"].e_sram_pj_per_bit == 20 / 64


def test_plots_are_pngs(tmp_path):
    report = small_report()
    layers = plot_layers(report, tmp_path / "energy.png")
    rows = [{"overrides": "a", "test_accuracy": 0.8, "energy_pj_per_inference": 2e5},
            {"overrides": "b", "test_accuracy": 0.9, "energy_pj_per_inference": 3e6},
            {"run": "c", "test_accuracy": None, "energy_pj_per_inference": None}]
    sweep = plot_accuracy_vs_energy(rows, tmp_path / "sweep.png")
    for path in (layers, sweep):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert not list(tmp_path.glob(".*.tmp"))
