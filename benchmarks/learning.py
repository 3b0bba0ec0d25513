"""Memory and time of one training step of the same conv SNN under each learning rule.

One step is ``rule.step(model, x, y)`` (forward, the rule's updates written into ``.grad``) and
``optimizer.step()``, for

* ``surrogate``     surrogate-gradient BPTT (``spikegate.learning.SurrogateGradient``, ATan),
                    which keeps the unrolled graph: its memory grows with ``T``;
* ``tess``          TESS (``spikegate.learning.TESS``, the ``learning=tess`` factors), which
                    streams over time steps: its memory should not grow with ``T``;
* ``ultradiscrete`` ``spikegate.learning.Ultradiscrete`` when that rule is installed; else its
                    row is skipped with the reason.

Every rule trains the same ``SpikingConvNet`` (Conv3x3 -> BatchNorm -> LIF -> MaxPool2 per
channel entry, Linear readout), built from the same seed with TESS's neuron settings (leak 0.5,
threshold 0.6, subtractive reset) so that only the rule differs; the ultradiscrete rule's relaxed
neuron has no subtractive reset, so its model resets to zero (its rows say so). The input is binary events
(rate 0.3), ``x [T, B, C, H, W]``, labels uniform over the classes.

Measures per rule and ``T``:

* time: median (and minimum) of single steps, the rules interleaved round by round
  (``harness.time_interleaved``); CUDA events on CUDA, ``perf_counter`` on the CPU;
* peak: CUDA ``max_memory_allocated`` during one step minus the allocation before it; CPU the
  highest running total of torch's CPU allocator in the profiler's trace (both count saved
  tensors, temporaries and gradients);
* saved peak: the most bytes autograd keeps alive for backward at any moment of the step
  (``harness.peak_saved_bytes``; the input and the parameters not counted), the same on every
  device and deterministic.

The report ends with the issue's targets as ratios: TESS's peak at the largest ``T`` over the
smallest (target <= 1.2; BPTT's for comparison, which grows about like ``T``), and TESS's time
per step over BPTT's (target <= 2).

Run ``python benchmarks/learning.py --help`` (or ``spikegate bench learning --help``); README.md
beside this file explains the measures.
"""

import argparse
import functools
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (also makes the repository importable)

from spikegate.learning import SurrogateGradient, TESS  # noqa: E402
from spikegate.models import SpikingConvNet  # noqa: E402
from spikegate.neurons import LIF  # noqa: E402

RULES = ("surrogate", "tess", "ultradiscrete")
# TESS's neuron (spikegate/conf/learning/tess.yaml), used for every rule so only the rule differs.
NEURON = {"beta": 0.5, "threshold": 0.6, "reset": "subtract"}
# The ultradiscrete rule's relaxed LIF has only the zero reset (or none): it gets that one, and
# its rows say so.
NEURON_CHANGES = {"ultradiscrete": ({"reset": "zero"}, "zero reset (the relaxed LIF has no "
                                    "subtractive reset)")}
EVENT_RATE = 0.3
LR = 1e-3
SCRIPT = "python benchmarks/learning.py"
DEFAULTS = {"steps": (8, 32, 128), "input": (2, 16, 16), "channels": (16, 32), "classes": 10,
            "batch": 16}
QUICK = {"steps": (2, 8), "input": (2, 8, 8), "channels": (4, 8), "classes": 4, "batch": 2}


@dataclass
class Row:
    """One rule at one ``T``. Times in ms, memory in bytes."""

    rule: str
    T: int
    B: int
    status: str  # "ok", "skipped" or "error"
    median_ms: Optional[float] = None
    min_ms: Optional[float] = None
    peak_bytes: Optional[int] = None  # CUDA max_memory_allocated / CPU allocator trace, per step
    saved_peak_bytes: Optional[int] = None  # most bytes saved for backward alive at once
    peak_growth: Optional[float] = None  # peak_bytes over this rule's at the smallest T
    saved_growth: Optional[float] = None  # saved_peak_bytes over this rule's at the smallest T
    time_vs_surrogate: Optional[float] = None  # median_ms over the surrogate row's at this T
    loss: Optional[float] = None  # of the last step: a sanity check that the step trained
    note: str = ""


@dataclass
class Config:
    device: str
    rules: list
    steps: list
    input_shape: tuple
    channels: tuple
    classes: int
    batch: int
    warmup: int
    repeats: int
    threads: Optional[int]
    seed: int


# ----------------------------------------------------------------------------------------------
# Workload


