"""Dual-path mixer speed: the decay scan against two other formulations, and spike-gated attention
at several fractions of inactive tokens.

**Decay scan.** ``h[t] = lambda h[t-1] + (1 - lambda) z[t]`` per head, ``lambda = sigmoid(r)``,
on the decay-path shape the language model uses, ``z [T, B, H, Dh]`` (``H`` and ``Dh`` from
``SpikingByteLM``'s default width and heads), ``r`` at the authors' initial 3.0, at sequence
lengths 512 to 8192, forward only (under ``no_grad``) and forward plus backward (``autograd.grad``
of ``sum(w * h)`` for fixed random ``w`` with respect to ``z`` and ``r``). Rows:

* ``scan``        ``decay_scan_sequence(z, r)``: the fused Triton scan on CUDA, the chunked torch
                  scan elsewhere;
* ``scan-torch``  the torch scan on CUDA too (``backend="torch"``);
* ``conv``        the SymbolicLight authors' formulation: a causal depthwise ``conv1d`` over time,
                  one channel per (head, feature), with the kernel ``(1 - lambda) lambda^k``,
                  ``k = 0..T-1`` (the whole sequence, so it is exact), computed directly (no FFT);
* ``loop``        a per-step Python loop over ``z.unbind(0)``, autograd through every step.

Before timing, each row's output (and, forward plus backward, its gradients of ``z`` and ``r``) is
compared with the torch scan; a row that differs says ``mismatch`` instead of a time. On CUDA the
scan rows also carry roofline fractions: the bytes the kernels move (or the fewest any
implementation must move) over the step time, against the device's copy bandwidth.

**Attention.** ``spike_gated_attention`` on ``q, k, v [B, H, T, Dh]`` with the LM's window and
anchors, a given fraction of tokens inactive (drawn at random; inactive keys are masked out and
inactive query rows zeroed): ``sdpa`` (scaled_dot_product_attention with the explicit mask, which
is built inside the timed call) everywhere and ``flex`` (flex_attention with a block mask,
compiled) on CUDA, checked against ``sdpa`` before timing.

Timing, the environment record and the output files come from ``harness.py`` beside this file.
Run ``python benchmarks/dualpath.py --help`` (or ``spikegate bench dualpath --help``); README.md
beside this file explains the measures.
"""

import argparse
import inspect
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (also makes the repository importable)

from spikegate.language_model import SpikingByteLM  # noqa: E402
from spikegate.neurons.decay_scan import decay_scan_sequence, decay_scan_torch  # noqa: E402
from spikegate.neurons.spike_attention import attended_pairs, spike_gated_attention  # noqa: E402

SCRIPT = "python benchmarks/dualpath.py"
SCAN_IMPLS = ("scan", "scan-torch", "conv", "loop")
ATTENTION_IMPLS = ("sdpa", "flex")
MODES = ("forward", "forward+backward")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DECAY_LOGIT = 3.0  # the authors' initial r: lambda = sigmoid(3) ~ 0.953

LENGTHS = (512, 1024, 2048, 4096, 8192)
INACTIVE = (0.0, 0.5, 0.9)
# The direct conv costs O(T^2) per channel, and on the CPU torch's depthwise conv1d weight
# gradient is seconds per call even at T = 512: its backward rows stop early there.
CPU_CONV_MAX = {"forward": 8192, "forward+backward": 512}
# Tolerances of the agreement check, relative to the largest magnitude of the reference.
OUTPUT_TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 2e-2}
GRAD_TOL = {torch.float32: 1e-3, torch.float16: 5e-2, torch.bfloat16: 5e-2}


def _lm_default(name: str):
    return inspect.signature(SpikingByteLM).parameters[name].default


def lm_shape() -> tuple[int, int, int, int]:
    """``(heads, head_dim, window, anchors)`` of the language model's defaults."""
    heads, width = _lm_default("heads"), _lm_default("width")
    return heads, width // heads, _lm_default("window"), _lm_default("anchors")


# ----------------------------------------------------------------------------------------------
# Results


