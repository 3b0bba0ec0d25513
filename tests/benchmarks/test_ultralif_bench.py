"""The UltraLIF benchmark (benchmarks/ultralif.py): its per-step formulations of the authors'
equations against the equations written out here element by element, and its --quick run.

The benchmark is a standalone file that ``spikegate bench ultralif`` loads by path, so it is
loaded here the same way.
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "ultralif.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("spikegate_bench_ultralif", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lse(terms, eps):
    """``eps * log(sum exp(x / eps))`` of python floats, shifted by the max (no overflow)."""
    top = max(terms)
    return top + eps * math.log(sum(math.exp((x - top) / eps) for x in terms))


def _equations(i: torch.Tensor, eps: float, tau0: float, theta: float, coupled: bool):
    """Def. 4.1 (``coupled=False``) or Def. 4.2 with circular neighbours, neuron by neuron in
    python floats: soft spikes ``[T, B, N]``."""
    T, B, N = i.shape
    out = torch.zeros(T, B, N, dtype=torch.float64)
    for b in range(B):
        v = [0.0] * N
        for t in range(T):
            u = []
            for k in range(N):
                x = float(i[t, b, k])
                if coupled:
                    u.append(_lse([v[k - 1], v[k] + math.log(tau0), v[(k + 1) % N]], eps) + x)
                else:
                    u.append(_lse([v[k] + math.log(tau0), x], eps))
            s = [1 / (1 + math.exp(-(uk - theta) / eps)) for uk in u]
            out[t, b] = torch.tensor(s, dtype=torch.float64)
            v = [uk * (1 - sk) for uk, sk in zip(u, s)]
    return out


@pytest.mark.parametrize("name, coupled, tau0", [("ultralif_loop", False, 0.9),
                                                 ("ultradlif_loop", True, 0.8)])
def test_loop_matches_the_equations_and_the_reference_gradients(bench, name, coupled, tau0):
    gen = torch.Generator().manual_seed(7)
    # large |i| / eps too: the loop must stay finite where a naive exp would overflow
    i = (torch.randn(6, 2, 5, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    eps = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    got = getattr(bench, name)(i, eps, tau0=tau0, threshold=0.5)
    torch.testing.assert_close(got, _equations(i.detach(), 0.3, tau0, 0.5, coupled),
                               rtol=1e-10, atol=1e-12)
    # gradients against float64 gradcheck of the loop itself (finite differences)
    fn = getattr(bench, name)
    assert torch.autograd.gradcheck(lambda a, e: fn(a, e, tau0=tau0, threshold=0.5), (i, eps))


def test_check_flags_a_wrong_formulation(bench):
    gen = torch.Generator().manual_seed(0)
    i, w = torch.randn(8, 2, 6, generator=gen), torch.randn(8, 2, 6, generator=gen)
    reference = bench._Case(bench.formulation("ultralif", "torch"), i, w).step()
    assert bench._Case(bench.ultralif_loop, i, w).check(reference) == ""
    wrong = bench._Case(lambda x, eps: bench.ultralif_loop(x, eps, tau0=0.5), i, w)
    assert "spikes differs" in wrong.check(reference)
    coupled = bench._Case(bench.formulation("ultradlif", "torch"), i, w).step()
    assert bench._Case(bench.ultradlif_loop, i, w).check(coupled) == ""
    assert "spikes differs" in bench._Case(bench.ultralif_loop, i, w).check(coupled)


@pytest.fixture(scope="module")
def quick(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "ultralif.json"
    assert bench.main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_quick_run_has_every_row(quick):
    assert quick["meta"]["device_type"] == "cpu"
    rows = {(r["neuron"], r["impl"], r["T"], r["dtype"]): r for r in quick["rows"]}
    impls = ["eager reference [torch]", "per-step loop (authors)"]
    assert set(rows) == {(n, i, T, d) for n in ("ultralif", "ultradlif") for i in impls
                         for T in (1, 10, 32) for d in ("float32", "bfloat16")}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert (row["B"], row["N"]) == (2, 16)
        assert row["median_ms"] > 0 and row["vs_loop"] > 0 and row["vs_torch"] > 0
        assert row["roofline"] is None and row["kernel_bytes"] is None  # triton rows only
        assert row["saved_bytes"] > 0
    assert len(quick["targets"]) == 4
    assert {t["measure"] for t in quick["targets"]} == {"torch / loop"}


def test_markdown_report_lists_rows_and_targets(bench, quick):
    report = bench.markdown_report(quick)
    assert report.count("| per-step loop (authors) |") == 12
    assert "Targets (issue 7" in report


def test_triton_rows_in_the_interpreter(bench, tmp_path, monkeypatch):
    # the kernels on the CPU through TRITON_INTERPRET=1 (set by conftest): the rows pass the
    # check against the reference and carry the kernels' bytes; no roofline off CUDA
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    out = tmp_path / "triton.json"
    argv = ["--quick", "--device", "cpu", "--impls", "triton", "--steps", "3", "--repeats", "1",
            "--warmup", "0", "--out", str(out)]
    assert bench.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), rows
    # forward 2b + 4 kept, backward 4 kept + 2b: 24 float32, 16 bfloat16
    assert {r["dtype"]: r["kernel_bytes"] for r in rows} == {"float32": 24, "bfloat16": 16}
    assert all(r["roofline"] is None and "interpreter" in r["note"] for r in rows)


def test_triton_skipped_without_cuda_or_interpreter(bench, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "triton_interpreter_enabled", lambda: False)
    out = tmp_path / "skip.json"
    argv = ["--quick", "--device", "cpu", "--impls", "triton", "--neurons", "ultralif",
            "--steps", "2", "--dtypes", "float32", "--out", str(out)]
    assert bench.main(argv) == 0  # a skipped row is not a failure
    (row,) = json.loads(out.read_text())["rows"]
    assert row["status"] == "skipped" and "CUDA" in row["note"]


def test_roofline_and_targets_of_cuda_rows(bench):
    # the CUDA-only arithmetic on made-up rows: 32 x 4 x 1024 neuron-steps, float32
    def row(impl, ms):
        return bench.Row("ultralif", bench.LABELS[impl], 32, 4, 1024, "float32", "ok", median_ms=ms)

    rows = [row("triton", 0.01), row("torch", 0.2), row("loop", 0.4)]
    bench.add_relative(rows, copy_bw=1e12)
    triton = rows[0]
    assert triton.vs_torch == pytest.approx(20) and triton.vs_loop == pytest.approx(40)
    assert triton.kernel_bytes == 24
    assert triton.roofline == pytest.approx(24 * 32 * 4 * 1024 / 1e-5 / 1e12)
    found = bench.targets(rows, torch.device("cuda"))
    assert [(t["measure"], t["met"]) for t in found] == [
        ("triton / torch", True), ("roofline", False)]


@pytest.mark.parametrize("argv, word", [
    (["--steps", "0"], "positive"),
    (["--width", "2", "--quick"], "--width"),
    (["--repeats", "0"], "--repeats"),
    (["--dtypes", "float64"], "float64"),
])
def test_bad_arguments_return_2(bench, capsys, argv, word):
    assert bench.main(argv) == 2
    assert word in capsys.readouterr().err
