"""Tiny models for the plugin tests; copied as ``models.py`` into each pytester directory.

A few hundred parameters each, so one verification takes milliseconds on CPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Block(nn.Module):
    def __init__(self, width: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.drop(torch.relu(self.fc1(x))))


class Net(nn.Module):
    """Clean by default; dropout_in_block + preserve_rng_state=False is the classic hazard."""

    def __init__(self, width: int = 8, dropout_in_block: int | None = None, preserve_rng_state: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(Block(width, 0.5 if i == dropout_in_block else 0.0) for i in range(3))
        self.head = nn.Linear(width, 2)
        self.preserve_rng_state = preserve_rng_state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False, preserve_rng_state=self.preserve_rng_state)
        return self.head(x)


class Plain(nn.Module):
    """No checkpointing at all: the verifier wraps blocks itself when told checkpoint=..."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(Block(width) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class GradModeBlock(nn.Module):
    """Branches on grad mode: reentrant checkpoint runs forward under no_grad, so outputs differ."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return y * 1.5 if torch.is_grad_enabled() else y


class GradModeNet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Linear(width, width)
        self.block = GradModeBlock(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.block, self.stem(x), use_reentrant=True)


def grad_mode_hazard() -> nn.Module:
    """A purely numeric mismatch (outputs only): tolerances can hide it, unlike an RNG mismatch."""
    return GradModeNet()


def clean() -> nn.Module:
    return Net()


def hazardous() -> nn.Module:
    return Net(dropout_in_block=1, preserve_rng_state=False)
