"""Every global random stream (torch CPU, every CUDA device, Python ``random``, NumPy): captured, restored, seeded.

Part of the snapshot (:mod:`runtime_checks.snapshot`, which re-exports these names).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

try:  # NumPy is a dependency of the runtime extra, but never required to verify.
    import numpy as _np
except ImportError:  # pragma: no cover
    _np = None  # type: ignore[assignment]

__all__ = ["RngState", "seed_everything"]


@dataclass
class RngState:
    """Every global random stream, captured so that it can be put back bit for bit."""

    cpu: torch.Tensor
    cuda: list[torch.Tensor] | None
    python: Any
    numpy: Any

    @classmethod
    def capture(cls) -> RngState:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return cls(
            cpu=torch.get_rng_state(),
            cuda=cuda,
            python=random.getstate(),
            numpy=_np.random.get_state() if _np is not None else None,
        )

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        random.setstate(self.python)
        if _np is not None and self.numpy is not None:
            _np.random.set_state(self.numpy)

    def streams(self) -> dict[str, Any]:
        """Comparable form: stream name -> state (tensors or tuples)."""
        out: dict[str, Any] = {"torch.cpu": self.cpu}
        for i, s in enumerate(self.cuda or ()):
            out[f"torch.cuda:{i}"] = s
        out["random"] = self.python
        if self.numpy is not None:
            kind, keys, pos, has_gauss, gauss = self.numpy
            out["numpy"] = (kind, keys.tobytes(), pos, has_gauss, gauss)
        return out


def seed_everything(seed: int, use_cuda: bool) -> None:
    """Seed the streams a run may draw from, without touching lazy device state.

    ``torch.manual_seed`` would also queue a seed for CUDA (and MPS, XPU)
    when they are not yet initialised: a trace left behind. Seed only what is
    in use.
    """
    torch.default_generator.manual_seed(seed)
    if use_cuda:
        torch.cuda.manual_seed_all(seed)
    random.seed(seed)
    if _np is not None:
        _np.random.seed(seed % 2**32)
