"""TESS against independent references: the paper's equations written out in closed form, autograd
of the local loss at T = 1, the analytic gradient of the learning signal, and a saved-tensor probe
for the memory claim."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikegate.learning import TESS, SurrogateGradient
from spikegate.learning.tess import (
    TraceFactors,
    fast_learning_signal,
    learning_signal,
    secondary_activation,
    square_wave_projection,
    tess_conv2d_grad,
    tess_linear_grad,
)
from spikegate.models import PerStep, SpikingConvNet, SpikingMLP, SpikingVGG
from spikegate.neurons import LIF, SpikesOnly
from spikegate.neurons.surrogate import Triangle

TH = 0.6
NEURON = functools.partial(LIF, beta=0.5, threshold=TH, reset="subtract", backend="torch")
FACTORS = [
    dict(lambda_pre=0.5, lambda_post=0.2, alpha_pre=1.0, alpha_post=1.0),
    dict(lambda_pre=0.5, lambda_post=0.2, alpha_pre=1.0, alpha_post=0.0),
    dict(lambda_pre=0.0, lambda_post=0.7, alpha_pre=0.5, alpha_post=-0.3),
]


def psi_ref(u):
    return 0.3 * torch.clamp(1 - (u - TH).abs(), min=0)


def closed_form_traces(pre, u, lambda_pre, lambda_post):
    """q[t] = sum_{k<=t} lambda_pre^(t-k) pre[k];  h_prev[t] = sum_{k<t} lambda_post^(t-1-k) psi[k]."""
    T = pre.shape[0]
    psi = psi_ref(u)
    q = torch.stack([sum(lambda_pre ** (t - k) * pre[k] for k in range(t + 1)) for t in range(T)])
    h_prev = torch.stack(
        [sum((lambda_post ** (t - 1 - k) * psi[k] for k in range(t)), torch.zeros_like(psi[0])) for t in range(T)]
    )
    return q, psi, h_prev


def random_sequence(T, B, n_in, n_out, dtype=torch.float64):
    pre = (torch.rand(T, B, *n_in, dtype=dtype) < 0.4).to(dtype)
    u = TH + 1.5 * torch.randn(T, B, *n_out, dtype=dtype)  # many inside psi's support, some outside
    m = torch.randn(T, B, *n_out, dtype=dtype)
    return pre, u, m


@pytest.mark.parametrize("factors", FACTORS)
def test_linear_grad_matches_the_equations_in_closed_form(factors):
    torch.manual_seed(0)
    pre, u, m = random_sequence(5, 3, (7,), (4,))
    q, psi, h_prev = closed_form_traces(pre, u, factors["lambda_pre"], factors["lambda_post"])
    expected = torch.zeros(4, 7, dtype=torch.float64)
    for t in range(5):
        for b in range(3):
            expected += factors["alpha_pre"] * torch.outer(m[t, b] * psi[t, b], q[t, b])
            expected += factors["alpha_post"] * torch.outer(m[t, b] * h_prev[t, b], pre[t, b])
    got = tess_linear_grad(pre, u, m, threshold=TH, **factors)
    torch.testing.assert_close(got, expected)


def conv_weight_grad_ref(x, g, k, stride, padding):
    """dW[o, c, i, j] = sum_{b, y, x} g[b, o, y, x] * x_pad[b, c, y*stride + i, x*stride + j]."""
    xp = F.pad(x, (padding,) * 4)
    Ho, Wo = g.shape[-2:]
    out = torch.zeros(g.shape[1], x.shape[1], k, k, dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            window = xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
            out[:, :, i, j] = torch.einsum("boyx,bcyx->oc", g, window)
    return out


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0)])
@pytest.mark.parametrize("factors", FACTORS[:2])
def test_conv2d_grad_matches_the_equations_in_closed_form(factors, stride, padding):
    torch.manual_seed(1)
    H = 6
    Ho = (H + 2 * padding - 3) // stride + 1
    pre, u, m = random_sequence(4, 2, (3, H, H), (5, Ho, Ho))
    q, psi, h_prev = closed_form_traces(pre, u, factors["lambda_pre"], factors["lambda_post"])
    expected = sum(
        factors["alpha_pre"] * conv_weight_grad_ref(q[t], m[t] * psi[t], 3, stride, padding)
        + factors["alpha_post"] * conv_weight_grad_ref(pre[t], m[t] * h_prev[t], 3, stride, padding)
        for t in range(4)
    )
    got = tess_conv2d_grad(pre, u, m, (5, 3, 3, 3), stride=stride, padding=padding, threshold=TH, **factors)
    torch.testing.assert_close(got, expected)


def test_square_wave_projection_is_the_papers_matrix():
    B = square_wave_projection(3, 5)
    freqs = [50.0, 281.0, 512.0]
    expected = torch.tensor([[math.copysign(1.0, math.sin(f * d)) if math.sin(f * d) != 0 else 0.0
                              for d in range(5)] for f in freqs]) / 5
    torch.testing.assert_close(B, expected)


def test_learning_signal_matches_the_analytic_gradient_through_pool_and_projection():
    torch.manual_seed(2)
    Bsz, C, H, classes, p = 3, 2, 8, 4, 2
    spikes = (torch.rand(Bsz, C, H, H) < 0.5).double()
    labels = torch.tensor([0, 3, 1])
    proj = square_wave_projection(classes, C * p * p, dtype=torch.float64)
    m = learning_signal(spikes, labels, proj, pool_size=p).m
    # a[b, c*p*p + i*p + j] = mean of the (H/p x H/p) window (i, j) of channel c
    w = H // p
    a = spikes.reshape(Bsz, C, p, w, p, w).mean(dim=(3, 5)).reshape(Bsz, -1)
    probs = torch.softmax(a @ proj.T, dim=1)
    dlogits = (probs - F.one_hot(labels, classes).double()) / Bsz
    da = (dlogits @ proj).reshape(Bsz, C, p, 1, p, 1) / (w * w)
    expected = da.expand(Bsz, C, p, w, p, w).reshape(Bsz, C, H, H)
    torch.testing.assert_close(m, expected)


@pytest.mark.parametrize("shape, layers, pool, sparsity", [
    ((2, 16, 16), [nn.MaxPool2d(2)], 4, 0.0),  # the conv nets' first block
    ((3, 8, 8), [nn.MaxPool2d(2)], 1, 0.0),
    ((2, 9, 9), [nn.MaxPool2d(3, stride=2, padding=1)], 2, 0.0),  # overlapping windows
    ((2, 7, 7), [nn.MaxPool2d(2, ceil_mode=True)], 2, 0.0),
    ((2, 8, 8), [nn.AvgPool2d(2)], 2, 0.0),
    ((2, 7, 7), [nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)], None, 0.0),
    ((3, 8, 8), [nn.AdaptiveAvgPool2d(3)], 2, 0.0),  # windows that do not divide the size
    ((2, 8, 8), [nn.Identity(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(2)], 1, 0.1),
    ((2, 6, 6), [], 4, 0.05),
    ((11,), [], None, 0.0),  # a linear block
])
@pytest.mark.parametrize("binary", [True, False])
def test_the_closed_form_signal_is_autograd_of_the_local_loss(shape, layers, pool, sparsity, binary):
    """fast_learning_signal (softmax minus one-hot, times B, back through the pooling by hand)
    against learning_signal (autograd of the local loss), on binary spikes, whose max-pool
    windows tie (the gradient goes to the first maximum, as autograd's), and on real values."""
    torch.manual_seed(11)
    spikes = torch.rand(5, *shape, dtype=torch.float64)
    if binary:
        spikes = (spikes < 0.3).double()
    labels = torch.tensor([0, 3, 1, 3, 2])
    post = nn.Sequential(*layers)
    with torch.no_grad():
        out = post(spikes)
        D = (F.adaptive_avg_pool2d(out, pool) if out.dim() == 4 and pool else out).flatten(1).shape[1]
    proj = square_wave_projection(4, D, dtype=torch.float64)
    expected = learning_signal(spikes, labels, proj, pool_size=pool, post=post if layers else None,
                               sparsity=sparsity)
    targets = F.one_hot(labels, 4).double()
    m, output = fast_learning_signal(spikes, targets, proj, pool_size=pool, layers=layers, sparsity=sparsity)
    torch.testing.assert_close(m, expected.m)
    torch.testing.assert_close(output, expected.output)
    assert m.is_contiguous() and output.is_contiguous()


def test_closed_form_signal_names_what_it_cannot_take():
    spikes, targets = torch.zeros(2, 3, 4, 4), torch.eye(2)
    with pytest.raises(TypeError, match="layers: expected MaxPool2d, .* got Dropout"):
        fast_learning_signal(spikes, targets, torch.zeros(2, 48), pool_size=None, layers=[nn.Dropout()])
    with pytest.raises(ValueError, match=r"projection: expected \[classes, D=12\]"):
        fast_learning_signal(spikes, targets, torch.zeros(2, 48), pool_size=2)


@pytest.mark.parametrize("form", ["triangle", "fast_sigmoid"])
def test_secondary_activation_is_the_same_with_and_without_autograd(form):
    """Without a graph psi is computed in one buffer; with one, out of place (differentiable)."""
    u = TH + 1.5 * torch.randn(50, dtype=torch.float64)
    expected = psi_ref(u) if form == "triangle" else 1 / (100 * (u - TH).abs() + 1) ** 2
    plain = secondary_activation(u, TH, form)
    torch.testing.assert_close(plain, expected)
    leaf = u.clone().requires_grad_(True)
    tracked = secondary_activation(leaf, TH, form)
    torch.testing.assert_close(tracked.detach(), expected)
    tracked.sum().backward()
    assert leaf.grad is not None and torch.equal(u, leaf.detach())


def test_the_sparsity_penalty_adds_lambda_over_the_block_size_to_the_signal():
    """d(lambda * mean(s))/ds = lambda / numel, on top of the cross-entropy signal; and the rule
    passes learning.sparsity through (a penalised TESS step changes the hidden layer's update)."""
    torch.manual_seed(3)
    spikes = (torch.rand(3, 2, 8, 8) < 0.5).double()
    labels = torch.tensor([0, 3, 1])
    proj = square_wave_projection(4, 2 * 2 * 2, dtype=torch.float64)
    plain = learning_signal(spikes, labels, proj, pool_size=2).m
    penalised = learning_signal(spikes, labels, proj, pool_size=2, sparsity=0.1).m
    torch.testing.assert_close(penalised - plain, torch.full_like(plain, 0.1 / spikes.numel()))
    model = SpikingMLP((1, 4, 4), 3, NEURON, hidden=(6,))
    x = (torch.rand(4, 2, 1, 4, 4) < 0.5).float()
    y = torch.tensor([0, 2])
    grads = []
    for weight in (0.0, 0.5):
        model.zero_grad()
        TESS(sparsity=weight).step(model, x, y)
        grads.append(model.body[1].weight.grad.clone())
    assert not torch.equal(grads[0], grads[1])
    with pytest.raises(ValueError, match="learning.sparsity"):
        TESS(sparsity=-1.0)


def local_loss_autograd(model, x, y, pool_sizes):
    """Reference at T = 1: per block, autograd of CE(pool(block output) B^T, y) through the model's
    own layers with the triangle surrogate 0.3 * max(0, 1 - |u - theta|) as ds/du; inputs detached."""
    for module in model.modules():
        if isinstance(module, LIF):
            module.surrogate = Triangle(gamma=0.3, width=1.0)
    grads, h = {}, x
    layers = list(model.body)
    spiking = [i for i, layer in enumerate(layers) if isinstance(layer, SpikesOnly)]
    for k, n in enumerate(spiking):
        end = spiking[k + 1] - 1 if k + 1 < len(spiking) else len(layers) - 1  # next synapse or readout
        front = nn.Sequential(*layers[:n - 1]) if k == 0 else nn.Identity()  # e.g. the MLP's Flatten
        synapse, neuron = layers[n - 1], layers[n]
        post = [layer for layer in layers[n + 1:end] if not isinstance(layer, nn.Flatten)]
        inp = front(h.detach())
        s = neuron(synapse(inp))
        out = nn.Sequential(*post)(s)[0] if post else s[0]
        pool = pool_sizes[0] if k == 0 else pool_sizes[2] if k == len(spiking) - 1 else pool_sizes[1]
        a = F.adaptive_avg_pool2d(out, pool).flatten(1) if out.dim() == 4 else out
        proj = square_wave_projection(model.body[-1].out_features, a.shape[1], dtype=a.dtype)
        loss = F.cross_entropy(a @ proj.T, y)
        params = list(synapse.parameters())
        for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True)):
            grads[p] = g
        h = nn.Sequential(*layers[n + 1:end])(s).detach()
    return grads


