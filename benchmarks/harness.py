"""What every spikegate benchmark needs, once: timing, memory, bandwidth, the environment record,
output files, peers and child processes. A benchmark script (``benchmarks/<name>.py``, run as
``spikegate bench <name>`` or ``python benchmarks/<name>.py``) imports this module and keeps only
its own workload, rows and command line; ``benchmarks/lif.py`` is the worked example.

Importing. ``spikegate bench`` loads a benchmark by path, so ``benchmarks/`` is not a package;
a script makes this file importable with two lines before importing it::

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness

The harness in turn puts the repository root on ``sys.path`` when ``spikegate`` is not importable.

Timing (milliseconds):

* ``sync(device)`` waits for the device (no-op on the CPU).
* ``time_call(fn, device) -> float``: one call of ``fn``, CUDA events on CUDA, ``perf_counter``
  on the CPU.
* ``time_interleaved(steps, device, repeats, warmup=0) -> list[list[float]]``: ``warmup``
  untimed calls of each step, then ``repeats`` rounds of one timed call per step, the order
  rotating every round, so that drift in clock or load hits every step alike.
* ``median_and_min(times) -> (median, min)``.

Memory (bytes):

* ``saved_bytes_for_backward(forward, exclude)``: the distinct storages autograd keeps while
  ``forward()`` builds its graph (``saved_tensors_hooks``), the storages of ``exclude`` left out.
* ``peak_bytes_of_step(step, device)``: highest allocation during one call above the allocation
  before it; CUDA ``max_memory_allocated``, CPU the profiler's allocator trace (None if this
  torch build cannot say).
* ``peak_saved_bytes(step, exclude)``: the most bytes autograd keeps alive for backward at any
  moment during one call (forward, backward, several graphs), the storages of ``exclude`` left
  out; the same on every device and deterministic, so tests can compare it.

Bandwidth and roofline:

* ``copy_bandwidth(device, nbytes=1 GiB, repeats=10) -> bytes/s``: a device-to-device tensor
  copy, read plus write.
* ``roofline_fraction(bytes_moved, ms, bandwidth) -> float``: achieved bytes/s over ``bandwidth``.

Environment:

* ``command_line(argv, script)``: the command as the user typed it (``spikegate bench lif ...``,
  ``python benchmarks/lif.py ...``, ``python -m spikegate.cli ...``), from ``sys.orig_argv``;
  ``script`` and ``argv`` when the benchmark was called as a function.
* ``environment(device, command, dists=..., **extra) -> dict``: device name, CPU threads,
  date, git commit and whether ``spikegate/`` differs from it, Python and package versions,
  the 1-minute load average, the command; ``extra`` is merged in.
* ``environment_lines(meta) -> str``: that record as markdown bullet lines.

Peers:

* ``peer_missing(module) -> Optional[str]``: None when the peer imports, else a reason that says
  how to get it (``BENCH_EXTRA``: ``pip install -e '.[bench]'`` adds SpikingJelly and snnTorch).
* ``missing_peers_line(modules) -> str``: one line for the report naming the missing peers and
  the extra, or ``""``.
* ``quiet_peer_warnings()``: a context manager that silences the deprecation and future warnings
  peers raise from their own code (and torch raises on their behalf), around building and
  running them.

Output:

* ``markdown_table(columns, rows) -> str``: ``columns`` is a list of ``(header, key_or_fn)``;
  a key reads ``row[key]`` (dicts or dataclasses), a function maps the row to its cell text;
  None prints as a dash.
* ``write_json(path, data)`` and ``write_text(path, text)``: atomic (a crash never leaves half a
  file).
* ``write_results(path, result, report)``: ``.json`` as JSON, anything else the markdown report.

Child processes:

* ``run_child(script, argv, env) -> (result or None, reason)``: runs ``python script *argv
  --out <tmp>.json`` with ``env`` added to the environment and returns the JSON it wrote, or None
  and the last line of its stderr. For settings a library reads once per process (SpikingJelly's
  ``SJ_LIF_CUDA_IMPLEMENTATION``) or a fresh CUDA context.

Miscellaneous: ``free(device)`` (gc and the CUDA cache), ``first_line(err)``, ``join(*notes)``.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import argparse
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch

REPO = Path(__file__).resolve().parents[1]
try:
    import spikegate  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the benchmark is started
    sys.path.insert(0, str(REPO))

from spikegate.atomic import atomic_write  # noqa: E402

__all__ = [
    "BENCH_EXTRA", "PEER_DISTS", "REPO", "sync", "time_call", "time_interleaved",
    "median_and_min", "saved_bytes_for_backward", "peak_saved_bytes", "peak_bytes_of_step",
    "copy_bandwidth", "roofline_fraction", "command_line", "environment", "environment_lines", "version",
    "peer_missing", "missing_peers_line", "quiet_peer_warnings", "markdown_table", "write_json",
    "write_text", "write_results", "run_child", "free", "first_line", "join",
    "add_device_argument", "add_run_arguments", "resolve_device", "run_main", "positive_int",
    "threads_and_load",
]

BENCH_EXTRA = "pip install -e '.[bench]'"
# Distributions whose versions the environment record carries (missing ones are left out).
PEER_DISTS = ("triton", "spikingjelly", "norse", "snntorch")
# Peers installed by the bench extra; Norse is a core dependency.
_EXTRA_PEERS = {"spikingjelly": "SpikingJelly", "snntorch": "snnTorch"}


# ---------------------------------------------------------------------------------------------
# Timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Milliseconds of one call of ``fn`` (CUDA events on CUDA, ``perf_counter`` on the CPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def time_interleaved(
    steps: Sequence[Callable[[], Any]], device: torch.device, repeats: int, warmup: int = 0,
) -> list[list[float]]:
    """Per step, ``repeats`` times in ms: one call of each step per round, the order rotating
    every round. ``warmup`` untimed calls of each step come first."""
    for step in steps:
        for _ in range(warmup):
            step()
    sync(device)
    gc.collect()
    times: list[list[float]] = [[] for _ in steps]
    n = len(steps)
    for r in range(repeats):
        for k in range(n):
            i = (k + r) % n
            times[i].append(time_call(steps[i], device))
    return times


def median_and_min(times: Sequence[float]) -> tuple[float, float]:
    return statistics.median(times), min(times)


# ---------------------------------------------------------------------------------------------
# Memory


def saved_bytes_for_backward(forward: Callable[[], object], exclude: Sequence[torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd keeps for backward while ``forward`` builds its
    graph (saved_tensors_hooks; the storages of ``exclude``, typically the inputs, not counted).
    Tensors kept as plain ``ctx`` attributes are not seen."""
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


