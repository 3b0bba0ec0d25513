"""EnergyCounter: SynOps, MACs, pooling, BatchNorm folding and spike counts against hand counts
and a brute-force loop written here."""

import itertools

import pytest
import torch
from torch import nn

from spikegate.energy import EnergyCounter
from spikegate.models import PerStep
from spikegate.neurons import LIF, SpikesOnly


def counts_of(model, x, samples, time_steps=1):
    with torch.no_grad(), EnergyCounter(model) as counter:
        model(x)
        counter.add_samples(samples, time_steps=time_steps)
    return {c.name: c for c in counter.counts().layers}, counter


def test_linear_synops_count_each_spike_times_fan_out():
    layer = nn.Linear(4, 3)
    spikes = torch.tensor([[[1.0, 0.0, 1.0, 0.0]], [[0.0, 0.0, 0.0, 1.0]]])  # [T=2, B=1, 4]
    rows, _ = counts_of(layer, spikes, samples=1, time_steps=2)
    row = rows["(model)"]
    assert row.synops == 3 * 3                  # 3 input spikes, 3 targets each
    assert row.mac_ops == 0
    assert row.macs == 2 * 4 * 3                # what an ANN would do: T * in * out
    assert row.rate_in == 3 / 8
    assert row.weight_reads == 9 + 2 * 3        # one weight per SynOp, one bias per output


def test_event_counts_are_spike_driven_and_count_each_event():
    layer = nn.Linear(2, 5, bias=False)
    counts = torch.tensor([[[2.0, 0.0]], [[1.0, 3.0]]])  # event counts per bin: 6 events
    rows, _ = counts_of(layer, counts, samples=1, time_steps=2)
    assert rows["(model)"].synops == 6 * 5 and rows["(model)"].mac_ops == 0


def test_analog_input_counts_dense_macs():
    layer = nn.Linear(4, 3)
    rows, _ = counts_of(layer, torch.full((2, 5, 4), 0.5), samples=5, time_steps=2)
    row = rows["(model)"]
    assert row.mac_ops == 2 * 4 * 3                 # T * in * out per sample
    assert row.synops == 0 and row.rate_in is None


def brute_force_synops(x, out_channels, kernel, stride, padding, dilation, groups):
    """Every (output element, tap, input channel of its group) that reads an input spike: plain loops."""
    n, c_in, h, w = x.shape
    per_group_in, per_group_out = c_in // groups, out_channels // groups
    out_h = (h + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    out_w = (w + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    total = 0.0
    for b, o, i, j in itertools.product(range(n), range(out_channels), range(out_h), range(out_w)):
        g = o // per_group_out
        for c, ki, kj in itertools.product(range(per_group_in), range(kernel), range(kernel)):
            r, s = i * stride - padding + ki * dilation, j * stride - padding + kj * dilation
            if 0 <= r < h and 0 <= s < w:
                total += float(x[b, g * per_group_in + c, r, s])
    return total


@pytest.mark.parametrize("c_in,c_out,groups,stride,padding,dilation", [
    (2, 3, 1, 1, 1, 1),     # padded: border spikes reach fewer outputs
    (4, 4, 4, 1, 1, 1),     # depthwise
    (4, 6, 2, 2, 0, 1),     # grouped, strided
    (2, 2, 1, 1, 2, 2),     # dilated
])
def test_conv_synops_are_exact_at_the_borders(c_in, c_out, groups, stride, padding, dilation):
    torch.manual_seed(c_in + c_out)
    conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=padding, dilation=dilation, groups=groups)
    x = (torch.rand(2, c_in, 6, 5) < 0.4).float()
    rows, _ = counts_of(conv, x, samples=1)
    expected = brute_force_synops(x, c_out, 3, stride, padding, dilation, groups)
    assert rows["(model)"].synops == pytest.approx(expected)
    out = conv(x)
    assert rows["(model)"].macs == out.numel() * (c_in // groups) * 9


def test_conv_all_ones_input_misses_only_the_padding():
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    rows, _ = counts_of(conv, torch.ones(1, 1, 4, 4), samples=1)
    # per dim: output rows 0..3 see 2, 3, 3, 2 real rows -> 10; in 2-D 10 * 10 taps, 2 channels
    assert rows["(model)"].synops == 2 * 100
    assert rows["(model)"].macs == 2 * 16 * 9


def test_conv1d_and_circular_padding_count_wrapped_taps():
    conv = nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular", bias=False)
    x = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    rows, _ = counts_of(conv, x, samples=1)
    assert rows["(model)"].synops == 3   # wrapped: the spike reaches outputs 3, 0 and 1


def test_batchnorm_after_conv_is_folded_else_priced():
    folded = PerStep(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)))
    alone = nn.Sequential(nn.MaxPool2d(2), nn.BatchNorm2d(1)).eval()
    folded.eval()
    rows, _ = counts_of(folded, torch.ones(3, 1, 1, 4, 4), samples=1, time_steps=3)
    assert rows["layer.1"].mac_ops == 0 and rows["layer.1"].note == "folded into layer.0"
    rows, _ = counts_of(alone, torch.ones(1, 1, 4, 4), samples=1)
    assert rows["1"].mac_ops == 4 and rows["1"].params == 2   # 2x2 pooled elements, scale + shift
    assert rows["0"].pool_ops == 4 * 3                        # 4 outputs, 3 comparisons each


