"""LIF forward+backward speed and memory: spikegate against peer libraries, side by side.

One run times, at the same shape ``x [T, B, N]`` and dtype, one training step of a LIF layer for

* ``ours-triton``  spikegate's fused Triton kernels (``lif_sequence(backend="triton")``, CUDA only),
* ``ours-torch``   spikegate's torch reference (``lif_sequence(backend="torch")``, LIFTorchFunction),
* ``naive``        a plain per-step torch loop with autograd and a surrogate spike Function,
* ``spikingjelly`` SpikingJelly 2.0 ``LIFNode(step_mode="m")``; on CUDA once per implementation
                   (triton, cuda, torch) chosen by ``SJ_LIF_CUDA_IMPLEMENTATION`` in a child process,
* ``spikingjelly-precision`` (CUDA, float16/bfloat16) SpikingJelly's explicit-precision Triton path,
                   ``functional.lif_multi_step(..., neuron_storage=<x dtype>, neuron_fwd="fp32",
                   neuron_bwd="fp32")``: state stored in the input dtype, math in float32, as ours,
* ``norse``        Norse ``LIFBoxCell`` stepped over time,
* ``snntorch``     snnTorch ``Leaky`` stepped over time.

Every implementation is set up for the same dynamics, ``u = 0.5 v + x``, spike when ``u`` reaches
1, reset to zero, ATan surrogate with alpha = 2 where the peer has one:

* SpikingJelly: ``LIFNode(tau=2, decay_input=False, v_threshold=1, v_reset=0, ATan(alpha=2),
  step_mode="m")`` (``tau = 1 / (1 - beta)``); fires on ``u >= 1`` like ours. On CUDA its kernel
  is picked by the environment variable ``SJ_LIF_CUDA_IMPLEMENTATION``, read once per process.
* Norse: ``LIFBoxCell`` with ``tau_mem_inv=0.5``, ``v_leak=0``, ``v_th=1``, ``v_reset=0``,
  ``dt=1``, fed ``2 x`` because it decays the input as well (``v + 0.5 (2x - v)``); fires on
  ``u > 1`` (strict) and has no ATan, so its SuperSpike surrogate runs.
* snnTorch: ``Leaky(beta=0.5, threshold=1, reset_mechanism="zero", spike_grad=atan(alpha=2))``;
  its default ``reset_delay`` detaches the reset from the gradient, it fires on ``u > 1``
  (strict), and the membrane it returns last is the one before the reset.

The strict thresholds do not matter here: the benchmark input never puts ``u`` exactly on the
threshold (see :func:`make_input`).

A step is the forward, then ``torch.autograd.grad`` of ``sum(w_s * spikes) + sum(w_v * v_last)``
with fixed random weights ``w_s [T, B, N]``, ``w_v [B, N]`` (given as ``grad_outputs``, so no
extra loss kernels run). Before timing, each implementation's spikes are compared with spikegate's
torch reference on the benchmark input; a mismatch is reported instead of a time.

Timing, memory, the environment record and the output files come from ``harness.py`` beside this
file. ``--compile-check`` instead compiles the Triton kernels for sm_90 without a GPU and reports
registers, spills, vector accesses and layout conversions (``spikegate.kernels.aot``).

Run ``python benchmarks/lif.py --help`` (or ``spikegate bench lif --help``); README.md beside this
file explains the measures.
"""

import argparse
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (also makes the repository importable)

from spikegate.neurons.checks import triton_interpreter_enabled  # noqa: E402
from spikegate.neurons.lif import lif_sequence  # noqa: E402

BETA = 0.5  # = 1 - 1/tau with tau = 2 (SpikingJelly), tau_mem_inv = 0.5 (Norse)
THRESHOLD = 1.0
ATAN_ALPHA = 2.0

IMPLS = ("ours-triton", "ours-torch", "naive", "spikingjelly", "spikingjelly-precision", "norse",
         "snntorch")