class _SavedBytes:
    """Running total of the distinct storages held by live saved tensors, and its peak."""

    def __init__(self, excluded: set) -> None:
        self.excluded = excluded
        self.holders: dict = {}  # storage data_ptr -> [live saved tensors on it, its bytes]
        self.total = 0
        self.peak = 0

    def add(self, key: int, nbytes: int) -> None:
        entry = self.holders.setdefault(key, [0, nbytes])
        if entry[0] == 0:
            self.total += nbytes
            self.peak = max(self.peak, self.total)
        entry[0] += 1

    def remove(self, key: int) -> None:
        entry = self.holders[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.total -= entry[1]
            del self.holders[key]


class _Held:
    """A saved tensor as autograd stores it; its deletion (the graph freed) updates the total."""

    __slots__ = ("tensor", "key", "book")

    def __init__(self, tensor: torch.Tensor, key: int, book: _SavedBytes) -> None:
        self.tensor, self.key, self.book = tensor, key, book

    def __del__(self) -> None:
        self.book.remove(self.key)


def peak_saved_bytes(step: Callable[[], object], exclude: Sequence[torch.Tensor] = ()) -> int:
    """The most bytes autograd keeps alive for backward at any moment during one call of ``step``.

    Unlike :func:`saved_bytes_for_backward` (every storage ever saved), this follows each saved
    tensor until its graph is freed, so a step that builds and frees one small graph per time step
    stays flat while one that keeps the unrolled graph grows. Distinct storages are counted once;
    those of ``exclude`` (inputs, parameters) not at all. Tensors kept as plain ``ctx`` attributes
    are not seen."""
    book = _SavedBytes({t.untyped_storage().data_ptr() for t in exclude})

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in book.excluded:
            return t
        book.add(key, storage.nbytes())
        return _Held(t, key, book)

    def unpack(held):
        return held.tensor if isinstance(held, _Held) else held

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        step()
    gc.collect()  # graphs caught in reference cycles
    return book.peak


def peak_bytes_of_step(step: Callable[[], None], device: torch.device) -> Optional[int]:
    """Peak bytes allocated during one call of ``step`` above what was allocated before it.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the running total of torch's CPU allocator
    as the profiler records it (``profile_memory=True``, "Total Allocated" of each allocation
    event in the trace). Both count outputs, saved tensors, gradients and temporaries.
    """
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        sync(device)
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


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ start/stop log lines) for a moment."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


