"""The README's promise: `spikegate train` with no arguments reaches >= 90% on event_digits in a
couple of minutes on a laptop CPU. This runs exactly that command (about a minute on 2 cores)."""

import json
import os
import subprocess
import sys


def test_default_train_reaches_90_percent(tmp_path):
    env = {**os.environ, "SPIKEGATE_DATA": str(tmp_path / "data")}
    out = subprocess.run(
        [sys.executable, "-m", "spikegate.cli", "train", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.90, metrics
    assert metrics["epochs"] == 20
    assert f"test accuracy {100 * metrics['test_accuracy']:.1f}%" in out.stdout
    assert metrics["energy_pj_per_inference"] > 0 and 0 < metrics["spike_rate"] < 1
