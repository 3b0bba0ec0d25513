"""Helpers shared by the kernel modules (``lif``, ``ultralif``, ``decay_scan``).

Launch configuration, the device context of a launch, pointer placeholders, and the rounding
store that compiled kernels and Triton's CPU interpreter must agree on. Everything here needs
triton; the op-registration helpers that do not (``nothing``, ``KernelOps``) live in
:mod:`spikegate.kernels.ops`, which the triton-free torch references use too.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from spikegate.neurons.checks import triton_interpreter_enabled

__all__ = [
    "MAX_NEURONS", "round_to", "sm_count", "launch_config", "native_round", "on_device",
    "or_placeholder",
]

MAX_NEURONS = 2**31 - 1 - 1024  # neuron offsets within a step are int32 (plus one block)


@triton.jit
def round_to(x, DTYPE: tl.constexpr, NATIVE: tl.constexpr):
    """float32 ``x`` rounded to nearest-even in ``DTYPE``.

    ``NATIVE`` (compiled kernels): the hardware conversion, which rounds to nearest-even. The
    Triton CPU interpreter truncates float32 -> bfloat16 instead, so there bfloat16 goes through
    integer ops (add the rounding bias, keep the top half). A NaN is replaced by the canonical
    quiet NaN first: the GPU's canonical NaN is 0x7FFFFFFF, and the bias would carry it into the
    sign bit and store -0.0, so a NaN gradient would vanish."""
    if DTYPE == tl.bfloat16 and not NATIVE:
        bits = x.to(tl.uint32, bitcast=True)
        bits = tl.where(x != x, 0x7FC00000, bits)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(DTYPE)


@functools.lru_cache(maxsize=None)
def sm_count(device_index: int) -> int:
    """Streaming multiprocessors of CUDA device ``device_index``."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def launch_config(m: int, device: torch.device) -> tuple[int, int]:
    """``(BLOCK, num_warps)`` of an elementwise kernel over ``m`` neurons: 1024 neurons and 4
    warps per program (8 neurons, two 16-byte float32 loads, per thread), halved down to 128
    while that leaves fewer than two programs per SM. The CPU interpreter runs programs one after
    another, so there a block just covers ``m``."""
    if device.type != "cuda":
        return min(1024, max(16, triton.next_power_of_2(m))), 4
    sms = sm_count(device.index if device.index is not None else torch.cuda.current_device())
    block = 1024
    while block > 128 and triton.cdiv(m, block) < 2 * sms:
        block //= 2
    return block, max(1, block // 256)


def native_round() -> bool:
    """Compiled kernels convert to bfloat16 natively; the interpreter needs the integer path."""
    return not triton_interpreter_enabled()


def on_device(device: torch.device):
    """The context a launch on ``device`` runs in: that CUDA device current, or nothing."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def or_placeholder(tensor: Optional[torch.Tensor], placeholder: torch.Tensor) -> torch.Tensor:
    """A pointer argument the kernel will not touch (its flag is off) still needs a tensor."""
    return placeholder if tensor is None else tensor
