"""Agreement with SpikingJelly 2.0's operation counter on the same models.

SpikingJelly counts at the aten level (``DispatchCounterMode``): a matmul or convolution whose input
is binary counts one SynOp per weight a spike uses (exact at padded borders), any other input counts
every MAC. Its simple energy prices them at AC 0.9 pJ and MAC 4.6 pJ (Horowitz, 45 nm), as our
45nm-fp32 preset does. Intended differences, kept out of the comparison:

* BatchNorm right after a conv: SpikingJelly counts one MAC per element; we fold it into the conv
  (free at inference), so its modules are ignored on SpikingJelly's side.
* Event counts (non-negative integers above 1): SpikingJelly prices them as dense MACs, we as one
  SynOp per event; the inputs here are binary, where the two rules coincide.
* Neuron updates and memory traffic are priced separately in our report (and differently in
  SpikingJelly's memory model), so only the synaptic compute energy is compared.
"""

from functools import partial

import pytest
import torch
from torch import nn

from spikegate.energy import estimate_energy
from spikegate.models import SpikingConvNet, SpikingMLP
from spikegate.neurons import LIF

op_counter = pytest.importorskip("spikingjelly.activation_based.op_counter")

E_MAC, E_AC = 4.6, 0.9


def spikingjelly_counts(model, x):
    synops, macs = op_counter.SynOpCounter(), op_counter.MACCounter(extra_ignore_modules=[nn.BatchNorm2d])
    model.eval()
    with torch.no_grad(), op_counter.DispatchCounterMode([synops, macs], strict=False):
        model(x)
    return synops.get_total(), macs.get_total()


@pytest.mark.parametrize("build,x", [
    (lambda n: SpikingConvNet((2, 8, 8), 5, n, channels=(4, 6)), (torch.rand(3, 2, 2, 8, 8) < 0.3).float()),
    (lambda n: SpikingMLP((2, 6), 5, n, hidden=(16, 8)), torch.rand(3, 2, 2, 6)),       # analog input
])
def test_synops_macs_and_compute_energy_match_spikingjelly(build, x):
    torch.manual_seed(0)
    model = build(partial(LIF, beta=0.8, threshold=0.3, backend="torch"))
    sj_synops, sj_macs = spikingjelly_counts(model, x)
    report = estimate_energy(model, x)
    batch = x.shape[1]
    assert sj_synops > 0
    assert report.synops * batch == pytest.approx(sj_synops)
    assert report.mac_ops * batch == pytest.approx(sj_macs)
    synaptic_pj = sum(r.compute_pj for r in report.layers if r.kind in ("Linear", "Conv2d"))
    assert synaptic_pj * batch == pytest.approx(E_MAC * sj_macs + E_AC * sj_synops)
