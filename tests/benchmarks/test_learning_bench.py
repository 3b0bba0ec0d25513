"""The learning-rule benchmark (benchmarks/learning.py) in its --quick setting, on the CPU.

``spikegate bench learning`` loads the script by path, so it is loaded here the same way. The
memory checks use the saved-tensor peak, which is deterministic; no timing is asserted.
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "learning.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("spikegate_bench_learning", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "learning.json"
    argv = ["--quick", "--device", "cpu", "--threads", "1", "--repeats", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["meta"]["device_type"] == "cpu" and result["meta"]["threads"] == 1
    return result


def _row(result, rule, T):
    (row,) = [r for r in result["rows"] if r["rule"] == rule and r["T"] == T]
    return row


@pytest.mark.parametrize("rule", ["surrogate", "tess"])
def test_each_rule_has_a_timed_row_at_each_T(result, rule):
    for T in (2, 8):
        row = _row(result, rule, T)
        assert row["status"] == "ok", row
        assert row["median_ms"] > 0 and row["saved_peak_bytes"] > 0
        assert math.isfinite(row["loss"])
        assert row["time_vs_surrogate"] > 0


def test_ultradiscrete_has_a_row_either_way(result):
    for T in (2, 8):
        row = _row(result, "ultradiscrete", T)
        assert row["status"] in ("ok", "skipped"), row
        if row["status"] == "skipped":
            assert "Ultradiscrete" in row["note"]


def test_saved_memory_grows_with_T_for_bptt_and_stays_flat_for_tess(result):
    # BPTT keeps every step's activations: 4x the steps is close to 4x the bytes (the readout's
    # and the loss's share does not grow). TESS frees each step's graph: exactly flat.
    bptt = _row(result, "surrogate", 8)["saved_peak_bytes"] / _row(result, "surrogate", 2)["saved_peak_bytes"]
    tess = _row(result, "tess", 8)["saved_peak_bytes"] / _row(result, "tess", 2)["saved_peak_bytes"]
    assert bptt > 3
    assert tess == 1.0
    assert _row(result, "tess", 8)["saved_growth"] == 1.0


def test_targets_are_reported_as_ratios(result, bench):
    t = result["targets"]
    assert (t["T_small"], t["T_large"]) == (2, 8)
    assert t["tess_saved_growth"] == 1.0 and t["surrogate_saved_growth"] > 3
    assert set(t["tess_time_vs_surrogate"]) == {"2", "8"}  # JSON keys
    assert isinstance(t["memory_target_met"], bool) and isinstance(t["time_target_met"], bool)
    report = bench.markdown_report(result)
    assert "target <= 1.2" in report and "target <= 2" in report


def test_bad_arguments_exit_2(bench, capsys):
    assert bench.main(["--steps", "0", "--device", "cpu"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert bench.main(["--input", "2,8", "--device", "cpu"]) == 2
    assert "--input" in capsys.readouterr().err