def build_rule(name: str) -> "object | str":
    """The learning rule ``name``, or why it cannot run here."""
    if name == "surrogate":
        return SurrogateGradient("atan", alpha=2.0)
    if name == "tess":
        return TESS()  # the defaults of learning=tess (static images)
    try:
        from spikegate.learning import Ultradiscrete
    except ImportError as err:
        if err.name == "spikegate.learning":  # the rule has not landed in this checkout
            return "spikegate.learning has no Ultradiscrete in this version"
        return f"spikegate.learning.Ultradiscrete does not import: {harness.first_line(err)}"
    return Ultradiscrete()


class _Case:
    """One rule's model, optimizer and data at one ``T``; ``step()`` is one training step."""

    def __init__(self, name: str, rule, T: int, cfg: Config, device: torch.device) -> None:
        torch.manual_seed(cfg.seed)  # the same weights and data for every rule
        changes = NEURON_CHANGES.get(name, ({}, ""))[0]
        neuron = functools.partial(LIF, **{**NEURON, **changes})
        self.model = SpikingConvNet(cfg.input_shape, cfg.classes, neuron, channels=cfg.channels)
        self.model.to(device).train()
        self.rule = rule
        rule.prepare(self.model)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR)
        shape = (T, cfg.batch, *cfg.input_shape)
        self.x = (torch.rand(shape, device=device) < EVENT_RATE).float()
        self.y = torch.randint(0, cfg.classes, (cfg.batch,), device=device)
        self.loss: Optional[torch.Tensor] = None  # of the last step, detached

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        result = self.rule.step(self.model, self.x, self.y)
        self.optimizer.step()
        self.loss = result.loss

    def kept(self) -> list:
        """Tensors that exist whatever the rule does: the input and the parameters."""
        return [self.x, *self.model.parameters()]


def bench_steps(T: int, cfg: Config, device: torch.device) -> list:
    """Every rule at one ``T``: interleaved timing, then the two memory measures."""
    rows, cases = [], []
    for name in cfg.rules:
        row = Row(name, T, cfg.batch, "ok", note=NEURON_CHANGES.get(name, ({}, ""))[1])
        rows.append(row)
        rule = build_rule(name)
        if isinstance(rule, str):
            row.status, row.note = "skipped", rule
            continue
        try:
            case = _Case(name, rule, T, cfg, device)
            case.step()  # fails here, not inside the timing, if the rule cannot train the model
            cases.append((row, case))
        except Exception as err:  # noqa: BLE001 - a failing rule is a row, not a crash
            row.status = "error"
            row.note = harness.join(f"{type(err).__name__}: {harness.first_line(err)}", row.note)
            harness.free(device)
    times = harness.time_interleaved([c.step for _, c in cases], device, cfg.repeats, cfg.warmup)
    for (row, case), row_times in zip(cases, times):
        row.median_ms, row.min_ms = harness.median_and_min(row_times)
        case.optimizer.zero_grad(set_to_none=True)  # the peaks count the step's own gradients
        harness.free(device)
        row.peak_bytes = harness.peak_bytes_of_step(case.step, device)
        case.optimizer.zero_grad(set_to_none=True)
        row.saved_peak_bytes = harness.peak_saved_bytes(case.step, case.kept())
        row.loss = float(case.loss)
    return rows


def add_ratios(rows: list) -> None:
    """Each row's memory over its rule's at the smallest ``T``, and its time over BPTT's."""
    ok = [r for r in rows if r.status == "ok"]
    for row in ok:
        base = min((r for r in ok if r.rule == row.rule), key=lambda r: r.T)
        row.peak_growth = _ratio(row.peak_bytes, base.peak_bytes)
        row.saved_growth = _ratio(row.saved_peak_bytes, base.saved_peak_bytes)
        bptt = [r for r in ok if r.rule == "surrogate" and r.T == row.T]
        if bptt:
            row.time_vs_surrogate = _ratio(row.median_ms, bptt[0].median_ms)


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or not b else a / b


