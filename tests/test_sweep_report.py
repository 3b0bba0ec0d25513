"""``spikegate report`` on sweeps written by hand: seed groups against numpy, CSV read back with the
csv module, learning curves, and runs that failed listed while the rest are reported."""

import csv
import io
import json

import numpy as np
import pytest
import yaml

from spikegate.report import (
    collect_runs,
    find_failures,
    format_csv,
    format_groups,
    format_groups_csv,
    group_runs,
    main,
    plot_learning_curves,
    swept_keys,
)

PNG = b"\x89PNG\r\n\x1a\n"
COMMON = ["dataset=digits", "trainer.epochs=3"]


def write_run(root, name, overrides, accuracy=None, energy=1e4, epochs=3, metrics_text=None, checkpoint=False):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if checkpoint:
        (run / "checkpoint.pt").write_bytes(b"not read")
    if metrics_text is not None:
        (run / "metrics.json").write_text(metrics_text)
    elif accuracy is not None:
        history = [{"epoch": e + 1, "train_loss": 2.0 / (e + 1), "test_accuracy": accuracy * (e + 1) / epochs,
                    "spike_rate": 0.1} for e in range(epochs)]
        (run / "metrics.json").write_text(json.dumps({
            "test_accuracy": accuracy, "spike_rate": 0.1, "synops_per_inference": 100.0,
            "energy_pj_per_inference": energy, "bit_budget_per_inference": 10.0, "epochs": epochs,
            "wall_s": 1.0, "history": history}))
    return run


ACCURACY = {("atan", 0): 0.50, ("atan", 1): 0.60, ("atan", 2): 0.70, ("triangle", 0): 0.80,
            ("triangle", 1): 0.90}


@pytest.fixture
def sweep(tmp_path):
    """Five finished runs (two surrogates x seeds), one that raised, one stopped mid-training and one
    with a truncated metrics.json."""
    for i, ((surrogate, seed), accuracy) in enumerate(ACCURACY.items()):
        write_run(tmp_path, f"{i}_s{surrogate}{seed}", [*COMMON, f"learning.surrogate={surrogate}", f"seed={seed}"],
                  accuracy, energy=1e4 * (1 + i))
    write_run(tmp_path, "5_raised", [*COMMON, "learning.surrogate=sigmoid", "seed=0"])
    write_run(tmp_path, "6_stopped", [*COMMON, "learning.surrogate=sigmoid", "seed=1"], checkpoint=True)
    write_run(tmp_path, "7_truncated", [*COMMON, "learning.surrogate=sigmoid", "seed=2"], metrics_text='{"test_acc')
    return tmp_path


def test_groups_pool_seeds_with_numpy_mean_and_sample_std(sweep):
    rows = collect_runs(sweep)
    assert len(rows) == 5
    assert swept_keys(rows) == ["learning.surrogate"]
    keys, groups = group_runs(rows)
    assert keys == ["learning.surrogate"]
    assert [g["learning.surrogate"] for g in groups] == ["triangle", "atan"]  # best mean first
    for g in groups:
        values = np.array([a for (s, _), a in ACCURACY.items() if s == g["learning.surrogate"]])
        assert g["runs"] == len(values)
        assert g["test_accuracy_mean"] == pytest.approx(values.mean())
        assert g["test_accuracy_std"] == pytest.approx(values.std(ddof=1))
    assert groups[1]["seeds"] == "0 1 2"
    table = format_groups(rows).splitlines()
    assert table[0].split("|")[1].strip() == "learning.surrogate"
    atan = next(line for line in table if "atan" in line)
    assert "60.0 ± 10.0%" in atan  # mean 0.6, sample std 0.1
    assert len({len(line) for line in table}) == 1  # padded: every line the same width


def test_csv_read_back_holds_every_run_and_group(sweep):
    rows = collect_runs(sweep)
    runs = list(csv.DictReader(io.StringIO(format_csv(rows))))
    assert len(runs) == 5
    by_run = {r["run"]: r for r in runs}
    assert float(by_run["1_satan1"]["test_accuracy"]) == 0.6
    assert by_run["1_satan1"]["learning.surrogate"] == "atan" and by_run["1_satan1"]["seed"] == "1"
    groups = list(csv.DictReader(io.StringIO(format_groups_csv(rows))))
    tri = next(g for g in groups if g["learning.surrogate"] == "triangle")
    assert float(tri["test_accuracy_mean"]) == pytest.approx(0.85)
    assert float(tri["test_accuracy_std"]) == pytest.approx(np.std([0.8, 0.9], ddof=1))


def test_a_run_without_seed_repeats_has_no_std():
    rows = [{"run": "a", "overrides": "lr=1", "test_accuracy": 0.5},
            {"run": "b", "overrides": "lr=2", "test_accuracy": 0.7}]
    _, groups = group_runs(rows)
    assert [g["test_accuracy_std"] for g in groups] == [None, None]
    assert "70.0%" in format_groups(rows) and "±" not in format_groups(rows)


def test_key_set_by_only_some_runs_counts_as_swept():
    rows = [{"run": "a", "overrides": "model.hidden=[16]", "test_accuracy": 0.5},
            {"run": "b", "overrides": "", "test_accuracy": 0.7}]
    keys, groups = group_runs(rows)
    assert keys == ["model.hidden"]
    assert sorted(g["model.hidden"] for g in groups) == ["(default)", "[16]"]


def test_failures_are_listed_with_why(sweep):
    failures = {f["run"]: f for f in find_failures(sweep)}
    assert sorted(failures) == ["5_raised", "6_stopped", "7_truncated"]
    assert "failed before its first epoch" in failures["5_raised"]["reason"]
    assert "checkpoint.pt is there" in failures["6_stopped"]["reason"]
    assert "metrics.json is unreadable" in failures["7_truncated"]["reason"]
    assert failures["5_raised"]["overrides"].endswith("learning.surrogate=sigmoid seed=0")


def test_learning_curves_png(sweep, tmp_path):
    path = plot_learning_curves(sweep, collect_runs(sweep), tmp_path / "curves.png")
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000
    no_history = [{"run": "x", "overrides": ""}]
    assert plot_learning_curves(tmp_path / "nowhere", no_history, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_command_reports_the_rest_and_lists_failures(sweep, capsys):
    assert main([str(sweep)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("| overrides | test_accuracy |")
    assert sum(line.startswith("| dataset=digits") for line in lines) == 5
    assert "mean ± std over seeds:" in out
    assert "3 run(s) did not finish:" in err and "- 6_stopped:" in err
    for name in ("report.md", "runs.csv", "groups.csv", "learning_curves.png", "accuracy_vs_energy.png"):
        assert (sweep / name).is_file(), name
    report = (sweep / "report.md").read_text()
    assert "## Mean and std over seeds" in report and "7_truncated" in report
    assert not list(sweep.glob(".*.tmp"))
    assert main([str(sweep), "--format", "csv"]) == 0
    assert len(list(csv.DictReader(io.StringIO(capsys.readouterr().out)))) == 5


def test_command_with_only_failed_runs_lists_them_and_exits_2(tmp_path, capsys):
    write_run(tmp_path, "0_raised", ["seed=0"])
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no metrics.json under" in err and "1 run(s) did not finish" in err and "0_raised" in err


@pytest.mark.parametrize("args", [[], ["a", "b"], ["x", "--format", "html"], ["x", "--format"]])
def test_command_usage_errors(args, capsys):
    assert main(args) == 2
    assert "usage: spikegate report DIR" in capsys.readouterr().err
