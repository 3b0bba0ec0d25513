"""Look at what a trained network does on one test sample: ``spikegate plot RUN_DIR``.

:func:`record_sample` runs one sample ``x [T, *input_shape]`` through a model and keeps, for every
neuron layer (a module with ``neuron_cost()``, as the energy counter finds them), its output spikes;
for :class:`~spikegate.neurons.LIF` layers also the membrane ``u[t] = beta * v[t-1] + x[t]`` before
the threshold test. The LIF module returns only ``(spikes, v_last)``, so the membrane is recomputed
from the layer's recorded input current with :func:`~spikegate.neurons.lif_sequence` one step at a
time (the same arithmetic as the whole-sequence call, so the recomputed spikes must equal the
recorded ones; a mismatch warns). :func:`plot_sample` draws the input, a spike raster and membrane
traces of one layer, and the firing rate of every layer into one PNG (written atomically).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from spikegate.atomic import atomic_write
from spikegate.neurons import LIF, lif_sequence

__all__ = ["LayerTrace", "SampleRecording", "lif_membrane", "record_sample", "plot_sample", "plot_run",
           "main"]

USAGE = "usage: spikegate plot RUN_DIR [--sample N] [--layer NAME] [--out PATH]"

RASTER_NEURONS = 128  # neurons shown in the raster, evenly spaced over the layer
TRACE_NEURONS = 4  # membrane traces drawn: the layer's most active neurons
INPUT_FRAMES = 8  # time bins of a camera input shown as images


@dataclass
class LayerTrace:
    """One neuron layer on one sample: ``spikes [T, N]`` (N neurons, flattened in C order) and, for
    LIF layers, ``membrane [T, N]`` (``u[t]`` before the threshold test and reset) and its
    ``threshold``; ``None`` for other neuron kinds."""

    name: str
    kind: str
    shape: tuple[int, ...]
    spikes: np.ndarray
    membrane: Optional[np.ndarray] = None
    threshold: Optional[float] = None

    @property
    def rate(self) -> float:
        """Spikes per neuron and time step on this sample."""
        return float(self.spikes.mean()) if self.spikes.size else 0.0


@dataclass
class SampleRecording:
    """What :func:`record_sample` saw: ``input [T, *input_shape]``, ``logits [classes]``, the
    neuron ``layers`` in the order they ran, and the sample's ``label`` if given."""

    input: np.ndarray
    logits: np.ndarray
    layers: list[LayerTrace]
    label: Optional[int] = None

    @property
    def prediction(self) -> int:
        return int(self.logits.argmax())

    def layer(self, name: Optional[str]) -> LayerTrace:
        """The layer called ``name`` (``None``: the first one); a ValueError lists the names."""
        if not self.layers:
            raise ValueError("layer: the model has no neuron layers to show")
        if name is None:
            return self.layers[0]
        for trace in self.layers:
            if trace.name == name:
                return trace
        raise ValueError(f"layer: expected one of {[t.name for t in self.layers]}, got {name!r}")


