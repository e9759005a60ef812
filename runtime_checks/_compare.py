"""Comparing a run with the baseline: the values a run leaves, tolerances, noise, mismatches.

``_Run`` is what one forward+backward leaves behind (``_engine.py`` makes
them); everything here compares two of them or two of their tensors.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from runtime_checks import hooks
from runtime_checks.report import Mismatch

__all__ = ["Key", "NOISE_MARGIN"]

_DEFAULT_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
    torch.complex64: (1.3e-6, 1e-5),
    torch.complex128: (1e-7, 1e-7),
}

# How many times the baseline's own run-to-run spread a difference may reach.
NOISE_MARGIN = 4.0

Key = tuple[str, str]  # (kind, name): kind in output/grad/buffer/rng/state


@dataclass
class _Run:
    tensors: dict[Key, torch.Tensor | None] = field(default_factory=dict)
    other: dict[Key, Any] = field(default_factory=dict)  # rng streams, scalar state
    error: BaseException | None = None
    seconds: float = 0.0
    saved_bytes: int = 0
    per_region: dict[str, int] = field(default_factory=dict)
    cuda_max: int | None = None
    warnings: list[str] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    fingerprints: dict[tuple[str, int], list[Any]] = field(default_factory=dict)
    rng_stashes: int = 0
    hook_counts: Counter[hooks.HookKey] = field(default_factory=Counter)


@dataclass
class _Noise:
    abs: float
    exceeds_default: bool


class _Tolerance:
    def __init__(
        self,
        rtol: float | None,
        atol: float | None,
        noise: Mapping[Key, _Noise],
        regions: int = 0,
        autocast: torch.dtype | None = None,
    ) -> None:
        self.rtol = rtol
        self.atol = atol
        self.noise = noise
        self.regions = regions
        self.autocast = autocast

    def for_magnitude(self, dtype: torch.dtype) -> float | None:
        """The round-off allowance relative to a tensor's largest magnitude (default tolerances only).

        Checkpointing (reentrant above all) sums the contributions to a
        gradient in another order. Each element's error then scales with the
        magnitudes summed into it, not with its own value: elements that
        cancel to near zero get large elementwise relative errors although
        the tensor is exact to a few units in the last place of its scale.
        So a tensor also matches when its largest difference is within
        ``16 * eps * sqrt(1 + regions)`` of its largest value, the square
        root growing with the number of separately accumulated regions.
        Explicit ``rtol``/``atol`` are applied elementwise only.
        """
        if self.rtol is not None or self.atol is not None:
            return None
        if not (dtype.is_floating_point or dtype.is_complex):
            return None
        # Under autocast every value went through the low-precision dtype.
        eps = torch.finfo(self.autocast if self.autocast is not None and dtype.is_floating_point else dtype).eps
        return 16 * eps * math.sqrt(1 + self.regions)

    def for_tensor(self, key: Key, dtype: torch.dtype) -> tuple[float, float]:
        drtol, datol = _DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0))
        if self.autocast is not None and dtype.is_floating_point:
            # Under autocast every value went through the low-precision dtype.
            artol, aatol = _DEFAULT_TOLERANCES[self.autocast]
            drtol, datol = max(drtol, artol), max(datol, aatol)
        rtol = self.rtol if self.rtol is not None else drtol
        atol = self.atol if self.atol is not None else datol
        n = self.noise.get(key)
        # Two runs of a nondeterministic kernel differ by a random amount: the
        # checkpointed run is as likely as not to land further from the
        # baseline than a second baseline does. A margin of NOISE_MARGIN x the
        # observed spread keeps such noise quiet; hazards differ by orders more.
        return rtol, atol + (NOISE_MARGIN * n.abs if n is not None else 0.0)

    def ignores(self, key: Key) -> bool:
        n = self.noise.get(key)
        return n is not None and math.isinf(n.abs)


def _noise(run: _Run, ref: _Run, only: set[Key]) -> dict[Key, _Noise]:
    """How far the baseline differs from itself, for the values in ``only``."""
    out: dict[Key, _Noise] = {}
    for key, b in ref.tensors.items():
        if key not in only:
            continue
        a = run.tensors.get(key)
        if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype:
            if (a is None) != (b is None) or (a is not None and b is not None):
                out[key] = _Noise(math.inf, True)
            continue
        diff = _max_abs_diff(a, b)
        if diff > 0:
            drtol, datol = _DEFAULT_TOLERANCES.get(b.dtype, (0.0, 0.0))
            exceeds = not _within(a, b, drtol, datol)
            out[key] = _Noise(diff, exceeds)
    for key, b in ref.other.items():
        if key in only and not _same(run.other.get(key, _ABSENT), b):
            out[key] = _Noise(math.inf, True)
    return out


def _keep_only(run: _Run, keys: set[Key]) -> None:
    """Drop the values of ``run`` that matched (frees their memory before another run)."""
    for key in [k for k in run.tensors if k not in keys]:
        del run.tensors[key]


_ABSENT = object()


def _compare(run: _Run, ref: _Run, tol: _Tolerance, only: set[Key] | None = None) -> list[Mismatch]:
    """Mismatches of ``run`` against ``ref``; ``only`` restricts the values looked at (localisation)."""
    found: list[Mismatch] = []
    if run.error is not None:
        text = str(run.error).strip().splitlines()
        found.append(
            Mismatch("error", type(run.error).__name__, math.inf, math.inf, None, detail=text[0] if text else "")
        )
    keys = list(ref.tensors) + [k for k in run.tensors if k not in ref.tensors]
    if only is not None:
        keys = [k for k in keys if k in only]
    for key in keys:
        kind, name = key
        if tol.ignores(key):
            continue
        if run.error is not None and kind == "output":
            continue
        a, b = run.tensors.get(key), ref.tensors.get(key)
        if kind == "grad":
            if run.error is not None:
                continue
            if a is None and b is not None:
                found.append(Mismatch("missing_grad", name, math.inf, math.inf, None, "no gradient in the checkpointed run"))
                continue
            if a is not None and b is None:
                found.append(Mismatch("unexpected_grad", name, math.inf, math.inf, None, "no gradient in the baseline"))
                continue
        if a is None and b is None:
            continue
        if a is None or b is None:
            found.append(Mismatch(kind, name, math.inf, math.inf, None, "present in only one run"))
            continue
        if a.shape != b.shape or a.dtype != b.dtype:
            found.append(
                Mismatch(kind, name, math.inf, math.inf, None, f"{a.dtype}{list(a.shape)} vs baseline {b.dtype}{list(b.shape)}")
            )
            continue
        rtol, atol = tol.for_tensor(key, b.dtype)
        if not _within(a, b, rtol, atol) and not _within_magnitude(a, b, tol.for_magnitude(b.dtype), atol):
            abs_err, rel_err = _errors(a, b)
            found.append(Mismatch(kind, name, abs_err, rel_err, None))
    if run.error is None:
        for key, b in ref.other.items():
            if only is not None and key not in only:
                continue
            # Python state that ends differently (a call counter at 2 instead
            # of 1) is reported as a note: it changes nothing backward computes.
            if tol.ignores(key) or key[0] == "state":
                continue
            a = run.other.get(key, _ABSENT)
            if not _same(a, b):
                kind, name = key
                detail = "stream advanced differently" if kind == "rng" else f"{a!r} vs baseline {b!r}"
                found.append(Mismatch(kind, name, math.inf, math.inf, None, detail))
    return found


def _state_notes(run: _Run, ref: _Run, keys: set[Key], tol: _Tolerance, limit: int = 12) -> list[str]:
    """One note for all Python attributes that end differently, each named by its module path."""
    diffs = []
    for key, value in run.other.items():
        if key in keys and not tol.ignores(key):
            before = ref.other.get(key, _ABSENT)
            if not _same(value, before):
                diffs.append(f"{key[1]} = {value!r}, baseline {before!r}")
    if not diffs:
        return []
    more = f"; and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return ["Python state differs after the step: " + "; ".join(diffs[:limit]) + more]


def _recompute_drift(first: _Run, run: _Run, tol: _Tolerance) -> list[Mismatch]:
    """Regions whose recompute cannot reproduce their forward: a call-count dependency.

    ``first`` is verify's first run, a forward of the checkpointed model
    (state a call consumes, like a counter in a closure that verify cannot
    rewind, is still fresh there); ``run`` the compared checkpointed step.
    The recompute in backward is one more call of the region, so a region
    whose output fingerprint differs between its first forward and a later
    call (its recompute when that ran to the end, else the next step's
    forward) gives backward other values than the forward used. Each
    region invocation is matched by its order within the run.
    """
    if run.error is not None:
        return []
    found: list[Mismatch] = []
    for (region, n), calls in run.fingerprints.items():
        if not calls:
            continue
        forward, recomputes = calls[0], calls[1:]
        earlier = first.fingerprints.get((region, n), [])[:1] if first.error is None else []
        for label, other in [("its first forward", c) for c in earlier] + [("its forward", c) for c in recomputes]:
            reference, later = (other, forward) if label == "its first forward" else (forward, other)
            # Only the same inputs must give the same outputs (a region after a
            # drifting one sees other inputs; an input written in place is
            # another hazard, compared elsewhere).
            if _fingerprint_difference(reference[0], later[0], tol) is not None:
                continue
            rel = _fingerprint_difference(reference[1], later[1], tol)
            if rel is not None:
                what = "a later call" if label == "its first forward" else "the recompute in backward"
                found.append(
                    Mismatch(
                        "recompute",
                        region,
                        math.inf,
                        rel,
                        region,
                        f"{what} returned other values than {label} (call {n + 1} of this region in the step): "
                        "its output depends on state that calling it changes, so backward recomputes other values",
                    )
                )
                break
    return found


def _fingerprint_difference(a: list[Any], b: list[Any], tol: _Tolerance) -> float | None:
    """Relative difference of two call fingerprints beyond the tolerance, or None when they agree.

    Default: 100x the dtype's ``rtol`` of the absolute sum (at most 5%), for
    round-off. Explicit ``rtol``/``atol`` widen it as far as elementwise
    ``|d| <= atol + rtol * |b|`` allows for the sums.
    """
    if len(a) != len(b):
        return math.inf
    worst = 0.0
    for (sa, dtype_a, n_a), (sb, dtype_b, n_b) in zip(a, b):
        if dtype_a != dtype_b or n_a != n_b:
            return math.inf
        x, y = sa.tolist(), sb.tolist()
        scale = max(x[1], y[1])
        if not (math.isfinite(scale) and all(map(math.isfinite, x + y))):
            if x != y and not all(v != v for v in x + y):
                return math.inf
            continue
        rtol = max(min(100 * _DEFAULT_TOLERANCES.get(dtype_a, (1e-6, 0.0))[0], 0.05), tol.rtol or 0.0)
        allowed = rtol * scale + (tol.atol or 0.0) * n_a + 1e-12
        diff = max(abs(x[0] - y[0]), abs(x[1] - y[1]))
        if diff > allowed:
            worst = max(worst, diff / scale if scale > 0 else math.inf)
    return worst or None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:
        return a is b


def _as_float(t: torch.Tensor) -> torch.Tensor:
    if t.is_complex():
        return t
    if t.dtype in (torch.float64,):
        return t
    return t.to(torch.float32) if t.is_floating_point() else t.to(torch.float64)


def _within(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> bool:
    # Checkpointing usually reproduces values bit for bit: the exact test is
    # much cheaper than an elementwise tolerance and settles most tensors.
    if a.numel() == 0 or torch.equal(a, b):
        return True
    if not (a.is_floating_point() or a.is_complex()):
        return False
    af, bf = _as_float(a), _as_float(b)
    d = (af - bf).abs()
    ok = d <= atol + rtol * bf.abs()
    if bool(ok.all()):
        return True
    both_nan = torch.isnan(af) & torch.isnan(bf) if not af.is_complex() else torch.isnan(af.real) & torch.isnan(bf.real)
    return bool((ok | both_nan).all())


def _within_magnitude(a: torch.Tensor, b: torch.Tensor, mrtol: float | None, atol: float) -> bool:
    """``max|a - b| <= atol + mrtol * max|b|`` (see ``_Tolerance.for_magnitude``); NaNs must agree."""
    if mrtol is None:
        return False
    diff = _max_abs_diff(a, b)
    if not math.isfinite(diff):
        return False
    bf = _as_float(b).abs()
    scale = float(bf[torch.isfinite(bf)].max()) if bool(torch.isfinite(bf).any()) else 0.0
    return diff <= atol + mrtol * scale


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0 or torch.equal(a, b):
        return 0.0
    d = (_as_float(a) - _as_float(b)).abs()
    both_nan = torch.isnan(_as_float(a).real if a.is_complex() else _as_float(a)) & torch.isnan(
        _as_float(b).real if b.is_complex() else _as_float(b)
    )
    d = torch.where(both_nan, torch.zeros_like(d), d)
    if torch.isnan(d).any():
        return math.inf
    return float(d.max())


def _errors(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    af, bf = _as_float(a), _as_float(b)
    d = (af - bf).abs()
    d = torch.where(torch.isnan(d), torch.full_like(d, math.inf), d)
    abs_err = float(d.max()) if d.numel() else 0.0
    denom = bf.abs()
    rel = torch.where(denom > 0, d / denom.clamp_min(torch.finfo(d.dtype).tiny if d.is_floating_point() else 1), d * math.inf)
    rel = torch.where(d == 0, torch.zeros_like(rel), rel)
    rel_err = float(rel.max()) if rel.numel() else 0.0
    return abs_err, rel_err