# ---------------------------------------------------------------------------------------------
# Bandwidth and roofline


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write), from a ``nbytes`` tensor copy."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = [time_call(lambda: dst.copy_(src), device) for _ in range(repeats)]
    return 2 * src.numel() * src.element_size() / (statistics.median(times) / 1e3)


def roofline_fraction(bytes_moved: float, ms: float, bandwidth: float) -> float:
    """Achieved bandwidth (``bytes_moved`` in ``ms`` milliseconds) over ``bandwidth`` (bytes/s)."""
    return bytes_moved / (ms / 1e3) / bandwidth


# ---------------------------------------------------------------------------------------------
# Environment


def command_line(argv: Sequence[str], script: str) -> str:
    """The command the user typed, when this process was started by it; else ``script argv``.

    ``script`` is how the benchmark runs as a script (``python benchmarks/lif.py``). From
    ``sys.orig_argv`` (the interpreter's own arguments) come ``python benchmarks/lif.py ...``,
    ``python -m spikegate.cli bench lif ...`` and, for the console script (``python
    .../bin/spikegate bench lif ...``), ``spikegate bench lif ...``: the process counts as started
    by the user when its arguments end in ``argv`` right after the script or the benchmark name."""
    argv = list(argv)
    orig = list(getattr(sys, "orig_argv", []) or [])
    target = Path(shlex.split(script)[-1])
    head = orig[: len(orig) - len(argv)]
    started_here = bool(head) and orig[len(head):] == argv and (
        head[-1] == target.stem or Path(head[-1]).name == target.name
    )
    if started_here:
        words = [Path(head[0]).name, *head[1:], *argv]
        if len(words) > 1 and Path(words[1]).name == "spikegate" and not words[1].endswith(".py"):
            words = ["spikegate", *words[2:]]  # the console script, started by its interpreter
        return shlex.join(words)
    return shlex.join([*shlex.split(script), *argv])


def version(dist: str) -> str:
    """The installed version of distribution ``dist``, or ``""``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def environment(
    device: torch.device, command: str, dists: Sequence[str] = PEER_DISTS, **extra: Any,
) -> dict:
    """The record that goes with every result: what ran where, when, from which code."""
    versions = {"torch": torch.__version__}
    versions.update({d: version(d) for d in dists if version(d)})
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_model()
    return {
        "device": name,
        "device_type": device.type,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": _git(["rev-parse", "--short", "HEAD"]),
        "dirty": _git_dirty(),
        "python": platform.python_version(),
        "versions": versions,
        "loadavg_1min": loadavg(),
        "command": command,
        **extra,
    }


def environment_lines(meta: dict) -> str:
    """The environment record as markdown bullets (keys it does not know are left out)."""
    load = meta.get("loadavg_1min")
    if isinstance(load, (list, tuple)) and None not in load:
        load_text = f"; 1-min load average before/after: {load[0]} / {load[1]}"
    elif isinstance(load, (int, float)):
        load_text = f"; 1-min load average: {load}"
    else:
        load_text = ""
    lines = [
        f"- device: {meta['device']}"
        + (f", {meta['threads']} threads" if meta.get("threads") else "") + load_text,
        f"- date: {meta['date']}; commit: {meta['commit']}"
        + (" + uncommitted changes under spikegate/" if meta.get("dirty") else ""),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- command: `{meta['command']}`",
    ]
    return "\n".join(lines)


def loadavg() -> Optional[float]:
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


def _git(args: list) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_dirty() -> Optional[bool]:
    """Whether the measured package differs from the commit (uncommitted changes in spikegate/)."""
    status = _git(["status", "--porcelain", "--", "spikegate"])
    return None if status is None else bool(status)


# ---------------------------------------------------------------------------------------------
# Peers


def peer_missing(module: str) -> Optional[str]:
    """None when ``module`` imports; else why not, and how to install it."""
    try:
        with quiet_peer_warnings():
            importlib.import_module(module)
    except ImportError as err:
        hint = f"; {BENCH_EXTRA} adds it" if module in _EXTRA_PEERS else ""
        return f"not installed ({err}){hint}"
    return None


def missing_peers_line(modules: Sequence[str]) -> str:
    """A line for the report when peers of the bench extra are missing, else ``""``."""
    missing = [_EXTRA_PEERS[m] for m in modules if m in _EXTRA_PEERS and peer_missing(m)]
    if not missing:
        return ""
    return (f"- not installed: {', '.join(missing)}; `{BENCH_EXTRA}` adds SpikingJelly and "
            "snnTorch")


@contextlib.contextmanager
def quiet_peer_warnings() -> Iterator[None]:
    """Silence deprecation and future warnings while peers are built and run: they come from the
    peers' own code (e.g. their use of ``torch.jit.script``), not from anything a user can fix."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
            warnings.simplefilter("ignore", category)
        yield


