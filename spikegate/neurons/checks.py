"""Input checks shared by the neuron sequence functions.

Every message names the argument, what was expected and what came, so a user can fix the call
without reading the source.
"""

from __future__ import annotations

import importlib.util
import numbers
import os
from typing import Optional

import torch

from spikegate.arguments import check_choice, check_real

BACKENDS = ("auto", "triton", "torch")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TORCH_DTYPES = KERNEL_DTYPES + (torch.float64,)


def triton_interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@torch.no_grad()
def _all_finite(x: torch.Tensor) -> bool:
    # A sum is NaN or Inf when any term is, and costs a fraction of an elementwise isfinite; only
    # a sum that overflows from finite terms needs the exact check.
    total = x.sum(dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    return bool(torch.isfinite(total)) or bool(torch.isfinite(x).all())


def check_sequence(x: object, name: str = "x", *, finite: bool = True) -> torch.Tensor:
    """Check a time-major sequence ``[T, B, ...]`` with ``T >= 1``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [T, B, ...], got {type(x).__name__}")
    if x.dtype not in TORCH_DTYPES:
        raise TypeError(
            f"{name}: expected dtype in float32, float16, bfloat16, float64, got {x.dtype}"
        )
    if x.dim() < 2:
        raise ValueError(
            f"{name}: expected a time-major tensor [T, B, ...] with at least 2 dims, "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name}: expected T >= 1 time steps, got T = 0 (shape {tuple(x.shape)})")
    if finite:
        check_finite(x, name)
    return x


def nonfinite_error(name: str) -> ValueError:
    """The error for NaN or Inf in ``name``, the same wherever the check runs (here, or folded
    into a kernel's forward launch)."""
    return ValueError(f"{name}: expected finite values, got NaN or Inf")


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    """``x`` holds no NaN or Inf (one read of x and a host sync). Skipped while torch.compile or
    torch.export traces: a traced graph has no values to read or branch on."""
    if x.numel() and not torch.compiler.is_compiling() and not _all_finite(x):
        raise nonfinite_error(name)


def check_state(v0: Optional[torch.Tensor], x: torch.Tensor, name: str = "v0") -> None:
    """Check an initial state against the step shape ``x.shape[1:]``."""
    if v0 is None:
        return
    if not isinstance(v0, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or None, got {type(v0).__name__}")
    if tuple(v0.shape) != tuple(x.shape[1:]):
        raise ValueError(
            f"{name}: expected shape {tuple(x.shape[1:])} (the step shape of x [T, B, ...]), "
            f"got {tuple(v0.shape)}; is x time-major?"
        )
    if v0.device != x.device:
        raise ValueError(f"{name}: expected device {x.device}, got {v0.device}")


def check_decay_value(beta: object, name: str = "beta") -> float:
    """A scalar decay: a real number in (0, 1]."""
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise TypeError(f"{name}: expected a float or a tensor, got {type(beta).__name__}")
    if not (0 < beta <= 1):
        raise ValueError(f"{name}: expected a value in (0, 1], got {beta!r}")
    return float(beta)


def check_decay(beta: object, x: torch.Tensor, name: str = "beta", *, values: bool = True) -> None:
    """``beta`` must be a real number or a tensor broadcastable to the step shape, with values in
    (0, 1]; ``values=False`` skips reading a tensor's values (a host sync on CUDA)."""
    if not isinstance(beta, torch.Tensor):
        check_decay_value(beta, name)
        return
    try:
        shape = torch.broadcast_shapes(beta.shape, x.shape[1:])
    except RuntimeError:
        raise ValueError(
            f"{name}: expected a tensor broadcastable to the step shape {tuple(x.shape[1:])}, "
            f"got shape {tuple(beta.shape)}"
        ) from None
    if shape != x.shape[1:]:
        raise ValueError(
            f"{name}: shape {tuple(beta.shape)} would broadcast the step shape "
            f"{tuple(x.shape[1:])} to a larger one"
        )
    if beta.device != x.device:
        raise ValueError(f"{name}: expected device {x.device}, got {beta.device}")
    if values and beta.numel() and not torch.compiler.is_compiling():
        with torch.no_grad():
            low, high = float(beta.min()), float(beta.max())
        if not (low > 0 and high <= 1):
            raise ValueError(f"{name}: expected values in (0, 1], got range [{low}, {high}]")


def check_reset_amount(reset_amount: object, reset: str, name: str = "reset_amount"
                       ) -> Optional[float]:
    """What a LIF's subtractive reset takes away: None (its threshold) or a finite real > 0 (not a
    bool), and only with ``reset="subtract"``."""
    if reset_amount is None:
        return None
    amount = check_real(reset_amount, name, strict=True)
    if reset != "subtract":
        raise ValueError(
            f"{name}: only applies to reset='subtract', got reset={reset!r} with "
            f"{name}={reset_amount!r}"
        )
    return amount


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """Turn ``auto`` into ``triton`` (CUDA tensors) or ``torch``; check that ``triton`` can run."""
    check_choice(backend, "backend", BACKENDS)
    if backend == "auto":
        fused = x.is_cuda and x.dtype in KERNEL_DTYPES and triton_available()
        return "triton" if fused else "torch"
    if backend == "triton":
        if x.dtype not in KERNEL_DTYPES:
            raise TypeError(
                f"x: backend='triton' supports float32, float16, bfloat16, got {x.dtype} "
                "(use backend='torch' for float64)"
            )
        if not triton_available():
            raise ValueError("backend: 'triton' needs the triton package, which is not installed")
        if not x.is_cuda and not triton_interpreter_enabled():
            raise ValueError(
                f"backend: 'triton' needs a CUDA tensor, got one on {x.device}; "
                "set TRITON_INTERPRET=1 to run the kernels on the CPU interpreter"
            )
    return backend
