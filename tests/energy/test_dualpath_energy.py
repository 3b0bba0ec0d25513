"""The energy estimator on the dual-path block and the spiking LM: hand counts with planted
activity (attention priced only over active (query, key) pairs, the decay scan per state value
and token, the encoder and feed-forward neurons), nothing with a cost left uncounted."""

import pytest
import torch

from spikegate.energy import EnergyCounter, estimate_energy
from spikegate.language_model import SpikingByteLM
from spikegate.neurons.dualpath_mixer import DualPathMixer


def counted(model, *inputs, samples, time_steps):
    with torch.no_grad(), EnergyCounter(model) as counter:
        model(*inputs)
        counter.add_samples(samples, time_steps=time_steps)
    counts = counter.counts()
    return {layer.name: layer for layer in counts.layers}, counts


def test_mixer_hand_counts_with_planted_activity():
    torch.manual_seed(0)
    D, H, T = 4, 2, 5
    mixer = DualPathMixer(D, H, window=2, anchors=1).double()
    s = torch.zeros(T, 1, D, dtype=torch.float64)
    s[0, 0, :2] = 1          # token 0: 2 spikes
    s[2, 0, 3] = 1           # token 2: 1 spike
    s[3, 0, :] = 1           # token 3: 4 spikes; tokens 1 and 4 are silent
    x = torch.randn(T, 1, D, dtype=torch.float64)
    layers, counts = counted(mixer, s, x, samples=1, time_steps=T)
    assert counts.not_counted == []

    # active queries 0, 2, 3; window 2 (i-1, i) plus anchor 0; only active keys:
    #   q0 -> {0}; q2 -> {2} + anchor {0}; q3 -> {2, 3} + anchor {0}: 6 pairs per head
    pairs = 6 * H
    head_dim = D // H
    attend = layers["attend"]
    assert attend.mac_ops == 2 * head_dim * pairs          # q.k and p.v per pair: 48
    assert attend.synops == 0
    assert attend.macs == 2 * H * T * T * head_dim         # dense: every query with every key

    # decay path: W_z is fed spikes, 7 events x 4 outputs; recurrence over T x D state values
    assert layers["decay_proj"].synops == 7 * D and layers["decay_proj"].mac_ops == 0
    assert layers["decay_proj"].rate_in == pytest.approx(7 / (T * D))
    decay = layers["decay"]
    assert decay.neuron_steps == T * D and decay.spikes == 0
    assert (decay.cost.muls, decay.cost.adds, decay.cost.state_values) == (2, 1, 1)
    assert layers["fusion"].neuron_steps == T * D

    # Q, K, V, W_o on the continuous stream: MACs; LayerNorm: 4 ops per element, gamma/beta reads
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        assert layers[name].mac_ops == T * D * D, name
    assert layers["norm"].mac_ops == 4 * T * D and layers["norm"].weight_reads == 2 * T * D


def test_an_all_silent_input_prices_no_attention_pair():
    mixer = DualPathMixer(4, 2, window=3, anchors=1).double()
    s = torch.zeros(6, 2, 4, dtype=torch.float64)
    layers, _ = counted(mixer, s, torch.randn(6, 2, 4, dtype=torch.float64), samples=2, time_steps=6)
    assert layers["attend"].mac_ops == 0 and layers["decay_proj"].synops == 0


def _visible_pairs(active, window, anchors):
    """Per-step loops over (batch, query, key): active query, active key, causal, window/anchor."""
    T, B = active.shape
    n = 0
    for b in range(B):
        for i in range(T):
            for j in range(i + 1):
                n += bool(active[i, b] and active[j, b] and (i - j < window or j < anchors))
    return n


def test_language_model_counts_every_layer():
    torch.manual_seed(3)
    V, D, H, hidden, T, B = 32, 16, 2, 24, 12, 3
    model = SpikingByteLM(vocab_size=V, width=D, heads=H, layers=1, hidden=hidden, context=T,
                          window=3, anchors=1).eval()
    tokens = torch.randint(0, V, (T, B))
    report = estimate_energy(model, tokens)
    assert report.not_counted == []
    rows = {r.name: r for r in report.layers}
    with torch.no_grad():
        spikes, _ = model.encoder(model.embedding_norm(model.embedding(tokens)))
    active = spikes.amax(-1) > 0
    assert 0 < float(active.float().mean()) < 1           # some tokens are silent
    per = 1 / B                                            # figures are per sequence
    assert rows["embedding"].memory_bits == pytest.approx(T * B * D * per * 32)   # fp32 weight reads
    assert rows["encoder"].neuron_steps == T * B * D * per
    assert rows["encoder"].spikes == pytest.approx(float(spikes.sum()) * per)
    assert rows["blocks.0.mixer.decay_proj"].synops == pytest.approx(float(spikes.sum()) * D * per)
    pairs = _visible_pairs(active, 3, 1) * H
    assert rows["blocks.0.mixer.attend"].mac_ops == pytest.approx(2 * (D // H) * pairs * per)
    assert rows["blocks.0.mixer.decay"].neuron_steps == T * B * D * per
    assert rows["blocks.0.mixer.decay"].rate_out is None   # no spikes: not in the spike rate
    assert rows["blocks.0.ffn.spike"].neuron_steps == T * B * hidden * per
    assert rows["blocks.0.spike"].neuron_steps == T * B * D * per
    assert rows["head"].mac_ops == T * B * D * V * per
    # the spike rate is over the spiking neurons only: encoder, hidden and block output
    spiking = [rows[n] for n in ("encoder", "blocks.0.ffn.spike", "blocks.0.spike")]
    want = sum(r.spikes for r in spiking) / sum(r.neuron_steps for r in spiking)
    assert report.spike_rate == pytest.approx(want)


def test_language_model_input_must_be_token_ids_time_major():
    model = SpikingByteLM(vocab_size=8, width=8, heads=2, layers=1, hidden=8, context=6, window=2)
    with pytest.raises(ValueError, match=r"inputs: expected a time-major batch \[T, B\] .*got shape \(4, 2, 3\)"):
        estimate_energy(model, torch.zeros(4, 2, 3, dtype=torch.int64))
