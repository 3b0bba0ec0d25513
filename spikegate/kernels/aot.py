"""Compile the Triton kernels for a GPU without one, and read what the compiled code does.

The CPU interpreter runs a kernel's Python, not its compiled code: it cannot show register
spills, scalar instead of 128-bit memory accesses, or layout conversions (shared-memory round
trips) inside a time loop. Triton compiles ahead of time for any target with its bundled
``ptxas``, so this module compiles every kernel's cases for sm_90 (H100) and reports, per case:

* ``registers``, ``spill_bytes`` (spill stores plus loads) and ``stack_bytes`` from ``ptxas -v``,
  ``shared_bytes`` from the compiled kernel's metadata;
* ``loop_loads`` / ``loop_stores``: global accesses inside the time loop (the PTX loop body,
  found from its backward branch), and how many of them are 128-bit vectors;
* ``loop_conversions``: ``convert_layout`` ops inside the ``scf.for`` of the TTGIR, and
  ``loop_shared``: shared-memory accesses in the PTX loop body (what such a conversion costs).

``failures`` lists what must not happen at an aligned shape: a spill or a layout conversion
inside the loop. Unaligned shapes are reported, and fail only on spills.

Each kernel module lists its cases (``aot_cases()`` in :mod:`spikegate.kernels.lif` and
:mod:`spikegate.kernels.ultralif`) and is named in ``KERNEL_MODULES``. The compile runs in a child
process without ``TRITON_INTERPRET``: with it set, ``triton.jit`` builds interpreter objects that
cannot be compiled. ``python -m spikegate.kernels.aot`` prints the report of every module;
``spikegate bench lif --compile-check`` runs it too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

__all__ = [
    "CompileCase", "KernelReport", "KERNEL_MODULES", "check_kernels", "check_lif_kernels",
    "report_markdown", "compile_case",
]

TARGET = ("cuda", 90, 32)  # backend, compute capability, warp size: H100


@dataclass
class CompileCase:
    """One kernel specialization to compile. ``signature`` maps every argument to its Triton
    type (``*fp32``, ``i32``, ``fp32``, ``constexpr``); ``aligned`` names the pointer arguments
    known to be 16-byte aligned (what Triton specializes on at launch)."""

    kernel: str
    module: str
    function: str
    shape: str
    dtype: str
    signature: dict
    constexprs: dict
    aligned: tuple
    num_warps: int
    options: dict = field(default_factory=dict)
    aligned_shape: bool = True


@dataclass
class KernelReport:
    kernel: str
    shape: str
    dtype: str
    registers: Optional[int] = None
    spill_bytes: Optional[int] = None
    stack_bytes: Optional[int] = None
    shared_bytes: Optional[int] = None
    loop_loads: int = 0
    loop_vector_loads: int = 0
    loop_stores: int = 0
    loop_vector_stores: int = 0
    loop_conversions: int = 0
    loop_shared: int = 0
    failures: list = field(default_factory=list)
    error: str = ""


# ---------------------------------------------------------------------------------------------
# Reading compiled code


_VECTOR_128 = re.compile(r"\.v4\.(b32|u32|s32|f32)|\.v2\.(b64|u64|s64|f64)|\.v8\.(b16|f16|bf16)")


def _ptx_loop_body(ptx: str) -> list[str]:
    """The lines of the outermost loop in ``ptx``: from a label to the last branch back to it
    (none: ``[]``)."""
    lines = ptx.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines)
              if (m := re.match(r"^\s*(\$L__\w+):", line))}
    best: Optional[tuple[int, int]] = None
    for j, line in enumerate(lines):
        m = re.search(r"\bbra(?:\.uni)?\s+(\$L__\w+);", line)
        if m and m.group(1) in labels and labels[m.group(1)] < j:
            start = labels[m.group(1)]
            if best is None or j - start > best[1] - best[0]:
                best = (start, j)
    return [] if best is None else lines[best[0]:best[1] + 1]


def _ttgir_loop_conversions(ttgir: str) -> int:
    """``convert_layout`` ops inside ``scf.for`` regions of the TTGIR."""
    count, depth, inside = 0, 0, []
    for line in ttgir.splitlines():
        if "scf.for" in line and line.rstrip().endswith("{"):
            inside.append(depth)
        if inside and "convert_layout" in line:
            count += 1
        depth += line.count("{") - line.count("}")
        while inside and depth <= inside[-1]:
            inside.pop()
    return count


def _ptxas_info(ptx: str, capability: int) -> dict:
    """Registers, spill and stack bytes of the PTX, from Triton's bundled ptxas ``-v``."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    ptxas = get_ptxas(capability).path
    arch = sm_arch_from_capability(capability)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        out = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", str(src), "-o",
                              str(Path(tmp) / "kernel.cubin")], capture_output=True, text=True)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise RuntimeError(f"ptxas failed: {text.strip()[-300:]}")

    def number(pattern: str) -> Optional[int]:
        m = re.search(pattern, text)
        return int(m.group(1)) if m else None

    spill_stores = number(r"(\d+) bytes spill stores") or 0
    spill_loads = number(r"(\d+) bytes spill loads") or 0
    return {"registers": number(r"Used (\d+) registers"), "spill_bytes": spill_stores + spill_loads,
            "stack_bytes": number(r"(\d+) bytes stack frame")}