PEERS = ("spikingjelly", "norse", "snntorch")  # other libraries; "naive" is our own baseline
SJ_IMPLEMENTATIONS = ("triton", "cuda", "torch")  # "cuda" is SJ 2.0's native extension (not CuPy)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# The CPU baseline: a small, a long and a wide layer.
CPU_SHAPES = ((32, 32, 1024), (128, 16, 1024), (16, 64, 4096))
CUDA_SHAPES = ((8, 64, 65536), (32, 64, 65536), (128, 64, 65536))  # ~4M neurons per step
QUICK_SHAPES = ((4, 2, 64),)
SCRIPT = "python benchmarks/lif.py"

_SJ_CHILD_ENV = "SPIKEGATE_BENCH_SJ_CHILD"  # marks the child process that runs one SJ implementation


# ----------------------------------------------------------------------------------------------
# Results


@dataclass
class Row:
    """One implementation at one shape and dtype. Times in ms; memory in bytes per neuron-step.

    The two roofline fractions (CUDA, spikegate triton) are achieved bytes/s over the measured
    copy bandwidth, counting the bytes the kernels move (``roofline_kernel``) or the fewest bytes
    any implementation of the API must move (``roofline_api``); see README.md."""

    impl: str
    T: int
    B: int
    N: int
    dtype: str
    status: str  # "ok", "skipped", "mismatch" or "error"
    median_ms: Optional[float] = None
    min_ms: Optional[float] = None
    saved_bytes: Optional[float] = None  # tensors saved for backward, per neuron-step
    peak_bytes: Optional[float] = None  # CUDA: max_memory_allocated delta, per neuron-step
    speedup_vs_peer: Optional[float] = None  # fastest peer library's median / this median
    speedup_vs_naive: Optional[float] = None  # naive loop's median / this median
    roofline_kernel: Optional[float] = None
    roofline_api: Optional[float] = None
    note: str = ""


@dataclass
class Config:
    device: str
    shapes: list
    dtypes: list
    impls: list
    sj_impls: list
    warmup: int
    repeats: int
    threads: Optional[int]
    seed: int
    validate: bool
    spike_tolerance: float


@dataclass
class Impl:
    """A LIF implementation under test: ``run(x) -> (spikes [T, B, N], v_last [B, N])``.

    ``prepare`` maps the shared benchmark input to this implementation's input (Norse takes
    ``2 x`` because it decays the input too); it runs once, outside the timed region.
    ``dtypes``: the input dtypes it runs (None: all)."""

    name: str
    run: Callable[[torch.Tensor], tuple]
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
    note: str = ""
    dtypes: Optional[tuple] = None


# ----------------------------------------------------------------------------------------------
# Input and correctness


def make_input(shape: Sequence[int], dtype: torch.dtype, device: torch.device, seed: int) -> torch.Tensor:
    """``x [T, B, N]`` with values ``(k + 1/2) / 128``, k uniform in [16, 127], i.e. in [0.13, 1).

    Odd multiples of 2^-8 are exact in float32, float16 and bfloat16, and every partial sum
    ``u = 0.5 v + x`` of a neuron that fired within the last ~16 steps stays exact in float32 with
    its lowest bit set, so ``u`` never equals the threshold: implementations that fire on ``>``
    (Norse, snnTorch) or round in another order (Norse) must give the same spikes as ours. The
    mean drive (0.56 > 1 - beta) makes every neuron fire every few steps (rate about 0.4); the
    step time of every implementation here is independent of the values.
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    k = torch.randint(16, 128, tuple(shape), generator=gen, device=device, dtype=torch.int32)
    return ((k.to(torch.float32) + 0.5) / 128).to(dtype)


def check_spikes(reference: torch.Tensor, spikes: torch.Tensor, tolerance: float = 0.0) -> Optional[str]:
    """None if ``spikes`` equals ``reference`` (up to a fraction ``tolerance`` of differing
    entries), else a message saying how they differ."""
    if tuple(spikes.shape) != tuple(reference.shape):
        return f"spikes have shape {tuple(spikes.shape)}, expected {tuple(reference.shape)}"
    if not bool(((spikes == 0) | (spikes == 1)).all()):
        return "spikes are not all 0 or 1"
    differ = int((spikes.detach().to(reference.dtype) != reference).sum())
    if differ > tolerance * reference.numel():
        return f"{differ} of {reference.numel()} spikes differ from spikegate's torch reference"
    return None


# ----------------------------------------------------------------------------------------------
# Implementations


class _AtanSpike(torch.autograd.Function):
    """Heaviside ``x >= 0`` forward, ATan surrogate ``alpha/2 / (1 + (pi/2 alpha x)^2)`` backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (ATAN_ALPHA / 2) / (1 + (math.pi / 2 * ATAN_ALPHA * x) ** 2)


