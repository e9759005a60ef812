"""A checkpointed transformer block written the safe way: ``ckptlint check
examples/clean_model.py`` reports nothing.

Rebinding instead of mutating inputs, dropout under the default
``preserve_rng_state=True``, LayerNorm (no running statistics), explicit
``use_reentrant=False``.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            mask = mask.masked_fill(mask == 0, float("-inf"))
        h = self.norm1(x)
        h, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        x = x + F.dropout(h, p=0.1, training=self.training)
        h = self.fc2(self.act(self.fc1(self.norm2(x))))
        h += x  # h is a fresh intermediate: in place is fine
        return h


class Encoder(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = checkpoint(block, x, mask, use_reentrant=False)
        return x
