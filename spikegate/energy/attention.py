"""How an attention module declares its two matrix products to the energy estimator.

A module that computes attention (``softmax(Q K^T) V`` or a spike-driven variant) implements
``attention_products(inputs, output) -> AttentionProducts``; the estimator calls it after every
forward call. A spike-gated module states how many (query, key) pairs were active, so that only
those are priced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch

__all__ = ["AttentionProducts"]


@dataclass(frozen=True)
class AttentionProducts:
    """The products ``Q K^T`` and ``A V`` of one forward call.

    Attributes:
        maps: independent attention maps in the call (batch x heads x time steps).
        queries, keys: tokens per map.
        head_dim: width of one query/key/value vector.
        active_pairs: (query, key) pairs that took part, summed over maps; ``None`` = all
            ``maps * queries * keys``. May be a device tensor (summed on the device, no host sync).
        spiking: Q, K and V are spikes, so each product term is an accumulate (priced as a SynOp);
            otherwise a multiply-accumulate.

    Each active pair costs ``head_dim`` operations in ``Q K^T`` and ``head_dim`` in ``A V``.
    """

    maps: int
    queries: int
    keys: int
    head_dim: int
    active_pairs: Optional[Union[float, torch.Tensor]] = None
    spiking: bool = False

    @property
    def dense_ops(self) -> int:
        return 2 * self.maps * self.queries * self.keys * self.head_dim

    def active_ops(self) -> Union[float, torch.Tensor]:
        if self.active_pairs is None:
            return float(self.dense_ops)
        return 2 * self.head_dim * self.active_pairs
