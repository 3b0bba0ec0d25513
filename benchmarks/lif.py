"""LIF forward+backward speed and memory: spikegate against peer libraries, side by side.

One run times, at the same shape ``x [T, B, N]`` and dtype, one training step of a LIF layer for

* ``ours-triton``  spikegate's fused Triton kernels (``lif_sequence(backend="triton")``, CUDA only),
* ``ours-torch``   spikegate's torch reference (``lif_sequence(backend="torch")``, LIFTorchFunction),
* ``naive``        a plain per-step torch loop with autograd and a surrogate spike Function,
* ``spikingjelly`` SpikingJelly 2.0 ``LIFNode(step_mode="m")``; on CUDA once per implementation
                   (triton, cuda, torch) chosen by ``SJ_LIF_CUDA_IMPLEMENTATION`` in a child process,
* ``norse``        Norse ``LIFBoxCell`` stepped over time,
* ``snntorch``     snnTorch ``Leaky`` stepped over time,

all configured for the same dynamics (``/work/shared/PEERS.md``): ``u = 0.5 v + x``, spike on
``u >= 1``, reset to zero, ATan surrogate (alpha = 2) where the peer has it.

A step is the forward, then ``torch.autograd.grad`` of ``sum(w_s * spikes) + sum(w_v * v_last)``
with fixed random weights ``w_s [T, B, N]``, ``w_v [B, N]`` (given as ``grad_outputs``, so no
extra loss kernels run). Before timing, each implementation's spikes are compared with spikegate's
torch reference on the benchmark input; a mismatch is reported instead of a time.

Run ``python benchmarks/lif.py --help`` (or ``spikegate bench lif --help``); README.md beside this
file explains the measures.
"""

import argparse
import datetime
import gc
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

# Loaded by path (``spikegate bench lif``) or run as a script: make the repository importable.
_REPO = Path(__file__).resolve().parents[1]
try:
    import spikegate  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the harness is started
    sys.path.insert(0, str(_REPO))

from spikegate.atomic import atomic_write  # noqa: E402
from spikegate.neurons.checks import triton_interpreter_enabled  # noqa: E402
from spikegate.neurons.lif import lif_sequence  # noqa: E402

BETA = 0.5  # = 1 - 1/tau with tau = 2 (SpikingJelly), tau_mem_inv = 0.5 (Norse)
THRESHOLD = 1.0
ATAN_ALPHA = 2.0

IMPLS = ("ours-triton", "ours-torch", "naive", "spikingjelly", "norse", "snntorch")
PEERS = ("spikingjelly", "norse", "snntorch")  # other libraries; "naive" is our own baseline
SJ_IMPLEMENTATIONS = ("triton", "cuda", "torch")  # "cuda" is SJ 2.0's native extension (not CuPy)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

CPU_SHAPES = ((32, 32, 1024), (128, 16, 1024), (16, 64, 4096))  # PEERS.md's CPU baseline
CUDA_SHAPES = ((8, 64, 65536), (32, 64, 65536), (128, 64, 65536))  # ~4M neurons per step
QUICK_SHAPES = ((4, 2, 64),)

_SJ_CHILD_ENV = "SPIKEGATE_BENCH_SJ_CHILD"  # marks the child process that runs one SJ implementation


# ----------------------------------------------------------------------------------------------
# Results


@dataclass
class Row:
    """One implementation at one shape and dtype. Times in ms; memory in bytes per neuron-step."""

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
    roofline: Optional[float] = None  # CUDA, ours-triton: achieved bytes/s / copy bytes/s
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
    """

    name: str
    run: Callable[[torch.Tensor], tuple]
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
    note: str = ""


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

    Steps over ``x.unbind(0)``: indexing ``x[t]`` would make backward O(T^2) (PEERS.md).
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

    return Impl(f"SpikingJelly {_version('spikingjelly')} LIFNode [{chosen}]", run)


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
        f"Norse {_version('norse')} LIFBoxCell", run,
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
        f"snnTorch {_version('snntorch')} Leaky", run,
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
    builders = {"spikingjelly": _spikingjelly, "norse": _norse, "snntorch": _snntorch}
    try:
        return builders[name](device)
    except ImportError as err:
        return f"not installed ({err})"


# ----------------------------------------------------------------------------------------------
# Measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], None], device: torch.device) -> float:
    """Milliseconds of one call of ``step``."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    step()
    return (time.perf_counter() - t0) * 1e3


