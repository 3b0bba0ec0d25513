"""estimate_energy against counts and energies worked out by hand on planted spike patterns."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spikegate.energy import estimate_energy
from spikegate.models import PerStep
from spikegate.neurons import LIF, SpikesOnly

# 45 nm fp32 figures typed from Horowitz (ISSCC 2014), independent of the presets module
ADD, MUL, SRAM_BIT = 0.9, 3.7, 20 / 64
T, B = 4, 2


def lif():
    return LIF(beta=0.5, threshold=1.0, reset="zero", backend="torch")


def planted_mlp():
    """Linear(3->5)-LIF-Linear(5->4)-LIF: layer 1 copies its input spikes (weight 1 each, so a
    step with spikes crosses the threshold, a step without stays at 0); layer 2 never fires."""
    first, second = nn.Linear(3, 5, bias=False), nn.Linear(5, 4, bias=False)
    nn.init.constant_(first.weight, 1.0)
    nn.init.constant_(second.weight, -1.0)
    return nn.Sequential(first, SpikesOnly(lif()), second, SpikesOnly(lif()))


def planted_input(rate):
    """[T, B, 3]: every input spikes on all steps (rate 1), none (0), or on even steps (0.5)."""
    x = torch.zeros(T, B, 3)
    if rate == 1:
        x[:] = 1
    elif rate == 0.5:
        x[0::2] = 1
    return x


@pytest.mark.parametrize("rate", [0.0, 1.0, 0.5])
def test_mlp_hand_counts(rate):
    report = estimate_energy(planted_mlp(), planted_input(rate))
    first, lif1, second, lif2 = report.layers
    assert [r.kind for r in report.layers] == ["Linear", "LIF", "Linear", "LIF"]
    assert first.rate_in == rate and second.rate_in == rate and lif1.rate_out == rate
    assert lif2.rate_out == 0
    assert first.macs == T * 3 * 5 and second.macs == T * 5 * 4
    assert first.synops == rate * T * 3 * 5          # events x fan-out
    assert second.synops == rate * T * 5 * 4
    # LIF with reset="zero": beta*v (1 mul), +x (1 add), threshold and reset select (2 compares)
    assert lif1.neuron_ops == 5 * T * 4 and lif2.neuron_ops == 4 * T * 4
    synops = rate * T * (15 + 20)
    neuron_steps = (5 + 4) * T
    compute = synops * ADD + neuron_steps * (MUL + ADD + 2 * ADD)
    memory_bits = synops * 32 + neuron_steps * 32 * 2  # weight per SynOp; membrane read + write
    assert report.synops == pytest.approx(synops)
    assert report.compute_pj == pytest.approx(compute)
    assert report.energy_pj == pytest.approx(compute + memory_bits * SRAM_BIT)
    assert report.spike_rate == pytest.approx(rate * 5 / 9)
    assert report.samples == B and report.time_steps == T


def test_never_spiking_model_reports_zero_synops_with_a_note():
    report = estimate_energy(planted_mlp(), planted_input(0.0))
    assert report.synops == 0 and report.spike_rate == 0 and report.bit_budget == 0
    assert any("no neuron spiked" in note for note in report.notes)
    assert "no neuron spiked" in str(report)


def test_conv_net_hand_counts():
    """Conv3x3(1->2, pad 1) -> BN (folded) -> LIF -> MaxPool2 -> Linear(8->3) on 4x4 frames."""
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    nn.init.constant_(conv.weight, 1.0)
    model = nn.Sequential(
        PerStep(nn.Sequential(conv, nn.BatchNorm2d(2))), SpikesOnly(lif()), PerStep(nn.MaxPool2d(2)),
        nn.Flatten(2), nn.Linear(8, 3),
    )
    x = torch.zeros(T, B, 1, 4, 4)
    x[0::2] = 1                                     # rate 0.5: every pixel on even steps
    report = estimate_energy(model, x)
    rows = {r.name: r for r in report.layers}
    conv_row, bn, neuron, pool, readout = (rows[n] for n in
                                           ("0.layer.0", "0.layer.1", "1.neuron", "2.layer", "4"))
    # an all-ones 4x4 frame: output rows see 2, 3, 3, 2 real rows -> 10 x 10 taps, 2 channels
    assert conv_row.synops == (T / 2) * 2 * 100
    assert conv_row.macs == T * 2 * 16 * 9 and conv_row.rate_in == 0.5
    assert bn.mac_ops == 0 and bn.note == "folded into 0.layer.0"
    # the conv output on an all-ones frame is >= 4 (>= threshold) everywhere; BN (eval, fresh
    # statistics) is the identity up to eps, so every neuron fires on even steps only
    assert neuron.rate_out == pytest.approx(0.5)
    assert pool.kind == "MaxPool2d" and pool.synops == 0
    assert report.layers[3].compute_pj == pytest.approx(T * 2 * 4 * 3 * ADD)  # 8 outputs, 3 compares
    assert readout.synops == (T / 2) * 8 * 3 and readout.rate_in == 0.5


def test_dataloader_average_is_the_sample_weighted_mean_of_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), SpikesOnly(lif()), nn.Linear(8, 2))
    xs = (torch.rand(7, T, 6) < 0.4).float() * 2           # batch-major samples, as datasets give
    loader = DataLoader(TensorDataset(xs, torch.zeros(7)), batch_size=3)  # batches of 3, 3, 1
    whole = estimate_energy(model, loader)
    parts = [(len(x), estimate_energy(model, x.transpose(0, 1))) for x, _ in loader]
    assert [n for n, _ in parts] == [3, 3, 1] and whole.samples == 7
    for key in ("energy_pj", "synops", "mac_ops", "bit_budget", "spike_rate"):
        mean = sum(n * getattr(r, key) for n, r in parts) / 7
        assert getattr(whole, key) == pytest.approx(mean), key
    hidden = [r.layers[2].rate_in for _, r in parts]
    assert whole.layers[2].rate_in == pytest.approx(sum(n * v for (n, _), v in zip(parts, hidden)) / 7)


def test_bit_budget_snn_against_ann_at_matched_levels():
    """Linear(2->4, analog input) -> LIF -> Linear(4->3), T = 3, int8 weights and activations.

    Two hidden neurons fire on every step, two never (rate 0.5). By hand, in bits:
      SNN dense : L1 8 MACs/step x 3 steps x 8 (w) x 8 (analog input)    = 1536
                  L2 12 MACs/step x 3 steps x 8 (w) x 1 (spike)           =  288   -> 1824
      SNN sparse: L1 as dense (analog input, every MAC done)              = 1536
                  L2 18 SynOps (6 spikes x 3 targets) x 8 x 1             =  144   -> 1680
      ANN       : T = 1, matched levels T + 1 = 4 = 2^2 -> 2-bit activations
                  L1 8 x 8 x 8 = 512;  L2 12 x 8 x 2 = 192                          ->  704
      storage   : params 2*4+4 + 4*3+3 = 27 -> 216; SNN adds 4 membranes x 8 = 32 -> 248
    """
    first, second = nn.Linear(2, 4), nn.Linear(4, 3)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[4.0, 4.0], [4.0, 4.0], [-4.0, -4.0], [-4.0, -4.0]]))
        first.bias.zero_()
    model = nn.Sequential(first, SpikesOnly(lif()), second)
    report = estimate_energy(model, torch.full((3, 1, 2), 0.5), preset="45nm-int8")
    assert report.layers[1].rate_out == 0.5
    assert report.bit_budget_dense == 1824
    assert report.bit_budget == 1680
    assert report.ann_activation_bits == 2
    assert report.ann_bit_budget == 704
    assert report.storage_bits == 248 and report.ann_storage_bits == 216


@pytest.mark.parametrize("steps,bits", [(1, 1), (3, 2), (4, 3), (15, 4), (16, 5)])
def test_matched_levels(steps, bits):
    report = estimate_energy(nn.Linear(2, 2), torch.zeros(steps, 1, 2))
    assert report.ann_activation_bits == bits and 2 ** bits >= steps + 1 > 2 ** (bits - 1)


def test_constants_override_the_preset():
    report = estimate_energy(nn.Linear(4, 3, bias=False), torch.ones(2, 1, 4), e_ac_pj=2.0,
                             e_sram_pj_per_bit=0.0)
    assert report.energy_pj == 2 * 4 * 3 * 2.0
    assert report.preset.sources["e_ac_pj"] == "user constant"


class SoftNeuron(nn.Module):
    """A relaxed neuron: soft spikes sigmoid(4 (x - 0.5)), one exp per step."""

    def neuron_cost(self):
        from spikegate.neurons import NeuronCost
        return NeuronCost(adds=1, transcendentals=1, relaxed=True)

    def forward(self, x):
        return torch.sigmoid(4 * (x - 0.5)), None


def test_relaxed_neurons_report_hard_and_soft_rates():
    model = nn.Sequential(SpikesOnly(SoftNeuron()), nn.Linear(2, 3, bias=False))
    x = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])         # soft outputs 0.88 / 0.12
    report = estimate_energy(model, x)
    neuron, layer = report.layers
    soft_hi, soft_lo = torch.sigmoid(torch.tensor(2.0)).item(), torch.sigmoid(torch.tensor(-2.0)).item()
    assert neuron.rate_out == 0.75 and layer.rate_in == 0.75     # hard: output >= 0.5
    assert neuron.rate_out_soft == pytest.approx((3 * soft_hi + soft_lo) / 4)
    assert layer.rate_in_soft == pytest.approx(neuron.rate_out_soft)
    assert layer.synops == 0 and layer.mac_ops == 2 * 2 * 3       # soft values: MACs, as run
    assert neuron.compute_pj == pytest.approx(4 * (ADD + 4 * (MUL + ADD)))
    assert "soft rate out" in str(report)


class GatedAttention(nn.Module):
    """A toy spike-gated attention: tokens whose first feature is 0 are inactive."""

    def forward(self, x):                   # x [T, B, L, D] spikes
        return x

    def attention_products(self, inputs, output):
        from spikegate.energy import AttentionProducts
        x = inputs[0]
        active = (x[..., 0] > 0).sum(-1).double()           # active tokens per map [T, B]
        return AttentionProducts(maps=x.shape[0] * x.shape[1], queries=x.shape[2], keys=x.shape[2],
                                 head_dim=x.shape[3], active_pairs=(active * active).sum(), spiking=True)


def test_attention_prices_only_active_token_pairs():
    x = torch.zeros(2, 1, 3, 4)
    x[0, 0, :2, 0] = 1                       # step 0: 2 active tokens, step 1: none
    report = estimate_energy(GatedAttention(), x)
    row = report.layers[0]
    assert row.synops == 2 * 4 * (2 * 2)     # QK^T and AV: head_dim ops per active pair
    assert row.macs == 2 * 4 * (2 * 3 * 3)


def test_errors_name_what_was_expected():
    model = planted_mlp()
    with pytest.raises(ValueError, match=r"preset: expected one of \['45nm-fp16', '45nm-fp32'"):
        estimate_energy(model, planted_input(1), preset="7nm")
    with pytest.raises(ValueError, match="e_ac_pj: expected an energy >= 0 pJ, got -0.1"):
        estimate_energy(model, planted_input(1), e_ac_pj=-0.1)
    with pytest.raises(ValueError, match="e_mac_pj: expected a number, got None"):
        estimate_energy(model, planted_input(1), e_mac_pj=None)
    with pytest.raises(ValueError, match="weight_bits: expected an int >= 1"):
        estimate_energy(model, planted_input(1), weight_bits=0)
    with pytest.raises(ValueError, match=r"energy constants: expected names among .*got \['e_foo'\]"):
        estimate_energy(model, planted_input(1), e_foo=1.0)
    with pytest.raises(ValueError, match=r"inputs: expected a time-major batch \[T, B, \.\.\.\].*got shape \(2, 3\)"):
        estimate_energy(model, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="inputs: expected finite values"):
        estimate_energy(model, torch.full((2, 1, 3), math.nan))


def test_batch_major_input_is_refused_for_a_model_with_an_input_shape():
    from functools import partial

    from spikegate.models import SpikingMLP
    model = SpikingMLP((5,), 2, partial(LIF, backend="torch"), hidden=(4,))
    with pytest.raises(ValueError, match=r"expected a time-major batch \[T, B, 5\].*got shape \(3, 4, 6\)"):
        estimate_energy(model, torch.zeros(3, 4, 6))
    with pytest.raises(ValueError, match="x.transpose"):
        estimate_energy(model, torch.zeros(3, 5, 4))
