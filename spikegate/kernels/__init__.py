"""Fused Triton kernels and their registration as torch custom ops.

Only this package imports triton. Each kernel module holds the ``@triton.jit`` kernels, the
launchers, and the ops that wrap them; the torch reference each kernel is tested against lives
beside the neuron in ``spikegate/neurons/``. The three kernel families follow one pattern:

* LIF: ``lif.py`` (kernels), ``ops.py`` (schema, ``LIFOps``, the reference op pair);
* UltraLIF / UltraDLIF: ``ultralif.py`` (kernels), ``ultralif_ops.py`` (schema, ``UltraOps``,
  the reference op pair); one op pair serves both neurons and all their variants;
* the decay scan of the dual-path mixer: ``decay_scan.py`` (kernels and ops, registered with
  ``KernelOps``; no reference op pair and no compile-check cases yet).

``common.py`` holds the launch helpers they share (launch configuration, device context, the
bfloat16 rounding store, pointer placeholders); ``ops.py`` the triton-free op helpers
(``KernelOps``, ``nothing``), which the torch references use too.

How to register a kernel as a custom op, so that ``torch.compile(model, fullgraph=True)`` traces
it without a graph break and ``torch.export`` exports it:

1. One op per direction, named ``spikegate::<kernel>_forward`` / ``<kernel>_backward``, defined
   with ``@torch.library.custom_op(name, mutates_args=())`` on a function with type hints (the
   schema is inferred from them). Arguments are tensors (``Optional`` allowed), ``float``,
   ``int``, ``bool``, ``str``, ``list[float]``, ``torch.dtype``; no python objects, so a
   surrogate travels as its name and field values (``ops.surrogate_args``). Outputs alias
   neither the inputs nor each other (a ``.to()`` or ``.contiguous()`` of an input may return
   the input itself: copy then), a fixed number of them: an output that is not needed is a
   ``[0]`` placeholder.
2. The forward returns whatever the backward needs (the kept state) as an extra output, rather
   than stashing it in a ctx.
3. A fake implementation for each op (``op.register_fake``), which only allocates outputs of
   the right shapes, dtypes and devices with ``new_empty``: tracing never runs the kernel. Real
   and fake outputs must agree in strides (allocate contiguous outputs in the real op).
4. ``forward_op.register_autograd(backward, setup_context=...)``: ``setup_context`` saves
   tensors with ``ctx.save_for_backward`` and plain values on ``ctx``; ``backward`` calls the
   backward op and maps placeholders back to None. ``ops.KernelOps`` does steps 1 to 5 for any
   schema from its plain functions (forward, backward, fakes, ``setup_context``, the autograd
   formula); ``ops.LIFOps`` and ``ultralif_ops.UltraOps`` are it with their schema filled in.
5. Eager calls skip the dispatcher, whose Python costs a few hundred microseconds per call (more
   than a small kernel launch): an ``autograd.Function`` around the same two plain functions
   runs when ``torch.compiler.is_compiling()`` is false, the op while tracing. ``KernelOps``
   builds both from the plain functions; a test compares the two routes bitwise. Value checks
   (NaN in the input, parameter ranges) run in eager calls only: a traced graph has no values.
6. The torch reference gets its own op pair with the same schema (``lif_reference_*`` in
   ``ops.py``, ``ultra_reference_*`` in ``ultralif_ops.py``), with a backward of its own from
   the kept state, so that the CPU path compiles too and the two paths stay interchangeable.
7. Tests: ``torch.library.opcheck`` on every op (schema, fake tensor, autograd registration,
   AOT dispatch), a compiled (``fullgraph=True``) model against the eager one, outputs and
   gradients, and ``torch.export.export`` of a model holding the op.
8. The compile check: list the kernel's specializations in an ``aot_cases()`` of the kernel
   module and add the module to ``KERNEL_MODULES`` in ``spikegate.kernels.aot``; it must
   compile for sm_90 without spills or layout conversions inside its time loop at aligned
   shapes (``python -m spikegate.kernels.aot`` reports every module).

Why ``custom_op`` and not ``torch.library.triton_op``: ``triton_op`` derives the fake from
tracing the launcher through ``wrap_triton``, which Triton's CPU interpreter (every CPU test
here) cannot run on fake tensors. With ``custom_op`` the op is opaque to inductor, which calls the
launcher as an extern kernel; switching the kernel ops to ``triton_op`` (so inductor can see the
kernels) is a follow-up for a session with a GPU to test it on.
"""
