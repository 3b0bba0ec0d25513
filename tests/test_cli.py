"""The ``spikegate`` command as a user types it (in a subprocess, through Hydra)."""

import json
import subprocess
import sys

import pytest

from spikegate.report import collect_runs

QUICK = ["dataset=digits", "dataset.time_steps=4", "model.hidden=[16]", "trainer.epochs=1",
         "trainer.max_train_samples=64", "trainer.max_test_samples=64", "trainer.progress=false"]


def spikegate(*args, cwd):
    return subprocess.run([sys.executable, "-m", "spikegate.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_train_prints_accuracy_and_writes_run_dir(tmp_path):
    out = spikegate("train", *QUICK, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "test accuracy" in out.stdout and "energy/inference" in out.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert f"{100 * metrics['test_accuracy']:.1f}%" in out.stdout
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()


def test_evaluate_scores_a_finished_run_again(tmp_path):
    run_dir = tmp_path / "run"
    assert spikegate("train", *QUICK, f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0
    out = spikegate("evaluate", str(run_dir), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    trained = json.loads((run_dir / "metrics.json").read_text())
    again = json.loads((run_dir / "evaluation.json").read_text())
    # the same weights on the same test set: the same predictions and activity
    assert again["test_accuracy"] == trained["test_accuracy"]
    assert again["synops_per_inference"] == pytest.approx(trained["synops_per_inference"])
    assert f"test accuracy {100 * again['test_accuracy']:.1f}%" in out.stdout
    missing = spikegate("evaluate", str(tmp_path), cwd=tmp_path)
    assert missing.returncode == 2 and "expected a run directory with config.yaml" in missing.stderr


def test_multirun_sweeps_and_report_tabulates(tmp_path):
    sweep = tmp_path / "sweep"
    out = spikegate("train", "-m", *QUICK, "learning.surrogate=atan,triangle",
                    f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = collect_runs(sweep)
    swept = sorted(o for r in rows for o in r["overrides"].split() if o.startswith("learning."))
    assert swept == ["learning.surrogate=atan", "learning.surrogate=triangle"]
    table = spikegate("report", str(sweep), cwd=tmp_path)
    assert table.returncode == 0
    lines = table.stdout.strip().splitlines()
    assert lines[0].startswith("| overrides | test_accuracy |") and len(lines) == 4
    for row in rows:
        metrics = json.loads((sweep / row["run"] / "metrics.json").read_text())
        line = next(line for line in lines if row["overrides"] in line)
        assert f"| {100 * metrics['test_accuracy']:.1f}% |" in line
    accuracies = [float(line.split("|")[2].strip(" %")) for line in lines[2:]]
    assert accuracies == sorted(accuracies, reverse=True)


@pytest.mark.parametrize("args, message", [
    (["fly"], "unknown command 'fly'"),
    (["bench", "nope"], "unknown benchmark 'nope'"),
    (["report", "does-not-exist"], "expected a run or sweep directory"),
])
def test_bad_commands_exit_2_with_message(tmp_path, args, message):
    out = spikegate(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr


def test_unknown_dataset_is_named(tmp_path):
    out = spikegate("train", "dataset=imagenet", cwd=tmp_path)
    assert out.returncode != 0
    assert "imagenet" in out.stderr and "dataset" in out.stderr