def saved_bytes_for_backward(forward: Callable[[], object], exclude: Sequence[torch.Tensor]) -> int:
    """Bytes of the distinct storages that autograd keeps for backward while ``forward`` builds
    its graph (saved_tensors_hooks; storages of ``exclude``, the inputs, are not counted)."""
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict = {}

    def pack(t):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in excluded:
            seen[key] = max(seen.get(key, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(seen.values())


def peak_bytes_of_step(step: Callable[[], None], device: torch.device) -> Optional[int]:
    """Peak bytes allocated during one call of ``step`` above what was allocated before it.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the running total of torch's CPU allocator
    as the profiler records it (``profile_memory=True``, "Total Allocated" of each allocation
    event in the trace). Both count outputs, saved tensors, gradients and temporaries.
    """
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    try:
        with tempfile.TemporaryDirectory() as tmp, _quiet_stderr():
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                step()
            trace = Path(tmp) / "trace.json"
            prof.export_chrome_trace(str(trace))
            events = [e for e in json.loads(trace.read_text()).get("traceEvents", [])
                      if e.get("name") == "[memory]" and "Total Allocated" in e.get("args", {})]
    except (RuntimeError, OSError, ValueError):  # no profiler in this build: report no figure
        return None
    if not events:
        return None
    events.sort(key=lambda e: e["ts"])
    first = events[0]["args"]
    base = first["Total Allocated"] - first["Bytes"]
    return max(e["args"]["Total Allocated"] for e in events) - base


class _quiet_stderr:
    """Silence file descriptor 2 (the profiler's C++ start/stop log lines) for a moment."""

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self._null, 2)

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        os.close(self._null)
        return False


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write), from a ``nbytes`` tensor copy."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = [_timed(lambda: dst.copy_(src), device) for _ in range(repeats)]
    return 2 * src.numel() * src.element_size() / (statistics.median(times) / 1e3)


def kernel_bytes_per_neuron_step(dtype: torch.dtype) -> "tuple[Optional[int], str]":
    """Bytes the Triton kernels must move per neuron-step, forward plus backward."""
    try:
        from spikegate.kernels.lif import lif_bytes_per_neuron_step
    except ImportError as err:
        return None, f"no lif_bytes_per_neuron_step ({err})"
    return (
        lif_bytes_per_neuron_step(dtype, backward=False)
        + lif_bytes_per_neuron_step(dtype, backward=True)
    ), ""


class _Case:
    """One implementation prepared on the benchmark input: its leaf input and gradient weights."""

    def __init__(self, impl: Impl, x: torch.Tensor, w_s: torch.Tensor, w_v: torch.Tensor):
        self.impl = impl
        self.x = impl.prepare(x).detach().requires_grad_()
        self.w_s, self.w_v = w_s, w_v
        self.times: list = []

    def forward(self):
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
    (one step each per round) so drift in clock or load hits all of them alike."""
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
        try:
            case = _Case(impl, x, w_s, w_v)
            with torch.no_grad():
                spikes, _ = case.forward()
            problem = check_spikes(reference, spikes, cfg.spike_tolerance)
            del spikes
            if problem is not None:
                row.status, row.note = "mismatch", _join(problem, row.note)
                continue
            for _ in range(cfg.warmup):
                case.step()
            _sync(device)
            cases.append((row, case))
        except Exception as err:  # a peer that cannot run this dtype or shape: say why
            # a peer may lack a dtype or shape; any failure of ours is an error, never a skip
            ours = row.impl.startswith("spikegate")
            row.status = "skipped" if not ours and _is_unsupported(err) else "error"
            row.note = _join(f"{type(err).__name__}: {_first_line(err)}", row.note)
            _free(device)

    gc.collect()
    for r in range(cfg.repeats):
        order = cases[r % len(cases):] + cases[: r % len(cases)] if cases else []
        for row, case in order:
            case.times.append(_timed(case.step, device))

    for row, case in cases:
        row.median_ms = statistics.median(case.times)
        row.min_ms = min(case.times)
        row.saved_bytes = saved_bytes_for_backward(case.forward, [case.x]) / neuron_steps
        peak = peak_bytes_of_step(case.step, device)
        row.peak_bytes = None if peak is None else peak / neuron_steps
    return rows


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


def _is_unsupported(err: BaseException) -> bool:
    if isinstance(err, (NotImplementedError, TypeError)):
        return True
    if type(err).__name__ == "OutOfMemoryError":
        return True
    text = str(err)
    return any(s in text for s in ("not implemented", "cannot run this execution profile", "not supported"))


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def add_relative(rows: list, device: torch.device, copy_bw: Optional[float]) -> None:
    """Fill speed-ups (per shape and dtype) and, on CUDA, the Triton rows' roofline fraction."""
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
                per_step, why = kernel_bytes_per_neuron_step(DTYPES[dtype_name])
                if per_step is None:
                    r.note = _join(r.note, why)
                else:
                    r.roofline = per_step * T * B * N / (r.median_ms / 1e3) / copy_bw


