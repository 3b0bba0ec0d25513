"""Run the Triton kernels on the CPU interpreter when no GPU is present.

TRITON_INTERPRET must be set before triton compiles any kernel, so it is set here, before the
test modules import spikegate.kernels.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
