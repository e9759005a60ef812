"""CKP4xx: checkpoint called without ``use_reentrant`` (CKP401), and the
reentrant variant given a keyword argument it cannot forward (CKP402).
"""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class MLP(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc2(torch.relu(self.fc1(x)))
        return h if scale is None else h * scale


class Net(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp1 = MLP(dim)
        self.mlp2 = MLP(dim)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        x = checkpoint(self.mlp1, x)
        return checkpoint(self.mlp2, x, use_reentrant=True, scale=scale)
