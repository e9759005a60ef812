"""What differs between the checkpointed and the baseline run, where, and by how much."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "KINDS",
    "REPORT_SCHEMA_VERSION",
    "Divergence",
    "HookCalls",
    "MemoryStats",
    "Mismatch",
    "RegionCensus",
    "Report",
    "TimingStats",
]

# Bumped only when a key of ``Report.to_dict()`` changes meaning or goes away;
# new keys may appear in any version.
REPORT_SCHEMA_VERSION = 1

# error first (the run did not even finish), then the structural kinds, then values.
KINDS = ("error", "recompute", "missing_grad", "unexpected_grad", "output", "grad", "buffer", "rng")
_KIND_ORDER = {k: i for i, k in enumerate(KINDS)}


@dataclass(frozen=True)
class Mismatch:
    """One difference between the checkpointed run and the baseline.

    ``kind``: ``output``, ``grad``, ``missing_grad`` (baseline has a gradient,
    the checkpointed run ``None``), ``unexpected_grad`` (the reverse),
    ``buffer`` (after the step), ``error`` (only the checkpointed run raised;
    ``name`` is the exception type, ``detail`` its text), ``rng`` (a random
    stream ends in a different state), ``recompute`` (``name`` is a region
    whose output differs between calls: its recompute in backward cannot
    reproduce its forward). Python attributes that end with a
    different value (a call counter) are reported in ``Report.notes``.
    ``max_abs_err``/``max_rel_err`` are ``inf`` where no number applies.
    ``region`` is the checkpointed module path or function qualname found
    responsible by localisation, or ``None`` when not localised.
    """

    kind: str
    name: str
    max_abs_err: float
    max_rel_err: float
    region: str | None
    detail: str = ""

    def sort_key(self) -> tuple[float, int, str]:
        err = self.max_abs_err if not math.isnan(self.max_abs_err) else math.inf
        return (-err, _KIND_ORDER.get(self.kind, 99), self.name)


@dataclass(frozen=True)
class RegionCensus:
    """One checkpoint region in the checkpointed run (see ``runtime_checks.census``).

    ``entries``: checkpoint calls for the region during the forward;
    ``calls``: calls of its module during the forward (``None`` for a
    region that is not a module); ``recomputes``: calls during backward per
    forward call (``None`` where not countable). Exactly ``1`` is right:
    ``0`` means backward never recomputed it, ``2`` that it is checkpointed twice.
    """

    name: str
    entries: int
    calls: int | None
    recomputes: int | None

    @property
    def nested(self) -> bool:
        """Checkpoint entered more than once per call of the region: checkpoints nested."""
        return self.calls is not None and self.calls > 0 and self.entries > self.calls


@dataclass(frozen=True)
class HookCalls:
    """A module hook called a different number of times in the checkpointed run than in the baseline.

    ``module``: the module path (``global`` for torch's global module hooks);
    ``kind``: ``forward hook``, ``forward pre-hook``, ``backward hook``, ...;
    ``hook``: the hook's qualified name.
    """

    module: str
    kind: str
    hook: str
    baseline: int
    checkpointed: int


@dataclass(frozen=True)
class Divergence:
    """The first call in ``region`` whose recomputed output differs from the forward's.

    ``what``: ``value`` (same shape, other numbers), ``shape``, ``dtype`` or
    ``path`` (the recompute called another op here, or fewer/more ops);
    ``forward``/``recompute``: ``op(shape dtype)`` as each run saw it;
    ``source``: ``file:line`` of the call in the model's code.
    """

    region: str
    index: int
    op: str
    module: str
    what: str
    forward: str
    recompute: str
    source: str

    def describe(self) -> str:
        cause = {
            "value": "same shape, other values: state read inside the region changed between the forward and "
            "its recompute (a counter, a global, a config, RNG that checkpoint does not restore)",
            "shape": "another shape: a cache or list grown by the first run, or a shape changed by a wrapper",
            "dtype": "another dtype: autocast or a dtype setting differs between the forward and the recompute",
            "path": "the recompute took another path (a branch on state changed by the first run)",
        }[self.what]
        return (
            f"{self.region}: call {self.index + 1} ({self.op} in {self.module or '?'}, {self.source or '?'}) "
            f"recomputed {self.recompute}, forward {self.forward} — {cause}"
        )


@dataclass(frozen=True)
class MemoryStats:
    """Bytes of tensors saved for backward (each storage counted once; parameters and buffers excluded).

    ``per_region``: bytes saved inside each checkpoint region when it runs
    uncheckpointed — what checkpointing that region avoids holding.
    ``saved_bytes_checkpointed`` counts what checkpointing keeps: the tensors
    it saves (region inputs included) and ``rng_state_bytes``; -1 when the
    checkpointed forward raised.
    ``cuda_max_allocated``: ``torch.cuda.max_memory_allocated`` per run
    (keys ``checkpointed``, ``baseline``) on CUDA, else ``None``.
    """

    saved_bytes_checkpointed: int
    saved_bytes_baseline: int
    per_region: dict[str, int] = field(default_factory=dict)
    cuda_max_allocated: dict[str, int] | None = None
    # Part of ``saved_bytes_checkpointed``: the RNG states checkpoint stashes per call
    # (``preserve_rng_state=True``) and keeps until backward.
    rng_state_bytes: int = 0

    @property
    def saved_bytes_saved(self) -> int:
        """Bytes checkpointing avoids holding between forward and backward."""
        return self.saved_bytes_baseline - self.saved_bytes_checkpointed


@dataclass(frozen=True)
class TimingStats:
    """Wall time of one forward+backward, checkpointed and baseline (the faster of two baseline runs)."""

    checkpointed_s: float
    baseline_s: float

    @property
    def ratio(self) -> float:
        """checkpointed / baseline wall time."""
        return self.checkpointed_s / self.baseline_s if self.baseline_s > 0 else math.inf


@dataclass(frozen=True)
class Report:
    """Outcome of one ``verify`` call; ``str(report)`` is a table, largest error first."""

    equivalent: bool
    mismatches: tuple[Mismatch, ...]
    regions: tuple[str, ...]
    memory: MemoryStats
    timing: TimingStats
    device: str
    # Tensors whose baseline disagreed with itself beyond the default
    # tolerance: compared with a tolerance widened by that noise.
    noisy: tuple[str, ...] = ()
    # Warnings raised only in the checkpointed run, and other remarks.
    notes: tuple[str, ...] = ()
    # Per region: checkpoint entries, forward calls, recomputes per backward.
    census: tuple[RegionCensus, ...] = ()
    # Hooks called a different number of times than in the baseline.
    side_effects: tuple[HookCalls, ...] = ()
    # Regions whose recompute computed something else than their forward.
    recompute: tuple[Divergence, ...] = ()
    # verify(..., allow_no_checkpoint=True): a model without regions may pass.
    allow_no_checkpoint: bool = False

    @property
    def checkpointed(self) -> bool:
        """Whether any checkpoint region ran (a model with none is not a pass by default)."""
        return bool(self.regions)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (schema in docs/runtime.md): every field, plus the derived figures.

        Numbers that have no value (``inf``/``nan`` errors of structural
        mismatches) become ``None``; tuples become lists.
        """
        out: dict[str, Any] = {"schema_version": REPORT_SCHEMA_VERSION}
        out.update({f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)})
        out["memory"]["saved_bytes_saved"] = self.memory.saved_bytes_saved
        out["timing"]["ratio"] = _jsonable(self.timing.ratio)
        return out

    def worst(self) -> Mismatch | None:
        """The mismatch with the largest error (structural kinds first), or None."""
        return self.mismatches[0] if self.mismatches else None

    def __str__(self) -> str:
        from runtime_checks.advice import advise, summarise  # advice reads Report: imported late

        lines: list[str] = []
        if self.equivalent:
            verdict = "EQUIVALENT"
        elif not self.mismatches and not self.regions:
            verdict = "NOT CHECKPOINTED (no checkpoint region ran)"
        else:
            verdict = f"NOT EQUIVALENT ({len(self.mismatches)} mismatches)"
        lines.append(f"ckptlint verify: {verdict} on {self.device}")
        regions = ", ".join(self.regions) if self.regions else "none (nothing was checkpointed)"
        if len(regions) > _MAX_LINE:  # DenseNet-121: 58 regions, one 2,000-character line
            regions = f"{len(self.regions)}: {summarise(self.regions, 8)}"
        lines.append(f"checkpoint regions: {regions}")
        odd = [c for c in self.census if c.recomputes not in (1, None) or c.nested]
        if odd:
            lines.append(
                "recomputes per backward: "
                + ", ".join(f"{c.name} {c.recomputes}" + (" (nested)" if c.nested else "") for c in odd[:8])
                + (f" and {len(odd) - 8} more" if len(odd) > 8 else "")
                + " (1 is right)"
            )
        advice = advise(self)
        if advice:
            lines.append("what to do:")
            for a in advice:
                lines.extend("  " + line for line in a.lines())
        if self.mismatches:
            rows = [("kind", "name", "max abs err", "max rel err", "region")]
            for m in self.mismatches[:_MAX_ROWS]:
                rows.append((m.kind, m.name, _num(m.max_abs_err), _num(m.max_rel_err), _short(m.region or "?")))
            widths = [max(len(r[i]) for r in rows) for i in range(5)]
            for i, r in enumerate(rows):
                lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
                if i == 0:
                    lines.append("  " + "  ".join("-" * w for w in widths))
            if len(self.mismatches) > _MAX_ROWS:
                lines.append(f"  ... {len(self.mismatches) - _MAX_ROWS} more rows (report.mismatches has them all)")
            details = [(m.kind, m.name, m.detail) for m in self.mismatches if m.detail and m.detail not in _GENERIC]
            for kind, name, detail in details[:10]:
                lines.append(f"  {kind} {name}: {detail}")
        mem = self.memory
        if mem.saved_bytes_checkpointed < 0:  # the checkpointed forward raised
            lines.append(f"saved for backward: baseline {_bytes(mem.saved_bytes_baseline)}, checkpointed unknown")
        else:
            saving = (
                f"checkpointing saves {_bytes(mem.saved_bytes_saved)}"
                if mem.saved_bytes_saved > 0
                else "no saving: checkpointing keeps at least as much as it frees"
            )
            lines.append(
                "saved for backward: "
                f"checkpointed {_bytes(mem.saved_bytes_checkpointed)}, baseline {_bytes(mem.saved_bytes_baseline)}"
                f" ({saving})"
            )
        if mem.per_region:
            top = sorted(mem.per_region.items(), key=lambda kv: -kv[1])[:8]
            lines.append("  per region: " + ", ".join(f"{k} {_bytes(v)}" for k, v in top))
        if mem.cuda_max_allocated:
            lines.append(
                "cuda max allocated: " + ", ".join(f"{k} {_bytes(v)}" for k, v in mem.cuda_max_allocated.items())
            )
        t = self.timing
        lines.append(
            f"time: checkpointed {t.checkpointed_s * 1e3:.1f} ms, baseline {t.baseline_s * 1e3:.1f} ms"
            f" (ratio {t.ratio:.2f})"
        )
        if self.noisy:
            lines.append("baseline not reproducible for: " + ", ".join(self.noisy[:8]) + (" ..." if len(self.noisy) > 8 else ""))
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


_MAX_ROWS = 20
# Details that the kind already says: not repeated under the table.
_GENERIC = ("no gradient in the checkpointed run", "no gradient in the baseline")
_MAX_LINE = 100


def _short(region: str, limit: int = 60) -> str:
    return region if len(region) <= limit else region[: limit - 3] + "..."


def _num(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return "-"
    return f"{x:.3g}"


def _bytes(n: int) -> str:
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{sign}{n} B"  # pragma: no cover
