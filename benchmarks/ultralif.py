"""UltraLIF speed: the fused Triton kernels against the eager torch reference and the authors'
per-step formulation, forward plus backward of one layer.

One layer of ``B x N`` UltraLIF or UltraDLIF neurons (paper defaults: theta 0.5, eps 1, tau0 0.9
for UltraLIF and 1 for UltraDLIF) over ``T`` steps, ``i [T, B, N]`` drawn from ``N(0, 1)``, eps a
0-dim tensor that requires grad (the learnable temperature). One step is the forward and
``autograd.grad`` of ``sum(w * spikes)`` (fixed random ``w``) with respect to ``i`` and eps.
Rows:

* ``triton``  ``ultralif_sequence(..., backend="triton")`` / ``ultradlif_sequence``: the fused
              kernels, one launch forward and one backward over all ``T`` (CUDA; on the CPU only
              under ``TRITON_INTERPRET=1``, and then not a speed figure);
* ``torch``   the same functions with ``backend="torch"``, the eager reference (both called with
              ``validate=False`` unless ``--validate``: the loop checks nothing either);
* ``loop``    the authors' formulation, written here: a plain per-step autograd loop,
              ``u = eps * logaddexp((v + log tau0) / eps, i / eps)`` (UltraDLIF: ``eps *
              logsumexp`` of ``(v_{k-1}, v_k + log tau0, v_{k+1}) / eps`` with ``torch.roll``
              neighbours, plus ``i``), ``s = sigmoid((u - theta) / eps)``, ``v = u * (1 - s)``.

Before timing, every row's spikes and gradients are compared with the torch reference; a row that
differs says ``mismatch`` instead of a time. Each row also carries the bytes autograd keeps for
backward per neuron-step (measured), the kernels' bytes moved per neuron-step
(``spikegate.kernels.ultralif``) and, on CUDA, the roofline fraction against the device's copy
bandwidth. The issue's targets are printed, not asserted: on CUDA at least 10x the torch
reference at T = 32 and at least 70% of the roofline; on the CPU the torch path against the loop.

Timing, the environment record and the output files come from ``harness.py`` beside this file.
Run ``python benchmarks/ultralif.py --help`` (or ``spikegate bench ultralif --help``); README.md
beside this file explains the measures.
"""

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (also makes the repository importable)

from spikegate.neurons.checks import triton_interpreter_enabled  # noqa: E402
from spikegate.neurons.ultralif import ultradlif_sequence, ultralif_sequence  # noqa: E402

SCRIPT = "python benchmarks/ultralif.py"
NEURONS = ("ultralif", "ultradlif")
IMPLS = ("triton", "torch", "loop")
LABELS = {"triton": "fused kernels [triton]", "torch": "eager reference [torch]",
          "loop": "per-step loop (authors)"}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
STEPS = (1, 10, 32)
THRESHOLD = 0.5
EPS = 1.0
TAU0 = {"ultralif": 0.9, "ultradlif": 1.0}  # each function's default
# Default layer B x N: about 4M neurons per step on CUDA, a few minutes in all on 2 CPU cores.
SHAPE = {"cuda": (4096, 1024), "cpu": (512, 1024), "quick": (2, 16)}
# Tolerances of the agreement check, relative to the largest magnitude of the reference.
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}
TARGET_SPEEDUP, TARGET_ROOFLINE, TARGET_T = 10.0, 0.7, 32


@dataclass
class Row:
    """One implementation of one neuron at one ``T`` and dtype. Times in ms, bytes per
    neuron-step. ``vs_torch`` and ``vs_loop``: that row's median over this one's (same neuron,
    ``T`` and dtype)."""

    neuron: str
    impl: str
    T: int
    B: int
    N: int
    dtype: str
    status: str  # "ok", "skipped", "mismatch" or "error"
    median_ms: Optional[float] = None
    min_ms: Optional[float] = None
    vs_torch: Optional[float] = None
    vs_loop: Optional[float] = None
    saved_bytes: Optional[float] = None  # measured: autograd's saved storages, i and eps excluded
    kernel_bytes: Optional[int] = None  # triton: forward + backward launch traffic
    roofline: Optional[float] = None  # CUDA triton: kernel bytes / time over the copy bandwidth
    note: str = ""


