"""CKP1xx: an attention block that mutates its input mask in place.

The mask is a checkpoint input: the recompute in backward reads the masked
values the first forward wrote (``ckptlint check examples/`` reports CKP101).
"""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class AttentionBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(hidden_states).chunk(3, dim=-1)
        scores = q @ k.transpose(-1, -2)
        attention_mask.masked_fill_(attention_mask == 0, -1e4)
        weights = torch.softmax(scores + attention_mask, dim=-1)
        return self.proj(weights @ v)


class Encoder(nn.Module):
    def __init__(self, dim: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([AttentionBlock(dim) for _ in range(depth)])

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = checkpoint(layer, hidden_states, attention_mask, use_reentrant=False)
        return hidden_states