@pytest.mark.parametrize("build", [
    lambda: SpikingMLP((2, 6, 6), 4, NEURON, hidden=(10, 8)),
    lambda: SpikingConvNet((2, 8, 8), 4, NEURON, channels=(3, 5)),
    lambda: SpikingVGG((2, 8, 8), 4, NEURON, layers=(3, "M", 4, 5, "M"), global_pool=1),
])
def test_at_one_step_tess_is_autograd_of_the_local_loss_with_psi_as_surrogate(build):
    torch.manual_seed(3)
    model = build().double().eval()  # eval: BatchNorm in its running-statistics form, as TESS uses it
    x = (torch.rand(1, 5, *model.input_shape, dtype=torch.float64) < 0.5).double()
    y = torch.randint(0, 4, (5,))
    rule = TESS(lambda_pre=0.0, lambda_post=0.0, alpha_post=0.0)
    rule.prepare(model)
    rule.step(model, x, y)
    expected = local_loss_autograd(model, x, y, rule.pool_sizes)
    assert len(expected) >= 3
    for p, g in expected.items():
        torch.testing.assert_close(p.grad, g)


def test_readout_gets_the_global_loss_gradient_on_its_detached_input():
    torch.manual_seed(4)
    model = SpikingMLP((2, 6, 6), 4, NEURON, hidden=(10,)).double()
    x = (torch.rand(7, 3, 2, 6, 6, dtype=torch.float64) < 0.5).double()
    y = torch.tensor([0, 1, 3])
    result = TESS().step(model, x, y)
    head = model.body[-1]
    with torch.no_grad():
        features = model.body[:-1](x).mean(0)
    logits = head(features)
    loss = F.cross_entropy(logits, y)
    expected = torch.autograd.grad(loss, [head.weight, head.bias])
    torch.testing.assert_close(head.weight.grad, expected[0])
    torch.testing.assert_close(head.bias.grad, expected[1])
    torch.testing.assert_close(result.loss, loss.detach())