@dataclass
class Config:
    device: str
    neurons: list
    impls: list
    steps: list
    batch: int
    width: int
    dtypes: list
    warmup: int
    repeats: int
    threads: Optional[int]
    seed: int
    validate: bool = False


# ----------------------------------------------------------------------------------------------
# The authors' formulation


def _state(i: torch.Tensor) -> torch.dtype:
    return torch.float64 if i.dtype == torch.float64 else torch.float32


def ultralif_loop(i: torch.Tensor, eps: torch.Tensor, tau0: float = TAU0["ultralif"],
                  threshold: float = THRESHOLD) -> torch.Tensor:
    """UltraLIF as a per-step autograd loop (the authors' formulation), ``i [T, B, ...]`` ->
    soft spikes of ``i``'s dtype; float32 state (float64 for float64 input), like the reference."""
    cdt = _state(i)
    eps = eps.to(cdt)
    v = i.new_zeros(i.shape[1:], dtype=cdt)
    log_tau = math.log(tau0)
    spikes = []
    for x in i.unbind(0):
        u = eps * torch.logaddexp((v + log_tau) / eps, x.to(cdt) / eps)
        s = torch.sigmoid((u - threshold) / eps)
        v = u * (1 - s)
        spikes.append(s)
    return torch.stack(spikes).to(i.dtype)


def ultradlif_loop(i: torch.Tensor, eps: torch.Tensor, tau0: float = TAU0["ultradlif"],
                   threshold: float = THRESHOLD) -> torch.Tensor:
    """UltraDLIF as a per-step autograd loop: neighbours along the last dim by ``torch.roll``
    (circular), ``u = eps * logsumexp((v_{k-1}, v_k + log tau0, v_{k+1}) / eps) + i``."""
    cdt = _state(i)
    eps = eps.to(cdt)
    v = i.new_zeros(i.shape[1:], dtype=cdt)
    log_tau = math.log(tau0)
    spikes = []
    for x in i.unbind(0):
        terms = torch.stack([torch.roll(v, 1, -1), v + log_tau, torch.roll(v, -1, -1)])
        u = eps * torch.logsumexp(terms / eps, dim=0) + x.to(cdt)
        s = torch.sigmoid((u - threshold) / eps)
        v = u * (1 - s)
        spikes.append(s)
    return torch.stack(spikes).to(i.dtype)


def _sequence(neuron: str, backend: str, validate: bool) -> Callable:
    fn = ultralif_sequence if neuron == "ultralif" else ultradlif_sequence
    return lambda i, eps: fn(i, eps=eps, tau0=TAU0[neuron], threshold=THRESHOLD,
                             backend=backend, validate=validate)[0]


def formulation(neuron: str, impl: str, validate: bool = False) -> Callable:
    """``fn(i, eps) -> spikes`` of one implementation. ``validate``: the sequence functions'
    value checks (a pass over ``i`` and a device sync); off by default, as the loop has none."""
    if impl == "loop":
        return ultralif_loop if neuron == "ultralif" else ultradlif_loop
    return _sequence(neuron, impl, validate)


# ----------------------------------------------------------------------------------------------
# One layer, one implementation


class _Case:
    """One implementation on the benchmark input: its leaves and its timed step."""

    def __init__(self, fn: Callable, i: torch.Tensor, w: torch.Tensor):
        self.fn, self.w = fn, w
        self.i = i.detach().clone().requires_grad_()
        self.eps = torch.tensor(EPS, device=i.device, requires_grad=True)

    def forward(self) -> torch.Tensor:
        return self.fn(self.i, self.eps)

    def step(self) -> tuple:
        spikes = self.forward()
        return (spikes.detach(),) + torch.autograd.grad(spikes, [self.i, self.eps], self.w)

    def check(self, reference: tuple) -> str:
        """``""`` when spikes, ``di`` and ``deps`` agree with ``reference``, else what differs."""
        tol = TOL[self.i.dtype]
        return harness.join(*(_differs(want, got, tol, name) for want, got, name
                              in zip(reference, self.step(), ("spikes", "di", "deps"))))

    def saved_bytes(self) -> int:
        return harness.saved_bytes_for_backward(self.forward, exclude=[self.i, self.eps])


