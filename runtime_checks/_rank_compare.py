"""How one rank compares its checkpointed step with the baseline: tolerances and noise, Python state, regions.

Used by :mod:`runtime_checks._ranks` on every rank.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__: list[str] = []

_TOLERANCES = {  # torch.testing.assert_close's defaults
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
}
_NOISE_MARGIN = 4.0


def _difference(
    a: torch.Tensor, b: torch.Tensor, again: torch.Tensor | None, rtol: float | None, atol: float | None
) -> tuple[float, float] | None:
    """(max abs, max rel) error of ``a`` against ``b`` when beyond tolerance and the baseline's own noise."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return (math.inf, math.inf)
    if not (a.is_floating_point() or a.is_complex()):
        return None if torch.equal(a, b) else (math.inf, math.inf)
    default_rtol, default_atol = _TOLERANCES.get(a.dtype, (1.3e-6, 1e-5))
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    a64, b64 = a.double(), b.double()
    diff = (a64 - b64).abs()
    allowed = atol + rtol * b64.abs()
    if again is not None and again.shape == b.shape:
        allowed = allowed + _NOISE_MARGIN * (again.double() - b64).abs()
    bad = diff > allowed
    nan_a, nan_b = torch.isnan(a64), torch.isnan(b64)
    bad = (bad & ~(nan_a & nan_b)) | (nan_a ^ nan_b)
    if not bool(bad.any()):
        return None
    worst = float(diff[~torch.isnan(diff)].max()) if bool((~torch.isnan(diff)).any()) else math.inf
    rel = float((diff / b64.abs().clamp_min(1e-30))[bad].max())
    return (worst, rel)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return a is b


def _region_of(name: str, regions: list[str]) -> str | None:
    """The checkpoint region a tensor of module path ``name`` lives in (the longest path prefix)."""
    best = None
    for region in regions:
        if (name == region or name.startswith(region + ".")) and (best is None or len(region) > len(best)):
            best = region
    if best is None and len(regions) == 1:
        return regions[0]
    return best
