"""The ``spikegate`` command as a user types it (in a subprocess, through Hydra)."""

import json
import subprocess
import sys

import pytest

from spikegate.report import collect_runs

QUICK = ["dataset=digits", "dataset.time_steps=4", "model.hidden=[16]", "trainer.epochs=1",
         "trainer.max_train_samples=64", "trainer.max_test_samples=64", "trainer.progress=false"]


@pytest.fixture
def in_process(tmp_path, monkeypatch, capsys):
    """``spikegate ARGS`` through ``spikegate.cli.main`` in this process, in ``tmp_path``: the
    command's code path without a new interpreter. Returns ``.code``, ``.out``, ``.err``."""
    from types import SimpleNamespace

    from spikegate.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # restored after the test, which --verbose changes
    monkeypatch.setattr(sys, "argv", list(sys.argv))

    def call(*args):
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return SimpleNamespace(code=code, out=out, err=err)

    return call


def spikegate(*args, cwd):
    return subprocess.run([sys.executable, "-m", "spikegate.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_train_prints_accuracy_and_writes_run_dir(tmp_path, in_process):
    """stderr is a pipe here, as when a run is logged to a file: no progress-bar frames (the bar is
    on in the config), no library INFO lines, no log file, and counts and units that read right."""
    run_dir = tmp_path / "run"
    with_bar = [o for o in QUICK if o != "trainer.progress=false"]
    out = spikegate("train", *with_bar, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "test accuracy" in out.stdout and "energy/inference" in out.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"{100 * metrics['test_accuracy']:.1f}%" in out.stdout
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert "\r" not in out.stderr and "\r" not in out.stdout
    assert "INFO" not in out.stdout + out.stderr
    assert "1 epoch in" in out.stdout and "1 epochs" not in out.stdout
    assert not list(run_dir.glob("*.log"))
    assert f"energy/inference {metrics['energy_pj_per_inference']:.3g} pJ" in out.stdout
    table = in_process("report", str(run_dir))
    assert table.out.splitlines()[2].startswith("| dataset=digits")  # the overrides as typed


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


def _start(*args, cwd, env=None):
    return subprocess.Popen([sys.executable, "-m", "spikegate.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_runs_started_at_once_end_in_two_consistent_directories(tmp_path):
    """Both ask for the same directory, as two runs started in the same second do."""
    import torch
    import yaml
    from omegaconf import OmegaConf

    from spikegate.run_directory import run_digest

    same = "hydra.run.dir=outputs/same-second"
    runs = [_start("train", *QUICK, same, cwd=tmp_path),
            _start("train", *QUICK, "trainer.epochs=2", "learning.surrogate=triangle", same, cwd=tmp_path)]
    outs = [(p.communicate(timeout=300), p.returncode) for p in runs]
    for (stdout, stderr), code in outs:
        assert code == 0, stderr
    dirs = sorted(p for p in (tmp_path / "outputs").iterdir())
    assert [d.name for d in dirs] == ["same-second", "same-second-1"]
    printed = sorted(line.split(": ", 1)[1] for (stdout, _), _ in outs
                     for line in stdout.splitlines() if line.startswith("run directory"))
    assert printed == ["outputs/same-second", "outputs/same-second-1"]
    seen = set()
    for run_dir in dirs:  # evaluate checks the same digests; test_evaluate_scores_... runs it
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        epochs = config["trainer"]["epochs"]
        assert metrics["epochs"] == checkpoint["epoch"] == len(metrics["history"]) == epochs
        assert ("learning.surrogate=triangle" in overrides) == (config["learning"]["surrogate"] == "triangle")
        assert ("trainer.epochs=2" in overrides) == (epochs == 2)
        assert not (run_dir / ".spikegate.lock").exists()
        assert checkpoint["config_digest"] == metrics["config_digest"] == run_digest(OmegaConf.create(config))
        seen.add((config["learning"]["surrogate"], epochs))
    assert seen == {("atan", 1), ("triangle", 2)}


def test_refused_resume_leaves_the_run_directory_as_it_was(tmp_path, in_process):
    run_dir = tmp_path / "run"
    assert in_process("train", *QUICK, f"hydra.run.dir={run_dir}").code == 0
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    out = in_process("train", *QUICK, "trainer.epochs=2", "trainer.resume=true", "model.hidden=[8]",
                     f"hydra.run.dir={run_dir}")
    assert out.code == 2
    assert out.err.strip() == (f"spikegate train: checkpoint: {run_dir / 'checkpoint.pt'} was written by "
                               "another configuration (model.hidden: here [8], in the checkpoint [16])")
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before
    table = in_process("report", str(run_dir))
    assert "model.hidden=[16]" in table.out and "[8]" not in table.out


def test_a_run_that_fails_before_its_first_epoch_leaves_no_directory(tmp_path, in_process):
    out = in_process("train", *QUICK, "trainer.resume=true", "hydra.run.dir=outputs/2026-11-23/12-00-00")
    assert out.code == 2 and "checkpoint: expected a file at" in out.err
    assert list(tmp_path.iterdir()) == []


def test_a_directory_that_mixes_two_runs_is_named_by_evaluate_and_report(tmp_path, in_process):
    a, b = tmp_path / "a", tmp_path / "b"
    assert in_process("train", *QUICK, f"hydra.run.dir={a}").code == 0
    assert in_process("train", *QUICK, "learning.surrogate=triangle", f"hydra.run.dir={b}").code == 0
    for name in ("metrics.json", "checkpoint.pt"):
        (a / name).write_bytes((b / name).read_bytes())
    evaluated = in_process("evaluate", str(a))
    assert evaluated.code == 2 and f"{a} mixes two runs" in evaluated.err
    table = in_process("report", str(tmp_path))
    assert table.code == 0
    assert f"{a} mixes two runs" in table.err and "left out of the table" in table.err
    assert len(table.out.strip().splitlines()) == 3  # the header, the rule and run b


def test_interrupt_names_the_last_checkpoint_and_the_command_that_resumes(tmp_path, in_process):
    import shlex
    import signal
    import time

    import torch

    run_dir = tmp_path / "run"
    proc = _start("train", *QUICK, "trainer.epochs=5000", f"hydra.run.dir={run_dir.name}", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("spikegate train: interrupted; last checkpoint: run/checkpoint.pt; resume with: ")
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[:2] == ["spikegate", "train"]
    assert command[-2:] == ["trainer.resume=true", "hydra.run.dir=run"]
    assert "model.hidden=[16]" in command and "trainer.epochs=5000" in command
    stopped_at = torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"]
    resumed = in_process(*command[1:-3], f"trainer.epochs={stopped_at + 1}", *command[-2:])
    assert resumed.code == 0, resumed.err
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == stopped_at + 1


@pytest.mark.parametrize("overrides, env, message", [
    (["trainer.lr=-1"], {}, "spikegate train: trainer.lr: expected a finite value > 0, got -1"),
    (["trainer.epochs=0"], {}, "spikegate train: trainer.epochs: expected an int >= 1, got 0"),
    (["trainer.device=cuda"], {}, "spikegate train: trainer.device: expected 'auto' or 'cpu' on this machine"),
    (["neuron.backend=triton"], {}, "spikegate train: neuron.backend: 'triton' needs a CUDA GPU"),
    (["trainer.resume=true", "hydra.run.dir=nowhere"], {}, "spikegate train: checkpoint: expected a file at"),
    (["dataset=event_digits"], {"SPIKEGATE_DATA": "/proc/spikegate-test"},
     "spikegate train: SPIKEGATE_DATA: the data directory /proc/spikegate-test is not writable"),
    (["dataset=event_digits", "dataset.root=/proc/spikegate-test"], {},
     "spikegate train: dataset.root: the data directory /proc/spikegate-test is not writable"),
    (["neuron.beta=2"], {}, "spikegate train: model: beta: expected a value in (0, 1], got 2"),
])
def test_user_errors_print_one_line_and_no_traceback(tmp_path, monkeypatch, in_process, overrides, env, message):
    import torch

    if overrides == ["trainer.device=cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if overrides == ["neuron.backend=triton"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = in_process("train", *QUICK, *overrides)
    err = out.err
    assert out.code == 2
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no stub left behind


def test_verbose_lets_the_error_through_with_its_traceback(in_process):
    with pytest.raises(ValueError, match="trainer.lr: expected a finite value > 0") as caught:
        in_process("train", *QUICK, "trainer.lr=-1", "--verbose")
    assert any(entry.name == "run" for entry in caught.traceback)  # raised in spikegate.train.run


def test_help_and_usage_are_plain_and_quick(tmp_path, in_process):
    helped = in_process("train", "--help")
    assert helped.code == 0
    assert "powered by Hydra" not in helped.out and "spikegate train [OVERRIDES...]" in helped.out
    top = in_process("--help")
    assert "``" not in top.out and "-m sweeps" in top.out
    script = ("import sys; from spikegate.cli import main; code = main(['evaluate']); "
              "print(code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["2", "False"] and out.stderr.strip() == "usage: spikegate evaluate RUN_DIR"


def test_report_labels_a_run_of_the_defaults(tmp_path):
    from spikegate.report import format_table

    row = {"run": ".", "overrides": "", "test_accuracy": 0.9, "spike_rate": 0.1, "synops_per_inference": 1.0,
           "energy_pj_per_inference": 2.0, "bit_budget_per_inference": 3.0, "epochs": 1, "wall_s": 1.0}
    assert format_table([row]).splitlines()[2].startswith("| (defaults) | 90.0% |")
    assert format_table([{**row, "run": "0_x"}]).splitlines()[2].startswith("| (defaults) 0_x |")


def test_evaluate_waits_for_a_run_that_holds_its_directory(tmp_path, in_process):
    from spikegate.run_directory import claim_run_directory

    run_dir = tmp_path / "run"
    holder = claim_run_directory(run_dir, fresh=True)
    (run_dir / "config.yaml").write_text("{}\n")
    try:
        out = in_process("evaluate", str(run_dir))
    finally:
        holder.release()
    assert out.code == 2
    assert out.err.startswith(f"spikegate evaluate: run directory {run_dir} is in use by another run (pid ")
