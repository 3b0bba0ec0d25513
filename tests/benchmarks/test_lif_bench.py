"""The LIF benchmark harness (benchmarks/lif.py) in its --quick setting, on the CPU.

The harness is a standalone file that ``spikegate bench lif`` loads by path, so it is loaded here
the same way (without registering it in sys.modules first).
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "lif.py"


def _load_harness():
    spec = importlib.util.spec_from_file_location("spikegate_bench_lif", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_harness()


@pytest.fixture(scope="module")
def quick_rows(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "lif.json"
    assert bench.main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["meta"]["device_type"] == "cpu"
    return result["rows"]


def _timed_row(rows, prefix):
    found = [r for r in rows if r["impl"].startswith(prefix)]
    assert found, f"no row for {prefix!r} in {[r['impl'] for r in rows]}"
    (row,) = found
    assert row["status"] == "ok", row
    assert row["median_ms"] > 0 and row["min_ms"] > 0
    assert row["saved_bytes"] > 0 and row["peak_bytes"] > 0
    assert row["speedup_vs_naive"] > 0
    return row


def test_quick_run_times_ours_and_the_naive_loop(quick_rows):
    ours = _timed_row(quick_rows, "spikegate torch")
    _timed_row(quick_rows, "naive torch loop")
    # LIFTorchFunction keeps only the float32 membrane u [T, B, N] for backward.
    assert ours["saved_bytes"] == pytest.approx(4.0)


@pytest.mark.parametrize(
    "module, prefix",
    [("spikingjelly", "SpikingJelly"), ("norse", "Norse"), ("snntorch", "snnTorch")],
)
def test_quick_run_times_each_installed_peer(quick_rows, module, prefix):
    pytest.importorskip(module)
    row = _timed_row(quick_rows, prefix)
    assert row["speedup_vs_peer"] > 0


def test_check_spikes_flags_a_wrong_implementation(bench):
    x = bench.make_input((12, 3, 40), torch.float32, torch.device("cpu"), seed=1)
    reference, _ = bench.lif_sequence(x, beta=bench.BETA, backend="torch")
    naive, _ = bench.naive_lif(x)
    assert bench.check_spikes(reference, naive) is None
    shifted = torch.roll(reference, 1, dims=0)  # spikes one step late
    assert "differ" in bench.check_spikes(reference, shifted)
    assert "shape" in bench.check_spikes(reference, reference[1:])
    assert "0 or 1" in bench.check_spikes(reference, reference * 2)
    # A tolerance admits a few differing spikes, not more.
    one_off = reference.clone()
    one_off[0, 0, 0] = 1 - one_off[0, 0, 0]
    assert bench.check_spikes(reference, one_off, tolerance=1 / reference.numel()) is None
    assert bench.check_spikes(reference, shifted, tolerance=1 / reference.numel()) is not None


def test_a_wrong_implementation_gets_a_mismatch_instead_of_a_time(bench):
    def leaky_threshold_0p9(x):  # fires on u >= 0.9: a plausible-looking bug
        v = torch.zeros_like(x[0])
        spikes = []
        for x_t in x.unbind(0):
            u = bench.BETA * v + x_t
            s = (u >= 0.9).to(x.dtype)
            v = u * (1 - s)
            spikes.append(s)
        return torch.stack(spikes), v

    cfg = bench.Config(
        device="cpu", shapes=[(6, 2, 32)], dtypes=["float32"], impls=[], sj_impls=[],
        warmup=0, repeats=2, threads=None, seed=0, validate=False, spike_tolerance=0.0,
    )
    impls = [bench.Impl("wrong", leaky_threshold_0p9), bench.Impl("naive", bench.naive_lif)]
    wrong, naive = bench.bench_shape(impls, (6, 2, 32), "float32", torch.device("cpu"), cfg)
    assert wrong.status == "mismatch" and wrong.median_ms is None and "differ" in wrong.note
    assert naive.status == "ok" and naive.median_ms > 0


def test_a_type_error_in_our_code_is_an_error_not_a_skip(bench):
    def broken(x):
        raise TypeError("unsupported operand")  # a bug of ours, not a missing peer feature

    cfg = bench.Config(
        device="cpu", shapes=[(4, 2, 8)], dtypes=["float32"], impls=[], sj_impls=[],
        warmup=0, repeats=1, threads=None, seed=0, validate=False, spike_tolerance=0.0,
    )
    impls = [bench.Impl("spikegate broken", broken), bench.Impl("SomePeer 1.0 broken", broken)]
    ours, peer = bench.bench_shape(impls, (4, 2, 8), "float32", torch.device("cpu"), cfg)
    assert ours.status == "error" and "TypeError" in ours.note
    assert peer.status == "skipped"


def test_spikingjelly_child_process_plumbing(bench):
    """On CUDA each SJ_LIF_CUDA_IMPLEMENTATION runs in a child process; the plumbing (arguments,
    environment, JSON hand-back) is the same on the CPU, where SJ runs its torch reference."""
    pytest.importorskip("spikingjelly")
    cfg = bench.Config(
        device="cpu", shapes=[(4, 2, 64)], dtypes=["float32"], impls=["spikingjelly"],
        sj_impls=["torch"], warmup=1, repeats=2, threads=1, seed=0, validate=False,
        spike_tolerance=0.0,
    )
    common = ["--device", "cpu", "--shapes", "4,2,64", "--dtypes", "float32", "--warmup", "1",
              "--repeats", "2", "--threads", "1"]
    (row,) = bench._sj_children(cfg, common)
    assert row.impl.startswith("SpikingJelly") and row.status == "ok" and row.median_ms > 0


def test_bad_arguments_return_an_error_code(bench, capsys):
    assert bench.main(["--shapes", "8,64"]) == 2
    assert "T,B,N" in capsys.readouterr().err


def test_quick_run_checks_the_triton_kernels_on_the_interpreter(quick_rows):
    # tests/conftest.py sets TRITON_INTERPRET=1 without a GPU: the Triton row then runs (slowly)
    # and must pass the spike cross-check; with a GPU it is a real timing.
    if torch.cuda.is_available():
        pytest.skip("with a GPU the CPU quick run leaves the Triton row to CUDA")
    (row,) = [r for r in quick_rows if r["impl"] == "spikegate triton"]
    assert row["status"] == "ok", row
    assert "interpreter" in row["note"]


def test_roofline_fractions_are_bytes_moved_over_copy_bandwidth(bench):
    row = bench.Row(impl="spikegate triton", T=32, B=64, N=65536, dtype="float16", status="ok",
                    median_ms=2.0)
    peer = bench.Row(impl="SpikingJelly 2.0.0 LIFNode [triton]", T=32, B=64, N=65536,
                     dtype="float16", status="ok", median_ms=5.0)
    bench.add_relative([row, peer], torch.device("cuda"), copy_bw=2.0e12)
    # float16: the kernels move x, spikes, the kept 2-byte value (forward) and the kept value,
    # grad_spikes, grad_x (backward): 6 x 2 bytes; the API minimum is x, spikes, grad_spikes,
    # grad_x and one more read of x to rebuild the membrane: 5 x 2 bytes.
    neuron_steps = 32 * 64 * 65536
    assert row.roofline_kernel == pytest.approx(12 * neuron_steps / 2.0e-3 / 2.0e12)
    assert row.roofline_api == pytest.approx(10 * neuron_steps / 2.0e-3 / 2.0e12)
    assert peer.roofline_kernel is None and peer.roofline_api is None
    assert row.speedup_vs_peer == pytest.approx(2.5)


def test_the_report_records_the_command_and_environment(bench, tmp_path):
    out = tmp_path / "lif.md"
    assert bench.main(["--quick", "--device", "cpu", "--impls", "ours-torch", "--out", str(out)]) == 0
    text = out.read_text()
    # called as a function: the script and its arguments; typed commands come from sys.orig_argv
    assert "- command: `python benchmarks/lif.py --quick --device cpu --impls ours-torch --out" in text
    assert "torch " in text and "commit:" in text


def test_a_missing_peer_is_skipped_and_the_report_names_the_bench_extra(bench, tmp_path,
                                                                        monkeypatch):
    real_import = bench.harness.importlib.import_module

    def without_snntorch(name, *args):
        if name == "snntorch":
            raise ImportError("No module named 'snntorch'")
        return real_import(name, *args)

    monkeypatch.setattr(bench.harness.importlib, "import_module", without_snntorch)
    out = tmp_path / "lif.json"
    assert bench.main(["--quick", "--device", "cpu", "--impls", "ours-torch", "snntorch",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = [r for r in result["rows"] if r["impl"] == "snntorch"]
    assert row["status"] == "skipped" and "pip install -e '.[bench]'" in row["note"]
    assert "SpikingJelly and snnTorch" in result["meta"]["missing_peers"]


def test_spikingjelly_explicit_precision_row_is_cuda_only(quick_rows):
    pytest.importorskip("spikingjelly")
    if torch.cuda.is_available():
        pytest.skip("on CUDA the row is timed")
    (row,) = [r for r in quick_rows if r["impl"] == "spikingjelly-precision"]
    assert row["status"] == "skipped" and "CUDA only" in row["note"]