def lif_membrane(neuron: LIF, x: torch.Tensor, v0: Optional[torch.Tensor] = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The membrane ``u [T, B, ...]`` before the threshold test, and the spikes ``[T, B, ...]``, of
    ``neuron`` on input current ``x [T, B, ...]`` from ``v0 [B, ...]`` (None: zeros).

    Steps :func:`lif_sequence` one time step at a time with the neuron's own settings: with
    ``reset="none"`` its ``v_last`` is ``u[t]``, and the step with the neuron's reset gives
    ``s[t]`` and ``v[t]`` for the next step."""
    options = dict(beta=neuron.beta, threshold=neuron.threshold, surrogate=neuron.surrogate,
                   backend=neuron.backend, validate=False)
    u, spikes = torch.empty_like(x), torch.empty_like(x)
    v = v0
    with torch.no_grad():
        for t in range(x.shape[0]):
            step = x[t:t + 1]
            _, u[t] = lif_sequence(step, v, reset="none", **options)
            s, v = lif_sequence(step, v, reset=neuron.reset, reset_amount=neuron.reset_amount,
                                **options)
            spikes[t] = s[0]
    return u, spikes


def _neuron_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if callable(getattr(m, "neuron_cost", None))]


def record_sample(model: nn.Module, x: torch.Tensor, label: Optional[int] = None) -> SampleRecording:
    """Run one sample ``x [T, *input_shape]`` (a batch of one) through ``model`` in eval mode and
    record every neuron layer (see :class:`LayerTrace`)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected one sample [T, *input_shape], got {got}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batch = x.unsqueeze(1).to(device)  # [T, 1, *input_shape]
    seen: dict[str, dict] = {}
    handles = []
    for name, module in _neuron_layers(model):
        def before(module, args, kwargs, name=name):
            v0 = args[1] if len(args) > 1 else kwargs.get("v0")
            if v0 is None and getattr(module, "stateful", False):
                v0 = module.v
            seen[name] = {"input": args[0].detach(), "v0": v0}

        def after(module, args, output, name=name):
            spikes = output[0] if isinstance(output, tuple) else output
            if isinstance(spikes, torch.Tensor) and spikes.dim() >= 2:  # [T, 1, ...]; else not drawable
                seen[name]["spikes"] = spikes.detach()

        handles += [module.register_forward_pre_hook(before, with_kwargs=True),
                    module.register_forward_hook(after)]
    model.eval()
    try:
        with torch.no_grad():
            logits = model(batch)
    finally:
        for handle in handles:
            handle.remove()
    modules = dict(model.named_modules())
    layers = [_trace(name, modules[name], seen[name]) for name in seen if "spikes" in seen[name]]
    return SampleRecording(input=x.detach().cpu().numpy(), logits=logits[0].float().cpu().numpy(),
                           layers=layers, label=label)


def _flat(t: torch.Tensor) -> np.ndarray:
    """``[T, 1, ...]`` (a batch of one) -> ``[T, N]`` float numpy."""
    return t[:, 0].reshape(t.shape[0], -1).float().cpu().numpy()


def _trace(name: str, module: nn.Module, seen: dict) -> LayerTrace:
    spikes = seen["spikes"]
    trace = LayerTrace(name=name, kind=type(module).__name__, shape=tuple(spikes.shape[2:]), spikes=_flat(spikes))
    if isinstance(module, LIF):
        u, again = lif_membrane(module, seen["input"], seen["v0"])
        if not torch.equal(again, spikes):
            warnings.warn(f"plot: the membrane of {name} recomputed step by step gives other spikes than "
                          "the layer produced; its traces are approximate", stacklevel=3)
        trace.membrane, trace.threshold = _flat(u), module.threshold
    return trace


# -- drawing ---------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_input(fig, spec, x: np.ndarray) -> None:
    """A camera input ``[T, P, H, W]`` as up to INPUT_FRAMES images (ON minus OFF events for two
    polarities); anything else as a time x feature image of its values."""
    T = x.shape[0]
    if x.ndim == 4:
        steps = np.unique(np.linspace(0, T - 1, min(T, INPUT_FRAMES)).round().astype(int))
        two = x.shape[1] == 2
        images = x[:, 1] - x[:, 0] if two else x.sum(1)
        limit = max(float(np.abs(images[steps]).max()), 1e-9)
        grid = spec.subgridspec(1, len(steps), wspace=0.05)
        axes = []
        for i, t in enumerate(steps):
            ax = fig.add_subplot(grid[0, i])
            axes.append(ax)
            shown = ax.imshow(images[t], cmap="coolwarm" if two else "gray_r",
                              vmin=-limit if two else 0, vmax=limit, interpolation="nearest")
            ax.set_title(f"input, t = {t}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        what = "ON minus OFF events per pixel" if two else "input per pixel (channels summed)"
        fig.colorbar(shown, ax=axes, fraction=0.02, pad=0.01).set_label(what, fontsize=8)
        return
    ax = fig.add_subplot(spec)
    flat = x.reshape(T, -1)
    shown = ax.imshow(flat.T, aspect="auto", origin="lower", cmap="gray_r", interpolation="nearest")
    ax.set(xlabel="time step", ylabel="input feature", title=f"input ({flat.shape[1]} features x {T} steps)")
    fig.colorbar(shown, ax=ax, pad=0.01).set_label("input value (events per bin)")


def _draw_raster(ax, trace: LayerTrace) -> None:
    T, N = trace.spikes.shape
    shown = np.unique(np.linspace(0, N - 1, min(N, RASTER_NEURONS)).round().astype(int))
    t, row = np.nonzero(trace.spikes[:, shown] >= 0.5)
    ax.scatter(t, shown[row], s=14, marker="|", color="black", linewidths=1.0)
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylim(-0.5, N - 0.5)
    which = f"all {N} neurons" if len(shown) == N else f"{len(shown)} of {N} neurons, evenly spaced"
    ax.set(xlabel="time step", ylabel="neuron (flattened index)")
    ax.set_title(f"{trace.name} spikes\n({which})", fontsize=10)


def _draw_membrane(ax, trace: LayerTrace) -> None:
    T = trace.spikes.shape[0]
    if trace.membrane is None:
        ax.text(0.5, 0.5, f"no membrane for a {trace.kind} layer", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    counts = trace.spikes.sum(0)
    chosen = np.argsort(-counts, kind="stable")[:TRACE_NEURONS]
    steps = np.arange(T)
    for i in chosen:
        line, = ax.plot(steps, trace.membrane[:, i], lw=1.2, label=f"neuron {i} ({int(counts[i])} spikes)")
        fired = trace.spikes[:, i] >= 0.5
        ax.plot(steps[fired], trace.membrane[fired, i], "o", ms=4, color=line.get_color())
    ax.axhline(trace.threshold, color="gray", ls="--", lw=1, label=f"threshold {trace.threshold:g}")
    ax.set_xlim(-0.5, T - 0.5)
    ax.set(xlabel="time step", ylabel="membrane u[t] before reset")
    ax.set_title(f"{trace.name} membrane\n({len(chosen)} most active neurons; dots: spikes)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _draw_rates(ax, recording: SampleRecording, chosen: str) -> None:
    names = [f"{t.name} ({t.kind}, {int(np.prod(t.shape))})" for t in recording.layers]
    rates = [t.rate for t in recording.layers]
    colors = ["tab:orange" if t.name == chosen else "tab:blue" for t in recording.layers]
    ax.barh(names, rates, color=colors)
    for i, rate in enumerate(rates):
        ax.text(rate, i, f" {rate:.3f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(max(rates) * 1.25, 0.05))
    ax.set(xlabel="firing rate (spikes per neuron per time step)", title="firing rate per layer (this sample)")
    ax.grid(axis="x", alpha=0.3)


def plot_sample(recording: SampleRecording, path: str | Path, layer: Optional[str] = None,
                title: str = "") -> Path:
    """One PNG at ``path``: the input, the spike raster and membrane traces of ``layer`` (None: the
    first neuron layer), and every layer's firing rate. Returns the path."""
    chosen = recording.layer(layer)
    plt = _pyplot()
    fig = plt.figure(figsize=(13, 9.5), layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=(1.0, 1.6, 0.3 + 0.2 * len(recording.layers)))
    _draw_input(fig, grid[0, :], recording.input)
    _draw_raster(fig.add_subplot(grid[1, 0]), chosen)
    _draw_membrane(fig.add_subplot(grid[1, 1]), chosen)
    _draw_rates(fig.add_subplot(grid[2, :]), recording, chosen.name)
    label = "" if recording.label is None else f"label {recording.label}, "
    fig.suptitle(f"{title}{label}predicted {recording.prediction}", fontsize=12)
    path = atomic_write(path, lambda file: fig.savefig(file, dpi=110, format="png"))
    plt.close(fig)
    return path


def plot_run(run_dir: str | Path, sample: int = 0, layer: Optional[str] = None,
             out: Optional[str | Path] = None, *, device: str = "auto") -> Path:
    """Rebuild the run in ``run_dir`` as ``spikegate evaluate`` does and plot test sample ``sample``
    into ``out`` (default ``RUN_DIR/sample_<N>.png``)."""
    from spikegate.train import load_run

    run_dir = Path(run_dir)
    _, data, model, _, _ = load_run(run_dir, device=device, command="plot")
    n = len(data.test)
    if isinstance(sample, bool) or not isinstance(sample, int) or not -n <= sample < n:
        raise ValueError(f"--sample: expected an index into the {n} test samples, got {sample!r}")
    x, y = data.test[sample]
    recording = record_sample(model, torch.as_tensor(x), label=int(y))
    recording.layer(layer)  # a bad name fails before drawing
    out = run_dir / f"sample_{sample}.png" if out is None else Path(out)
    return plot_sample(recording, out, layer, title=f"{run_dir.name}: test sample {sample}, ")


def _parse(args: Sequence[str]) -> dict:
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str):  # one line and exit status 2, like the other commands
            raise ValueError(message)

    parser = _Parser(prog="spikegate plot", add_help=False)
    parser.add_argument("run_dir")
    parser.add_argument("--sample", type=int, default=0)
    parser.add_argument("--layer", default=None)
    parser.add_argument("--out", default=None)
    return vars(parser.parse_args(list(args)))


def main(args: Sequence[str]) -> int:
    """The ``spikegate plot`` command: 0 on success, 2 on a usage or input error (one line)."""
    from spikegate.checkpoint import CheckpointError

    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    try:
        options = _parse(args)
        path = plot_run(options["run_dir"], options["sample"], options["layer"], options["out"])
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"spikegate plot: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