@dataclass
class Row:
    """One implementation at one shape and mode. Times in ms.

    ``speedup``: scan rows, the per-step loop's median over this one (same length and mode);
    attention rows, the same implementation's median at 0% inactive over this one. Roofline
    fractions (CUDA, Triton scan): achieved bytes/s over the measured copy bandwidth, counting the
    bytes the kernels move (``roofline_kernel``) or the fewest bytes any implementation must move
    (``roofline_api``); see README.md."""

    bench: str  # "scan" or "attention"
    impl: str
    mode: str
    T: int
    B: int
    H: int
    Dh: int
    dtype: str
    status: str  # "ok", "skipped", "mismatch" or "error"
    inactive: Optional[float] = None  # attention: fraction of inactive tokens
    pairs: Optional[int] = None  # attention: (query, key) pairs attended
    median_ms: Optional[float] = None
    min_ms: Optional[float] = None
    speedup: Optional[float] = None
    roofline_kernel: Optional[float] = None
    roofline_api: Optional[float] = None
    note: str = ""


@dataclass
class Config:
    device: str
    lengths: list
    batch: int
    heads: int
    head_dim: int
    dtype: str
    scan_impls: list
    attention_impls: list
    modes: list
    conv_max: dict
    attention_length: int
    attention_batch: int
    inactive: list
    window: int
    anchors: int
    warmup: int
    repeats: int
    max_call_s: float
    threads: Optional[int]
    seed: int


# ----------------------------------------------------------------------------------------------
# The decay recurrence, three ways


def _compute_dtype(z: torch.Tensor) -> torch.dtype:
    return torch.float64 if z.dtype == torch.float64 else torch.float32


