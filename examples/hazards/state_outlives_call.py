"""CKP2xx: a conv stage with BatchNorm and a step counter, checkpointed.

BatchNorm updates its running statistics again in the recompute (CKP204);
the step counter is incremented twice per training step (CKP201).
"""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class ConvBlock(nn.Module):
    def __init__(self, channels: int, norm_layer: type[nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = norm_layer(channels)
        self.act = nn.ReLU()
        self.steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        return self.act(self.bn(self.conv(x)))


class Stage(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = ConvBlock(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.block, x, use_reentrant=False)
