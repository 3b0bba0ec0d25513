"""spikegate: spiking neural networks on fused Triton time-stepping kernels."""

__version__ = "0.1.0"