@pytest.mark.parametrize("build", [
    lambda: SpikingMLP((2, 6, 6), 4, NEURON, hidden=(10, 8)),
    lambda: SpikingConvNet((2, 8, 8), 4, NEURON, channels=(3, 5)),
    lambda: SpikingVGG((2, 8, 8), 4, NEURON, layers=(3, "M", 4), global_pool=2),
])
def test_streamed_network_is_the_models_network(build):
    """TESS steps the model's own neurons, so its logits are the model's (BatchNorm in eval form)."""
    torch.manual_seed(5)
    model = build().eval()
    x = (torch.rand(9, 3, *model.input_shape) < 0.4).float()
    result = TESS().step(model, x, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(result.logits, model(x).detach())


def test_signal_steps_one_updates_from_the_last_step_only():
    """signal_steps=1, lambda_pre=0, alpha_post=0: dW = (m * psi)[T-1]^T o_in[T-1], with u[T-1] from
    the model's LIF run over the first T-1 steps and m[T-1] by autograd of the last step's local loss."""
    torch.manual_seed(6)
    model = SpikingMLP((1, 4, 4), 3, NEURON, hidden=(6,)).double()
    x = (torch.rand(6, 4, 1, 4, 4, dtype=torch.float64) < 0.5).double()
    y = torch.tensor([0, 1, 2, 0])
    TESS(lambda_pre=0.0, alpha_post=0.0, signal_steps=1).step(model, x, y)
    linear, lif = model.body[1], model.body[2].neuron
    with torch.no_grad():
        pre = x.flatten(2)
        current = linear(pre)
        _, v = lif(current[:-1])
        u = 0.5 * v + current[-1]
    s = (u >= TH).double().requires_grad_(True)
    loss = F.cross_entropy(s @ square_wave_projection(3, 6, dtype=torch.float64).T, y)
    (m,) = torch.autograd.grad(loss, s)
    torch.testing.assert_close(linear.weight.grad, (m * psi_ref(u)).T @ pre[-1])
    torch.testing.assert_close(linear.bias.grad, (m * psi_ref(u)).sum(0))


class SavedBytes:
    """Peak bytes of tensors autograd holds for backward (saved_tensors_hooks), alive at once."""

    def __init__(self):
        self.live = self.peak = 0

    def pack(self, tensor):
        probe, size = self, tensor.numel() * tensor.element_size()

        class Held:
            def __init__(self):
                self.tensor = tensor
                probe.live += size
                probe.peak = max(probe.peak, probe.live)

            def __del__(self):
                probe.live -= size

        return Held()

    @staticmethod
    def unpack(held):
        return held.tensor


def peak_saved(rule, T):
    torch.manual_seed(7)
    model = SpikingVGG((2, 8, 8), 4, NEURON, layers=(4, "M", 6), global_pool=2)
    rule.prepare(model)
    x = (torch.rand(T, 4, 2, 8, 8) < 0.3).float()
    probe = SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(probe.pack, probe.unpack):
        rule.step(model, x, torch.tensor([0, 1, 2, 3]))
    return probe.peak


def test_tess_keeps_no_graph_across_steps():
    tess = [peak_saved(TESS(), T) for T in (4, 16)]
    assert tess[0] > 0 and tess[1] == tess[0]
    # the probe sees BPTT's graph grow with T (so it could catch a TESS graph that did)
    bptt = [peak_saved(SurrogateGradient(), T) for T in (4, 16)]
    assert bptt[1] > 3 * bptt[0]


@pytest.mark.parametrize("name, value, error", [
    ("lambda_pre", 1.0, ValueError), ("lambda_post", -0.1, ValueError), ("lambda_pre", True, TypeError),
    ("alpha_pre", float("nan"), ValueError),
])
def test_bad_factors_are_named(name, value, error):
    with pytest.raises(error, match=name):
        TESS(**{name: value})
    with pytest.raises(error, match=name):
        TraceFactors(**{name: value})


def test_mismatched_trace_shapes_are_named():
    pre, u, m = random_sequence(3, 2, (5,), (4,))
    kw = dict(threshold=TH, **FACTORS[0])
    with pytest.raises(ValueError, match=r"m: expected the shape of u \(3, 2, 4\), got \(3, 2, 3\)"):
        tess_linear_grad(pre, u, m[..., :3], **kw)
    with pytest.raises(ValueError, match=r"pre: expected the same \[T, B\] as u"):
        tess_linear_grad(pre[:2], u, m, **kw)
    with pytest.raises(ValueError, match="pre: expected 3 dims"):
        tess_linear_grad(pre[0], u, m, **kw)
    with pytest.raises(ValueError, match=r"weight_shape: expected \(C_out=4"):
        tess_conv2d_grad(*random_sequence(2, 1, (3, 4, 4), (4, 4, 4)), (5, 3, 3, 3), padding=1, **kw)


class Recurrent(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("body, match", [
    (nn.Sequential(nn.Flatten(2), nn.Linear(4, 3), SpikesOnly(NEURON()), nn.Dropout(), nn.Linear(3, 2)),
     r"layer body\.3 \(Dropout\)"),
    (nn.Sequential(nn.Flatten(2), nn.Linear(4, 3), Recurrent(), nn.Linear(3, 2)),
     r"layer body\.2 \(Recurrent\): expected SpikesOnly\(LIF\)"),
    (nn.Sequential(nn.Flatten(2), nn.Linear(4, 3), SpikesOnly(NEURON(stateful=True)), nn.Linear(3, 2)),
     r"layer body\.2 .*stateful"),
    (nn.Sequential(nn.Flatten(2), nn.Linear(4, 3), SpikesOnly(NEURON())), r"last layer .* readout, got 2"),
    (nn.Sequential(PerStep(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular")), SpikesOnly(NEURON()),
                   nn.Flatten(2), nn.Linear(8, 2)), r"body\.0 .*circular"),
])
def test_layers_tess_cannot_train_are_named_with_the_reason(body, match):
    model = nn.Module()
    model.body = body
    with pytest.raises(ValueError, match=match):
        TESS().prepare(model)


def test_model_without_a_body_is_refused():
    with pytest.raises(ValueError, match=r"model: TESS walks model.body.*got Linear"):
        TESS().prepare(nn.Linear(3, 2))


def test_wrong_labels_are_named():
    model = SpikingMLP((1, 2, 2), 3, NEURON, hidden=(4,))
    with pytest.raises(ValueError, match=r"y: expected labels \[B=2\]"):
        TESS().step(model, torch.zeros(3, 2, 1, 2, 2), torch.zeros(3, dtype=torch.long))


def test_batchnorm_running_statistics_follow_the_batch_as_in_training_mode():
    """In training mode TESS updates BatchNorm's running statistics from the conv outputs of all
    T*B samples of the batch: the reference is torch's BatchNorm2d in training mode on [T*B]."""
    torch.manual_seed(8)
    model = SpikingConvNet((2, 8, 8), 4, NEURON, channels=(3,)).double().train()
    conv, norm = model.body[0].layer
    reference = nn.BatchNorm2d(3).double().train()
    x = (torch.rand(5, 4, 2, 8, 8, dtype=torch.float64) < 0.5).double()
    TESS().step(model, x, torch.tensor([0, 1, 2, 3]))
    with torch.no_grad():
        reference(conv(x.flatten(0, 1)))
    torch.testing.assert_close(norm.running_mean, reference.running_mean)
    torch.testing.assert_close(norm.running_var, reference.running_var)
    assert int(norm.num_batches_tracked) == 1


def test_updates_are_averaged_across_processes_when_distributed(monkeypatch):
    """DDP's hooks do not see the .grad TESS writes, so the rule declares local gradients and the
    trainer's average_gradients averages them: simulate two processes whose other half holds an
    update of 3x ours (sum = 4x ours, mean = 2x)."""
    from spikegate.distributed import average_gradients

    assert TESS.local_gradients is True
    torch.manual_seed(9)
    model = SpikingMLP((1, 4, 4), 3, NEURON, hidden=(6,))
    x = (torch.rand(4, 2, 1, 4, 4) < 0.5).float()
    y = torch.tensor([0, 2])
    TESS().step(model, x, y)
    alone = {n: p.grad.clone() for n, p in model.named_parameters()}
    reduced = []
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None: reduced.append(t) or t.mul_(4))
    average_gradients(model)
    assert len(reduced) == len(alone)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * alone[n])


def test_a_data_parallel_wrapper_trains_the_network_inside():
    torch.manual_seed(10)
    model = SpikingMLP((1, 4, 4), 3, NEURON, hidden=(6,))
    x = (torch.rand(4, 2, 1, 4, 4) < 0.5).float()
    y = torch.tensor([0, 2])
    TESS().step(model, x, y)
    alone = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    TESS().step(nn.DataParallel(model), x, y)
    for p, g in zip(model.parameters(), alone):
        torch.testing.assert_close(p.grad, g)
