"""UltraLIF family: LIF neurons relaxed by ultradiscretization (arXiv 2602.11206).

Semantics (time-major ``i: [T, B, ...]``, ``eps > 0``, ``tau0`` in (0, 1])::

    UltraLIF (Def. 4.1)
    u[t] = eps * log( exp((v[t-1] + log tau0)/eps) + exp(i[t]/eps) )      (stable logaddexp)
    s[t] = sigmoid((u[t] - threshold)/eps)                                 (soft spike in (0, 1))
    v[t] = u[t] * (1 - s[t])                                               (reset=False: v[t] = u[t])

    UltraDLIF (Def. 4.2), neighbours k-1, k, k+1 along the last dim, circular within each row
    u_k[t] = eps * LSE((v_{k-1}[t-1], v_k[t-1] + log tau0, v_{k+1}[t-1]) / eps) + i_k[t]
    same spike and reset; tau0 = 1 (the default) is Def. 4.2 exactly.

``v[-1] = v0`` or 0. UltraPLIF and UltraDPLIF learn tau0; all four learn ``eps = exp(log_eps)``
clamped to [0.1, 20] (init 1). ``hard=True`` evaluates the tropical limit eps -> 0: the max-plus
membrane ``max(v + log tau0, i)`` (``max(v_{k-1}, v_k + log tau0, v_{k+1}) + i``) and Heaviside
spikes ``u >= threshold``; it has no gradient.

The authors' released code (github.com/JomaMinoza/UltraLIF) differs from the paper's equations in
places; these switches reproduce it, the paper form being the default:

* ``threshold``: the library's neurons spike at ``sigmoid(u/eps)``, i.e. ``threshold=0``; its eps
  ablation uses ``threshold=1.0``; the paper states 0.5.
* ``leak_before_lse=True`` (UltraDLIF only): the library's UltraDLIF first leaks linearly,
  ``w = tau0 * v + i``, then takes the LSE over the neighbours of ``w`` (no ``+ i`` after it) and
  spikes on that: ``u = eps * LSE((w_{k-1}, w_k, w_{k+1})/eps)``.
* ``reset_pre_lse=True`` (with ``leak_before_lse``): that code resets the pre-LSE membrane,
  ``v = w * (1 - s)``, not ``u * (1 - s)``.
* ``tau_param="sigmoid"`` (modules with a learnable tau0): the library's UltraDPLIF keeps
  ``tau0 = sigmoid(raw)`` (and initialises ``raw = 0.9``, i.e. tau0 = 0.711: pass ``tau0=0.711``
  to start where it does); the default ``"exp"`` is ``tau0 = exp(log_tau0)`` clamped to
  [0.01, 1], as its UltraPLIF does (clamped at 0.99 there).
* The library's UltraDLIF has a fixed tau0 = 0.9 used only in the linear leak; the eps ablation's
  UltraDPLIF multiplies the centre term by tau0 (``v_k * tau0``) where Def. 4.2 and this module
  add ``log tau0`` (the max-plus image of the product).

Two backends compute it: the fused Triton kernels (``spikegate.kernels.ultralif``, one launch for
all T steps each way) and the torch reference below (``reference_forward`` /
``reference_backward``), the CPU path: a per-step loop without a graph that keeps only the
membrane ``u[t]`` (``w[t]`` with ``leak_before_lse``), 4 bytes per neuron-step, and a backward of
its own that rebuilds spikes, resets and LSE weights from it. Both run as torch custom ops with
one schema (``spikegate.kernels.ultralif_ops``), so that ``torch.compile`` (``fullgraph=True``)
and ``torch.export`` trace an UltraLIF network as one op per direction and layer; the value
checks (``validate``) run in eager calls only. ``ultralif_reference`` / ``ultradlif_reference``,
the equations stepped in differentiable torch ops (autograd through the unrolled steps), are the
oracle of the kernels and of ``reference_backward``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Optional, Union

import torch
from torch import nn

from spikegate.arguments import check_choice, check_real

from .checks import BACKENDS, check_decay, check_sequence, check_state, resolve_backend
from .cost import NeuronCost

__all__ = [
    "ultralif_sequence",
    "ultradlif_sequence",
    "soft_max_plus",
    "UltraLIF",
    "UltraPLIF",
    "UltraDLIF",
    "UltraDPLIF",
    "relaxed_neurons",
    "tropical",
    "EPS_RANGE",
]

Param = Union[float, torch.Tensor]
EPS_RANGE = (0.1, 20.0)  # a learnable eps is clamped to this range (paper, Sec. 4)
TAU_PARAMS = ("exp", "sigmoid")


def soft_max_plus(x: torch.Tensor, eps: Param, dim: int = -1) -> torch.Tensor:
    """``LSE_eps(x) = eps * log(sum_j exp(x_j / eps))`` over ``dim``, the soft tropical sum;
    ``max(x) <= LSE_eps(x) <= max(x) + eps * log n`` for ``n`` terms. A tensor ``eps`` broadcasts
    against ``x`` (size 1 along ``dim``)."""
    return (eps * torch.logsumexp(x / eps, dim=dim, keepdim=True)).squeeze(dim)


# --------------------------------------------------------------------------------------------- #
# Checks
# --------------------------------------------------------------------------------------------- #


def _check_eps(eps: object, x: torch.Tensor, *, values: bool) -> None:
    if not isinstance(eps, torch.Tensor):
        check_real(eps, "eps", strict=True)
        return
    try:
        shape = torch.broadcast_shapes(eps.shape, x.shape[1:])
    except RuntimeError:
        shape = None
    if shape != x.shape[1:]:
        raise ValueError(
            f"eps: expected a float or a tensor broadcastable to the step shape "
            f"{tuple(x.shape[1:])}, got shape {tuple(eps.shape)}"
        )
    if eps.device != x.device:
        raise ValueError(f"eps: expected device {x.device}, got {eps.device}")
    if values and eps.numel():
        with torch.no_grad():
            low, high = float(eps.min()), float(eps.max())
        if not (low > 0 and math.isfinite(high)):
            raise ValueError(f"eps: expected finite values > 0, got minimum {low}")


def _check_common(i, v0, eps, tau0, threshold, reset, hard, validate) -> float:
    # Values cannot be read while torch.compile or torch.export traces (no data, no branching on
    # it), so the value checks run in eager calls only; shapes, dtypes and devices always.
    validate = validate and not torch.compiler.is_compiling()
    check_sequence(i, "i", finite=validate)
    check_state(v0, i, "v0")
    _check_eps(eps, i, values=validate)
    check_decay(tau0, i, "tau0", values=validate)
    for name, flag in (("reset", reset), ("hard", hard)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool, got {type(flag).__name__}")
    threshold = check_real(threshold, "threshold", minimum=-math.inf)
    if hard and torch.is_grad_enabled():
        wanting = [n for n, t in (("i", i), ("v0", v0), ("eps", eps), ("tau0", tau0))
                   if isinstance(t, torch.Tensor) and t.requires_grad]
        if wanting:
            raise ValueError(
                "hard: the tropical limit (hard=True, Heaviside spikes) has no gradient, but "
                f"{', '.join(wanting)} require grad; run it under torch.no_grad() or use hard=False"
            )
    return threshold


def _scalar(p: Param) -> Param:
    return p if isinstance(p, torch.Tensor) else float(p)


# --------------------------------------------------------------------------------------------- #
# Torch reference: the equations above, step by step
# --------------------------------------------------------------------------------------------- #


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _as_state(p: Param, cdt: torch.dtype) -> Param:
    return p.to(cdt) if isinstance(p, torch.Tensor) else p


def _detached(p: Param) -> Param:
    return p.detach() if isinstance(p, torch.Tensor) else p


def _log(p: Param) -> Param:
    return torch.log(p) if isinstance(p, torch.Tensor) else math.log(p)


def _spike(u, eps, threshold, hard):
    if hard:
        return (u >= threshold).to(u.dtype)
    return torch.sigmoid((u - threshold) / eps)


def _ultralif_step(v, x, eps, log_tau, threshold, reset, hard):
    """One step of Def. 4.1: ``(u, s, v)``."""
    a = v + log_tau
    u = torch.maximum(a, x) if hard else eps * torch.logaddexp(a / eps, x / eps)
    s = _spike(u, eps, threshold, hard)
    return u, s, u * (1 - s) if reset else u


def _neighbours(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v_{k-1}, v_{k+1})`` along the last dim, circular."""
    return torch.roll(v, 1, dims=-1), torch.roll(v, -1, dims=-1)