def decay_conv(z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The authors' formulation: ``h[t] = sum_k (1 - lambda) lambda^k z[t - k]``, a causal
    depthwise conv1d over time with a kernel as long as the sequence, ``z [T, B, H, Dh]``,
    ``r [H]``. Differentiable in ``z`` and ``r``; half inputs are computed in float32."""
    T, B, H, Dh = z.shape
    cdt = _compute_dtype(z)
    lam = torch.sigmoid(r.to(cdt))
    k = torch.arange(T, device=z.device, dtype=cdt)
    kernel = (1 - lam)[:, None] * lam[:, None] ** k[None, :]                # [H, T], tap k
    # conv1d correlates, weight[j] meets x[t - (T - 1) + j]: tap k sits at j = T - 1 - k
    weight = kernel.flip(-1).repeat_interleave(Dh, 0)[:, None, :]           # [H * Dh, 1, T]
    x = z.to(cdt).permute(1, 2, 3, 0).reshape(B, H * Dh, T)
    h = F.conv1d(F.pad(x, (T - 1, 0)), weight, groups=H * Dh)             # [B, H * Dh, T]
    return h.reshape(B, H, Dh, T).permute(3, 0, 1, 2).to(z.dtype)


def decay_loop(z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """One Python step per time step, float32 state (float64 for float64 input):
    ``h = lambda h + (1 - lambda) z[t]``."""
    cdt = _compute_dtype(z)
    lam = torch.sigmoid(r.to(cdt))[:, None]                                  # [H, 1]
    h = z.new_zeros(z.shape[1:], dtype=cdt)
    out = []
    for z_t in z.unbind(0):
        h = lam * h + (1 - lam) * z_t.to(cdt)
        out.append(h)
    return torch.stack(out).to(z.dtype)


def _scan(backend: str) -> Callable:
    return lambda z, r: decay_scan_sequence(z, r, backend=backend)[0]


def scan_impls(names: list, device: torch.device) -> list:
    """``(label, fn)`` per requested scan implementation that exists on ``device``."""
    found = []
    for name in names:
        if name == "scan":
            backend = "triton" if device.type == "cuda" else "torch"
            found.append((f"decay scan [{backend}]", _scan("auto")))
        elif name == "scan-torch":
            if device.type == "cuda":
                found.append(("decay scan [torch]", _scan("torch")))
            # on the CPU "scan" already is the torch scan: no second row
        elif name == "conv":
            found.append(("causal depthwise conv (authors)", decay_conv))
        elif name == "loop":
            found.append(("per-step loop", decay_loop))
    return found


def _differs(reference: torch.Tensor, value: torch.Tensor, tol: float, what: str,
             against: str = "the torch scan") -> str:
    """``""`` when ``value`` is within ``tol`` of ``reference``, relative to its largest
    magnitude; else what differs and by how much."""
    scale = reference.abs().max().item() or 1.0
    error = (value.float() - reference.float()).abs().max().item() / scale
    return "" if error <= tol else f"{what} differs from {against} (max error {error:.2e} of max |ref|)"


class _ScanCase:
    """One formulation on the benchmark input of one length: its leaves and timed steps."""

    def __init__(self, fn: Callable, z: torch.Tensor, r: torch.Tensor, w: torch.Tensor):
        self.fn, self.w = fn, w
        self.z = z.detach().clone().requires_grad_()
        self.r = r.detach().clone().requires_grad_()

    def forward(self) -> torch.Tensor:
        with torch.no_grad():
            return self.fn(self.z, self.r)

    def forward_backward(self) -> tuple:
        h = self.fn(self.z, self.r)
        return torch.autograd.grad(h, [self.z, self.r], self.w)

    def step(self, mode: str) -> Callable:
        return self.forward if mode == "forward" else self.forward_backward

    def check(self, mode: str, reference: tuple) -> str:
        dtype = self.z.dtype
        if mode == "forward":
            return _differs(reference[0], self.forward(), OUTPUT_TOL[dtype], "h")
        dz, dr = self.forward_backward()
        return harness.join(_differs(reference[1], dz, GRAD_TOL[dtype], "dz"),
                            _differs(reference[2], dr, GRAD_TOL[dtype], "dr"))


def _scan_reference(z: torch.Tensor, r: torch.Tensor, w: torch.Tensor) -> tuple:
    zl, rl = z.detach().clone().requires_grad_(), r.detach().clone().requires_grad_()
    h = decay_scan_torch(zl, rl)
    dz, dr = torch.autograd.grad(h, [zl, rl], w)
    return h.detach(), dz, dr


def bench_scan_length(T: int, device: torch.device, cfg: Config) -> list:
    """Rows of every scan implementation and mode at length ``T``, timed interleaved."""
    dtype = DTYPES[cfg.dtype]
    B, H, Dh = cfg.batch, cfg.heads, cfg.head_dim
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    z = torch.randn((T, B, H, Dh), generator=gen, device=device).to(dtype)
    w = torch.randn((T, B, H, Dh), generator=gen, device=device).to(dtype)
    r = torch.full((H,), DECAY_LOGIT, device=device)
    reference = _scan_reference(z, r, w)
    rows, steps = [], []
    for mode in cfg.modes:
        for label, fn in scan_impls(cfg.scan_impls, device):
            row = Row("scan", label, mode, T, B, H, Dh, cfg.dtype, "ok")
            rows.append(row)
            if fn is decay_conv and T > cfg.conv_max[mode]:
                row.status = "skipped"
                row.note = f"length > --conv-max-length {cfg.conv_max[mode]} for {mode}"
                continue
            try:
                case = _ScanCase(fn, z, r, w)
                problem = case.check(mode, reference)
                if problem:
                    row.status, row.note = "mismatch", problem
                    continue
                one = harness.time_call(case.step(mode), device)
                if one > cfg.max_call_s * 1e3:  # keep the default run in minutes
                    row.median_ms = row.min_ms = one
                    row.note = (f"one call timed: it took {one / 1e3:.1f} s > --max-call-s "
                                f"{cfg.max_call_s:g}")
                    continue
                steps.append((row, case.step(mode)))
            except Exception as err:  # one failing formulation must not hide the others
                row.status, row.note = "error", f"{type(err).__name__}: {harness.first_line(err)}"
                harness.free(device)
    _time_rows(steps, device, cfg)  # both modes in one interleaved run
    return rows


def _time_rows(steps: list, device: torch.device, cfg: Config) -> None:
    times = harness.time_interleaved([s for _, s in steps], device, cfg.repeats, cfg.warmup)
    for (row, _), row_times in zip(steps, times):
        row.median_ms, row.min_ms = harness.median_and_min(row_times)


def scan_bytes_per_element(T: int, m: int, device: torch.device, dtype: torch.dtype, mode: str):
    """``(kernel bytes, API minimum bytes)`` per element of ``z`` for one step of ``mode``.

    Kernel: ``decay_scan_bytes_per_element`` for the launch plan the Triton scan picks at this
    shape (chunked or not). API minimum: forward reads ``z`` and writes ``h`` (``2b``); the
    backward must read ``dL/dh``, write ``dz`` and read one tensor that rebuilds ``h`` (``3b``)."""
    from spikegate.kernels.decay_scan import _launch_plan, decay_scan_bytes_per_element

    chunked = _launch_plan(T, m, device, None)[2] > 1
    b = torch.empty((), dtype=dtype).element_size()
    kernel = decay_scan_bytes_per_element(dtype, chunked=chunked)
    api = 2 * b
    if mode != "forward":
        kernel += decay_scan_bytes_per_element(dtype, chunked=chunked, backward=True)
        api += 3 * b
    return kernel, api


def add_scan_relative(rows: list, device: torch.device, copy_bw: Optional[float]) -> None:
    """Speed-up over the per-step loop per length and mode; roofline of the Triton scan rows."""
    for row in rows:
        loop = [r for r in rows if r.impl == "per-step loop" and (r.T, r.mode) == (row.T, row.mode)]
        if row.median_ms and loop and loop[0].median_ms:
            row.speedup = loop[0].median_ms / row.median_ms
        if row.median_ms and copy_bw and row.impl == "decay scan [triton]":
            elements = row.T * row.B * row.H * row.Dh
            kernel, api = scan_bytes_per_element(
                row.T, row.B * row.H * row.Dh, device, DTYPES[row.dtype], row.mode
            )
            row.roofline_kernel = harness.roofline_fraction(kernel * elements, row.median_ms, copy_bw)
            row.roofline_api = harness.roofline_fraction(api * elements, row.median_ms, copy_bw)


# ----------------------------------------------------------------------------------------------
# Attention


class _AttentionCase:
    def __init__(self, backend: str, qkv: tuple, positions: torch.Tensor, active: torch.Tensor,
                 w: torch.Tensor, cfg: Config):
        self.backend, self.positions, self.active, self.w = backend, positions, active, w
        self.qkv = [t.detach().clone().requires_grad_() for t in qkv]
        self.span = dict(window=cfg.window, anchors=cfg.anchors)

    def _run(self) -> torch.Tensor:
        q, k, v = self.qkv
        return spike_gated_attention(q, k, v, self.positions, self.positions, self.active,
                                     self.active, backend=self.backend, **self.span)

    def forward(self) -> torch.Tensor:
        with torch.no_grad():
            return self._run()

    def forward_backward(self) -> tuple:
        return torch.autograd.grad(self._run(), self.qkv, self.w)

    def step(self, mode: str) -> Callable:
        return self.forward if mode == "forward" else self.forward_backward


def attention_cases(inactive: float, device: torch.device, cfg: Config) -> tuple[list, list]:
    """Rows of every attention backend and mode at one fraction of inactive tokens, and the
    ``(row, step)`` pairs to time (the rows that passed the check against ``sdpa``)."""
    dtype = DTYPES[cfg.dtype]
    T, B, H, Dh = cfg.attention_length, cfg.attention_batch, cfg.heads, cfg.head_dim
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    qkv = tuple(torch.randn((B, H, T, Dh), generator=gen, device=device).to(dtype) for _ in range(3))
    w = torch.randn((B, H, T, Dh), generator=gen, device=device).to(dtype)
    active = torch.rand((B, T), generator=gen, device=device) >= inactive
    positions = torch.arange(T, device=device)
    pairs = int(attended_pairs(active, active, window=cfg.window, anchors=cfg.anchors))
    reference = _AttentionCase("sdpa", qkv, positions, active, w, cfg)
    rows, steps = [], []
    for mode in cfg.modes:
        expected = reference.step(mode)()
        expected = expected if isinstance(expected, tuple) else (expected,)
        for backend in cfg.attention_impls:
            label = "sdpa, explicit mask" if backend == "sdpa" else "flex_attention, block mask"
            row = Row("attention", label, mode, T, B, H, Dh, cfg.dtype, "ok", inactive=inactive,
                      pairs=pairs)
            rows.append(row)
            if backend == "flex" and device.type != "cuda":
                row.status, row.note = "skipped", "flex_attention runs on CUDA only"
                continue
            try:
                case = _AttentionCase(backend, qkv, positions, active, w, cfg)
                got = case.step(mode)()
                got = got if isinstance(got, tuple) else (got,)
                names = ("out",) if mode == "forward" else ("dq", "dk", "dv")
                problem = harness.join(*(_differs(e, g, GRAD_TOL[dtype], name, "sdpa")
                                         for e, g, name in zip(expected, got, names)))
                if problem:
                    row.status, row.note = "mismatch", problem
                    continue
                steps.append((row, case.step(mode)))
            except Exception as err:  # e.g. no compiler for flex_attention on this machine
                row.status, row.note = "error", f"{type(err).__name__}: {harness.first_line(err)}"
                harness.free(device)
    return rows, steps


def add_attention_relative(rows: list) -> None:
    """Speed-up of each row over the same backend and mode with every token active."""
    for row in rows:
        base = [r for r in rows if (r.impl, r.mode) == (row.impl, row.mode) and r.inactive == 0.0]
        if row.median_ms and base and base[0].median_ms:
            row.speedup = base[0].median_ms / row.median_ms


# ----------------------------------------------------------------------------------------------
# Driver and report


def run_benchmark(cfg: Config, command: str = SCRIPT) -> dict:
    """Every scan length and attention fraction; return ``{"meta": ..., "scan": [...],
    "attention": [...]}``."""
    device = torch.device(cfg.device)
    with harness.threads_and_load(cfg.threads) as load:
        copy_bw = harness.copy_bandwidth(device) if device.type == "cuda" else None
        scan_rows: list = []
        for T in cfg.lengths:
            scan_rows += bench_scan_length(T, device, cfg)
            harness.free(device)
        add_scan_relative(scan_rows, device, copy_bw)
        attention_rows: list = []
        attention_steps: list = []
        for inactive in cfg.inactive:
            rows, steps = attention_cases(inactive, device, cfg)
            attention_rows += rows
            attention_steps += steps
        # every fraction in one interleaved run: drift in load hits all of them alike
        _time_rows(attention_steps, device, cfg)
        del attention_steps
        harness.free(device)
        add_attention_relative(attention_rows)
        meta = describe(device, cfg, copy_bw, command)
    meta["loadavg_1min"] = load
    return {"meta": meta, "scan": [asdict(r) for r in scan_rows],
            "attention": [asdict(r) for r in attention_rows]}


def describe(device: torch.device, cfg: Config, copy_bw: Optional[float], command: str) -> dict:
    return harness.environment(
        device, command, dists=("triton",),
        copy_bandwidth_GBps=copy_bw / 1e9 if copy_bw else None,
        warmup=cfg.warmup,
        repeats=cfg.repeats,
        timing="median of interleaved single calls, "
        + ("CUDA events" if device.type == "cuda" else "time.perf_counter"),
        scan_input=f"z ~ N(0, 1) [T, {cfg.batch}, {cfg.heads}, {cfg.head_dim}], r = {DECAY_LOGIT} "
        "per head; backward: autograd.grad of sum(w h) for z and r, w ~ N(0, 1)",
        attention_input=f"q, k, v ~ N(0, 1) [{cfg.attention_batch}, {cfg.heads}, "
        f"{cfg.attention_length}, {cfg.head_dim}], window {cfg.window}, {cfg.anchors} anchors, "
        "inactive tokens drawn at random per batch row (keys masked, query rows zeroed)",
    )


def _number(key: str, spec: str) -> Callable[[dict], Optional[str]]:
    return lambda r: None if r[key] is None else f"{r[key]:{spec}}"


def _time(r: dict) -> str:
    return f"{r['median_ms']:.3g}" if r["status"] == "ok" else r["status"]


def _percent(key: str) -> Callable[[dict], Optional[str]]:
    return lambda r: None if r[key] is None else f"{r[key] * 100:.0f}%"


SCAN_COLUMNS = [
    ("implementation", "impl"), ("mode", "mode"), ("T", "T"), ("B", "B"), ("H", "H"),
    ("Dh", "Dh"), ("dtype", "dtype"), ("median ms", _time),
    ("× vs per-step loop", _number("speedup", ".3g")),
    ("roofline (kernel bytes)", _percent("roofline_kernel")),
    ("roofline (API minimum)", _percent("roofline_api")), ("note", "note"),
]
ATTENTION_COLUMNS = [
    ("implementation", "impl"), ("mode", "mode"), ("inactive", _percent("inactive")),
    ("T", "T"), ("B", "B"), ("H", "H"), ("Dh", "Dh"), ("dtype", "dtype"),
    ("pairs attended", "pairs"), ("median ms", _time),
    ("× vs 0% inactive", _number("speedup", ".2f")), ("note", "note"),
]


def markdown_report(result: dict) -> str:
    meta = result["meta"]
    lines = [
        harness.environment_lines(meta),
        f"- timing: {meta['timing']}; {meta['warmup']} warm-up calls, {meta['repeats']} timed",
        f"- decay scan: {meta['scan_input']}",
        f"- attention: {meta['attention_input']}",
    ]
    if meta.get("copy_bandwidth_GBps"):
        lines.append(f"- device-to-device copy bandwidth: {meta['copy_bandwidth_GBps']:.0f} GB/s")
    return ("\n".join(lines) + "\n\n### Decay scan\n\n" + harness.markdown_table(SCAN_COLUMNS, result["scan"])
            + "\n\n### Spike-gated attention\n\n"
            + harness.markdown_table(ATTENTION_COLUMNS, result["attention"]) + "\n")


# ----------------------------------------------------------------------------------------------
# Command line


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    heads, head_dim, window, anchors = lm_shape()
    p = argparse.ArgumentParser(
        prog="spikegate bench dualpath",
        description="Decay scan vs the authors' causal depthwise conv vs a per-step loop, and "
        "spike-gated attention time at several fractions of inactive tokens.",
    )
    harness.add_device_argument(p)
    p.add_argument("--lengths", type=harness.positive_int, nargs="+",
                   help="scan sequence lengths (default: 512 1024 2048 4096 8192)")
    p.add_argument("--batch", type=harness.positive_int, help="scan batch B (default: CPU 4, CUDA 32)")
    p.add_argument("--heads", type=harness.positive_int, default=heads,
                   help="heads H (default: the LM's, %(default)s)")
    p.add_argument("--head-dim", type=harness.positive_int, default=head_dim,
                   help="features per head Dh (default: the LM's, %(default)s)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--scan-impls", nargs="+", choices=SCAN_IMPLS, default=list(SCAN_IMPLS),
                   help="default: all (scan-torch is a separate row on CUDA only)")
    p.add_argument("--attention-impls", nargs="+", choices=ATTENTION_IMPLS,
                   help="default: CUDA both, CPU sdpa (flex runs on CUDA only)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--conv-max-length", type=harness.positive_int,
                   help="longest T of the conv rows, both modes (default: CUDA no limit; CPU "
                   f"{CPU_CONV_MAX['forward']} forward, {CPU_CONV_MAX['forward+backward']} "
                   "forward+backward)")
    p.add_argument("--attention-length", type=harness.positive_int,
                   help="attention sequence length (default: CPU 1024, CUDA 4096)")
    p.add_argument("--attention-batch", type=harness.positive_int, help="attention batch (default: CPU 4, CUDA 16)")
    p.add_argument("--inactive", type=_fraction, nargs="+", default=list(INACTIVE),
                   help="fractions of inactive tokens (default: 0 0.5 0.9)")
    p.add_argument("--window", type=harness.positive_int, default=window,
                   help="attention window (default: the LM's, %(default)s)")
    p.add_argument("--anchors", type=int, default=anchors,
                   help="anchor positions (default: the LM's, %(default)s)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per row (default: 1)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls (default: CPU 5, CUDA 20)")
    p.add_argument("--max-call-s", type=float, default=10.0,
                   help="a scan row whose first call (after the check) takes longer is timed by "
                   "that one call only (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="tiny setting for tests: T 64, B 2, H 2, Dh 8, attention T 64, window 16, "
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
    if not args.max_call_s > 0:
        raise SystemExit(f"--max-call-s: expected seconds > 0, got {args.max_call_s}")
    if args.anchors < 0:
        raise SystemExit(f"--anchors: expected >= 0, got {args.anchors}")
    if args.conv_max_length is not None:
        conv_max = dict.fromkeys(MODES, args.conv_max_length)
    else:
        conv_max = dict.fromkeys(MODES, 1 << 62) if cuda or quick else dict(CPU_CONV_MAX)
    heads, head_dim = (2, 8) if quick else (args.heads, args.head_dim)
    return Config(
        device=device,
        lengths=list(args.lengths or ((64,) if quick else LENGTHS)),
        batch=args.batch or (2 if quick else 32 if cuda else 4),
        heads=heads, head_dim=head_dim, dtype=args.dtype,
        scan_impls=list(args.scan_impls),
        attention_impls=list(args.attention_impls or (ATTENTION_IMPLS if cuda else ("sdpa",))),
        modes=list(args.modes), conv_max=conv_max,
        attention_length=args.attention_length or (64 if quick else 4096 if cuda else 1024),
        attention_batch=args.attention_batch or (2 if quick else 16 if cuda else 4),
        inactive=list(args.inactive), window=16 if quick else args.window, anchors=args.anchors,
        warmup=warmup, repeats=repeats, max_call_s=args.max_call_s,
        threads=args.threads if args.threads is not None else (None if cuda else 2),
        seed=args.seed,
    )


def main(argv: Optional[list] = None) -> int:
    """Run the benchmark; print markdown tables. Returns 0, 1 if any row is a mismatch or an
    error (a skipped row is not a failure), or 2 on bad arguments."""
    return harness.run_main(argv, SCRIPT, parser, config_from_args, run_benchmark, markdown_report,
                            failed=_failed)


def _failed(result: dict) -> bool:
    return any(r["status"] in ("mismatch", "error") for r in result["scan"] + result["attention"])


if __name__ == "__main__":
    sys.exit(main())