def naive_lif(x: torch.Tensor) -> tuple:
    """The textbook per-step loop with autograd; float32 state as in spikegate's semantics.

    Steps over ``x.unbind(0)``: indexing ``x[t]`` in a loop makes autograd's backward O(T^2)
    (every step's slice gradient is a full-size zero tensor plus one slice).
    """
    v = torch.zeros(x.shape[1:], dtype=torch.float32, device=x.device)
    spikes = []
    for x_t in x.unbind(0):
        u = BETA * v + x_t.float()
        s = _AtanSpike.apply(u - THRESHOLD)
        v = u * (1 - s)
        spikes.append(s)
    return torch.stack(spikes).to(x.dtype), v.to(x.dtype)


def _ours(backend: str, validate: bool) -> Callable:
    def run(x):
        return lif_sequence(
            x, beta=BETA, threshold=THRESHOLD, reset="zero", surrogate="atan",
            detach_reset=False, backend=backend, validate=validate,
        )

    return run


def _spikingjelly(device: torch.device) -> Impl:
    from spikingjelly.activation_based import functional, neuron, surrogate

    node = neuron.LIFNode(
        tau=1.0 / (1.0 - BETA), decay_input=False, v_threshold=THRESHOLD, v_reset=0.0,
        surrogate_function=surrogate.ATan(alpha=ATAN_ALPHA), detach_reset=False, step_mode="m",
    )
    chosen = functional.neuron_implementation("lif", device)["implementation"]

    def run(x):
        node.reset()
        spikes = node(x)
        return spikes, node.v

    return Impl(f"SpikingJelly {harness.version('spikingjelly')} LIFNode [{chosen}]", run)


def _spikingjelly_precision(device: torch.device) -> "Impl | str":
    """SpikingJelly's explicit-precision Triton path: state stored in the input dtype, forward
    and backward math in float32, which is what spikegate's kernels do for half inputs."""
    from spikingjelly.activation_based import functional, surrogate

    if device.type != "cuda":
        return "CUDA only (SpikingJelly's explicit-precision path is Triton on CUDA)"
    atan = surrogate.ATan(alpha=ATAN_ALPHA)

    def run(x):
        v = torch.zeros(x.shape[1:], dtype=x.dtype, device=x.device)
        spikes, v_last, _ = functional.lif_multi_step(
            x, v, 1.0 / (1.0 - BETA), False, THRESHOLD, 0.0, atan, False, False,
            neuron_storage=x.dtype, neuron_fwd="fp32", neuron_bwd="fp32",
        )
        return spikes, v_last

    return Impl(
        f"SpikingJelly {harness.version('spikingjelly')} lif_multi_step"
        " [triton, explicit precision]", run, note="storage in the input dtype, fp32 forward and backward math",
        dtypes=(torch.float16, torch.bfloat16),
    )


def _norse(device: torch.device) -> Impl:
    import norse.torch as nt

    def scalar(value):
        return torch.tensor(value, device=device)

    params = nt.LIFBoxParameters(
        tau_mem_inv=scalar(1.0 - BETA), v_leak=scalar(0.0), v_th=scalar(THRESHOLD),
        v_reset=scalar(0.0), method="super", alpha=scalar(100.0),
    )
    cell = nt.LIFBoxCell(params, dt=1.0)

    def run(x):
        state, spikes = None, []
        for x_t in x.unbind(0):
            s, state = cell(x_t, state)
            spikes.append(s)
        return torch.stack(spikes), state.v

    return Impl(
        f"Norse {harness.version('norse')} LIFBoxCell", run,
        prepare=lambda x: 2 * x,
        note="input 2x (Norse decays the input); SuperSpike surrogate (no ATan in Norse)",
    )


