"""Gradient-checkpoint equivalence tests, the way a team drops them into its own suite.

Run:  pytest examples/test_example_equivalence.py

Expected: ``test_clean_model_is_equivalent`` passes; ``test_dropout_without_rng_preservation``
fails on purpose, naming the checkpoint region that breaks equivalence (``blocks.1``) and
the worst parameter. (The project's own ``pytest`` run never collects this file:
``testpaths = ["tests"]`` in pyproject.toml.)

Requires ``pip install 'ckptlint[runtime]'``; the plugin is loaded automatically.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Block(nn.Module):
    """A residual MLP block, optionally with dropout."""

    def __init__(self, width: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.drop(torch.relu(self.fc1(x))))


class Net(nn.Module):
    """Three blocks, each under gradient checkpointing, and a linear head."""

    def __init__(self, width: int = 16, dropout_in_block: int | None = None, preserve_rng_state: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(width, dropout=0.5 if index == dropout_in_block else 0.0) for index in range(3)
        )
        self.head = nn.Linear(width, 4)
        self.preserve_rng_state = preserve_rng_state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False, preserve_rng_state=self.preserve_rng_state)
        return self.head(x)


def test_clean_model_is_equivalent(ckpt_verify) -> None:
    """Fixture form: checkpointing this model changes nothing that backward produces."""
    torch.manual_seed(0)
    ckpt_verify(Net(), torch.randn(8, 16, requires_grad=True))


@pytest.mark.ckpt_equivalence(inputs=torch.randn(8, 16))
def test_dropout_without_rng_preservation() -> nn.Module:
    """Marker form: the test returns the model to verify.

    ``preserve_rng_state=False`` saves a little time, but the recompute in backward then
    draws a different dropout mask than the forward did: the gradients of ``blocks.1``
    (the block with dropout) are silently wrong. This test fails on purpose.
    """
    torch.manual_seed(0)
    return Net(dropout_in_block=1, preserve_rng_state=False)