def targets(rows: list) -> dict:
    """The issue's targets: TESS's memory growth from the smallest to the largest ``T`` (<= 1.2),
    BPTT's beside it, and TESS's time per step over BPTT's at each ``T`` (<= 2)."""
    ok = [r for r in rows if r.status == "ok"]

    def at(rule: str, pick: Callable) -> Optional[Row]:
        found = [r for r in ok if r.rule == rule]
        return pick(found, key=lambda r: r.T) if found else None

    out: dict = {}
    steps = sorted({r.T for r in ok})
    if len(steps) >= 2:
        out["T_small"], out["T_large"] = steps[0], steps[-1]
    for rule in ("tess", "surrogate", "ultradiscrete"):
        last = at(rule, max)
        if last is not None and last.T != at(rule, min).T:
            out[f"{rule}_peak_growth"] = last.peak_growth
            out[f"{rule}_saved_growth"] = last.saved_growth
    out["tess_time_vs_surrogate"] = {
        r.T: r.time_vs_surrogate for r in ok if r.rule == "tess" and r.time_vs_surrogate is not None
    }
    growth = out.get("tess_peak_growth") or out.get("tess_saved_growth")
    if growth is not None:
        out["memory_target_met"] = growth <= 1.2
    if out["tess_time_vs_surrogate"]:
        out["time_target_met"] = all(v <= 2 for v in out["tess_time_vs_surrogate"].values())
    return out


def run_benchmark(cfg: Config, command: str = SCRIPT) -> dict:
    """Every rule at every ``T``; returns ``{"meta": ..., "rows": [...], "targets": {...}}``."""
    device = torch.device(cfg.device)
    with harness.threads_and_load(cfg.threads) as load:
        rows = []
        for T in cfg.steps:
            rows += bench_steps(T, cfg, device)
            harness.free(device)
        add_ratios(rows)
        meta = describe(device, cfg, command)
    meta["loadavg_1min"] = load
    return {"meta": meta, "rows": [asdict(r) for r in rows], "targets": targets(rows)}


def describe(device: torch.device, cfg: Config, command: str) -> dict:
    if device.type == "cuda":
        peak = "peak: torch.cuda.max_memory_allocated during one step minus the allocation before it"
    else:
        peak = ("peak: highest running total of torch's CPU allocator during one step (profiler "
                "profile_memory) minus the total before it")
    return harness.environment(
        device, command,
        warmup=cfg.warmup,
        repeats=cfg.repeats,
        timing="median of interleaved single steps (rule.step + optimizer.step), "
        + ("CUDA events" if device.type == "cuda" else "time.perf_counter"),
        memory=peak + "; saved peak: most bytes saved for backward alive at once during the step "
        "(saved_tensors_hooks, graphs followed until freed; input and parameters not counted)",
        model=f"SpikingConvNet(input {list(cfg.input_shape)}, channels {list(cfg.channels)}, "
        f"{cfg.classes} classes), batch {cfg.batch}; LIF beta {NEURON['beta']}, threshold "
        f"{NEURON['threshold']}, {NEURON['reset']} reset for every rule (but where a row says "
        f"otherwise); SGD lr {LR}",
        input=f"binary events, rate {EVENT_RATE}; seed {cfg.seed}",
    )


# ----------------------------------------------------------------------------------------------
# Report


def _number(key: str, spec: str, scale: float = 1.0) -> Callable[[dict], Optional[str]]:
    return lambda r: None if r[key] is None else f"{r[key] / scale:{spec}}"


MIB = 2 ** 20
COLUMNS = [
    ("rule", "rule"), ("T", "T"), ("B", "B"),
    ("median ms", lambda r: f"{r['median_ms']:.1f}" if r["status"] == "ok" else r["status"]),
    ("peak MiB", _number("peak_bytes", ".2f", MIB)),
    ("× peak at smallest T", _number("peak_growth", ".2f")),
    ("saved peak MiB", _number("saved_peak_bytes", ".3f", MIB)),
    ("× saved at smallest T", _number("saved_growth", ".2f")),
    ("time × surrogate", _number("time_vs_surrogate", ".2f")),
    ("note", "note"),
]


def _fmt(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f}"


def _verdict(t: dict, key: str) -> str:
    return "" if key not in t else f": {'met' if t[key] else 'NOT met'}"


def targets_lines(t: dict) -> list:
    if "T_small" not in t:
        return ["- targets: need at least two values of T"]
    span = f"T={t['T_large']} over T={t['T_small']} (T grows {t['T_large'] / t['T_small']:g}x)"
    lines = [
        f"- TESS peak memory, {span}: {_fmt(t.get('tess_peak_growth'))} (saved peak: "
        f"{_fmt(t.get('tess_saved_growth'))}); target <= 1.2" + _verdict(t, "memory_target_met"),
        f"- surrogate BPTT peak memory, {span}: {_fmt(t.get('surrogate_peak_growth'))} (saved peak: "
        f"{_fmt(t.get('surrogate_saved_growth'))}); expected to grow about linearly",
    ]
    if "ultradiscrete_peak_growth" in t:
        lines.append(f"- ultradiscrete peak memory, {span}: {_fmt(t['ultradiscrete_peak_growth'])} "
                     f"(saved peak: {_fmt(t.get('ultradiscrete_saved_growth'))})")
    ratios = ", ".join(f"T={T}: {v:.2f}" for T, v in t["tess_time_vs_surrogate"].items())
    lines.append(f"- TESS time per step over BPTT's: {ratios or '—'}; target <= 2"
                 + _verdict(t, "time_target_met"))
    return lines