# ---------------------------------------------------------------------------------------------
# Output


Cell = Union[str, Callable[[Any], Optional[str]]]


def markdown_table(columns: Sequence[tuple[str, Cell]], rows: Sequence[Any]) -> str:
    """A markdown table. ``columns``: ``(header, key)`` reads ``row[key]`` of a dict or dataclass
    row; ``(header, fn)`` prints ``fn(row)``. None prints as a dash."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        data = asdict(row) if is_dataclass(row) else row
        cells = []
        for _, cell in columns:
            value = cell(data) if callable(cell) else data.get(cell)
            cells.append("—" if value is None else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: Union[str, Path], data: Any) -> Path:
    text = json.dumps(data, indent=2) + "\n"
    return atomic_write(path, lambda file: file.write(text.encode()))


def write_text(path: Union[str, Path], text: str) -> Path:
    return atomic_write(path, lambda file: file.write(text.encode()))


def write_results(path: Union[str, Path], result: dict, report: str) -> Path:
    """``.json``: the result as JSON; any other suffix: the markdown report."""
    if Path(path).suffix == ".json":
        return write_json(path, result)
    return write_text(path, report)


# ---------------------------------------------------------------------------------------------
# Child processes


def run_child(
    script: Union[str, Path], argv: Sequence[str], env: dict,
) -> tuple[Optional[dict], str]:
    """Run ``python script *argv --out <tmp>.json`` with ``env`` added to the environment.

    Returns ``(the JSON the child wrote, "")``, or ``(None, reason)`` with the last line of its
    stderr when it wrote none."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(script).resolve()), *argv, "--out", str(out)]
        proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        if out.exists():
            return json.loads(out.read_text()), ""
        tail = proc.stderr.strip().splitlines()
        return None, tail[-1][:200] if tail else f"exit status {proc.returncode}"


# ---------------------------------------------------------------------------------------------
# Miscellaneous


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


def join(*notes: str) -> str:
    """Notes joined with ``; ``, empty ones left out."""
    return "; ".join(n for n in notes if n)


def add_device_argument(parser) -> None:
    """``--device auto|cpu|cuda``, the same in every benchmark (see :func:`resolve_device`)."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: cuda if available (default: %(default)s)")


def add_run_arguments(parser) -> None:
    """The options every benchmark takes last: ``--threads``, ``--seed`` and ``--out``."""
    parser.add_argument("--threads", type=int, default=None, help="CPU torch threads (default: 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the results: .json as JSON, else markdown")


@contextlib.contextmanager
def threads_and_load(threads: Optional[int]) -> Iterator[list]:
    """A benchmark run's surroundings: torch's CPU threads set to ``threads`` (when given) for the
    block and restored after it; yields a list that holds the 1-minute load average before the
    block and, once it ends, after it (the report's ``loadavg_1min``)."""
    load = [loadavg()]
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield load
    finally:
        load.append(loadavg())
        torch.set_num_threads(before)


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def resolve_device(name: str) -> str:
    """``"cpu"`` or ``"cuda"`` for ``--device`` (auto: cuda when available); exits with a one-line
    message when cuda is asked for and there is none."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    return name


def run_main(
    argv: Optional[Sequence[str]],
    script: str,
    parser: Callable[[], Any],
    config_from_args: Callable[[Any], Any],
    run_benchmark: Callable[[Any, str], dict],
    markdown_report: Callable[[dict], str],
    failed: Callable[[dict], bool],
) -> int:
    """A benchmark's ``main``: parse ``argv`` (default ``sys.argv[1:]``) and build its config (a
    bad argument: its message on stderr, 2), run it with the command line as typed, print the
    markdown report, write ``--out``, and return 1 when ``failed(result)`` (a mismatch or an error;
    a skipped row is not a failure), else 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
        cfg = config_from_args(args)
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
            return 2
        return int(stop.code or 0)
    result = run_benchmark(cfg, command_line(argv, script))
    report = markdown_report(result)
    print(report)
    if args.out:
        write_results(args.out, result, report)
    return 1 if failed(result) else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``spikegate bench harness`` finds this file among the benchmarks: say what it is."""
    names = sorted(p.stem for p in Path(__file__).parent.glob("*.py")
                   if not p.stem.startswith("_") and p.stem != "harness")
    print(f"harness.py is the library the benchmarks share, not a benchmark; benchmarks: {names}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
