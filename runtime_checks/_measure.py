"""Pieces of a measured training step that profile, apply_plan and the pytest thresholds share.

A tensor's storage and the tensors inside a value, the storages of parameters
and buffers (never counted as activations), the default loss (a seeded random
projection of the outputs) and ``preserved``, which puts ``.grad``, buffers
and RNG streams back after measuring steps. Re-exported by
:mod:`runtime_checks.profile`, where they lived.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from runtime_checks.snapshot import RngState
from runtime_checks.verify import VerifyError, _flatten

__all__ = ["preserved", "storage_ptrs"]


def _storage(t: torch.Tensor) -> tuple[int, int] | None:
    try:
        s = t.untyped_storage()
        return s.data_ptr(), s.nbytes()
    except Exception:  # noqa: BLE001 - tensor subclasses without storage are not countable
        return None


def _tensors(obj: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif depth < 6 and isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v, depth + 1)
    elif depth < 6 and isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, depth + 1)


@contextlib.contextmanager
def preserved(model: torch.nn.Module) -> Iterator[None]:
    """Put ``.grad``, buffers (BatchNorm running stats) and the RNG streams back after the measuring steps."""
    rng0 = RngState.capture()
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    grads = {n: p.grad for n, p in model.named_parameters()}
    try:
        yield
    finally:
        for name, p in model.named_parameters():
            p.grad = grads.get(name)
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
        rng0.restore()


def storage_ptrs(model: torch.nn.Module) -> set[int]:
    """Storages of parameters and buffers: never counted as activations."""
    tensors = [*model.parameters(), *model.buffers()]
    return {st[0] for t in tensors if (st := _storage(t)) is not None}


def _loss(outputs: Any, loss_fn: Callable[[Any], torch.Tensor] | None, seed: int) -> torch.Tensor:
    """``loss_fn(outputs)``, else a seeded random projection of every floating-point output."""
    if loss_fn is not None:
        loss = loss_fn(outputs)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise VerifyError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}")
        return loss.reshape(())
    total: torch.Tensor | None = None
    for name, t in _flatten(outputs, "output"):
        if not t.is_floating_point() or not t.requires_grad:
            continue
        g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
        r = torch.randn(t.shape, generator=g, dtype=torch.float32).to(t.device)
        term = (t.float() * r).sum()
        total = term if total is None else total + term
    if total is None:
        raise VerifyError("the model returned no floating-point tensor that requires grad; pass loss_fn=")
    return total