def compile_case(case: CompileCase) -> KernelReport:
    """Compile one case for sm_90 and read its report (in a process without TRITON_INTERPRET)."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    report = KernelReport(case.kernel, case.shape, case.dtype)
    fn = getattr(importlib.import_module(case.module), case.function)
    names = list(case.signature)
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in case.aligned}
    try:
        compiled = triton.compile(
            ASTSource(fn, case.signature, case.constexprs, attrs), target=GPUTarget(*TARGET),
            options={"num_warps": case.num_warps, **case.options},
        )
        ptx, ttgir = compiled.asm["ptx"], compiled.asm["ttgir"]
        report.__dict__.update(_ptxas_info(ptx, TARGET[1]))
    except Exception as err:  # a kernel that does not compile is the report's finding
        report.error = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"
        report.failures.append("does not compile")
        return report
    report.shared_bytes = compiled.metadata.shared
    body = _ptx_loop_body(ptx)
    loads = [line for line in body if "ld.global" in line]
    stores = [line for line in body if "st.global" in line]
    report.loop_loads, report.loop_stores = len(loads), len(stores)
    report.loop_vector_loads = sum(bool(_VECTOR_128.search(line)) for line in loads)
    report.loop_vector_stores = sum(bool(_VECTOR_128.search(line)) for line in stores)
    report.loop_shared = sum(("ld.shared" in line or "st.shared" in line) for line in body)
    report.loop_conversions = _ttgir_loop_conversions(ttgir)
    if report.spill_bytes:
        report.failures.append(f"{report.spill_bytes} bytes of register spills")
    if case.aligned_shape and (report.loop_conversions or report.loop_shared):
        report.failures.append(
            f"{report.loop_conversions} layout conversions ({report.loop_shared} shared-memory "
            "accesses) inside the time loop"
        )
    return report


# ---------------------------------------------------------------------------------------------
# Driver


# Kernel modules whose ``aot_cases()`` the check compiles.
KERNEL_MODULES = ("spikegate.kernels.lif", "spikegate.kernels.ultralif")
LIF_MODULE = "spikegate.kernels.lif"


def _cases(modules: Sequence[str], dtypes: Optional[Sequence[str]]) -> list[CompileCase]:
    import importlib

    cases = [c for m in modules for c in importlib.import_module(m).aot_cases()]
    return [c for c in cases if dtypes is None or c.dtype in dtypes]


def _child_main(argv: Sequence[str]) -> int:
    def option(name: str) -> Optional[list[str]]:
        return argv[argv.index(name) + 1].split(",") if name in argv else None

    modules = option("--modules") or KERNEL_MODULES
    reports = [asdict(compile_case(c)) for c in _cases(modules, option("--dtypes"))]
    print(json.dumps(reports))
    return 0


def check_lif_kernels(
    dtypes: Optional[Sequence[str]] = None, timeout: float = 900,
) -> list[KernelReport]:
    """:func:`check_kernels` of the LIF kernels alone."""
    return check_kernels((LIF_MODULE,), dtypes, timeout)


def check_kernels(
    modules: Sequence[str] = KERNEL_MODULES, dtypes: Optional[Sequence[str]] = None,
    timeout: float = 900,
) -> list[KernelReport]:
    """Compile every case of the kernel ``modules`` (default ``KERNEL_MODULES``: LIF and the
    UltraLIF family) for sm_90 in a child process without ``TRITON_INTERPRET``; ``dtypes``
    (``"float32"``, ``"float16"``, ``"bfloat16"``) limits the cases."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([repo, *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "spikegate.kernels.aot", "--json", "--modules", ",".join(modules)]
    if dtypes:
        cmd += ["--dtypes", ",".join(dtypes)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or [f"exit status {out.returncode}"]
        raise RuntimeError(f"the sm_90 compile check failed: {tail[0]}")
    return [KernelReport(**r) for r in json.loads(out.stdout.strip().splitlines()[-1])]


def report_markdown(reports: Sequence[KernelReport]) -> str:
    head = ("| kernel | shape | dtype | registers | spills B | shared B | loop loads 128-bit "
            "| loop stores 128-bit | loop conversions | loop shared accesses | result |")
    lines = [f"sm_{TARGET[1]} ahead-of-time compile (Triton's bundled ptxas; no GPU needed)", "",
             head, "|" + "---|" * 11]
    for r in reports:
        result = r.error or ("; ".join(r.failures) if r.failures else "ok")
        lines.append(
            f"| {r.kernel} | {r.shape} | {r.dtype} | {r.registers} | {r.spill_bytes} "
            f"| {r.shared_bytes} | {r.loop_vector_loads}/{r.loop_loads} "
            f"| {r.loop_vector_stores}/{r.loop_stores} | {r.loop_conversions} | {r.loop_shared} "
            f"| {result} |"
        )
    return "\n".join(lines) + "\n"


def _main(argv: Sequence[str]) -> int:
    if "--json" in argv:
        return _child_main(argv)
    reports = check_kernels()
    print(report_markdown(reports))
    return 1 if any(r.failures for r in reports) else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

