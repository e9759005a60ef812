"""CKP3xx: stochastic depth decided with Python's ``random`` inside the checkpoint.

checkpoint replays torch's RNG, not Python's: the recompute may take the
other branch (CKP301). The dropout is fine under the default
``preserve_rng_state=True``.
"""

import random

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class StochasticBlock(nn.Module):
    def __init__(self, dim: int, drop_prob: float = 0.1) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and random.random() < self.drop_prob:
            return x
        return x + F.dropout(self.fc(x), p=0.1, training=self.training)


class Net(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = StochasticBlock(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.block, x, use_reentrant=False)