def test_spike_rate_from_lif_layers_and_hooks_removed():
    lif = LIF(beta=1.0, reset="subtract", backend="torch")
    x = torch.full((4, 1, 2), 0.5)                          # fires every 2nd step
    rows, counter = counts_of(lif, x, samples=1, time_steps=4)
    assert rows["(model)"].spikes == 4 and rows["(model)"].neuron_steps == 8
    lif(x)                                                  # hooks are gone after the block
    assert counter.counts().layers[0].neuron_steps == 8


def test_unknown_layers_are_listed_not_dropped():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.GRU(3, 3), nn.Flatten())
    with EnergyCounter(model) as counter:
        pass
    assert counter.counts().not_counted == [("1", "ReLU"), ("2", "GRU")]


def test_counting_reads_nothing_back_until_counts(monkeypatch):
    """Hooks must not synchronise with the device: any read-back inside the forward fails here."""
    lif = LIF(beta=0.5, backend="torch", validate=False)
    model = nn.Sequential(PerStep(nn.Conv2d(1, 2, 3, padding=1)), SpikesOnly(lif), nn.Flatten(2),
                          nn.Linear(32, 3))
    x = (torch.rand(3, 2, 1, 4, 4) < 0.5).float()
    counter = EnergyCounter(model)
    with torch.no_grad(), counter:
        with monkeypatch.context() as patch:
            for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
                patch.setattr(torch.Tensor, name, lambda *a, _n=name: pytest.fail(f"host read: {_n}"))
            model(x)
        counter.add_samples(2, time_steps=3)
    assert counter.counts().layers[0].synops > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_counting_on_cuda_never_synchronises():
    """On a GPU, CUDA's own sync check raises if any hook waits for the device."""
    lif = LIF(beta=0.5, backend="torch", validate=False)
    model = nn.Sequential(PerStep(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))),
                          SpikesOnly(lif), PerStep(nn.MaxPool2d(2)), nn.Flatten(2), nn.Linear(8, 3)).cuda().eval()
    x = (torch.rand(3, 2, 1, 4, 4, device="cuda") < 0.5).float()
    counter = EnergyCounter(model)
    with torch.no_grad(), counter:
        model(x)  # the first call builds the conv fan-out map; the second must not sync either
        torch.cuda.set_sync_debug_mode("error")
        try:
            model(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        counter.add_samples(4, time_steps=3)
    assert counter.counts().layers[0].synops > 0