def _differs(reference: torch.Tensor, value: torch.Tensor, tol: float, what: str) -> str:
    scale = reference.abs().max().item() or 1.0
    error = (value.float() - reference.float()).abs().max().item() / scale
    if error <= tol:
        return ""
    return f"{what} differs from the torch reference (max error {error:.2e} of max |ref|)"


def _triton_skip(device: torch.device) -> str:
    if device.type == "cuda" or triton_interpreter_enabled():
        return ""
    return "the fused kernels run on CUDA (on the CPU only under TRITON_INTERPRET=1)"


def bench_steps(T: int, device: torch.device, cfg: Config) -> list:
    """Rows of every neuron, dtype and implementation at ``T``, timed in one interleaved run."""
    B, N = cfg.batch, cfg.width
    rows, steps = [], []
    for dtype_name in cfg.dtypes:
        dtype = DTYPES[dtype_name]
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        i = torch.randn((T, B, N), generator=gen, device=device).to(dtype)
        w = torch.randn((T, B, N), generator=gen, device=device).to(dtype)
        for neuron in cfg.neurons:
            reference = _Case(formulation(neuron, "torch"), i, w).step()
            for impl in cfg.impls:
                row = Row(neuron, LABELS[impl], T, B, N, dtype_name, "ok")
                rows.append(row)
                skip = _triton_skip(device) if impl == "triton" else ""
                if skip:
                    row.status, row.note = "skipped", skip
                    continue
                if impl == "triton" and device.type != "cuda":
                    row.note = "Triton interpreter: not a speed figure"
                try:
                    case = _Case(formulation(neuron, impl, cfg.validate), i, w)
                    problem = case.check(reference)
                    if problem:
                        row.status, row.note = "mismatch", problem
                        continue
                    row.saved_bytes = case.saved_bytes() / (T * B * N)
                    steps.append((row, case.step))
                except Exception as err:  # one failing implementation must not hide the others
                    row.status, row.note = "error", f"{type(err).__name__}: {harness.first_line(err)}"
                    harness.free(device)
            del reference
    times = harness.time_interleaved([s for _, s in steps], device, cfg.repeats, cfg.warmup)
    for (row, _), row_times in zip(steps, times):
        row.median_ms, row.min_ms = harness.median_and_min(row_times)
    return rows


def kernel_bytes(dtype: torch.dtype) -> int:
    """Bytes per neuron-step the forward (training) and the backward launch move together."""
    from spikegate.kernels.ultralif import ultra_bytes_per_neuron_step

    return (ultra_bytes_per_neuron_step(dtype, backward=False)
            + ultra_bytes_per_neuron_step(dtype, backward=True))


def add_relative(rows: list, copy_bw: Optional[float]) -> None:
    """Speed-ups over the torch reference and the loop; kernel bytes and roofline of the
    triton rows (roofline when ``copy_bw``, bytes/s, is known: CUDA)."""
    def median_of(row: Row, impl: str) -> Optional[float]:
        same = [r for r in rows if r.impl == LABELS[impl]
                and (r.neuron, r.T, r.dtype) == (row.neuron, row.T, row.dtype)]
        return same[0].median_ms if same else None

    for row in rows:
        if not row.median_ms:
            continue
        torch_ms, loop_ms = median_of(row, "torch"), median_of(row, "loop")
        row.vs_torch = torch_ms / row.median_ms if torch_ms else None
        row.vs_loop = loop_ms / row.median_ms if loop_ms else None
        if row.impl == LABELS["triton"]:
            row.kernel_bytes = kernel_bytes(DTYPES[row.dtype])
            if copy_bw:
                moved = row.kernel_bytes * row.T * row.B * row.N
                row.roofline = harness.roofline_fraction(moved, row.median_ms, copy_bw)


