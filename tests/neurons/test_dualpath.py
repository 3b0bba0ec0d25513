"""The dual-path mixer (SymbolicLight V1) against independent references written here: the spike
encoder's equations as a per-step loop, the attention mask as nested loops, attention as an
explicit per-query softmax, and incremental decoding against the parallel forward."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from spikegate.neurons.cost import NeuronCost
from spikegate.neurons.dualpath import (
    Cauchy,
    SpikeEncoder,
    SpikingFeedForward,
    spike_encoder_sequence,
)
from spikegate.neurons.dualpath_mixer import DualPathBlock, DualPathMixer
from spikegate.neurons.spike_attention import (
    attended_pairs,
    flex_mask_mod,
    rope,
    spike_gated_attention,
    window_anchor_mask,
)

# --------------------------------------------------------------------------------------------- #
# Spike encoder
# --------------------------------------------------------------------------------------------- #


class LoopSpike(torch.autograd.Function):
    """H(d) forward, 1 / (1 + (2 d)^2) backward, written independently of spikegate."""

    @staticmethod
    def forward(ctx, d):
        ctx.save_for_backward(d)
        return (d >= 0).to(d.dtype)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        return g / (1 + (2 * d) ** 2)


def encoder_loop(x, v0=None, leak=0.95, threshold=1.0, bound=3.0, detach=True):
    v = torch.zeros_like(x[0]) if v0 is None else v0
    spikes = []
    for x_t in x:
        prev = v.detach() if detach else v
        u = torch.clamp(leak * prev + x_t, -bound, bound)
        s = LoopSpike.apply(u - threshold)
        v = u * (1 - s)
        spikes.append(s)
    return torch.stack(spikes), v


def encoder_input(T=20, B=3, D=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(T, B, D, generator=g, dtype=dtype) * 1.5 + 0.3).requires_grad_()


@pytest.mark.parametrize("bptt", [False, True])
def test_encoder_matches_equations(bptt):
    x = encoder_input()
    v0 = torch.randn(3, 8, dtype=torch.float64)
    want_s, want_v = encoder_loop(x, v0, detach=not bptt)
    got_s, got_v = spike_encoder_sequence(x, v0, bptt=bptt)
    assert 0 < float(want_s.detach().mean()) < 0.5, "trivial case"
    assert torch.equal(got_s, want_s)
    torch.testing.assert_close(got_v, want_v.detach() if not bptt else want_v)
    g = torch.randn_like(want_s)
    (want_gx,) = torch.autograd.grad(want_s, x, g)
    (got_gx,) = torch.autograd.grad(got_s, x, g)
    torch.testing.assert_close(got_gx, want_gx)


def test_encoder_clamps_and_resets():
    x = torch.tensor([5.0, -9.0, 0.5, 0.5, 0.2])[:, None, None]
    s, v = spike_encoder_sequence(x)
    # 5 -> clamp 3 -> spike, reset 0; -9 -> -3; 0.95*-3+0.5 = -2.35; -1.7325; -1.445875
    assert s.flatten().tolist() == [1, 0, 0, 0, 0]
    torch.testing.assert_close(v.flatten(), torch.tensor([0.95 * (0.95 * -2.35 + 0.5) + 0.2]))


def test_encoder_state_carries_across_chunks():
    x = encoder_input().detach()
    whole, v_whole = spike_encoder_sequence(x)
    first, v = spike_encoder_sequence(x[:7])
    second, v_last = spike_encoder_sequence(x[7:], v)
    assert torch.equal(torch.cat([first, second]), whole)
    assert torch.equal(v_last, v_whole)


def test_encoder_module_and_cost():
    enc = SpikeEncoder(leak=0.9, threshold=0.5)
    x = encoder_input(dtype=torch.float32).detach()
    assert torch.equal(enc(x)[0], encoder_loop(x, leak=0.9, threshold=0.5)[0])
    assert enc.neuron_cost() == NeuronCost(muls=1, adds=1, compares=4)
    with pytest.raises(ValueError, match="leak: expected a value in"):
        spike_encoder_sequence(x, leak=1.5)


def test_cauchy_surrogate_formula():
    d = torch.linspace(-2, 2, 9)
    torch.testing.assert_close(Cauchy().grad(d), 1 / (1 + 4 * d**2))


# --------------------------------------------------------------------------------------------- #
# Mask and attention
# --------------------------------------------------------------------------------------------- #


def mask_loops(q_pos, k_pos, active, window, anchors):
    B = active.shape[0]
    out = torch.zeros(B, len(q_pos), len(k_pos), dtype=torch.bool)
    for b in range(B):
        for a, i in enumerate(q_pos.tolist()):
            for c, j in enumerate(k_pos.tolist()):
                visible = j <= i and (i - j < window or j < anchors)
                out[b, a, c] = visible and bool(active[b, c])
    return out


@pytest.mark.parametrize("window, anchors", [(1, 0), (3, 2), (4, 0), (50, 4), (2, 9)])
def test_mask_semantics(window, anchors):
    g = torch.Generator().manual_seed(window * 10 + anchors)
    active = torch.rand(2, 12, generator=g) < 0.6
    pos = torch.arange(12)
    got = window_anchor_mask(pos, pos, active, window=window, anchors=anchors)
    assert torch.equal(got, mask_loops(pos, pos, active, window, anchors))
    # a cached decoding step: one query at position 11 against a subset of keys
    keys = torch.tensor([0, 1, 8, 9, 10, 11])
    got = window_anchor_mask(pos[-1:], keys, active[:, keys], window=window, anchors=anchors)
    assert torch.equal(got, mask_loops(pos[-1:], keys, active[:, keys], window, anchors))
    assert int(attended_pairs(active, active, window=window, anchors=anchors)) == int(
        (mask_loops(pos, pos, active, window, anchors) & active[:, :, None]).sum()
    )


def test_mask_window_one_is_self_only():
    active = torch.ones(1, 5, dtype=torch.bool)
    pos = torch.arange(5)
    assert torch.equal(window_anchor_mask(pos, pos, active, window=1, anchors=0)[0], torch.eye(5, dtype=torch.bool))


def attention_loops(q, k, v, mask, query_active):
    """Per batch, head and query: softmax over visible keys, 0 without any, times activity."""
    B, H, Tq, Dh = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                keys = mask[b, i].nonzero().flatten().tolist()
                if not keys or not query_active[b, i]:
                    continue
                scores = torch.stack([q[b, h, i] @ k[b, h, j] / math.sqrt(Dh) for j in keys])
                weights = torch.softmax(scores, 0)
                out[b, h, i] = sum(w * v[b, h, j] for w, j in zip(weights, keys))
    return out


def test_sdpa_path_matches_explicit_attention():
    g = torch.Generator().manual_seed(3)
    B, H, T, Dh = 2, 2, 10, 4
    q, k, v = (torch.randn(B, H, T, Dh, generator=g, dtype=torch.float64) for _ in range(3))
    active = torch.rand(B, T, generator=g) < 0.5
    active[0, 0] = False                              # query 0 of row 0 has no key at all
    pos = torch.arange(T)
    mask = window_anchor_mask(pos, pos, active, window=3, anchors=2)
    # an active query with a visible key set; an inactive query gives 0 even with keys
    query_active = active.clone()
    got = spike_gated_attention(q, k, v, pos, pos, active, query_active, window=3, anchors=2, backend="sdpa")
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, attention_loops(q, k, v, mask, query_active))
    # all-active queries: rows without visible keys (row 0, query 0) still give 0
    everyone = torch.ones_like(active)
    got = spike_gated_attention(q, k, v, pos, pos, active, everyone, window=3, anchors=2, backend="sdpa")
    assert not mask[0, 0].any() and torch.equal(got[0, :, 0], torch.zeros(H, Dh, dtype=torch.float64))
    torch.testing.assert_close(got, attention_loops(q, k, v, mask, everyone))


def test_flex_mask_mod_matches_sdpa_in_eager_flex_attention():
    """The CUDA path's block mask, run through flex_attention's eager (uncompiled) CPU path."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    g = torch.Generator().manual_seed(6)
    B, H, T, Dh = 2, 2, 40, 16
    q, k, v = (torch.randn(B, H, T, Dh, generator=g) for _ in range(3))
    active = torch.rand(B, T, generator=g) < 0.4
    active[0, :3] = False                            # row 0, queries 0-2: no visible key
    pos = torch.arange(T)
    kw = dict(window=5, anchors=2)
    block_mask = flex.create_block_mask(flex_mask_mod(pos, pos, active, **kw), B, None, T, T, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # "flex_attention called without torch.compile"
        got = flex.flex_attention(q, k, v, block_mask=block_mask)
    everyone = torch.ones_like(active)
    want = spike_gated_attention(q, k, v, pos, pos, active, everyone, backend="sdpa", **kw)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(got[0, :, :3], torch.zeros(H, 3, Dh))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex_attention needs CUDA; SDPA is the oracle")
def test_flex_matches_sdpa_on_cuda():
    g = torch.Generator().manual_seed(4)
    B, H, T, Dh = 2, 2, 300, 16
    q, k, v = (torch.randn(B, H, T, Dh, generator=g).cuda() for _ in range(3))
    active = (torch.rand(B, T, generator=g) < 0.3).cuda()
    pos = torch.arange(T, device="cuda")
    kw = dict(window=64, anchors=4)
    flex = spike_gated_attention(q, k, v, pos, pos, active, active, backend="flex", **kw)
    sdpa = spike_gated_attention(q, k, v, pos, pos, active, active, backend="sdpa", **kw)
    torch.testing.assert_close(flex, sdpa, rtol=1e-4, atol=1e-4)


def test_rope_scores_depend_on_relative_position():
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(2, 8, generator=g, dtype=torch.float64)
    def score(i, j):
        return rope(q[None], torch.tensor([i])) @ rope(k[None], torch.tensor([j])).T
    # angles are formed in float32, so agreement is to float32 rounding of position * frequency
    torch.testing.assert_close(score(7, 3), score(104, 100), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rope(q[None], torch.tensor([0])), q[None])


# --------------------------------------------------------------------------------------------- #
# Mixer, feed-forward, block
# --------------------------------------------------------------------------------------------- #


def block_inputs(T=13, B=3, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    s = (torch.rand(T, B, D, generator=g) < 0.08).double()
    s[3, 1] = 0
    s[T - 2, 0] = 0
    return s, x


@pytest.mark.parametrize("paths", ["both", "decay", "attention"])
@pytest.mark.parametrize("window, anchors", [(3, 2), (1, 0), (40, 4)])
def test_incremental_decoding_equals_parallel_forward(paths, window, anchors):
    torch.manual_seed(0)
    block = DualPathBlock(16, 2, 24, window=window, anchors=anchors, paths=paths).double()
    s, x = block_inputs()
    want_s, want_x, _ = block(s, x)
    state, outs = None, []
    for t in range(s.shape[0]):
        spikes, y, state = block(s[t:t + 1], x[t:t + 1], state, keep_state=True)
        outs.append((spikes, y))
    torch.testing.assert_close(torch.cat([y for _, y in outs]), want_x, rtol=1e-12, atol=1e-12)
    assert torch.equal(torch.cat([sp for sp, _ in outs]), want_s)
    if paths != "decay":   # cache bounded by the window and the anchors
        assert state.keys.shape[2] <= window - 1 + anchors
    state, ys = None, []
    for a, b in ((0, 5), (5, 6), (6, 13)):          # prefill then chunks
        _, y, state = block(s[a:b], x[a:b], state, keep_state=True)
        ys.append(y)
    torch.testing.assert_close(torch.cat(ys), want_x, rtol=1e-12, atol=1e-12)


def test_mixer_equations_with_a_single_path():
    """decay-only: LayerNorm(x + W_o h) with the per-step decay written out here."""
    torch.manual_seed(1)
    mixer = DualPathMixer(8, 2, paths="decay").double()
    s, x = block_inputs(T=6, B=2, D=8)
    lam = torch.sigmoid(mixer.decay_logit)
    z = mixer.decay_proj(s).view(6, 2, 2, 4)
    h, hs = torch.zeros(2, 2, 4, dtype=torch.float64), []
    for t in range(6):
        h = lam[:, None] * h + (1 - lam[:, None]) * z[t]
        hs.append(h.reshape(2, 8))
    want = mixer.norm(x + mixer.out_proj(torch.stack(hs)))
    torch.testing.assert_close(mixer(s, x)[0], want)


def test_gate_and_decay_receive_gradients():
    torch.manual_seed(2)
    mixer = DualPathMixer(16, 2, window=4, anchors=1)
    s, x = block_inputs(D=16)
    y, _ = mixer(s.float(), x.float())
    y.square().sum().backward()
    for p in (mixer.gate_logit, mixer.decay_logit, mixer.q_proj.weight, mixer.decay_proj.weight):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    assert torch.sigmoid(mixer.decay_logit).sub(torch.sigmoid(torch.tensor(3.0))).abs().max() < 1e-6
    assert float(mixer.gate_logit.detach()) == 0.0


def test_spikes_pass_gradients_between_blocks():
    torch.manual_seed(3)
    blocks = [DualPathBlock(16, 2, 32, window=4, anchors=1) for _ in range(2)]
    s, x = block_inputs(D=16)
    x = x.float().requires_grad_()
    s1, x1, _ = blocks[0](s.float(), x)
    s1.retain_grad()
    s2, x2, _ = blocks[1](s1, x1)
    s2.sum().backward()              # through the output neurons' surrogate only
    assert s1.requires_grad and float(s1.grad.abs().sum()) > 0
    for p in (blocks[0].mixer.decay_proj.weight, blocks[1].mixer.decay_proj.weight, x):
        assert float(p.grad.abs().sum()) > 0


def test_feed_forward_equation_and_cost():
    torch.manual_seed(4)
    ffn = SpikingFeedForward(8, 20, threshold=0.2).double()
    x = torch.randn(5, 2, 8, dtype=torch.float64)
    y, hidden = ffn(x)
    want_hidden = (ffn.up(x) >= 0.2).double()
    assert torch.equal(hidden, want_hidden) and 0 < float(hidden.detach().mean()) < 1
    torch.testing.assert_close(y, ffn.norm(x + ffn.down(want_hidden)))
    assert ffn.spike.neuron_cost() == NeuronCost(compares=1, state_values=0)


def test_activity_and_energy_declarations():
    mixer = DualPathMixer(16, 2, window=3, anchors=2).double()
    s, x = block_inputs(D=16)
    mixer(s, x)
    active = s.amax(-1) > 0
    assert int(mixer.activity.tokens) == active.numel()
    assert int(mixer.activity.active_tokens) == int(active.sum())
    pos = torch.arange(s.shape[0])
    mask = mask_loops(pos, pos, active.t(), 3, 2)
    assert int(mixer.activity.attended_pairs) == int((mask & active.t()[:, :, None]).sum())
    # per state value: lambda h and (1 - lambda) z, their sum; no spikes (hand counts in
    # tests/energy/test_dualpath_energy.py)
    assert mixer.decay.neuron_cost() == NeuronCost(muls=2, adds=1, state_values=1, spiking=False)
    assert mixer.fusion.neuron_cost() == NeuronCost(muls=2, adds=1, state_values=0, spiking=False)


def test_mixer_errors_name_the_argument():
    with pytest.raises(ValueError, match="window: expected an int >= 1, got 0"):
        DualPathMixer(16, 2, window=0)
    with pytest.raises(ValueError, match="width: expected a multiple of heads=3, got 16"):
        DualPathMixer(16, 3)
    with pytest.raises(ValueError, match="heads: width / heads must be even"):
        DualPathMixer(6, 2)
    with pytest.raises(ValueError, match="paths: expected one of"):
        DualPathMixer(16, 2, paths="none")
    mixer = DualPathMixer(16, 2)
    with pytest.raises(ValueError, match=r"s, x: expected two tensors \[T, B, 16\]"):
        mixer(torch.zeros(3, 2, 8), torch.zeros(3, 2, 8))


def test_topk_encoder_keeps_the_k_largest_channels_with_a_straight_through_gradient():
    from spikegate.neurons.dualpath import TopKEncoder

    x = torch.tensor([[[0.3, -1.0, 2.0, 0.1, 0.7]], [[-0.5, -0.2, -0.9, -0.1, -3.0]]],
                     dtype=torch.float64, requires_grad=True)                     # [T=2, B=1, 5]
    s, state = TopKEncoder(2)(x)
    want = torch.tensor([[[0.0, 0, 1, 0, 1]], [[0.0, 1, 0, 1, 0]]], dtype=torch.float64)
    assert torch.equal(s.detach(), want) and torch.equal(state, torch.zeros(1, 5, dtype=torch.float64))
    weights = torch.randn(2, 1, 5, dtype=torch.float64)
    (s * weights).sum().backward()
    assert torch.equal(x.grad, weights)                                # ds/dx = 1 everywhere
    with pytest.raises(ValueError, match="topk: expected at most the width 5, got 6"):
        TopKEncoder(6)(x)
