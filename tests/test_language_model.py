"""The byte-level spiking LM: cached decoding equals the parallel forward, greedy generation
equals re-running the whole sequence, training lowers the loss, and the errors of issue 9."""

from __future__ import annotations

import pytest
import torch

from spikegate.language_model import SpikingByteLM, bits_per_byte, next_token_loss


def small(**kw):
    torch.manual_seed(0)
    args = dict(vocab_size=32, width=16, heads=2, layers=2, hidden=32, context=24, window=4, anchors=2)
    args.update(kw)
    return SpikingByteLM(**args)


@pytest.mark.parametrize("paths", ["both", "decay", "attention"])
def test_cached_decoding_equals_parallel_forward(paths):
    model = small(paths=paths).double()
    # embeddings large enough that the encoder fires on some tokens and not on others
    tokens = torch.randint(0, 32, (20, 3), generator=torch.Generator().manual_seed(1))
    full = model(tokens)
    assert 0 < float(full.encoder_spike_rate) < 1
    with torch.no_grad():
        spikes, _ = model.encoder(model.embedding_norm(model.embedding(tokens)))
    silent = (spikes.amax(-1) == 0).double().mean()
    assert len(full.inactive_token_fractions) == 2
    torch.testing.assert_close(full.inactive_token_fractions[0].double(), silent)
    out, logits = None, []
    for t in range(tokens.shape[0]):
        out = model(tokens[t:t + 1], None if out is None else out.state, keep_state=True)
        logits.append(out.logits)
    torch.testing.assert_close(torch.cat(logits), full.logits, rtol=1e-10, atol=1e-10)


def test_greedy_generation_equals_rerunning_the_sequence():
    model = small().double()
    prompt = torch.randint(0, 32, (5, 2), generator=torch.Generator().manual_seed(2))
    got = model.generate(prompt, 6, temperature=0.0)
    seq = prompt
    for _ in range(6):
        nxt = model(seq).logits[-1].argmax(-1)
        seq = torch.cat([seq, nxt[None]])
    assert torch.equal(got, seq)
    g = torch.Generator().manual_seed(0)
    sampled = model.generate(prompt, 4, temperature=0.8, top_k=3, generator=g)
    assert sampled.shape == (9, 2) and torch.equal(sampled[:5], prompt)


def test_training_lowers_the_loss():
    model = small(vocab_size=8, context=16)
    pattern = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7] * 3)
    x = torch.stack([pattern[i:i + 16] for i in range(4)], 1)
    y = torch.stack([pattern[i + 1:i + 17] for i in range(4)], 1)
    opt = torch.optim.Adam(model.parameters(), 3e-2)
    first = None
    for _ in range(40):
        loss = next_token_loss(model(x).logits, y)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.3 * first
    assert bits_per_byte(float(torch.log(torch.tensor(256.0)))) == pytest.approx(8.0)


def test_errors_name_the_argument():
    model = small()
    with pytest.raises(ValueError, match="tokens: expected a sequence of at most context=24 positions, got 25"):
        model(torch.zeros(25, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"tokens: expected token ids in \[0, 31\], got range \[0, 32\]"):
        model(torch.tensor([[0], [32]]))
    with pytest.raises(ValueError, match=r"tokens: expected token ids in \[0, 31\], got range \[-1, 3\]"):
        model(torch.tensor([[-1], [3]]))
    with pytest.raises(ValueError, match="prompt: expected a sequence of at most context=24 positions, got 30"):
        model.generate(torch.zeros(30, 1, dtype=torch.long), 1)
    with pytest.raises(ValueError, match=r"tokens: expected an int64 tensor \[T, B\]"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="window: expected an int >= 1, got 0"):
        small(window=0)
    with pytest.raises(ValueError, match="width: expected a multiple of heads=3, got 16"):
        small(heads=3)
    with pytest.raises(ValueError, match="encoder: expected one of"):
        small(encoder="rate")
    with pytest.raises(ValueError, match="topk: expected at most width=16, got 17"):
        small(encoder="topk", topk=17)


def test_topk_encoder_variant_decodes_incrementally_like_its_parallel_forward():
    model = small(encoder="topk", topk=3).double()
    tokens = torch.randint(0, 32, (10, 2), generator=torch.Generator().manual_seed(2))
    full = model(tokens).logits
    out = model(tokens[:4], keep_state=True)
    steps = [out.logits]
    for t in range(4, 10):
        out = model(tokens[t:t + 1], out.state)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps), full)