def _snntorch(device: torch.device) -> Impl:
    import snntorch

    leaky = snntorch.Leaky(
        beta=BETA, threshold=THRESHOLD, reset_mechanism="zero",
        spike_grad=snntorch.surrogate.atan(alpha=ATAN_ALPHA),
    ).to(device)

    def run(x):
        mem = torch.zeros_like(x[0])
        spikes = []
        for x_t in x.unbind(0):
            s, mem = leaky(x_t, mem)
            spikes.append(s)
        return torch.stack(spikes), mem

    return Impl(
        f"snnTorch {harness.version('snntorch')} Leaky", run,
        note="reset detached from the gradient (snnTorch default); v_last is pre-reset",
    )


def build_impl(name: str, device: torch.device, cfg: Config) -> "Impl | str":
    """The implementation called ``name``, or a string saying why it is skipped."""
    if name == "ours-triton":
        interpreted = device.type != "cuda" and triton_interpreter_enabled()
        if device.type != "cuda" and not interpreted:
            return "CUDA only (the Triton kernels need a GPU; TRITON_INTERPRET=1 runs them slowly on the CPU)"
        try:
            import spikegate.kernels.lif  # noqa: F401
        except ImportError as err:
            return f"spikegate.kernels.lif not importable: {err}"
        notes = ["validate=False"] if not cfg.validate else []
        if interpreted:
            notes.append("Triton CPU interpreter: a correctness run, its time means nothing")
        return Impl("spikegate triton", _ours("triton", cfg.validate), note="; ".join(notes))
    if name == "ours-torch":
        return Impl("spikegate torch", _ours("torch", cfg.validate),
                    note="" if cfg.validate else "validate=False")
    if name == "naive":
        return Impl("naive torch loop", naive_lif)
    builders = {"spikingjelly": _spikingjelly, "spikingjelly-precision": _spikingjelly_precision,
                "norse": _norse, "snntorch": _snntorch}
    module = "spikingjelly" if name.startswith("spikingjelly") else name
    missing = harness.peer_missing(module)
    if missing:
        return missing
    with harness.quiet_peer_warnings():
        return builders[name](device)


def kernel_bytes_per_neuron_step(dtype: torch.dtype) -> "tuple[Optional[int], Optional[int], str]":
    """``(kernel bytes, API minimum bytes, why not)`` per neuron-step of one training step
    (forward plus backward), from ``spikegate.kernels.lif``."""
    try:
        from spikegate.kernels.lif import lif_bytes_per_neuron_step, lif_min_bytes_per_neuron_step
    except ImportError as err:
        return None, None, f"no byte counts from spikegate.kernels.lif ({err})"
    kernel = (lif_bytes_per_neuron_step(dtype, backward=False)
              + lif_bytes_per_neuron_step(dtype, backward=True))
    return kernel, lif_min_bytes_per_neuron_step(dtype), ""


class _Case:
    """One implementation prepared on the benchmark input: its leaf input and gradient weights."""

    def __init__(self, impl: Impl, x: torch.Tensor, w_s: torch.Tensor, w_v: torch.Tensor):
        self.impl = impl
        self.x = impl.prepare(x).detach().requires_grad_()
        self.w_s, self.w_v = w_s, w_v
        self.peer = _is_peer(impl.name)

    def forward(self):
        if self.peer:
            with harness.quiet_peer_warnings():
                return self.impl.run(self.x)
        return self.impl.run(self.x)

    def step(self) -> None:
        spikes, v_last = self.forward()
        outputs, grads = [spikes], [self.w_s.to(spikes.dtype)]
        if v_last.requires_grad:
            outputs.append(v_last)
            grads.append(self.w_v.to(v_last.dtype))
        torch.autograd.grad(outputs, self.x, grads)


