"""The dual-path benchmark (benchmarks/dualpath.py): its formulations of the decay recurrence
against the recurrence written out here, and its --quick run on the CPU.

The benchmark is a standalone file that ``spikegate bench dualpath`` loads by path, so it is
loaded here the same way.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "dualpath.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("spikegate_bench_dualpath", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recurrence(z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``h[t] = lambda h[t-1] + (1 - lambda) z[t]`` per head, element by element."""
    T, B, H, Dh = z.shape
    lam = torch.sigmoid(r)
    h = torch.zeros_like(z)
    for b in range(B):
        for head in range(H):
            for d in range(Dh):
                state = torch.zeros((), dtype=z.dtype)
                for t in range(T):
                    state = lam[head] * state + (1 - lam[head]) * z[t, b, head, d]
                    h[t, b, head, d] = state
    return h


@pytest.mark.parametrize("name", ["decay_conv", "decay_loop"])
def test_formulation_matches_the_recurrence_values_and_gradients(bench, name):
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(9, 2, 3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    # distinct decays per head, one near 1, so a kernel given to the wrong head shows
    r = torch.tensor([-1.0, 0.5, 4.0], dtype=torch.float64, requires_grad=True)
    w = torch.randn(z.shape, generator=gen, dtype=torch.float64)
    got = getattr(bench, name)(z, r)
    want = _recurrence(z, r)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    got_grads = torch.autograd.grad(got, [z, r], w)
    want_grads = torch.autograd.grad(want, [z, r], w)
    for g, e in zip(got_grads, want_grads):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_check_flags_a_wrong_formulation(bench):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(40, 2, 2, 4, generator=gen)
    w = torch.randn(z.shape, generator=gen)
    r = torch.full((2,), 3.0)
    reference = bench._scan_reference(z, r, w)
    late = bench._ScanCase(lambda z, r: bench.decay_loop(torch.roll(z, 1, 0), r), z, r, w)
    assert "h differs" in late.check("forward", reference)
    assert "dz differs" in late.check("forward+backward", reference)
    assert bench._ScanCase(bench.decay_conv, z, r, w).check("forward+backward", reference) == ""


@pytest.fixture(scope="module")
def quick(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "dualpath.json"
    assert bench.main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_quick_run_times_every_formulation_in_both_modes(quick):
    assert quick["meta"]["device_type"] == "cpu"
    rows = {(r["impl"], r["mode"]): r for r in quick["scan"]}
    impls = ["decay scan [torch]", "causal depthwise conv (authors)", "per-step loop"]
    assert set(rows) == {(i, m) for i in impls for m in ("forward", "forward+backward")}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert (row["T"], row["B"], row["H"], row["Dh"]) == (64, 2, 2, 8)
        assert row["median_ms"] > 0 and row["speedup"] > 0
        assert row["roofline_kernel"] is None  # CUDA only
    assert rows[("per-step loop", "forward")]["speedup"] == 1.0


def test_quick_run_times_attention_at_each_inactive_fraction(quick):
    rows = quick["attention"]
    assert sorted((r["inactive"], r["mode"]) for r in rows) == sorted(
        (f, m) for f in (0.0, 0.5, 0.9) for m in ("forward", "forward+backward")
    )
    assert all(r["status"] == "ok" and r["median_ms"] > 0 for r in rows), rows
    pairs = {r["inactive"]: r["pairs"] for r in rows}
    assert pairs[0.0] > pairs[0.5] > pairs[0.9]
    # every token active: each query sees its window (16) plus anchors (4) before it
    assert pairs[0.0] == 2 * sum(min(i + 1, 16) + min(max(i - 15, 0), 4) for i in range(64))


def test_markdown_report_has_both_tables(bench, quick):
    report = bench.markdown_report(quick)
    assert "### Decay scan" in report and "### Spike-gated attention" in report
    assert report.count("| per-step loop |") == 2
    assert report.count("| sdpa, explicit mask |") == 6


def test_bad_arguments_return_2(bench, capsys):
    assert bench.main(["--inactive", "1.5"]) == 2
    assert "fraction" in capsys.readouterr().err
    assert bench.main(["--lengths", "0"]) == 2


def test_roofline_byte_counts(bench):
    # unchunked (one chunk: the plan off CUDA), float32: forward read z + write h = 8 bytes per
    # element; the backward reads the gradient, z and h and writes dz, 16 more. The API minimum
    # drops the backward's second read of z or h: 8 forward, 8 + 12 with the backward.
    cpu = torch.device("cpu")
    assert bench.scan_bytes_per_element(256, 64, cpu, torch.float32, "forward") == (8, 8)
    assert bench.scan_bytes_per_element(256, 64, cpu, torch.float32, "forward+backward") == (24, 20)
    assert bench.scan_bytes_per_element(256, 64, cpu, torch.bfloat16, "forward+backward") == (12, 10)


def test_a_slow_row_is_timed_once(bench, tmp_path):
    out = tmp_path / "slow.json"
    argv = ["--quick", "--device", "cpu", "--lengths", "16", "--modes", "forward",
            "--scan-impls", "loop", "--inactive", "0", "--max-call-s", "1e-9", "--out", str(out)]
    assert bench.main(argv) == 0
    (row,) = json.loads(out.read_text())["scan"]
    assert row["median_ms"] == row["min_ms"] > 0
    assert "one call timed" in row["note"]


def test_speedup_and_roofline_of_the_triton_rows(bench):
    # the CUDA-only arithmetic, on made-up rows: 256 x 2 x 2 x 16 = 16384 elements, one chunk
    def row(impl, ms):
        return bench.Row("scan", impl, "forward", 256, 2, 2, 16, "float32", "ok", median_ms=ms)

    triton, loop = row("decay scan [triton]", 0.5), row("per-step loop", 20.0)
    bench.add_scan_relative([triton, loop], torch.device("cpu"), copy_bw=1e9)
    assert triton.speedup == pytest.approx(40.0) and loop.speedup == pytest.approx(1.0)
    # 8 bytes per element in 0.5 ms against 1 GB/s
    assert triton.roofline_kernel == pytest.approx(8 * 16384 / 0.5e-3 / 1e9)
    assert triton.roofline_api == pytest.approx(triton.roofline_kernel)
    assert loop.roofline_kernel is None
