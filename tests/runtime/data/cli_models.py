"""Factories for the CLI tests (imported by path, like a user's file)."""

import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 16)
        self.b = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


class CountingBlock(Block):
    """Branches on a call counter: the recompute takes the other branch."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        h = self.a(x)
        return self.b(torch.relu(h) if self.calls % 2 else torch.sigmoid(h))


def safe() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 16), Block(), Block())


def unsafe() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 16), Block(), CountingBlock())


class Keyword(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.block = Block()

    def forward(self, ids: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.block(self.emb(ids)) * scale


instance = safe()


def broken() -> nn.Module:
    raise RuntimeError("cannot build")


class Reshaping(nn.Module):
    """A model bug that has nothing to do with checkpointing: a reshape that never fits."""

    def __init__(self) -> None:
        super().__init__()
        self.block = Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x).view(-1, 7)  # 16 features never split into rows of 7


class OverwritesSaved(nn.Module):
    """Modifies in place a tensor sigmoid saved for backward: autograd raises in backward, checkpoint or not."""

    def __init__(self) -> None:
        super().__init__()
        self.block = Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(self.block(x))
        return y.mul_(2)
