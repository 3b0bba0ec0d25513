"""A byte-level spiking language model from dual-path blocks (SymbolicLight V1, scaled down).

``tokens [T, B]`` (int64 bytes) -> embedding -> LayerNorm -> spike encoder -> N dual-path blocks
(each fed the previous block's spikes and continuous stream; the first block gets the encoder's
spikes and the normalised embeddings) -> linear head -> ``logits [T, B, vocab]``.

The head is a plain linear map of the last block's continuous stream (the authors add a
context-dependent prior to it, left out here). Weights start as the authors': normal, std 0.02.
Decoding carries :class:`LanguageModelState` (encoder membrane and every block's
:class:`~spikegate.neurons.dualpath_mixer.MixerState`), so :meth:`SpikingByteLM.generate` costs one
token per step and its logits equal the parallel forward's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from spikegate.arguments import check_choice, check_int, check_real
from spikegate.neurons.dualpath import SpikeEncoder, TopKEncoder
from spikegate.neurons.dualpath_mixer import DualPathBlock, MixerState

__all__ = [
    "SpikingByteLM", "LanguageModelState", "LanguageModelOutput", "next_token_loss",
    "bits_per_byte", "sample_next", "ENCODERS",
]

ENCODERS = ("lif", "topk")


@dataclass
class LanguageModelState:
    """Encoder membrane ``[B, D]`` and one mixer state per block."""

    membrane: torch.Tensor
    blocks: list[MixerState] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.blocks[0].length if self.blocks else 0


@dataclass
class LanguageModelOutput:
    """``logits [T, B, vocab]``; ``state`` when asked for; activity of this forward (0-dim
    detached tensors): encoder spike rate, per-block output spike rate, per-block
    feed-forward hidden spike rate, and per block the fraction of its input tokens without any
    spike (block 0: without encoder spikes); a block's attention skips those tokens."""

    logits: torch.Tensor
    state: Optional[LanguageModelState]
    encoder_spike_rate: torch.Tensor
    block_spike_rates: list[torch.Tensor]
    hidden_spike_rates: list[torch.Tensor]
    inactive_token_fractions: list[torch.Tensor]


