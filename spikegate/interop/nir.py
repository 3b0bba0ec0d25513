"""Export spiking networks to NIR (the Neuromorphic Intermediate Representation) and import them back.

``to_nir(model, sample=None, dt=1e-3) -> nir.NIRGraph`` writes a ``SpikingMLP`` (Flatten -> (Linear
-> LIF) x n -> Linear) as the chain ``input -> [flatten] -> affine_0 -> lif_0 -> ... -> affine_n ->
output``; ``from_nir(graph, dt=1e-3) -> SpikingMLP`` reads such a chain back. Norse
(``norse.torch.from_nir``) and snnTorch read the same graphs.

Discretisation. NIR's LIF is the ODE ``tau * dv/dt = (v_leak - v) + r * I``, spiking when ``v``
crosses ``v_threshold`` and then set to ``v_reset``. One forward-Euler step of length ``dt`` gives
``v[t] = (1 - dt/tau) * v[t-1] + (dt/tau) * (v_leak + r * I[t])``. spikegate's LIF is
``u[t] = beta * v[t-1] + x[t]`` (zero reset), so the export writes, per neuron::

    tau = dt / (1 - beta)      r = tau / dt = 1 / (1 - beta)      v_leak = 0
    v_threshold = threshold     v_reset = 0

which makes ``(dt/tau) * r = 1``: the input enters undecayed, as in spikegate (snnTorch's export
uses the same mapping). ``dt`` is not stored in a NIR graph; the reader must step with the same
``dt`` (Norse's ``from_nir`` defaults to 1e-3, as here). The import inverts this: ``beta = 1 -
dt/tau`` and the factor ``(dt/tau) * r`` is folded into the preceding Affine's weights and bias, so
a graph with ``r = 1`` (Norse's own exports, where the input decays too) imports exactly as well.
Spikegate fires on ``u >= threshold``, Norse on ``v > v_th``: with continuous inputs they agree.

What maps: ``nn.Flatten``, ``nn.Linear`` (Affine) and ``spikegate.neurons.LIF`` with
``reset="zero"`` (a float or per-neuron learned ``beta``, a scalar threshold). Everything else
raises ``NIRMappingError`` naming the layer: other neuron types (NIR has no node for them), LIF
with ``reset="subtract"`` or ``"none"`` (NIR's LIF resets to ``v_reset``), and convolutional
models (their BatchNorm and MaxPool have no NIR node). The time average of the readout (the logits)
is spikegate's, outside the graph: the graph's output is the last Affine at every step.
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import nir
import numpy as np
import torch
from torch import nn

from spikegate.arguments import check_real
from spikegate.models import SpikingMLP, check_input
from spikegate.neurons.sequential import SpikesOnly
from spikegate.neurons import LIF

__all__ = ["NIRMappingError", "to_nir", "from_nir", "DEFAULT_DT"]

DEFAULT_DT = 1e-3  # seconds per step; Norse's from_nir default


class NIRMappingError(ValueError):
    """A layer or NIR node has no mapping between spikegate and NIR."""


def _array(value: torch.Tensor | float, shape: tuple[int, ...]) -> np.ndarray:
    tensor = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
    return np.broadcast_to(tensor.double().cpu().numpy(), shape).astype(np.float64).copy()


def _lif_node(neuron: nn.Module, name: str, width: int, dt: float) -> nir.LIF:
    if not isinstance(neuron, LIF):
        raise NIRMappingError(
            f"to_nir: layer {name} is a {type(neuron).__name__} neuron, which has no NIR mapping; "
            "only spikegate.neurons.LIF (reset='zero') maps, to nir.LIF"
        )
    if neuron.reset != "zero":
        raise NIRMappingError(
            f"to_nir: layer {name} is LIF with reset={neuron.reset!r}; NIR's LIF resets to "
            "v_reset, so only reset='zero' maps"
        )
    beta = _array(neuron.beta, (width,))
    if np.any(beta >= 1):
        raise NIRMappingError(f"to_nir: layer {name} has beta = 1 (no leak), which is NIR's IF, not LIF")
    tau = dt / (1 - beta)
    return nir.LIF(
        tau=tau, r=tau / dt, v_leak=np.zeros(width), v_threshold=np.full(width, neuron.threshold),
        v_reset=np.zeros(width),
    )


def to_nir(
    model: nn.Module, sample: Optional[torch.Tensor] = None, *, dt: float = DEFAULT_DT,
    unit_r: bool = False,
) -> nir.NIRGraph:
    """The NIR graph of ``model`` (a ``SpikingMLP`` with LIF neurons; see the module docstring).

    sample: optional time-major batch ``[T, B, *input_shape]``, checked against the model.
    dt: the step in seconds that the graph's time constants are written for.
    unit_r: write ``r = 1`` and scale the Affine before each LIF by ``1 / (1 - beta)`` instead (the
        same network), for readers that ignore ``r``, such as Norse 1.1.
    """
    dt = check_real(dt, "dt", strict=True)
    if not isinstance(model, SpikingMLP):
        raise NIRMappingError(
            f"to_nir: expected a SpikingMLP (Flatten -> Linear -> LIF ... -> Linear), got "
            f"{type(model).__name__}; convolutional models do not map (BatchNorm and MaxPool have "
            "no NIR node)"
        )
    if sample is not None:
        check_input(sample, model.input_shape)
    input_shape = np.array(model.input_shape)
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type={"input": input_shape})}
    chain = ["input"]
    if len(model.input_shape) > 1:  # NIR shapes leave out the batch: flatten every sample dim
        nodes["flatten"] = nir.Flatten(input_type={"input": input_shape}, start_dim=0, end_dim=-1)
        chain.append("flatten")
    layer = 0
    for index, module in enumerate(model.body):
        name = f"body.{index}"
        if isinstance(module, nn.Flatten):
            continue
        if isinstance(module, nn.Linear):
            bias = module.bias if module.bias is not None else torch.zeros(module.out_features)
            key = f"affine_{layer}"
            nodes[key] = nir.Affine(weight=_array(module.weight, tuple(module.weight.shape)),
                                    bias=_array(bias, (module.out_features,)))
        elif isinstance(module, SpikesOnly):
            key = f"lif_{layer}"
            affine = nodes[chain[-1]]
            nodes[key] = _lif_node(module.neuron, name, affine.weight.shape[0], dt)
            if unit_r:
                r = nodes[key].r
                nodes[chain[-1]] = nir.Affine(weight=affine.weight * r[:, None], bias=affine.bias * r)
                nodes[key].r = np.ones_like(r)
            layer += 1
        else:
            raise NIRMappingError(f"to_nir: layer {name} ({type(module).__name__}) has no NIR mapping")
        chain.append(key)
    width = nodes[chain[-1]].weight.shape[0]
    nodes["output"] = nir.Output(output_type={"output": np.array([width])})
    chain.append("output")
    return nir.NIRGraph(nodes=nodes, edges=list(zip(chain[:-1], chain[1:])))


def _chain(graph: nir.NIRGraph) -> list[str]:
    """The node names from the single input to the single output; refuses branches."""
    following = {}
    for source, target in graph.edges:
        if source in following:
            raise NIRMappingError(f"from_nir: node {source!r} feeds two nodes; only chains map")
        following[source] = target
    inputs = [k for k, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if len(inputs) != 1:
        raise NIRMappingError(f"from_nir: expected one Input node, got {len(inputs)}")
    chain = inputs
    while chain[-1] in following:
        chain.append(following[chain[-1]])
        if len(chain) > len(graph.nodes):
            raise NIRMappingError("from_nir: the graph has a cycle; recurrent graphs do not map")
    if not isinstance(graph.nodes[chain[-1]], nir.Output) or len(chain) != len(graph.nodes):
        raise NIRMappingError("from_nir: expected one chain from the Input to the Output node")
    return chain


def _uniform(values: np.ndarray, what: str, node: str) -> float:
    flat = np.asarray(values, dtype=np.float64).ravel()
    if not np.allclose(flat, flat[0], rtol=0, atol=0):
        raise NIRMappingError(f"from_nir: node {node!r} has per-neuron {what}; only a shared one maps")
    return float(flat[0])


def from_nir(graph: nir.NIRGraph, *, dt: float = DEFAULT_DT, backend: str = "auto") -> SpikingMLP:
    """A ``SpikingMLP`` computing ``graph`` (Input -> [Flatten] -> (Affine -> LIF) x n -> Affine ->
    Output) stepped with ``dt`` seconds; raises ``NIRMappingError`` for other graphs."""
    dt = check_real(dt, "dt", strict=True)
    chain = _chain(graph)
    nodes = [graph.nodes[k] for k in chain[1:-1]]
    names = chain[1:-1]
    if nodes and isinstance(nodes[0], nir.Flatten):
        nodes, names = nodes[1:], names[1:]
    affines, neurons = nodes[0::2], nodes[1::2]
    for name, node in zip(names, nodes):
        if not isinstance(node, (nir.Affine, nir.Linear, nir.LIF)):
            raise NIRMappingError(
                f"from_nir: node {name!r} is a {type(node).__name__}, which has no spikegate mapping; "
                "expected Affine/Linear and LIF alternating"
            )
    if not all(isinstance(n, (nir.Affine, nir.Linear)) for n in affines) or not all(
        isinstance(n, nir.LIF) for n in neurons
    ) or len(affines) != len(neurons) + 1:
        raise NIRMappingError("from_nir: expected Affine -> LIF pairs and a final Affine readout")
    input_shape = tuple(int(s) for s in np.asarray(graph.nodes[chain[0]].input_type["input"]).ravel())
    hidden = [int(np.asarray(a.weight).shape[0]) for a in affines[:-1]]
    model = SpikingMLP(input_shape, int(np.asarray(affines[-1].weight).shape[0]),
                       partial(LIF, backend=backend), hidden=hidden)
    linears = [m for m in model.body if isinstance(m, nn.Linear)]
    wrappers = [m for m in model.body if isinstance(m, SpikesOnly)]
    scales = [_import_lif(wrapper, node, name, dt, backend)
              for wrapper, node, name in zip(wrappers, neurons, names[1::2])]
    for linear, affine, scale in zip(linears, affines, [*scales, None]):
        weight = np.asarray(affine.weight, dtype=np.float64)
        bias = np.asarray(getattr(affine, "bias", np.zeros(weight.shape[0])), dtype=np.float64)
        if scale is not None:  # (dt/tau) * r folded into the synapses
            weight, bias = weight * scale[:, None], bias * scale
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight))
            linear.bias.copy_(torch.from_numpy(bias))
    return model


def _import_lif(wrapper: SpikesOnly, node: nir.LIF, name: str, dt: float, backend: str) -> np.ndarray:
    """Set ``wrapper``'s neuron from ``node``; returns the input scale ``(dt/tau) * r`` per neuron."""
    width = np.asarray(node.tau).size
    tau = np.broadcast_to(np.asarray(node.tau, np.float64), (width,))
    if np.any(np.asarray(node.v_leak) != 0):
        raise NIRMappingError(f"from_nir: node {name!r} has v_leak != 0; spikegate's LIF leaks to 0")
    if node.v_reset is not None and np.any(np.asarray(node.v_reset) != 0):
        raise NIRMappingError(f"from_nir: node {name!r} has v_reset != 0; spikegate's LIF resets to 0")
    if np.any(tau <= dt):
        raise NIRMappingError(f"from_nir: node {name!r} has tau <= dt = {dt}; the Euler step is unstable")
    threshold = _uniform(node.v_threshold, "thresholds", name)
    beta = 1 - dt / tau
    shared = np.all(beta == beta[0])
    neuron = LIF(beta=float(beta[0]) if shared else 0.5, threshold=threshold, reset="zero",
                 learn_beta=not shared, shape=(width,), backend=backend)
    if not shared:
        with torch.no_grad():
            neuron.beta_logit.copy_(torch.logit(torch.from_numpy(beta)))
    wrapper.neuron = neuron
    return (dt / tau) * np.broadcast_to(np.asarray(node.r, np.float64), (width,))
