"""Small models for the profiler and planner tests: blocks of unequal cost, BatchNorm, self-checkpointing."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


class Block(nn.Module):
    """LayerNorm -> Linear(w, hidden) -> ReLU -> Linear(hidden, w), residual."""

    def __init__(self, width: int, hidden: int, batchnorm: bool = False) -> None:
        super().__init__()
        self.norm: nn.Module = nn.BatchNorm1d(width) if batchnorm else nn.LayerNorm(width)
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(self.norm(x))))


class Stack(nn.Module):
    """Input projection, ``n`` blocks of hidden widths cycling 1x/3x/5x, a head; blocks in a Sequential or ModuleList."""

    def __init__(self, n: int = 6, width: int = 32, *, sequential: bool = True, batchnorm_at: int | None = None,
                 self_checkpoint: bool = False) -> None:
        super().__init__()
        self.inp = nn.Linear(16, width)
        blocks = [Block(width, width * (1 + 2 * (i % 3)), batchnorm=i == batchnorm_at) for i in range(n)]
        self.blocks: nn.Module = nn.Sequential(*blocks, nn.ReLU()) if sequential else nn.ModuleList(blocks)
        self.sequential = sequential
        self.head = nn.Linear(width, 4)
        self.self_checkpoint = self_checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        if self.sequential and not self.self_checkpoint:
            return self.head(self.blocks(h))
        for blk in self.blocks:
            h = checkpoint(blk, h, use_reentrant=False) if self.self_checkpoint else blk(h)
        return self.head(h)


def inputs(batch: int = 64) -> torch.Tensor:
    return torch.randn(batch, 16, generator=torch.Generator().manual_seed(0))