def _is_peer(label: str) -> bool:
    return label.split()[0].lower() in PEERS


# ----------------------------------------------------------------------------------------------
# SpikingJelly on CUDA: one child process per implementation


def _sj_children(cfg: Config, argv_common: list) -> list:
    """SpikingJelly reads ``SJ_LIF_CUDA_IMPLEMENTATION`` once, when ``spikingjelly._ops.lif`` is
    imported, and caches its choice per device, so each implementation runs in its own process."""
    rows = []
    for impl in cfg.sj_impls:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rows.json"
            env = dict(os.environ, SJ_LIF_CUDA_IMPLEMENTATION=impl, **{_SJ_CHILD_ENV: impl})
            cmd = [sys.executable, str(Path(__file__).resolve()), *argv_common,
                   "--impls", "spikingjelly", "--out", str(out)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.exists():
                rows += [Row(**r) for r in json.loads(out.read_text())["rows"]]
            else:
                tail = proc.stderr.strip().splitlines()
                reason = tail[-1][:200] if tail else f"exit status {proc.returncode}"
                rows += [
                    Row(f"SpikingJelly LIFNode [{impl}]", T, B, N, d, "error", note=f"child failed: {reason}")
                    for (T, B, N) in cfg.shapes for d in cfg.dtypes
                ]
    return rows


def _sj_child_impl(device: torch.device) -> "Impl | str":
    """In a child: the LIFNode, or why the requested implementation cannot run here."""
    wanted = os.environ[_SJ_CHILD_ENV]
    try:
        impl = _spikingjelly(device)
    except ImportError as err:
        return f"not installed ({err})"
    except RuntimeError as err:  # the requested implementation is unavailable on this device
        return f"[{wanted}] unavailable: {_first_line(err)}"
    return impl


# ----------------------------------------------------------------------------------------------
# Driver and report


def run_benchmark(cfg: Config, argv_common: Optional[list] = None) -> dict:
    """Run every implementation at every shape and dtype; return ``{"meta": ..., "rows": [...]}``."""
    device = torch.device(cfg.device)
    load_before = _loadavg()
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        copy_bw = copy_bandwidth(device) if device.type == "cuda" and not os.environ.get(_SJ_CHILD_ENV) else None
        built: list = []
        for name in cfg.impls:
            if name == "spikingjelly" and device.type == "cuda" and not os.environ.get(_SJ_CHILD_ENV):
                continue  # run below, one child process per implementation
            if name == "spikingjelly" and os.environ.get(_SJ_CHILD_ENV):
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
                _free(device)
        for row in rows:
            if row.status == "skipped" and "cannot run this execution profile" in row.note:
                row.note += (" (LIFNode keeps v in the input dtype; SJ serves half v only from its"
                             " torch reference, under SJ_LIF_CUDA_IMPLEMENTATION=auto: --sj-impls auto)")
        if "spikingjelly" in cfg.impls and device.type == "cuda" and not os.environ.get(_SJ_CHILD_ENV):
            rows += _sj_children(cfg, argv_common or [])
        order = {tuple(shape): i for i, shape in enumerate(cfg.shapes)}
        rows.sort(key=lambda r: (order.get((r.T, r.B, r.N), len(order)), list(DTYPES).index(r.dtype)))
        add_relative(rows, device, copy_bw)
        meta = describe(device, cfg, copy_bw)
        meta["loadavg_1min"] = [load_before, _loadavg()]
    finally:
        torch.set_num_threads(threads_before)
    return {"meta": meta, "rows": [asdict(r) for r in rows]}


def describe(device: torch.device, cfg: Config, copy_bw: Optional[float]) -> dict:
    versions = {"torch": torch.__version__}
    for dist in ("triton", "spikingjelly", "norse", "snntorch"):
        version = _version(dist)
        if version:
            versions[dist] = version
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        memory = "peak: torch.cuda.max_memory_allocated during one step minus the allocation before it"
    else:
        name = _cpu_model()
        memory = ("peak: highest running total of torch's CPU allocator during one step (profiler "
                  "profile_memory) minus the total before it")
    return {
        "device": name,
        "device_type": device.type,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "dirty": _git_dirty(),
        "python": platform.python_version(),
        "versions": versions,
        "copy_bandwidth_GBps": copy_bw / 1e9 if copy_bw else None,
        "warmup": cfg.warmup,
        "repeats": cfg.repeats,
        "timing": "median of interleaved single steps (forward + autograd.grad), "
        + ("CUDA events" if device.type == "cuda" else "time.perf_counter"),
        "memory": "saved: distinct storages autograd keeps for backward (saved_tensors_hooks), "
        "excluding the input; " + memory,
        "input": "x = (k + 1/2)/128, k ~ U{16..127}; beta 0.5, threshold 1, zero reset, ATan(2)",
    }


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _loadavg() -> Optional[float]:
    """The 1-minute load average: other jobs on a shared machine disturb CPU timings."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_REPO,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _git_dirty() -> Optional[bool]:
    """Whether the measured package differs from the commit (uncommitted changes in spikegate/)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", "spikegate"], cwd=_REPO,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def _fmt(value: Optional[float], spec: str, suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def markdown_table(rows: list) -> str:
    head = ("| implementation | T | B | N | dtype | median ms | saved B/neuron-step "
            "| peak B/neuron-step | × vs fastest peer | × vs naive loop | roofline | note |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        r = r if isinstance(r, dict) else asdict(r)
        ms = _fmt(r["median_ms"], ".2f") if r["status"] == "ok" else r["status"]
        lines.append(
            f"| {r['impl']} | {r['T']} | {r['B']} | {r['N']} | {r['dtype']} | {ms} "
            f"| {_fmt(r['saved_bytes'], '.1f')} | {_fmt(r['peak_bytes'], '.1f')} "
            f"| {_fmt(r['speedup_vs_peer'], '.2f')} | {_fmt(r['speedup_vs_naive'], '.2f')} "
            f"| {_fmt(r['roofline'] * 100 if r['roofline'] is not None else None, '.0f', '%')} "
            f"| {r['note']} |"
        )
    return "\n".join(lines)


def markdown_report(result: dict, command: str) -> str:
    meta = result["meta"]
    lines = [
        f"- device: {meta['device']}" + (f", {meta['threads']} threads" if meta["threads"] else "")
        + (f"; 1-min load average before/after: {meta['loadavg_1min'][0]} / {meta['loadavg_1min'][1]}"
           if meta.get("loadavg_1min") and None not in meta["loadavg_1min"] else ""),
        f"- date: {meta['date']}; commit: {meta['commit']}"
        + (" + uncommitted changes under spikegate/" if meta.get("dirty") else ""),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- command: `{command}`",
        f"- timing: {meta['timing']}; {meta['warmup']} warm-up steps, {meta['repeats']} timed",
        f"- memory: {meta['memory']}",
        f"- input: {meta['input']}",
    ]
    if meta["copy_bandwidth_GBps"]:
        lines.append(f"- device-to-device copy bandwidth: {meta['copy_bandwidth_GBps']:.0f} GB/s")
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
        "SpikingJelly, Norse, snnTorch, at the same shape and dtype.",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda if available (default: %(default)s)")
    p.add_argument("--shapes", type=_shape, nargs="+", metavar="T,B,N",
                   help="default: CUDA 8/32/128 x 64 x 65536; CPU the three PEERS.md shapes")
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
    p.add_argument("--threads", type=int, default=None, help="CPU torch threads (default: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validate", action="store_true",
                   help="run spikegate with validate=True (adds its NaN/Inf check on x)")
    p.add_argument("--spike-tolerance", type=float, default=0.0,
                   help="fraction of spikes that may differ from ours before a row is a mismatch")
    p.add_argument("--quick", action="store_true",
                   help="tiny setting for tests: shape 4,2,64, float32, 1 warm-up, 3 repeats")
    p.add_argument("--out", type=Path, help="also write the results: .json as JSON, else markdown")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
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
    an error (a skipped implementation is not a failure), or argparse's code on bad arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
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
    result = run_benchmark(cfg, common)
    command = "python benchmarks/lif.py " + " ".join(argv) if argv else "python benchmarks/lif.py"
    report = markdown_report(result, command)
    if not os.environ.get(_SJ_CHILD_ENV):
        print(report)
    if args.out:
        text = json.dumps({**result, "command": command}, indent=2) if args.out.suffix == ".json" else report
        atomic_write(args.out, lambda file: file.write(text.encode()))
    bad = [r for r in result["rows"] if r["status"] in ("mismatch", "error")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
