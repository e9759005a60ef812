"""What the caller of :func:`runtime_checks.verify_distributed` hands each rank, and how a batch is split.

Shared by the caller's side (``distributed.py``) and the ranks (``_ranks.py``),
so that neither imports the other's module-level work.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from runtime_checks.verify import VerifyError

__all__ = ["Job", "batch_size", "result_path", "shard", "tensors"]


@dataclass(frozen=True)
class Job:
    factory: Any  # a picklable zero-argument callable, or "file.py:FACTORY" / "module:FACTORY"
    inputs: Any
    world_size: int
    wrap: str
    backend: str
    workdir: str
    timeout_s: float
    seed: int
    loss_fn: Any
    checkpoint: Any
    checkpoint_kwargs: dict[str, Any]
    wrap_kwargs: dict[str, Any]
    rtol: float | None
    atol: float | None
    threads: int
    allow_no_checkpoint: bool = False


def result_path(workdir: str, rank: int) -> str:
    return os.path.join(workdir, f"rank{rank}.pkl")


def batch_size(inputs: Any, world_size: int) -> int | None:
    """The global batch size (first dimension of the first tensor), checked against ``world_size``."""
    first = next(iter(tensors(inputs)), None)
    if first is None or first.dim() == 0:
        return None
    batch = int(first.shape[0])
    if batch < world_size:
        raise VerifyError(
            f"the batch (first dimension {batch}) is smaller than world_size={world_size}: every rank needs a sample"
        )
    return batch


def tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors(v)]
    return []


def shard(inputs: Any, rank: int, world_size: int) -> Any:
    """Rank ``rank``'s part of ``inputs``: tensors with the batch as first dimension split along it."""
    batch = batch_size(inputs, world_size)

    def part(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            if batch is not None and obj.dim() > 0 and obj.shape[0] == batch:
                return torch.tensor_split(obj, world_size)[rank].clone()
            return obj
        if isinstance(obj, Mapping):
            return {k: part(v) for k, v in obj.items()}
        if isinstance(obj, tuple):
            return tuple(part(v) for v in obj)
        if isinstance(obj, list):
            return [part(v) for v in obj]
        return obj

    return part(inputs)