class SpikingByteLM(nn.Module):
    """Byte-level LM of dual-path blocks.

    Args:
        vocab_size: token range (256 for bytes).
        width, heads, layers, hidden: model width ``D``, heads per mixer, blocks, feed-forward
            width.
        context: the longest sequence one forward accepts (and the longest prompt).
        window, anchors: attention window (>= 1) and anchor positions.
        leak, threshold, bptt: the spike encoder's (threshold also the blocks').
        paths: ``"both"``, ``"decay"`` or ``"attention"`` (ablations).
        encoder: ``"lif"`` (the spike encoder) or ``"topk"`` (ablation: a spike on the ``topk``
            largest channels of each token, straight-through gradient; see
            :class:`~spikegate.neurons.dualpath.TopKEncoder`).
        dropout; backend (decay scan), attention_backend: as in ``DualPathMixer``.

    ``forward(tokens [T, B], state=None, *, keep_state=False) -> LanguageModelOutput``.
    """

    input_shape = ()  # one token id per position and sequence: inputs are [T, B]

    def __init__(
        self, vocab_size: int = 256, width: int = 128, heads: int = 4, layers: int = 2,
        hidden: int = 512, context: int = 256, window: int = 64, anchors: int = 4,
        leak: float = 0.95, threshold: float = 1.0, bptt: bool = False, paths: str = "both",
        dropout: float = 0.0, backend: str = "auto", attention_backend: str = "auto",
        encoder: str = "lif", topk: int = 16,
    ) -> None:
        super().__init__()
        self.vocab_size = check_int(vocab_size, "vocab_size", minimum=2)
        self.context = check_int(context, "context", minimum=1)
        check_int(layers, "layers", minimum=1)
        self.embedding = nn.Embedding(vocab_size, width)
        self.embedding_norm = nn.LayerNorm(width)
        if check_choice(encoder, "encoder", ENCODERS) == "topk":
            if check_int(topk, "topk", minimum=1) > width:
                raise ValueError(f"topk: expected at most width={width}, got {topk}")
            self.encoder: nn.Module = TopKEncoder(topk)
        else:
            self.encoder = SpikeEncoder(leak=leak, threshold=threshold, bptt=bptt)
        self.blocks = nn.ModuleList(
            DualPathBlock(
                width, heads, hidden, window=window, anchors=anchors, threshold=threshold,
                dropout=dropout, paths=paths, backend=backend, attention_backend=attention_backend,
            )
            for _ in range(layers)
        )
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def check_tokens(self, tokens: object, name: str = "tokens") -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"{name}: expected an int64 tensor [T, B] (time-major), got {got}")
        if tokens.dtype not in (torch.int64, torch.int32, torch.uint8):
            raise TypeError(f"{name}: expected an integer tensor, got {tokens.dtype}")
        if tokens.shape[0] == 0:
            raise ValueError(f"{name}: expected T >= 1 positions, got T = 0")
        if tokens.shape[0] > self.context:
            raise ValueError(
                f"{name}: expected a sequence of at most context={self.context} positions, "
                f"got {tokens.shape[0]}"
            )
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= self.vocab_size:
            raise ValueError(
                f"{name}: expected token ids in [0, {self.vocab_size - 1}], "
                f"got range [{low}, {high}]"
            )
        return tokens.long()

    def forward(
        self, tokens: torch.Tensor, state: Optional[LanguageModelState] = None, *,
        keep_state: bool = False,
    ) -> LanguageModelOutput:
        tokens = self.check_tokens(tokens)
        keep = keep_state or state is not None
        x = self.embedding_norm(self.embedding(tokens))                         # [T, B, D]
        s, membrane = self.encoder(x, None if state is None else state.membrane)
        encoder_rate = s.detach().mean()
        new_states, block_rates, hidden_rates, inactive = [], [], [], []
        for i, block in enumerate(self.blocks):
            carried = None if state is None else state.blocks[i]
            s, x, block_state = block(s, x, carried, keep_state=keep)
            new_states.append(block_state)
            block_rates.append(s.detach().mean())
            hidden_rates.append(block.hidden_spike_rate)
            activity = block.mixer.activity
            inactive.append(1 - activity.active_tokens / activity.tokens)
        logits = self.head(x)
        out_state = LanguageModelState(membrane.detach(), new_states) if keep else None
        return LanguageModelOutput(
            logits, out_state, encoder_rate, block_rates, hidden_rates, inactive
        )

    @torch.no_grad()
    def generate(
        self, prompt: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
        top_k: Optional[int] = None, generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` continuations of ``prompt [T, B]`` one token at a time from
        cached state; ``temperature`` 0 is greedy. Returns ``[T + max_new_tokens, B]``."""
        prompt = self.check_tokens(prompt, "prompt")
        check_int(max_new_tokens, "max_new_tokens", minimum=0)
        temperature = check_real(temperature, "temperature")
        if top_k is not None:
            check_int(top_k, "top_k", minimum=1)
        out = self(prompt, keep_state=True)
        tokens = [prompt]
        for _ in range(max_new_tokens):
            nxt = sample_next(out.logits[-1], temperature, top_k, generator)     # [B]
            tokens.append(nxt[None])
            out = self(nxt[None], out.state)
        return torch.cat(tokens)


def sample_next(
    logits: torch.Tensor, temperature: float, top_k: Optional[int],
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """One token per row of ``logits [B, V]``: greedy at temperature 0, else softmax sampling
    from the ``top_k`` largest logits."""
    if temperature == 0:
        return logits.argmax(-1)
    scaled = logits.float() / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, -1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return torch.multinomial(torch.softmax(scaled, -1), 1, generator=generator)[:, 0]


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy in nats of ``logits [T, B, V]`` against ``targets [T, B]``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def bits_per_byte(loss_nats: float) -> float:
    """Cross entropy per byte in bits (the perplexity is ``exp(loss_nats)``)."""
    return loss_nats / math.log(2)


def generate_from_run(
    run_dir, prompt: str, *, tokens: int = 200, temperature: float = 0.8,
    top_k: Optional[int] = 40, seed: int = 0, device: str = "auto",
) -> str:
    """Continue ``prompt`` (UTF-8 text) with ``tokens`` sampled bytes from the trained LM in
    ``run_dir`` (its ``config.yaml`` and ``checkpoint.pt``); returns prompt and continuation,
    decoded as UTF-8 (an invalid byte sequence shows as U+FFFD). Seeded: the same arguments give
    the same text on one machine."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from spikegate.checkpoint import CheckpointError, load_checkpoint
    from spikegate.tasks import LanguageModelTask, task_from_config
    from spikegate.train import _build, _device, _fingerprint

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"generate: expected a run directory with config.yaml, got {run_dir}")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    task = task_from_config(cfg)
    if not isinstance(task, LanguageModelTask):
        raise ValueError(
            f"generate: expected a language-model run (task=language_model), got a "
            f"{type(task).__name__} run in {run_dir}"
        )
    if not isinstance(prompt, str):
        raise TypeError(f"prompt: expected text, got {type(prompt).__name__}")
    check_int(tokens, "tokens", minimum=0)
    dev = _device(device)
    _, model, _ = _build(cfg, dev)
    model.load_state_dict(load_checkpoint(run_dir, fingerprint=_fingerprint(cfg))["model"])
    model.eval()
    ids = torch.tensor(list(prompt.encode("utf-8")), dtype=torch.int64, device=dev)[:, None]
    generator = torch.Generator(device=dev).manual_seed(seed)
    out = model.generate(ids, tokens, temperature=temperature, top_k=top_k, generator=generator)
    return bytes(out[:, 0].tolist()).decode("utf-8", errors="replace")