def _lse3(left, centre, right, eps, hard):
    """``LSE_eps`` of each neuron's three terms, stacked on a new leading dimension: contiguous
    slices, and ``eps`` (a float, a 0-dim or a per-neuron tensor) broadcasts as it is, with no
    full-size copy per step (and no reduction of one in the backward)."""
    stack = torch.stack([left, centre, right])
    if hard:
        return stack.amax(0)
    return soft_max_plus(stack, eps, dim=0)


def _ultradlif_step(v, x, eps, tau, log_tau, threshold, reset, hard, leak_before_lse,
                    reset_pre_lse):
    """One step of Def. 4.2 (or of the released code's order): ``(kept, s, v)``, where ``kept``
    is what the backward rebuilds the step from: ``u``, or the pre-LSE ``w`` with
    ``leak_before_lse``."""
    if leak_before_lse:
        w = tau * v + x
        left, right = _neighbours(w)
        u = _lse3(left, w, right, eps, hard)
    else:
        left, right = _neighbours(v)
        w, u = None, _lse3(left, v + log_tau, right, eps, hard) + x
    s = _spike(u, eps, threshold, hard)
    base = w if reset_pre_lse else u
    return (u if w is None else w), s, base * (1 - s) if reset else base


def ultralif_reference(i, v0, eps, tau0, threshold, reset=True, hard=False):
    """UltraLIF by the equations, one step at a time, differentiable by autograd through the
    unrolled steps: the oracle of the Triton kernels and of :func:`reference_backward`."""
    cdt = _state_dtype(i.dtype)
    eps, log_tau = _as_state(eps, cdt), _log(_as_state(tau0, cdt))
    v = torch.zeros(i.shape[1:], dtype=cdt, device=i.device) if v0 is None else v0.to(cdt)
    spikes = []
    for x in i.to(cdt).unbind(0):
        _, s, v = _ultralif_step(v, x, eps, log_tau, threshold, reset, hard)
        spikes.append(s)
    return torch.stack(spikes).to(i.dtype), v.to(i.dtype)