def bench_shape(
    impls: "list[Impl | tuple[str, str]]", shape: Sequence[int], dtype_name: str,
    device: torch.device, cfg: Config,
) -> list:
    """Rows for every implementation at one shape and dtype. ``impls`` holds Impl objects or
    ``(name, reason)`` pairs for skipped ones. Timing is interleaved across implementations
    (``harness.time_interleaved``) so drift in clock or load hits all of them alike."""
    T, B, N = shape
    neuron_steps = T * B * N
    dtype = DTYPES[dtype_name]
    x = make_input(shape, dtype, device, cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    w_s = torch.randn(tuple(shape), generator=gen, device=device).to(dtype)
    w_v = torch.randn((B, N), generator=gen, device=device).to(dtype)
    with torch.no_grad():
        reference, _ = lif_sequence(x, beta=BETA, threshold=THRESHOLD, backend="torch", validate=False)

    rows, cases = [], []
    for impl in impls:
        if isinstance(impl, tuple):
            rows.append(Row(impl[0], T, B, N, dtype_name, "skipped", note=impl[1]))
            continue
        row = Row(impl.name, T, B, N, dtype_name, "ok", note=impl.note)
        rows.append(row)
        if impl.dtypes is not None and dtype not in impl.dtypes:
            row.status = "skipped"
            runs = ", ".join(str(d).split(".")[-1] for d in impl.dtypes)
            row.note = harness.join(f"runs {runs} only", row.note)
            continue
        try:
            case = _Case(impl, x, w_s, w_v)
            with torch.no_grad():
                spikes, _ = case.forward()
            problem = check_spikes(reference, spikes, cfg.spike_tolerance)
            del spikes
            if problem is not None:
                row.status, row.note = "mismatch", harness.join(problem, row.note)
                continue
            for _ in range(cfg.warmup):  # here, so that a failure is this row's, not the run's
                case.step()
            harness.sync(device)
            cases.append((row, case))
        except Exception as err:  # a peer may lack a dtype or shape; a failure of ours is an error
            ours = row.impl.startswith("spikegate")
            row.status = "skipped" if not ours and _is_unsupported(err) else "error"
            row.note = harness.join(f"{type(err).__name__}: {harness.first_line(err)}", row.note)
            harness.free(device)

    times = harness.time_interleaved([case.step for _, case in cases], device, cfg.repeats)
    for (row, case), row_times in zip(cases, times):
        row.median_ms, row.min_ms = harness.median_and_min(row_times)
        row.saved_bytes = harness.saved_bytes_for_backward(case.forward, [case.x]) / neuron_steps
        peak = harness.peak_bytes_of_step(case.step, device)
        row.peak_bytes = None if peak is None else peak / neuron_steps
    return rows


def _is_unsupported(err: BaseException) -> bool:
    if isinstance(err, (NotImplementedError, TypeError)):
        return True
    if type(err).__name__ == "OutOfMemoryError":
        return True
    text = str(err)
    return any(s in text for s in ("not implemented", "cannot run this execution profile", "not supported"))


def add_relative(rows: list, device: torch.device, copy_bw: Optional[float]) -> None:
    """Fill speed-ups (per shape and dtype) and, on CUDA, the Triton rows' roofline fractions."""
    groups: dict = {}
    for row in rows:
        groups.setdefault((row.T, row.B, row.N, row.dtype), []).append(row)
    for (T, B, N, dtype_name), group in groups.items():
        timed = [r for r in group if r.median_ms is not None]
        peer_ms = [r.median_ms for r in timed if _is_peer(r.impl)]
        naive_ms = [r.median_ms for r in timed if r.impl.startswith("naive")]
        for r in timed:
            if peer_ms:
                r.speedup_vs_peer = min(peer_ms) / r.median_ms
            if naive_ms:
                r.speedup_vs_naive = naive_ms[0] / r.median_ms
            if device.type == "cuda" and copy_bw and r.impl == "spikegate triton":
                kernel, api, why = kernel_bytes_per_neuron_step(DTYPES[dtype_name])
                if kernel is None:
                    r.note = harness.join(r.note, why)
                    continue
                steps = T * B * N
                r.roofline_kernel = harness.roofline_fraction(kernel * steps, r.median_ms, copy_bw)
                r.roofline_api = harness.roofline_fraction(api * steps, r.median_ms, copy_bw)


def _is_peer(label: str) -> bool:
    return label.split()[0].lower() in PEERS


# ----------------------------------------------------------------------------------------------
# SpikingJelly on CUDA: one child process per implementation


def _sj_children(cfg: Config, argv_common: list) -> list:
    """SpikingJelly reads ``SJ_LIF_CUDA_IMPLEMENTATION`` once, when ``spikingjelly._ops.lif`` is
    imported, and caches its choice per device, so each implementation runs in its own process."""
    rows = []
    for impl in cfg.sj_impls:
        env = {"SJ_LIF_CUDA_IMPLEMENTATION": impl, _SJ_CHILD_ENV: impl}
        result, reason = harness.run_child(__file__, [*argv_common, "--impls", "spikingjelly"], env)
        if result is not None:
            rows += [Row(**r) for r in result["rows"]]
        else:
            rows += [
                Row(f"SpikingJelly LIFNode [{impl}]", T, B, N, d, "error", note=f"child failed: {reason}")
                for (T, B, N) in cfg.shapes for d in cfg.dtypes
            ]
    return rows


def _sj_child_impl(device: torch.device) -> "Impl | str":
    """In a child: the LIFNode, or why the requested implementation cannot run here."""
    wanted = os.environ[_SJ_CHILD_ENV]
    missing = harness.peer_missing("spikingjelly")
    if missing:
        return missing
    try:
        with harness.quiet_peer_warnings():
            return _spikingjelly(device)
    except RuntimeError as err:  # the requested implementation is unavailable on this device
        return f"[{wanted}] unavailable: {harness.first_line(err)}"


# ----------------------------------------------------------------------------------------------
# Driver and report


def run_benchmark(cfg: Config, argv_common: Optional[list] = None, command: str = SCRIPT) -> dict:
    """Run every implementation at every shape and dtype; return ``{"meta": ..., "rows": [...]}``."""
    device = torch.device(cfg.device)
    child = bool(os.environ.get(_SJ_CHILD_ENV))
    with harness.threads_and_load(cfg.threads) as load:
        copy_bw = harness.copy_bandwidth(device) if device.type == "cuda" and not child else None
        built: list = []
        for name in cfg.impls:
            if name == "spikingjelly" and device.type == "cuda" and not child:
                continue  # run below, one child process per implementation
            if name == "spikingjelly" and child:
                impl = _sj_child_impl(device)
                label = f"SpikingJelly LIFNode [{os.environ[_SJ_CHILD_ENV]}]"
            else:
                impl = build_impl(name, device, cfg)
                label = name
            built.append(impl if isinstance(impl, Impl) else (label, impl))
        rows = []
        for shape in cfg.shapes:
            for dtype_name in cfg.dtypes:
                rows += bench_shape(built, shape, dtype_name, device, cfg)
                harness.free(device)
        for row in rows:
            if row.status == "skipped" and "cannot run this execution profile" in row.note:
                row.note += (" (LIFNode keeps v in the input dtype; SJ serves half v only from"
                             " its torch reference, under SJ_LIF_CUDA_IMPLEMENTATION=auto:"
                             " --sj-impls auto; its explicit-precision Triton path is the"
                             " spikingjelly-precision row)")
        if "spikingjelly" in cfg.impls and device.type == "cuda" and not child:
            rows += _sj_children(cfg, argv_common or [])
        order = {tuple(shape): i for i, shape in enumerate(cfg.shapes)}
        rows.sort(key=lambda r: (order.get((r.T, r.B, r.N), len(order)), list(DTYPES).index(r.dtype)))
        add_relative(rows, device, copy_bw)
        meta = describe(device, cfg, copy_bw, command)
    meta["loadavg_1min"] = load
    return {"meta": meta, "rows": [asdict(r) for r in rows]}


def describe(device: torch.device, cfg: Config, copy_bw: Optional[float], command: str) -> dict:
    if device.type == "cuda":
        memory = "peak: torch.cuda.max_memory_allocated during one step minus the allocation before it"
    else:
        memory = ("peak: highest running total of torch's CPU allocator during one step (profiler "
                  "profile_memory) minus the total before it")
    return harness.environment(
        device, command,
        copy_bandwidth_GBps=copy_bw / 1e9 if copy_bw else None,
        warmup=cfg.warmup,
        repeats=cfg.repeats,
        timing="median of interleaved single steps (forward + autograd.grad), "
        + ("CUDA events" if device.type == "cuda" else "time.perf_counter"),
        memory="saved: distinct storages autograd keeps for backward (saved_tensors_hooks), "
        "excluding the input; " + memory,
        input="x = (k + 1/2)/128, k ~ U{16..127}; beta 0.5, threshold 1, zero reset, ATan(2)",
        missing_peers=harness.missing_peers_line([i for i in PEERS if i in cfg.impls]),
    )


def _percent(value: Optional[float]) -> Optional[str]:
    return None if value is None else f"{value * 100:.0f}%"


def _number(key: str, spec: str) -> Callable[[dict], Optional[str]]:
    return lambda r: None if r[key] is None else f"{r[key]:{spec}}"


COLUMNS = [
    ("implementation", "impl"), ("T", "T"), ("B", "B"), ("N", "N"), ("dtype", "dtype"),
    ("median ms", lambda r: f"{r['median_ms']:.2f}" if r["status"] == "ok" else r["status"]),
    ("saved B/neuron-step", _number("saved_bytes", ".1f")),
    ("peak B/neuron-step", _number("peak_bytes", ".1f")),
    ("× vs fastest peer", _number("speedup_vs_peer", ".2f")),
    ("× vs naive loop", _number("speedup_vs_naive", ".2f")),
    ("roofline (kernel bytes)", lambda r: _percent(r["roofline_kernel"])),
    ("roofline (API minimum)", lambda r: _percent(r["roofline_api"])),
    ("note", "note"),
]


def markdown_table(rows: list) -> str:
    return harness.markdown_table(COLUMNS, rows)


def markdown_report(result: dict) -> str:
    meta = result["meta"]
    lines = [
        harness.environment_lines(meta),
        f"- timing: {meta['timing']}; {meta['warmup']} warm-up steps, {meta['repeats']} timed",
        f"- memory: {meta['memory']}",
        f"- input: {meta['input']}",
    ]
    if meta.get("copy_bandwidth_GBps"):
        lines.append(f"- device-to-device copy bandwidth: {meta['copy_bandwidth_GBps']:.0f} GB/s")
    if meta.get("missing_peers"):
        lines.append(meta["missing_peers"])
    return "\n".join(lines) + "\n\n" + markdown_table(result["rows"]) + "\n"


# ----------------------------------------------------------------------------------------------
# Command line


def _shape(text: str) -> tuple:
    parts = text.lower().replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected a shape T,B,N (e.g. 32,64,65536), got {text!r}")
    return shape


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spikegate bench lif",
        description="LIF forward+backward time and memory: spikegate vs naive torch loop, "
        "SpikingJelly, Norse, snnTorch, at the same shape and dtype. Norse comes with spikegate; "
        f"the bench extra ({harness.BENCH_EXTRA}) adds SpikingJelly and snnTorch.",
    )
    harness.add_device_argument(p)
    p.add_argument("--shapes", type=_shape, nargs="+", metavar="T,B,N",
                   help="default: CUDA 8/32/128 x 64 x 65536; CPU 32,32,1024 128,16,1024 16,64,4096")
    p.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES),
                   help="default: CUDA float32 float16 bfloat16; CPU float32")
    p.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS),
                   help="implementations to run (default: all; missing peers are skipped)")
    p.add_argument("--sj-impls", nargs="+", choices=("auto",) + SJ_IMPLEMENTATIONS,
                   default=list(SJ_IMPLEMENTATIONS),
                   help="CUDA: values of SJ_LIF_CUDA_IMPLEMENTATION, one child process each "
                   "(default: triton cuda torch)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per implementation (default: 3)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps (default: 30 CPU, 20 CUDA)")
    p.add_argument("--validate", action="store_true",
                   help="run spikegate with validate=True (adds its NaN/Inf check on x)")
    p.add_argument("--spike-tolerance", type=float, default=0.0,
                   help="fraction of spikes that may differ from ours before a row is a mismatch")
    p.add_argument("--quick", action="store_true",
                   help="tiny setting for tests: shape 4,2,64, float32, 1 warm-up, 3 repeats")
    p.add_argument("--compile-check", action="store_true",
                   help="instead of timing: compile the Triton kernels for sm_90 without a GPU and "
                   "report registers, spills, vector accesses and in-loop layout conversions")
    harness.add_run_arguments(p)
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    device = harness.resolve_device(args.device)
    on_cuda = device == "cuda"
    shapes = args.shapes or (QUICK_SHAPES if args.quick else CUDA_SHAPES if on_cuda else CPU_SHAPES)
    dtypes = args.dtypes or (["float32"] if args.quick or not on_cuda else list(DTYPES))
    repeats = args.repeats if args.repeats is not None else 3 if args.quick else 20 if on_cuda else 30
    warmup = args.warmup if args.warmup is not None else 1 if args.quick else 3
    threads = args.threads if args.threads is not None else (None if on_cuda else 2)
    if repeats < 1 or warmup < 0:
        raise SystemExit("--repeats must be >= 1 and --warmup >= 0")
    return Config(
        device=device, shapes=[tuple(s) for s in shapes], dtypes=list(dtypes), impls=list(args.impls),
        sj_impls=list(args.sj_impls), warmup=warmup, repeats=repeats, threads=threads,
        seed=args.seed, validate=args.validate, spike_tolerance=args.spike_tolerance,
    )


