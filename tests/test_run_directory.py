"""A run owns its directory: the lock, the suffix for a taken name, the clean-up of a failed run, and
the digest that tells a directory mixing two runs."""

import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from spikegate.run_directory import LOCK_NAME, RunDirectoryError, claim_run_directory, run_digest


def test_a_held_directory_is_refused_to_a_resume_and_skipped_by_a_fresh_run(tmp_path):
    first = claim_run_directory(tmp_path / "run", fresh=True)
    assert first.path == tmp_path / "run" and first.pristine
    with pytest.raises(RunDirectoryError, match=rf"run directory .*run is in use by another run \(pid {os.getpid()}\)"):
        claim_run_directory(tmp_path / "run", fresh=False)
    second = claim_run_directory(tmp_path / "run", fresh=True)
    assert second.path == tmp_path / "run-1"
    first.release()
    second.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_a_fresh_run_does_not_write_into_a_finished_run(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    claim = claim_run_directory(tmp_path / "run", fresh=True)
    assert claim.path == tmp_path / "run-1"
    claim.release()
    resumed = claim_run_directory(tmp_path / "run", fresh=False)  # a resume continues it in place
    assert resumed.path == tmp_path / "run" and not resumed.pristine
    resumed.release(keep=False)
    assert (tmp_path / "run" / "metrics.json").read_text() == "{}"  # not its files to remove


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    """The lock file of a run that was killed stays behind; its flock went with the process."""
    run = tmp_path / "run"
    script = ("import sys; from spikegate.run_directory import claim_run_directory; "
              "claim_run_directory(sys.argv[1], fresh=True); print('held')")
    out = subprocess.run([sys.executable, "-c", script, str(run)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=60)
    assert out.stdout.strip() == "held", out.stderr
    assert (run / LOCK_NAME).is_file()  # it exited without releasing
    claim = claim_run_directory(run, fresh=False)
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    claim.release()


def test_a_failed_run_removes_the_directory_it_created_and_its_empty_parents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "keep.txt").write_text("not the run's")
    claim = claim_run_directory("outputs/2026-12-01/18-00-00", fresh=True)
    (claim.path / "config.yaml").write_text("written before the failure")
    claim.release(keep=False)
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["keep.txt"]


def test_digest_ignores_what_a_resume_may_change_and_survives_config_yaml():
    base = {"model": {"hidden": [16]}, "learning": {"surrogate": "atan"},
            "trainer": {"epochs": 3, "resume": False, "lr": 0.01}, "neuron": {"backend": "auto"},
            "dataset": {"root": None, "time_steps": 4}}
    cfg = OmegaConf.create(base)
    moved = OmegaConf.merge(cfg, {"trainer": {"epochs": 6, "resume": True}, "neuron": {"backend": "torch"},
                                  "dataset": {"root": "/elsewhere"}})
    assert run_digest(moved) == run_digest(cfg)
    for change in ({"learning": {"surrogate": "triangle"}}, {"trainer": {"lr": 0.02}},
                   {"model": {"hidden": [8]}}):
        assert run_digest(OmegaConf.merge(cfg, change)) != run_digest(cfg), change
    assert run_digest(OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True))) == run_digest(cfg)