def markdown_report(result: dict) -> str:
    meta = result["meta"]
    lines = [
        harness.environment_lines(meta),
        f"- timing: {meta['timing']}; {meta['warmup']} warm-up steps, {meta['repeats']} timed",
        f"- memory: {meta['memory']}",
        f"- model: {meta['model']}",
        f"- input: {meta['input']}",
    ]
    table = harness.markdown_table(COLUMNS, result["rows"])
    return "\n".join(lines) + "\n\n" + table + "\n\n" + "\n".join(targets_lines(result["targets"])) + "\n"


# ----------------------------------------------------------------------------------------------
# Command line


def _ints(text: str) -> tuple:
    try:
        values = tuple(int(p) for p in text.lower().replace("x", ",").split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = argparse.ArgumentParser(
        prog="spikegate bench learning",
        description="Peak memory and time of one training step of the same conv SNN under "
        "surrogate BPTT, TESS and (when installed) ultradiscrete learning, at several T.",
    )
    harness.add_device_argument(p)
    p.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES),
                   help="learning rules to run (default: all; a missing one is skipped)")
    p.add_argument("--steps", type=int, nargs="+", metavar="T",
                   help=f"time steps (default: {' '.join(map(str, d['steps']))})")
    p.add_argument("--input", type=_ints, metavar="C,H,W",
                   help=f"input shape per step (default: {','.join(map(str, d['input']))})")
    p.add_argument("--channels", type=_ints, metavar="C1,C2,...",
                   help=f"conv channels (default: {','.join(map(str, d['channels']))})")
    p.add_argument("--classes", type=int, help=f"classes (default: {d['classes']})")
    p.add_argument("--batch", type=int, help=f"batch size (default: {d['batch']})")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per rule (default: 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per rule (default: 10)")
    p.add_argument("--quick", action="store_true",
                   help="tiny setting for tests: T 2 and 8, input 2,8,8, channels 4,8, 4 classes, "
                   "batch 2, 1 warm-up, 2 repeats")
    harness.add_run_arguments(p)
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    device = harness.resolve_device(args.device)
    base = QUICK if args.quick else DEFAULTS
    steps = args.steps or base["steps"]
    classes = args.classes if args.classes is not None else base["classes"]
    batch = args.batch if args.batch is not None else base["batch"]
    input_shape = args.input or base["input"]
    repeats = args.repeats if args.repeats is not None else 2 if args.quick else 10
    warmup = args.warmup if args.warmup is not None else 1 if args.quick else 2
    if min(steps) < 1 or classes < 2 or batch < 1 or repeats < 1 or warmup < 0:
        raise SystemExit(f"--steps, --batch and --repeats must be >= 1, --classes >= 2 and --warmup "
                         f">= 0; got steps {list(steps)}, batch {batch}, classes {classes}, "
                         f"repeats {repeats}, warmup {warmup}")
    if len(input_shape) != 3:
        raise SystemExit(f"--input: expected C,H,W, got {','.join(map(str, input_shape))}")
    return Config(
        device=device, rules=list(dict.fromkeys(args.rules)), steps=sorted(set(steps)),
        input_shape=tuple(input_shape), channels=tuple(args.channels or base["channels"]),
        classes=classes, batch=batch, warmup=warmup, repeats=repeats,
        threads=args.threads if args.threads is not None else (None if device == "cuda" else 2),
        seed=args.seed,
    )


def main(argv: Optional[list] = None) -> int:
    """Run the benchmark and print a markdown report. Returns 0, 1 if any rule failed (a skipped
    rule is not a failure), or 2 on bad arguments."""
    return harness.run_main(argv, SCRIPT, parser, config_from_args, run_benchmark, markdown_report,
                            failed=lambda result: any(r["status"] == "error" for r in result["rows"]))


if __name__ == "__main__":
    sys.exit(main())