def main(argv: Optional[list] = None) -> int:
    """Run the benchmark; print a markdown table. Returns 0, or 1 if any row is a mismatch or
    an error (a skipped implementation is not a failure) or the compile check fails, or 2 on bad
    arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
        if args.compile_check:
            return compile_check(args.out, harness.command_line(argv, SCRIPT))
        cfg = config_from_args(args)
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
            return 2
        return int(stop.code or 0)
    # Arguments a SpikingJelly child repeats (everything but which implementations and where to write).
    common = ["--device", cfg.device, "--shapes", *[",".join(map(str, s)) for s in cfg.shapes],
              "--dtypes", *cfg.dtypes, "--warmup", str(cfg.warmup), "--repeats", str(cfg.repeats),
              "--seed", str(cfg.seed), "--spike-tolerance", str(cfg.spike_tolerance)]
    if cfg.threads:
        common += ["--threads", str(cfg.threads)]
    result = run_benchmark(cfg, common, harness.command_line(argv, SCRIPT))
    report = markdown_report(result)
    if not os.environ.get(_SJ_CHILD_ENV):
        print(report)
    if args.out:
        harness.write_results(args.out, result, report)
    bad = [r for r in result["rows"] if r["status"] in ("mismatch", "error")]
    return 1 if bad else 0


def compile_check(out: Optional[Path], command: str = SCRIPT) -> int:
    """``--compile-check``: the sm_90 ahead-of-time report of ``spikegate.kernels.aot``; 1 when a
    kernel spills or converts layouts inside its time loop at an aligned shape."""
    from spikegate.kernels.aot import check_kernels, report_markdown

    results = check_kernels()  # every kernel module: LIF and the UltraLIF family
    meta = harness.environment(torch.device("cpu"), command, target="sm_90 (compiled, not run)")
    report = harness.environment_lines(meta) + "\n\n" + report_markdown(results)
    print(report)
    if out:
        harness.write_results(out, {"meta": meta, "kernels": [asdict(r) for r in results]}, report)
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