def targets(rows: list, device: torch.device) -> list:
    """The issue's targets per neuron and dtype at the largest ``T`` (32 by default), reported
    and not asserted: CUDA, triton over torch >= 10 and roofline >= 70%; CPU, torch over loop."""
    T = max(r.T for r in rows) if rows else TARGET_T
    found = []
    for r in rows:
        if r.T != T or not r.median_ms:
            continue
        if device.type == "cuda" and r.impl == LABELS["triton"]:
            found.append(dict(neuron=r.neuron, dtype=r.dtype, T=T, measure="triton / torch",
                              value=r.vs_torch, target=TARGET_SPEEDUP))
            found.append(dict(neuron=r.neuron, dtype=r.dtype, T=T, measure="roofline",
                              value=r.roofline, target=TARGET_ROOFLINE))
        elif device.type != "cuda" and r.impl == LABELS["torch"]:
            found.append(dict(neuron=r.neuron, dtype=r.dtype, T=T, measure="torch / loop",
                              value=r.vs_loop, target=None))
    for t in found:
        t["met"] = None if t["target"] is None or t["value"] is None else t["value"] >= t["target"]
    return found


# ----------------------------------------------------------------------------------------------
# Driver and report


def run_benchmark(cfg: Config, command: str = SCRIPT) -> dict:
    """Every ``T``; return ``{"meta": ..., "rows": [...], "targets": [...]}``."""
    device = torch.device(cfg.device)
    with harness.threads_and_load(cfg.threads) as load:
        copy_bw = harness.copy_bandwidth(device) if device.type == "cuda" else None
        rows: list = []
        for T in cfg.steps:
            rows += bench_steps(T, device, cfg)
            harness.free(device)
        add_relative(rows, copy_bw)
        meta = describe(device, cfg, copy_bw, command)
    meta["loadavg_1min"] = load
    return {"meta": meta, "rows": [asdict(r) for r in rows], "targets": targets(rows, device)}


def describe(device: torch.device, cfg: Config, copy_bw: Optional[float], command: str) -> dict:
    return harness.environment(
        device, command, dists=("triton",),
        copy_bandwidth_GBps=copy_bw / 1e9 if copy_bw else None,
        warmup=cfg.warmup, repeats=cfg.repeats,
        timing="median of interleaved single forward+backward steps, "
        + ("CUDA events" if device.type == "cuda" else "time.perf_counter"),
        workload=f"i ~ N(0, 1) [T, {cfg.batch}, {cfg.width}], theta {THRESHOLD}, eps {EPS} "
        "(0-dim tensor, requires grad), tau0 0.9 (UltraLIF) / 1 (UltraDLIF), v0 0; "
        "autograd.grad of sum(w spikes) for i and eps, w ~ N(0, 1); "
        f"sequence functions with validate={cfg.validate}",
    )


def _number(key: str, spec: str) -> Callable[[dict], Optional[str]]:
    return lambda r: None if r[key] is None else f"{r[key]:{spec}}"


def _time(r: dict) -> str:
    return f"{r['median_ms']:.3g}" if r["status"] == "ok" else r["status"]


def _percent(r: dict) -> Optional[str]:
    return None if r["roofline"] is None else f"{r['roofline'] * 100:.0f}%"


COLUMNS = [
    ("neuron", "neuron"), ("implementation", "impl"), ("T", "T"), ("B", "B"), ("N", "N"),
    ("dtype", "dtype"), ("median ms", _time), ("× vs torch", _number("vs_torch", ".3g")),
    ("× vs loop", _number("vs_loop", ".3g")), ("saved B/neuron-step", _number("saved_bytes", ".3g")),
    ("kernel B/neuron-step", "kernel_bytes"), ("roofline", _percent), ("note", "note"),
]


def _target_line(t: dict) -> str:
    value = "-" if t["value"] is None else (
        f"{t['value'] * 100:.0f}%" if t["measure"] == "roofline" else f"{t['value']:.3g}x")
    if t["target"] is None:
        return f"- {t['neuron']} {t['dtype']} T={t['T']}: {t['measure']} {value}"
    goal = f"{t['target'] * 100:.0f}%" if t["measure"] == "roofline" else f"{t['target']:g}x"
    verdict = "-" if t["met"] is None else ("met" if t["met"] else "not met")
    head = f"- {t['neuron']} {t['dtype']} T={t['T']}: {t['measure']} {value}"
    return f"{head} (target >= {goal}: {verdict})"


