"""Small models, each with one known checkpointing hazard in ``blocks.1``.

The hazards follow /work/shared/CHECKPOINT_SEMANTICS.md: each one makes the
recompute in backward see something different from the original forward.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

WIDTH = 16

# Module-level state read back inside a checkpointed block.
SEEN: list[int] = []
CONFIG: dict[str, float] = {"scale": 1.0}

HAZARDS = (
    "inplace_input",
    "counter_branch",
    "global_list",
    "global_dict",
    "batchnorm_train",
    "dropout_no_preserve",
    "python_random",
    "numpy_random",
    "generator",
)


class Block(nn.Module):
    """Linear -> activation -> Linear, with an optional hazard between the two."""

    def __init__(self, hazard: str | None = None) -> None:
        super().__init__()
        self.l1 = nn.Linear(WIDTH, WIDTH)
        self.l2 = nn.Linear(WIDTH, WIDTH)
        self.hazard = hazard
        self.calls = 0
        if hazard == "batchnorm_train":
            self.norm = nn.BatchNorm1d(WIDTH)
        if hazard == "dropout_no_preserve":
            self.drop = nn.Dropout(0.5)
        if hazard == "generator":
            self.gen = torch.Generator().manual_seed(1234)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hz = self.hazard
        if hz == "inplace_input":
            x += 1.0
        h = self.l1(x)
        if hz == "counter_branch":
            self.calls += 1
            h = torch.relu(h) if self.calls % 2 else torch.sigmoid(h)
        elif hz == "global_list":
            SEEN.append(1)
            h = torch.tanh(h * len(SEEN))
        elif hz == "global_dict":
            h = torch.tanh(h * CONFIG["scale"])
            CONFIG["scale"] += 1.0
        elif hz == "batchnorm_train":
            h = torch.tanh(self.norm(h))
        elif hz == "dropout_no_preserve":
            h = self.drop(torch.tanh(h))
        elif hz == "python_random":
            h = torch.tanh(h * (0.5 + random.random()))
        elif hz == "numpy_random":
            h = torch.tanh(h * float(0.5 + np.random.rand()))
        elif hz == "generator":
            h = torch.tanh(h * torch.rand(h.shape, generator=self.gen))
        else:
            h = torch.tanh(h)
        return self.l2(h)


class Net(nn.Module):
    """Input projection, then three blocks each under checkpoint; the hazard sits in ``blocks.1``."""

    def __init__(self, hazard: str | None = None, *, use_reentrant: bool = False) -> None:
        super().__init__()
        self.inp = nn.Linear(WIDTH, WIDTH)
        self.blocks = nn.ModuleList([Block(), Block(hazard), Block()])
        self.use_reentrant = use_reentrant
        self.preserve = hazard != "dropout_no_preserve"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=self.use_reentrant, preserve_rng_state=self.preserve)
        return x


class RawInputNet(nn.Module):
    """Checkpoints its first block directly on the model input (which does not require grad)."""

    def __init__(self, *, use_reentrant: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.use_reentrant = use_reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = checkpoint(self.blocks[0], x, use_reentrant=self.use_reentrant)
        return self.blocks[1](x)


class PlainNet(nn.Module):
    """Does not checkpoint itself: for ``verify(..., checkpoint=Block)``."""

    def __init__(self, hazard: str | None = None) -> None:
        super().__init__()
        self.inp = nn.Linear(WIDTH, WIDTH)
        self.blocks = nn.Sequential(Block(), Block(hazard), Block())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.inp(x))


class BackwardBomb(torch.autograd.Function):
    """Identity whose backward raises: a model that fails during backward."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom in backward")


class BombNet(Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return BackwardBomb.apply(super().forward(x))


def make_input(batch: int = 4, *, requires_grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randn(batch, WIDTH, generator=g).requires_grad_(requires_grad)
