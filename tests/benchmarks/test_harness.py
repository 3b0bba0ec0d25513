"""The shared benchmark harness (benchmarks/harness.py), loaded by path as the benchmarks load it."""

import importlib.util
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import torch

HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "harness.py"


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("spikegate_bench_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "orig_argv, argv, expected",
    [
        (["/venv/bin/python", "/venv/bin/spikegate", "bench", "lif", "--quick"], ["--quick"],
         "spikegate bench lif --quick"),
        (["python3", "-m", "spikegate.cli", "bench", "lif", "--out", "a b.json"],
         ["--out", "a b.json"], "python3 -m spikegate.cli bench lif --out 'a b.json'"),
        (["/usr/bin/python", "benchmarks/lif.py", "--quick"], ["--quick"],
         "python benchmarks/lif.py --quick"),
        (["/usr/bin/python", "benchmarks/lif.py"], [], "python benchmarks/lif.py"),
        # called as a function from another program: the script and the arguments it was given
        (["python", "-m", "pytest", "-q", "--quick"], ["--quick"], "python benchmarks/lif.py --quick"),
        (["python", "-m", "pytest"], [], "python benchmarks/lif.py"),
    ],
)
def test_command_line_is_what_the_user_typed(harness, monkeypatch, orig_argv, argv, expected):
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    assert harness.command_line(argv, "python benchmarks/lif.py") == expected


def test_time_interleaved_rotates_the_order_and_warms_up_untimed(harness):
    calls = []
    steps = [lambda: calls.append("a"), lambda: calls.append("b"), lambda: calls.append("c")]
    times = harness.time_interleaved(steps, torch.device("cpu"), repeats=3, warmup=2)
    assert [len(t) for t in times] == [3, 3, 3] and all(v >= 0 for t in times for v in t)
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]
    assert calls[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_saved_bytes_count_distinct_storages_but_not_the_inputs(harness):
    x = torch.randn(100, requires_grad=True)

    def forward():
        y = x * x            # saves x twice (the input: excluded)
        return torch.sin(y)  # saves y: 400 bytes

    assert harness.saved_bytes_for_backward(forward, [x]) == 400


def test_peak_bytes_on_the_cpu_see_a_temporary(harness):
    def step():
        torch.empty(1 << 20, dtype=torch.uint8).fill_(1)

    peak = harness.peak_bytes_of_step(step, torch.device("cpu"))
    if peak is None:
        pytest.skip("this torch build's profiler records no memory events")
    assert peak >= 1 << 20


def test_roofline_fraction(harness):
    # 1 GB in 1 ms is 1 TB/s: half of a 2 TB/s copy bandwidth
    assert harness.roofline_fraction(1e9, 1.0, 2e12) == pytest.approx(0.5)


def test_copy_bandwidth_is_positive_on_the_cpu(harness):
    assert harness.copy_bandwidth(torch.device("cpu"), nbytes=1 << 20, repeats=2) > 0


def test_a_missing_peer_names_the_bench_extra(harness, monkeypatch):
    real_import = harness.importlib.import_module

    def fake_import(name, *args):
        if name == "snntorch":
            raise ImportError("No module named 'snntorch'")
        return real_import(name, *args)

    monkeypatch.setattr(harness.importlib, "import_module", fake_import)
    reason = harness.peer_missing("snntorch")
    assert "not installed" in reason and "pip install -e '.[bench]'" in reason
    line = harness.missing_peers_line(["snntorch", "norse"])
    assert "snnTorch" in line and "'.[bench]'" in line and "SpikingJelly and snnTorch" in line
    assert harness.peer_missing("torch") is None
    assert harness.missing_peers_line(["norse"]) == ""


def test_peer_warnings_are_silenced_inside_and_only_inside(harness):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with harness.quiet_peer_warnings():
            warnings.warn("old API", DeprecationWarning)
            warnings.warn("going away", FutureWarning)
        warnings.warn("after", DeprecationWarning)
    assert [str(w.message) for w in seen] == ["after"]


@dataclass
class _Row:
    name: str
    ms: Optional[float]


def test_markdown_table_reads_keys_or_functions_and_dashes_none(harness):
    columns = [("impl", "name"), ("ms", lambda r: None if r["ms"] is None else f"{r['ms']:.1f}")]
    text = harness.markdown_table(columns, [_Row("a", 1.25), {"name": "b", "ms": None}])
    assert text.splitlines() == ["| impl | ms |", "|---|---|", "| a | 1.2 |", "| b | — |"]


def test_write_results_by_suffix(harness, tmp_path):
    result = {"rows": [1, 2]}
    harness.write_results(tmp_path / "r.json", result, "# report")
    harness.write_results(tmp_path / "r.md", result, "# report")
    assert json.loads((tmp_path / "r.json").read_text()) == result
    assert (tmp_path / "r.md").read_text() == "# report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]  # no temporary left


def test_environment_record(harness):
    meta = harness.environment(torch.device("cpu"), "spikegate bench x", extra_key=3)
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["command"] == "spikegate bench x" and meta["extra_key"] == 3
    assert meta["device_type"] == "cpu" and meta["date"]
    lines = harness.environment_lines(meta)
    assert "- command: `spikegate bench x`" in lines and "torch " + torch.__version__ in lines


def test_run_child_returns_the_json_or_the_reason(harness, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(
        "import json, os, sys\n"
        "if os.environ.get('CHILD_FAIL'):\n"
        "    sys.exit('child: cannot run here')\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "json.dump({'argv': sys.argv[1:-2], 'env': os.environ['CHILD_VALUE']}, open(out, 'w'))\n"
    )
    result, reason = harness.run_child(script, ["--a", "1"], {"CHILD_VALUE": "x"})
    assert result == {"argv": ["--a", "1"], "env": "x"} and reason == ""
    result, reason = harness.run_child(script, [], {"CHILD_FAIL": "1"})
    assert result is None and reason == "child: cannot run here"


def test_run_as_a_benchmark_the_harness_says_what_it_is(harness, capsys):
    assert harness.main([]) == 2
    err = capsys.readouterr().err
    assert "not a benchmark" in err and "'lif'" in err


def test_peak_saved_bytes_follows_graphs_until_they_are_freed(harness):
    x = torch.randn(100, requires_grad=True)  # 400 bytes per float32 tensor of this size

    def streamed(steps):
        def step():
            for _ in range(steps):  # one graph per step, freed by its backward
                torch.sin(x * 2).sum().backward()  # sin saves its input x * 2
        return step

    def unrolled(steps):
        def step():
            h = x
            for _ in range(steps):  # one graph over all steps: each sin keeps its input
                h = torch.sin(h * 2)
            h.sum().backward()
        return step

    assert harness.peak_saved_bytes(streamed(1), [x]) == 400
    assert harness.peak_saved_bytes(streamed(5), [x]) == 400
    # h * 2 (a Python scalar) saves no tensor; each sin keeps its input h * 2 until the backward
    assert harness.peak_saved_bytes(unrolled(5), [x]) == 400 * 5
