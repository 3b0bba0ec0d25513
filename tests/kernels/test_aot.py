"""The sm_90 ahead-of-time compile check (``spikegate.kernels.aot``), which needs no GPU.

One run compiles every LIF kernel case with Triton's bundled ptxas (about 10 s on 2 cores) and
must find what the kernels are designed for: no spills, 128-bit accesses in the time loop at an
aligned step, and no layout conversion inside the loop at any step. The readers of compiled code
are checked on small hand-written PTX and TTGIR, so that the check itself can fail.
"""

import pytest

pytest.importorskip("triton.backends.nvidia.compiler")

from spikegate.kernels.aot import (  # noqa: E402
    _ptx_loop_body,
    _ttgir_loop_conversions,
    check_lif_kernels,
    report_markdown,
)


@pytest.fixture(scope="module")
def reports():
    try:
        return check_lif_kernels()
    except RuntimeError as err:  # e.g. no bundled ptxas in this triton build
        pytest.skip(str(err))


def test_every_case_compiles_without_spills(reports):
    assert {(r.kernel, r.dtype) for r in reports} == {
        (k, d) for k in ("_lif_fwd_kernel", "_lif_bwd_kernel")
        for d in ("float32", "float16", "bfloat16")
    }
    for r in reports:
        assert not r.error, r
        assert r.failures == [], r
        assert r.spill_bytes == 0 and r.registers and r.registers <= 255, r


def test_aligned_steps_move_128_bit_vectors_in_the_loop(reports):
    aligned = [r for r in reports if r.shape.startswith("aligned")]
    assert len(aligned) == 12  # two aligned cases per kernel and dtype
    for r in aligned:
        assert r.loop_loads > 0 and r.loop_vector_loads == r.loop_loads, r
        assert r.loop_stores > 0 and r.loop_vector_stores == r.loop_stores, r


def test_no_step_converts_layouts_inside_the_loop(reports):
    for r in reports:
        assert r.loop_conversions == 0 and r.loop_shared == 0, r
    assert "| _lif_fwd_kernel | aligned" in report_markdown(reports)


_PTX = """
    ld.global.v4.b32 {%r1, %r2, %r3, %r4}, [%rd1];
$L__BB0_2:
    ld.global.v4.b32 {%r5, %r6, %r7, %r8}, [%rd2];
    st.shared.b32 [%r9], %r5;
    ld.global.b32 %r10, [%rd3];
    @%p1 bra $L__BB0_2;
    st.global.b32 [%rd4], %r10;
"""

_TTGIR = """
tt.func @k() {
  %0 = ttg.convert_layout %a : tensor<1024xf32, #b0> -> tensor<1024xf32, #b1>
  %1 = scf.for %t = %c0 to %T step %c1 iter_args(%v = %0) -> (tensor<1024xf32, #b1>) {
    %2 = ttg.convert_layout %v : tensor<1024xf32, #b1> -> tensor<1024xf32, #b0>
    %3 = scf.if %p -> tensor<1024xf32, #b0> {
      %4 = ttg.convert_layout %2 : tensor<1024xf32, #b0> -> tensor<1024xf32, #b1>
    }
    scf.yield %v : tensor<1024xf32, #b1>
  }
  %5 = ttg.convert_layout %1 : tensor<1024xf32, #b1> -> tensor<1024xf32, #b0>
  tt.return
}
"""


def test_the_loop_body_is_read_from_the_backward_branch():
    body = _ptx_loop_body(_PTX)
    assert body[0].strip() == "$L__BB0_2:" and body[-1].strip().endswith("bra $L__BB0_2;")
    assert sum("ld.global" in line for line in body) == 2
    assert sum("st.global" in line for line in body) == 0
    assert _ptx_loop_body("ld.global.b32 %r1, [%rd1];") == []  # no loop


def test_conversions_are_counted_inside_loops_only():
    assert _ttgir_loop_conversions(_TTGIR) == 2
    assert _ttgir_loop_conversions(_TTGIR.replace("scf.for", "scf.while")) == 0
