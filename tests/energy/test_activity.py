"""SynOps and spike counts against hand counts on tiny layers."""

import torch
from torch import nn

from spikegate.energy import E_AC_PJ, E_MAC_PJ, ActivityMonitor
from spikegate.neurons import LIF


def test_linear_synops_count_each_spike_times_fan_out():
    layer = nn.Linear(4, 3)
    spikes = torch.tensor([[[1.0, 0.0, 1.0, 0.0]], [[0.0, 0.0, 0.0, 1.0]]])  # [T=2, B=1, 4]
    with ActivityMonitor(layer) as monitor:
        layer(spikes)
        monitor.add_samples(1)
    report = monitor.totals.per_inference()
    assert report["synops_per_inference"] == 3 * 3        # 3 input spikes, 3 targets each
    assert report["dense_macs_per_inference"] == 0
    assert report["energy_pj_per_inference"] == 9 * E_AC_PJ


def test_analog_input_counts_dense_macs():
    layer = nn.Linear(4, 3)
    with ActivityMonitor(layer) as monitor:
        layer(torch.full((2, 5, 4), 0.5))
        monitor.add_samples(5)
    report = monitor.totals.per_inference()
    assert report["dense_macs_per_inference"] == 2 * 4 * 3  # T * in * out per sample
    assert report["energy_pj_per_inference"] == 24 * E_MAC_PJ


def test_conv_synops_scale_with_input_rate():
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, :2] = 1.0                                       # half the pixels spike
    with ActivityMonitor(conv) as monitor:
        conv(x)
    macs = 2 * 4 * 4 * 9                                    # outputs * kernel
    assert monitor.totals.synops == macs * 0.5


def test_spike_rate_from_lif_layers():
    lif = LIF(beta=1.0, reset="subtract", backend="torch")
    x = torch.full((4, 1, 2), 0.5)                          # fires every 2nd step
    with ActivityMonitor(lif) as monitor:
        lif(x)
    assert monitor.totals.spike_rate == 0.5
    # hooks are gone after the block
    lif(x)
    assert monitor.totals.neuron_steps == 8