def ultradlif_reference(i, v0, eps, tau0, threshold, reset=True, hard=False,
                        leak_before_lse=False, reset_pre_lse=False):
    """UltraDLIF by the equations, one step at a time, differentiable by autograd through the
    unrolled steps: the oracle of the Triton kernels and of :func:`reference_backward`."""
    cdt = _state_dtype(i.dtype)
    eps, tau = _as_state(eps, cdt), _as_state(tau0, cdt)
    log_tau = _log(tau)
    v = torch.zeros(i.shape[1:], dtype=cdt, device=i.device) if v0 is None else v0.to(cdt)
    spikes = []
    for x in i.to(cdt).unbind(0):
        _, s, v = _ultradlif_step(v, x, eps, tau, log_tau, threshold, reset, hard,
                                  leak_before_lse, reset_pre_lse)
        spikes.append(s)
    return torch.stack(spikes).to(i.dtype), v.to(i.dtype)


def reference_forward(
    i: torch.Tensor, v0: Optional[torch.Tensor], eps: Param, tau0: Param, threshold: float,
    reset: bool, hard: bool, coupled: bool, leak_before_lse: bool, reset_pre_lse: bool,
    save: bool,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """The reference forward without a graph: ``(spikes [T, ...] in i.dtype, v_last [...] in
    i.dtype, kept [T, ...] in the state dtype or None)``. ``coupled`` selects UltraDLIF. ``kept``
    (when ``save``) is all :func:`reference_backward` needs: ``u[t]``, or ``w[t]`` with
    ``leak_before_lse``, as the kernels keep."""
    cdt = _state_dtype(i.dtype)
    eps, tau = _as_state(_detached(eps), cdt), _as_state(_detached(tau0), cdt)
    log_tau = _log(tau)
    step = i.shape[1:]
    v = torch.zeros(step, dtype=cdt, device=i.device) if v0 is None else v0.detach().to(cdt)
    spikes = torch.empty(i.shape, dtype=i.dtype, device=i.device)
    kept = torch.empty(i.shape, dtype=cdt, device=i.device) if save else None
    for t, x in enumerate(i.detach().unbind(0)):
        x = x.to(cdt)
        if coupled:
            k, s, v = _ultradlif_step(v, x, eps, tau, log_tau, threshold, reset, hard,
                                      leak_before_lse, reset_pre_lse)
        else:
            k, s, v = _ultralif_step(v, x, eps, log_tau, threshold, reset, hard)
        spikes[t] = s
        if kept is not None:
            kept[t] = k
    # a fresh contiguous v_last (the op's fake has those strides, whatever i's layout)
    return spikes, v.to(i.dtype, memory_format=torch.contiguous_format, copy=True), kept


# Steps per block of the backward: its [block, ...] coefficient buffers stay in cache.
_BLOCK_ELEMENTS = 1 << 18


def _states(kept, eps, threshold, reset, leak_before_lse, reset_pre_lse):
    """``(u, y, s, keep, base, v)`` at the steps whose kept values are ``kept``: the membrane,
    ``y = (u - threshold)/eps``, the spike ``s = sigmoid(y)``, ``keep = 1 - s``, the value the
    reset scales (``w`` with ``reset_pre_lse``, else ``u``) and ``v`` after the reset."""
    if leak_before_lse:
        left, right = _neighbours(kept)
        u = _lse3(left, kept, right, eps, False)
    else:
        u = kept
    y = torch.sub(u, threshold).div_(eps)
    s = torch.sigmoid(y)
    keep = torch.sub(1, s)
    base = kept if reset_pre_lse else u
    return u, y, s, keep, base, base * keep if reset else base


def _lse3_weights(left, centre, right, eps):
    """The softmax weights ``(p_left, p_centre, p_right)`` of ``LSE_eps`` of three terms and their
    entropy ``-sum p log p``, which is ``d LSE_eps / d eps`` (stable: shifted by the max)."""
    top = torch.maximum(torch.maximum(left, centre), right)
    z = [torch.sub(t, top).div_(eps) for t in (left, centre, right)]
    p = [t.exp() for t in z]
    total = p[0] + p[1] + p[2]
    for t in p:
        t.div_(total)
    entropy = total.log_()
    for pj, zj in zip(p, z):
        entropy.sub_(zj.mul_(pj))
    return p, entropy


def _mix(g, pl, pc, pr):
    """``dL/d(terms)`` of the three-term LSEs from ``g = dL/dLSE``: each neuron's centre weight,
    plus the weights by which its right and left neighbours' LSEs hold it."""
    return (g * pc).add_(torch.roll(g * pl, -1, dims=-1)).add_(torch.roll(g * pr, 1, dims=-1))


def reference_backward(
    kept: torch.Tensor, grad_spikes: Optional[torch.Tensor], grad_v_last: Optional[torch.Tensor],
    v0: Optional[torch.Tensor], eps: Param, tau0: Param, threshold: float, reset: bool,
    coupled: bool, leak_before_lse: bool, reset_pre_lse: bool, need_eps: bool = True,
    need_tau0: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor],
           Optional[torch.Tensor]]:
    """The reference backward from the kept ``[T, ...]`` values of :func:`reference_forward`:
    ``(dL/di [T, ...], dL/dv0, dL/deps, dL/dtau0)``, the last three per neuron ``[...]`` (sum them
    to the parameters' shapes), all in the state dtype; ``dL/deps`` / ``dL/dtau0`` are None
    unless ``need_eps`` / ``need_tau0``. A gradient that did not arrive is None.

    With ``g = dL/dv[t]`` (``grad_v_last`` at the last step), each step going back is
    ``gl = A + B g`` (``dL/du``: ``A = dL/ds ds/du``, ``B = dv/du`` through the spike and the
    reset), then ``g`` for the step before: UltraLIF ``gl p`` with ``p = exp((a - u)/eps)`` the
    LSE weight of ``a = v + log tau0`` (``dL/di = gl (1 - p)``), UltraDLIF the three LSE weights
    mixed over the neighbours (``dL/di = gl``), and with ``leak_before_lse`` ``tau0`` times
    ``dL/dw``. ``eps`` collects ``gl`` times the weights' entropy (``d LSE_eps / d eps``) plus the
    spike's own ``ds/deps``. The weights, spikes and resets come from the kept values alone,
    computed for blocks of steps at once (their buffers stay in cache); only the recurrence in
    ``g`` walks step by step."""
    cdt, device = kept.dtype, kept.device
    eps, tau = _as_state(_detached(eps), cdt), _as_state(_detached(tau0), cdt)
    log_tau = _log(tau)
    T, step = kept.shape[0], kept.shape[1:]
    v_init = torch.zeros(step, dtype=cdt, device=device) if v0 is None else v0.detach().to(cdt)
    g = (torch.zeros(step, dtype=cdt, device=device) if grad_v_last is None
         else grad_v_last.detach().to(cdt, copy=True))
    gi = torch.empty(kept.shape, dtype=cdt, device=device)
    geps = torch.zeros(step, dtype=cdt, device=device) if need_eps else None
    gtau = torch.zeros(step, dtype=cdt, device=device) if need_tau0 else None
    own = leak_before_lse and reset_pre_lse     # the reset scales w: dL/dv reaches w directly
    block = max(1, _BLOCK_ELEMENTS // max(1, step.numel()))
    for t1 in range(T, 0, -block):
        t0 = max(0, t1 - block)
        # states of steps t0 - 1 .. t1 - 1: the block's own, and v[t - 1] for each of its steps
        u, y, s, keep, base, v = _states(kept[max(t0 - 1, 0):t1], eps, threshold, reset,
                                         leak_before_lse, reset_pre_lse)
        v_prev = v[:-1] if t0 > 0 else torch.cat([v_init[None], v[:-1]])
        if t0 > 0:
            u, y, s, keep, base = u[1:], y[1:], s[1:], keep[1:], base[1:]
        ds = torch.mul(s, keep).div_(eps)                   # ds/du
        gs = None if grad_spikes is None else grad_spikes[t0:t1].to(cdt)
        a = torch.zeros_like(u) if gs is None else gs * ds
        # B = dv/du: through the reset's spike (-base ds/du), and through base when it is u
        if reset and not own:
            b = torch.addcmul(keep, base, ds, value=-1)
        elif reset:
            b = torch.mul(base, ds).neg_()
        else:
            b = torch.full_like(u, 0.0 if own else 1.0)
        if not coupled:
            log_p = torch.sub(v_prev, u).add_(log_tau).div_(eps).clamp_(max=0)
            p = log_p.exp()
            q = torch.sub(1, p)
        elif leak_before_lse:
            w = kept[t0:t1]
            left, right = _neighbours(w)
            p, entropy = _lse3_weights(left, w, right, eps)
        else:
            left, right = _neighbours(v_prev)
            p, entropy = _lse3_weights(left, v_prev + log_tau, right, eps)
        gl = torch.empty_like(u)         # dL/du[t]
        g_after = torch.empty_like(u)    # dL/dv[t], each step's g written by the step after it
        g_after[-1] = g
        for j in range(t1 - t0 - 1, -1, -1):
            torch.addcmul(a[j], b[j], g_after[j], out=gl[j])
            if not coupled:
                g = torch.mul(gl[j], p[j], out=g_after[j - 1]) if j else gl[j] * p[j]
                continue
            if leak_before_lse:
                gw = _mix(gl[j], p[0][j], p[1][j], p[2][j])
                if own:   # v = w (1 - s), or v = w
                    gw.addcmul_(keep[j], g_after[j]) if reset else gw.add_(g_after[j])
                gi[t0 + j] = gw
                g = gw.mul_(tau)
            else:
                g = _mix(gl[j], p[0][j], p[1][j], p[2][j])
            if j:
                g_after[j - 1] = g
        if need_eps:
            sign = 1
            if not coupled:   # the entropy of (p, q), negated; q log q -> 0 at q = 0
                entropy = (p * log_p).add_(q.clamp_min(torch.finfo(cdt).tiny).log_().mul_(q))
                sign = -1
            # ds/deps at fixed u is -ds/du * y, through dL/ds and (reset) the reset's -base
            spike_eps = torch.mul(g_after, base) if reset else torch.zeros_like(u)
            if gs is not None:
                spike_eps.sub_(gs)
            geps += spike_eps.mul_(ds).mul_(y).addcmul_(gl, entropy, value=sign).sum(0)
        if not coupled:
            if need_tau0:   # a = v + log tau0; sum_t gl p = the g handed back at each step
                gtau += (g_after[:-1].sum(0) + g) / tau
            torch.mul(gl, q, out=gi[t0:t1])
        elif leak_before_lse:
            if need_tau0:
                gtau += (gi[t0:t1] * v_prev).sum(0)               # w = tau0 * v + i
        else:
            if need_tau0:
                gtau += (gl * p[1]).sum(0) / tau                  # centre term v + log tau0
            gi[t0:t1] = gl
    return gi, g, geps, gtau


# --------------------------------------------------------------------------------------------- #
# Sequence functions
# --------------------------------------------------------------------------------------------- #


def ultralif_sequence(
    i: torch.Tensor,
    v0: Optional[torch.Tensor] = None,
    *,
    eps: Param = 1.0,
    tau0: Param = 0.9,
    threshold: float = 0.5,
    reset: bool = True,
    hard: bool = False,
    backend: str = "auto",
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run UltraLIF neurons (Def. 4.1) over a sequence.

    Args:
        i: ``[T, B, ...]`` input current per step (float32, float16, bfloat16; float64 on torch).
        v0: ``[B, ...]`` membrane before the first step, or None for zeros.
        eps: temperature > 0, a float or a tensor broadcastable to ``[B, ...]`` (may require grad).
        tau0: leak in (0, 1], a float or a broadcastable tensor (may require grad).
        threshold: firing threshold (any real; the released code uses 0 or 1.0).
        reset: ``v = u * (1 - s)``; False keeps ``v = u`` (the setting of Prop. 5.2).
        hard: the tropical limit (max-plus membrane, Heaviside spikes); no gradient.
        backend: ``"auto"`` (Triton on CUDA, torch elsewhere), ``"triton"`` or ``"torch"``.
        validate: check values (NaN/Inf in i, eps > 0, tau0 in (0, 1]); shapes are always checked.

    Returns:
        ``(spikes [T, B, ...] in [0, 1] (dtype of i), v_last [B, ...])``.
    """
    threshold = _check_common(i, v0, eps, tau0, threshold, reset, hard, validate)
    eps, tau0 = _scalar(eps), _scalar(tau0)
    if resolve_backend(backend, i) == "triton":
        from spikegate.kernels.ultralif import ultralif_triton

        return ultralif_triton(i, v0, eps, tau0, threshold=threshold, reset=reset, hard=hard)
    from spikegate.kernels.ultralif_ops import ultra_call, ultra_reference

    return ultra_call(ultra_reference, i, v0, eps, tau0, coupled=False, threshold=threshold,
                      reset=reset, hard=hard)


def ultradlif_sequence(
    i: torch.Tensor,
    v0: Optional[torch.Tensor] = None,
    *,
    eps: Param = 1.0,
    tau0: Param = 1.0,
    threshold: float = 0.5,
    reset: bool = True,
    hard: bool = False,
    leak_before_lse: bool = False,
    reset_pre_lse: bool = False,
    backend: str = "auto",
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run UltraDLIF neurons (Def. 4.2): neighbours along the last dim of ``i``, circular.

    Args:
        i: ``[T, B, ..., N]`` input current with ``N >= 3`` neurons per coupled row.
        v0, eps, tau0, threshold, reset, hard, backend, validate: as in :func:`ultralif_sequence`;
            tau0 (default 1, Def. 4.2 exactly) enters the centre term as ``+ log tau0``.
        leak_before_lse: the released code's order (module docstring); tau0 is then a linear
            leak ``w = tau0 * v + i``.
        reset_pre_lse: reset ``w`` instead of ``u`` (needs ``leak_before_lse``).

    Returns:
        ``(spikes [T, B, ..., N] in [0, 1], v_last [B, ..., N])``.
    """
    threshold = _check_common(i, v0, eps, tau0, threshold, reset, hard, validate)
    if i.dim() < 3 or i.shape[-1] < 3:
        raise ValueError(
            "i: UltraDLIF couples neighbours along the last dim and needs [T, B, ..., N] with "
            f"N >= 3, got shape {tuple(i.shape)}"
        )
    for name, flag in (("leak_before_lse", leak_before_lse), ("reset_pre_lse", reset_pre_lse)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool, got {type(flag).__name__}")
    if reset_pre_lse and not leak_before_lse:
        raise ValueError(
            "reset_pre_lse: expected leak_before_lse=True (only the released code's order has a "
            "pre-LSE membrane), got reset_pre_lse=True with leak_before_lse=False"
        )
    eps, tau0 = _scalar(eps), _scalar(tau0)
    if resolve_backend(backend, i) == "triton":
        from spikegate.kernels.ultralif import ultradlif_triton

        return ultradlif_triton(
            i, v0, eps, tau0, threshold=threshold, reset=reset, hard=hard,
            leak_before_lse=leak_before_lse, reset_pre_lse=reset_pre_lse,
        )
    from spikegate.kernels.ultralif_ops import ultra_call, ultra_reference

    return ultra_call(ultra_reference, i, v0, eps, tau0, coupled=True, threshold=threshold,
                      reset=reset, hard=hard, leak_before_lse=leak_before_lse,
                      reset_pre_lse=reset_pre_lse)


# --------------------------------------------------------------------------------------------- #
# Modules
# --------------------------------------------------------------------------------------------- #


def _sync_fixed_eps(module: nn.Module, incompatible) -> None:
    module._fixed = float(module.eps_fixed)


class _UltraNeuron(nn.Module):
    """Parameters and plumbing shared by the four modules; subclasses pick the sequence function.

    Args:
        eps: initial temperature (> 0); learned as ``exp(log_eps)`` clamped to [0.1, 20] unless
            ``learn_eps=False`` (or a learning rule fixes it with :meth:`fix_eps`).
        tau0: initial leak in (0, 1].
        learn_tau0: make tau0 a parameter (the P variants), through ``tau_param``.
        tau_param: ``"exp"`` (``exp(log_tau0)`` clamped to [0.01, 1]) or ``"sigmoid"``.
        threshold, reset: as in :func:`ultralif_sequence`.
        hard: evaluate the tropical limit (no gradient); :func:`tropical` switches it on.
        per_neuron: one eps (and learnable tau0) per neuron of ``shape`` instead of one scalar.
        shape: neuron shape (trailing dims of ``[T, B, *shape]``); inputs are checked against it.
        backend, validate: as in :func:`ultralif_sequence`.

    ``forward(i [T, B, *shape], v0=None) -> (spikes [T, B, *shape] in [0, 1], v_last [B, *shape])``.
    """

    _sequence = staticmethod(ultralif_sequence)

    def __init__(
        self,
        eps: float = 1.0,
        tau0: float = 0.9,
        threshold: float = 0.5,
        learn_eps: bool = True,
        learn_tau0: bool = False,
        tau_param: str = "exp",
        reset: bool = True,
        hard: bool = False,
        per_neuron: bool = False,
        shape: Optional[tuple[int, ...]] = None,
        backend: str = "auto",
        validate: bool = True,
    ) -> None:
        super().__init__()
        eps = check_real(eps, "eps", strict=True)
        tau0 = float(tau0) if isinstance(tau0, (int, float)) and not isinstance(tau0, bool) else tau0
        if not isinstance(tau0, float) or not 0 < tau0 <= 1:
            raise ValueError(f"tau0: expected a value in (0, 1], got {tau0!r}")
        self.threshold = check_real(threshold, "threshold", minimum=-math.inf)
        self.tau_param = check_choice(tau_param, "tau_param", TAU_PARAMS)
        self.backend = check_choice(backend, "backend", BACKENDS)
        self.reset, self.hard, self.validate = bool(reset), bool(hard), validate
        self.shape = tuple(shape) if shape is not None else None
        if per_neuron and self.shape is None:
            raise ValueError("per_neuron: expected shape=(...) to size one eps per neuron, got shape=None")
        size = self.shape if per_neuron else ()
        self.log_eps = nn.Parameter(torch.full(size, math.log(eps)), requires_grad=learn_eps)
        # eps fixed by a learning rule (fixed or annealed); 0 means "learned": checkpoints keep it
        self.register_buffer("eps_fixed", torch.zeros(()))
        self._fixed = 0.0  # the buffer's value on the host: no device sync per forward
        self.register_load_state_dict_post_hook(_sync_fixed_eps)
        if learn_tau0:
            if self.tau_param == "sigmoid" and tau0 >= 1:
                raise ValueError(f"tau0: a sigmoid-parameterised tau0 must start below 1, got {tau0!r}")
            raw = math.log(tau0) if self.tau_param == "exp" else math.log(tau0 / (1 - tau0))
            self.tau0_raw = nn.Parameter(torch.full(size, raw))
        else:
            self.register_parameter("tau0_raw", None)
            self._tau0 = tau0

    @property
    def eps(self) -> Param:
        if self._fixed > 0:
            return self._fixed
        return self.log_eps.exp().clamp(*EPS_RANGE)

    @property
    def tau0(self) -> Param:
        if self.tau0_raw is None:
            return self._tau0
        if self.tau_param == "sigmoid":
            return torch.sigmoid(self.tau0_raw)
        return self.tau0_raw.exp().clamp(0.01, 1.0)

    def fix_eps(self, value: Optional[float]) -> None:
        """Hold eps at ``value`` (a learning rule's fixed or annealed eps; any value > 0, not
        clamped), or return it to learning with None."""
        if value is None:
            self.eps_fixed.zero_()
            self._fixed = 0.0
            self.log_eps.requires_grad_(True)
            return
        self._fixed = check_real(value, "eps", strict=True)
        self.eps_fixed.fill_(self._fixed)
        self.log_eps.requires_grad_(False)

    def _variant(self) -> dict:
        return {}

    def forward(
        self, i: torch.Tensor, v0: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shape is not None and isinstance(i, torch.Tensor) and tuple(i.shape[2:]) != self.shape:
            raise ValueError(
                f"i: expected [T, B, {', '.join(map(str, self.shape))}] (time-major), "
                f"got shape {tuple(i.shape)}"
            )
        return self._sequence(
            i, v0, eps=self.eps, tau0=self.tau0, threshold=self.threshold, reset=self.reset,
            hard=self.hard, backend=self.backend, validate=self.validate, **self._variant(),
        )

    def neuron_cost(self) -> NeuronCost:
        """Per neuron and step, the stable logaddexp ``m + eps*log(1 + exp(-|a-b|/eps))``: add
        ``log tau0``, difference, abs and max (2 compares), the scaling by ``1/eps`` and ``eps``,
        exp and log (2 transcendentals), the sigmoid spike (1 more, with ``(u - theta)/eps``) and
        the reset ``u * (1 - s)``. Hard: add, max, threshold test, reset select."""
        if self.hard:
            return NeuronCost(adds=1, compares=2 + self.reset)
        return NeuronCost(muls=3 + self.reset, adds=4 + self.reset, compares=2, transcendentals=3,
                          relaxed=True)

    def extra_repr(self) -> str:
        eps = self._fixed if self._fixed > 0 else ("learned" if self.log_eps.requires_grad else "const")
        tau = "learned" if self.tau0_raw is not None else self._tau0
        return (f"eps={eps}, tau0={tau}, threshold={self.threshold}, reset={self.reset}, "
                f"hard={self.hard}, backend={self.backend!r}")


class UltraLIF(_UltraNeuron):
    """UltraLIF (Def. 4.1), fixed tau0; see :class:`_UltraNeuron` for the arguments."""

    @classmethod
    def from_lif(cls, lif: nn.Module, *, eps: float = 1.0, learn_eps: bool = True) -> "UltraLIF":
        """The relaxed twin of a :class:`~spikegate.neurons.LIF`: tau0 is its beta (learnable
        through the same sigmoid when beta is), same threshold and zero reset (or none)."""
        if lif.reset == "subtract":
            raise ValueError(
                "reset: the relaxed LIF has the zero reset u * (1 - s) or none, got 'subtract'"
            )
        learn = lif.beta_logit is not None
        beta = float(torch.sigmoid(lif.beta_logit.detach().flatten()[0])) if learn else lif._beta
        relaxed = cls(
            eps=eps, tau0=min(beta, 1.0), threshold=lif.threshold, learn_eps=learn_eps,
            learn_tau0=learn, tau_param="sigmoid", reset=lif.reset == "zero", shape=lif.shape,
            backend=lif.backend, validate=lif.validate,
        )
        if learn:
            relaxed.tau0_raw = nn.Parameter(lif.beta_logit.detach().clone())
        return relaxed


class UltraPLIF(UltraLIF):
    """UltraPLIF: UltraLIF with a learnable tau0."""

    def __init__(self, *args, learn_tau0: bool = True, **kwargs) -> None:
        super().__init__(*args, learn_tau0=learn_tau0, **kwargs)


class UltraDLIF(_UltraNeuron):
    """UltraDLIF (Def. 4.2): neighbour coupling along the last neuron dim (``shape[-1] >= 3``).

    Extra args: ``leak_before_lse``, ``reset_pre_lse`` (see :func:`ultradlif_sequence`); the
    default tau0 is 1 (Def. 4.2 has no leak)."""

    _sequence = staticmethod(ultradlif_sequence)

    def __init__(self, *args, tau0: float = 1.0, leak_before_lse: bool = False,
                 reset_pre_lse: bool = False, **kwargs) -> None:
        super().__init__(*args, tau0=tau0, **kwargs)
        if self.shape is not None and (not self.shape or self.shape[-1] < 3):
            raise ValueError(
                f"shape: UltraDLIF couples neighbours along the last dim and needs it >= 3, "
                f"got shape {self.shape}"
            )
        self.leak_before_lse, self.reset_pre_lse = leak_before_lse, reset_pre_lse

    def _variant(self) -> dict:
        return {"leak_before_lse": self.leak_before_lse, "reset_pre_lse": self.reset_pre_lse}

    def neuron_cost(self) -> NeuronCost:
        """Per neuron and step, the 3-term LSE ``m + eps*log(sum exp((x_j - m)/eps))``: max of 3
        (2 compares), 2 non-trivial exps and a log, 3 differences and 2 sums, the scalings, the
        ``log tau0`` (or ``tau0 *``) and ``+ i``, the sigmoid spike and the reset. Hard: max of
        three, the adds, threshold test, reset select."""
        if self.hard:
            return NeuronCost(adds=2, compares=3 + self.reset)
        return NeuronCost(muls=4 + self.reset, adds=8 + self.reset, compares=2, transcendentals=4,
                          relaxed=True)


class UltraDPLIF(UltraDLIF):
    """UltraDPLIF: UltraDLIF with a learnable tau0 (init 0.9)."""

    def __init__(self, *args, tau0: float = 0.9, learn_tau0: bool = True, **kwargs) -> None:
        super().__init__(*args, tau0=tau0, learn_tau0=learn_tau0, **kwargs)


def relaxed_neurons(model: nn.Module) -> list[_UltraNeuron]:
    """The UltraLIF-family modules of ``model`` (relaxed LIF layers included)."""
    return [m for m in model.modules() if isinstance(m, _UltraNeuron)]


@contextlib.contextmanager
def tropical(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every UltraLIF-family neuron of ``model`` runs its tropical limit
    (``hard=True``: max-plus membrane, Heaviside spikes): the network as deployed."""
    neurons = relaxed_neurons(model)
    before = [n.hard for n in neurons]
    for n in neurons:
        n.hard = True
    try:
        yield model
    finally:
        for n, hard in zip(neurons, before):
            n.hard = hard