def markdown_report(result: dict) -> str:
    meta = result["meta"]
    lines = [
        harness.environment_lines(meta),
        f"- timing: {meta['timing']}; {meta['warmup']} warm-up calls, {meta['repeats']} timed",
        f"- workload: {meta['workload']}",
    ]
    if meta.get("copy_bandwidth_GBps"):
        lines.append(f"- device-to-device copy bandwidth: {meta['copy_bandwidth_GBps']:.0f} GB/s")
    report = "\n".join(lines) + "\n\n" + harness.markdown_table(COLUMNS, result["rows"]) + "\n"
    if result["targets"]:
        report += "\nTargets (issue 7, reported, not asserted):\n\n"
        report += "\n".join(_target_line(t) for t in result["targets"]) + "\n"
    return report


# ----------------------------------------------------------------------------------------------
# Command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spikegate bench ultralif",
        description="UltraLIF / UltraDLIF forward+backward: fused Triton kernels vs the eager torch "
        "reference vs the authors' per-step loop.",
    )
    harness.add_device_argument(p)
    p.add_argument("--neurons", nargs="+", choices=NEURONS, default=list(NEURONS))
    p.add_argument("--impls", nargs="+", choices=IMPLS,
                   help="default: CUDA all; CPU torch loop (triton needs CUDA or TRITON_INTERPRET=1)")
    p.add_argument("--steps", type=harness.positive_int, nargs="+", help="T values (default: 1 10 32)")
    p.add_argument("--batch", type=harness.positive_int,
                   help=f"B (default: CUDA {SHAPE['cuda'][0]}, CPU {SHAPE['cpu'][0]})")
    p.add_argument("--width", type=harness.positive_int,
                   help=f"N, neurons per row (default: {SHAPE['cuda'][1]}); UltraDLIF couples "
                   "neighbours along it")
    p.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), default=["float32", "bfloat16"])
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per row (default: 1)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls (default: CPU 5, CUDA 20)")
    p.add_argument("--validate", action="store_true",
                   help="time the sequence functions with their value checks (default: "
                   "validate=False, as the loop does none)")
    p.add_argument("--quick", action="store_true",
                   help=f"tiny setting for tests: B {SHAPE['quick'][0]}, N {SHAPE['quick'][1]}, "
                   "2 timed calls")
    harness.add_run_arguments(p)
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    device = harness.resolve_device(args.device)
    cuda, quick = device == "cuda", args.quick
    repeats = args.repeats if args.repeats is not None else 2 if quick else 20 if cuda else 5
    warmup = args.warmup if args.warmup is not None else 1
    if repeats < 1 or warmup < 0:
        raise SystemExit(f"--repeats must be >= 1 and --warmup >= 0, got {repeats} and {warmup}")
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"--threads: expected a positive integer, got {args.threads}")
    B, N = SHAPE["quick" if quick else device]
    width = args.width or N
    if "ultradlif" in args.neurons and width < 3:
        raise SystemExit(f"--width: UltraDLIF needs at least 3 neurons per row, got {width}")
    return Config(
        device=device, neurons=list(args.neurons),
        impls=list(args.impls or (IMPLS if cuda else ("torch", "loop"))),
        steps=list(args.steps or STEPS), batch=args.batch or B, width=width,
        dtypes=list(args.dtypes), warmup=warmup, repeats=repeats,
        threads=args.threads if args.threads is not None else (None if cuda else 2),
        seed=args.seed, validate=args.validate,
    )


def main(argv: Optional[list] = None) -> int:
    """Run the benchmark; print a markdown table. Returns 0, 1 if any row is a mismatch or an
    error (a skipped row is not a failure), or 2 on bad arguments."""
    return harness.run_main(argv, SCRIPT, parser, config_from_args, run_benchmark, markdown_report,
                            failed=_failed)


def _failed(result: dict) -> bool:
    return any(r["status"] in ("mismatch", "error") for r in result["rows"])


if __name__ == "__main__":
    sys.exit(main())
