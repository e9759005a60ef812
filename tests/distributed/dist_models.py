"""Models for the distributed tests, built in each rank by module-level factories (spawn pickles them by name)."""

from __future__ import annotations

import os
import signal

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

WIDTH = 8


class TiedPair(nn.Module):
    """Two checkpointed Linear layers sharing one weight, after an input layer (so region inputs need grad)."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.embed = nn.Linear(WIDTH, WIDTH)
        self.a = nn.Linear(WIDTH, WIDTH)
        self.b = nn.Linear(WIDTH, WIDTH)
        self.b.weight = self.a.weight
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = checkpoint(self.a, x, use_reentrant=self.reentrant)
        return checkpoint(self.b, x, use_reentrant=self.reentrant)


def tied_reentrant() -> nn.Module:
    return TiedPair(reentrant=True)


def tied_non_reentrant() -> nn.Module:
    return TiedPair(reentrant=False)


class BatchNormBlocks(nn.Module):
    """Checkpointed blocks with BatchNorm in train mode: running statistics updated twice per step."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.BatchNorm1d(WIDTH)) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False)
        return x


class DiesOnRankOne(nn.Module):
    """Rank 1 kills itself (SIGKILL) in its first forward; rank 0 is left waiting in a collective."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if dist.get_rank() == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return checkpoint(self.fc, x, use_reentrant=False)


class RaisesOnRankOne(nn.Module):
    """Rank 1 raises in every forward (also without checkpointing): a model bug, on one rank only."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if dist.get_rank() == 1:
            raise ValueError("bad shard on rank 1")
        return checkpoint(self.fc, x, use_reentrant=False)


def gpt2_tiny() -> nn.Module:
    """transformers GPT-2, tiny config, gradient checkpointing switched on as users do."""
    import transformers

    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=64)
    model = transformers.GPT2LMHeadModel(config)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


class SleepsInForward(nn.Module):
    """Writes its rank's PID to $CKPT_TEST_PID_DIR, then sleeps: a step that is still running when interrupted."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        path = os.path.join(os.environ["CKPT_TEST_PID_DIR"], f"{os.getpid()}.pid")
        with open(path, "w") as fh:
            fh.write("running")
        time.sleep(120)
        return checkpoint(self.fc, x, use_reentrant=False)


def plain_mlp() -> nn.Module:
    """No checkpointing at all: not a pass unless allow_no_checkpoint=True."""
    return nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.GELU(), nn.Linear(WIDTH, WIDTH))
