"""``spikegate report``: the columns follow what the runs' metrics.json hold."""

import json

from spikegate.report import collect_runs, format_table, plot_sweep


def write_run(root, name, overrides, **metrics):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run / "metrics.json").write_text(json.dumps(metrics))


LM = dict(val_loss=2.0, perplexity=7.39, encoder_zero_fraction=0.8, inactive_token_fraction=0.1,
          block_spike_rates=[0.25, 0.125], spike_rate=0.2, synops_per_token=1000.0,
          energy_pj_per_token=5e5, epochs=2, wall_s=10.0)


def table_rows(text):
    lines = text.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return head, [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_language_model_sweep_shows_loss_and_sparsity_best_bpb_first(tmp_path):
    write_run(tmp_path, "0_ablation=full", ["ablation=full"], **LM, val_bpb=2.9)
    write_run(tmp_path, "1_ablation=topk", ["ablation=topk"], **{**LM, "block_spike_rates": [0.5, 0.5]},
              val_bpb=3.1)
    write_run(tmp_path, "2_ablation=decay_only", ["ablation=decay_only"], **LM, val_bpb=2.5)
    head, rows = table_rows(format_table(collect_runs(tmp_path)))
    assert head == ["overrides", "val_loss", "val_bpb", "perplexity", "encoder_zero_fraction",
                    "inactive_token_fraction", "block_spike_rates", "spike_rate", "synops_per_token",
                    "energy_pj_per_token", "epochs", "wall_s"]
    assert [r["overrides"] for r in rows] == ["ablation=decay_only", "ablation=full", "ablation=topk"]
    assert rows[0]["block_spike_rates"] == "0.25/0.125" and rows[2]["block_spike_rates"] == "0.5/0.5"
    plot = plot_sweep(tmp_path, collect_runs(tmp_path))
    assert plot.name == "loss_and_sparsity.png" and plot.stat().st_size > 1000


def test_classification_sweep_keeps_its_columns(tmp_path):
    write_run(tmp_path, "0", ["learning.surrogate=atan"], test_accuracy=0.5, spike_rate=0.1,
              synops_per_inference=10.0, energy_pj_per_inference=3.0, bit_budget_per_inference=7.0,
              epochs=1, wall_s=1.0)
    write_run(tmp_path, "1", ["learning.surrogate=triangle"], test_accuracy=0.75, spike_rate=0.1,
              synops_per_inference=10.0, energy_pj_per_inference=3.0, bit_budget_per_inference=7.0,
              epochs=1, wall_s=1.0)
    head, rows = table_rows(format_table(collect_runs(tmp_path)))
    assert head == ["overrides", "test_accuracy", "spike_rate", "synops_per_inference",
                    "energy_pj_per_inference", "bit_budget_per_inference", "epochs", "wall_s"]
    assert [r["test_accuracy"] for r in rows] == ["75.0%", "50.0%"]
    assert plot_sweep(tmp_path, collect_runs(tmp_path)).name == "accuracy_vs_energy.png"


def test_plot_labels_keep_only_the_overrides_that_vary():
    from spikegate.report import _varying_overrides

    rows = [{"overrides": "ablation=full experiment=x seed=0", "run": "0"},
            {"overrides": "ablation=topk experiment=x seed=0", "run": "1"}]
    assert _varying_overrides(rows) == ["ablation=full", "ablation=topk"]
    assert _varying_overrides([{"overrides": "", "run": "solo"}]) == ["solo"]
