"""How the plugin words a verification: input shapes, model names, the summary entry, the failure message.

Plain functions of a report (read through its attributes) and of the test's
inputs; torch is used only to recognise tensors and modules, when installed.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

try:
    import torch
except ImportError:  # pragma: no cover - exercised only where torch is absent
    torch = None  # type: ignore[assignment]

__all__ = ["describe_inputs", "failure_message", "model_name", "summary_entry"]


def describe_inputs(inputs: Any) -> str:
    """Shapes and dtypes of an inputs value: ``x: float32[2, 16] requires_grad``."""
    if isinstance(inputs, Mapping):
        parts = [f"{key}: {_describe_value(value)}" for key, value in inputs.items()]
    elif isinstance(inputs, (tuple, list)):
        parts = [f"arg{index}: {_describe_value(value)}" for index, value in enumerate(inputs)]
    else:
        parts = [f"arg0: {_describe_value(inputs)}"]
    return ", ".join(parts) if parts else "(no inputs)"


def _describe_value(value: Any) -> str:
    if torch is not None and isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        text = f"{dtype}[{', '.join(str(size) for size in value.shape)}]"
        if value.requires_grad:
            text += " requires_grad"
        if value.device.type != "cpu":
            text += f" on {value.device}"
        return text
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}: {_describe_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        open_, close = ("(", ")") if isinstance(value, tuple) else ("[", "]")
        return open_ + ", ".join(_describe_value(item) for item in value) + close
    text = repr(value)
    return text if len(text) <= 40 else f"<{type(value).__name__}>"


def model_name(model: Any) -> str:
    """A short name for a model or model factory, for messages and the summary."""
    if torch is not None and isinstance(model, torch.nn.Module):
        return type(model).__name__
    if inspect.isclass(model):
        return model.__name__
    name = getattr(model, "__qualname__", None) or getattr(model, "__name__", None)
    return f"{name}()" if name else type(model).__name__


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _worst(report: Any) -> Any:
    worst = getattr(report, "worst", None)
    if callable(worst):
        return worst()
    mismatches = getattr(report, "mismatches", ())
    return mismatches[0] if mismatches else None


def _mismatch_entry(mismatch: Any) -> dict[str, Any] | None:
    if mismatch is None:
        return None
    return {
        "kind": mismatch.kind,
        "name": mismatch.name,
        "region": mismatch.region,
        "abs": _finite(mismatch.max_abs_err),
        "rel": _finite(mismatch.max_rel_err),
    }


def summary_entry(report: Any, model: Any) -> dict[str, Any]:
    """Plain-data digest of a report for the terminal summary (JSON-serialisable)."""
    worst = _worst(report)
    memory = getattr(report, "memory", None)
    timing = getattr(report, "timing", None)
    return {
        "model": model_name(model),
        "equivalent": bool(report.equivalent),
        "device": str(getattr(report, "device", "?")),
        "worst": _mismatch_entry(worst),
        "worst_parameter": _mismatch_entry(_worst_parameter(report)),
        "saved_bytes": getattr(memory, "saved_bytes_saved", None),
        "baseline_bytes": getattr(memory, "saved_bytes_baseline", None),
        "checkpointed_bytes": getattr(memory, "saved_bytes_checkpointed", None),
        "ratio": _finite(getattr(timing, "ratio", None)),
    }


_PARAMETER_KINDS = ("grad", "missing_grad", "unexpected_grad")


def _worst_parameter(report: Any) -> Any:
    """The parameter (or input) gradient mismatch with the largest error, or None."""
    for mismatch in getattr(report, "mismatches", ()):  # largest error first
        if mismatch.kind in _PARAMETER_KINDS:
            return mismatch
    return None


def _describe_mismatch(mismatch: Any) -> str:
    region = f" in checkpoint region {mismatch.region!r}" if mismatch.region else " (region not localised)"
    size = ""
    abs_err, rel_err = _finite(mismatch.max_abs_err), _finite(mismatch.max_rel_err)
    if abs_err is not None:
        size = f": max abs err {abs_err:.3g}" + (f", max rel err {rel_err:.3g}" if rel_err is not None else "")
    detail = getattr(mismatch, "detail", "")
    if detail:
        detail = detail if len(detail) <= 200 else detail[:200] + " ..."
        detail = f" ({detail})"
    return f"{mismatch.kind} {mismatch.name!r}{region}{size}{detail}"


def failure_message(report: Any, model: Any, inputs: Any, reproduce: str | None = None) -> str:
    """The diagnosis shown when a model is not equivalent.

    Verdict, the regions that break equivalence, the worst mismatch (when it is not a
    parameter's), the worst parameter, the inputs' shapes, how to reproduce, the table.
    """
    mismatches = getattr(report, "mismatches", ())
    count = len(mismatches)
    device = getattr(report, "device", "?")
    plural = "es" if count != 1 else ""
    verdict = (
        f"checkpointed {model_name(model)} is not gradient-equivalent to its un-checkpointed baseline "
        f"on {device}: {count} mismatch{plural}"
    )
    lines = [verdict]
    regions = list(dict.fromkeys(m.region for m in mismatches if m.region))
    if regions:
        lines.append(f"breaking equivalence: checkpoint region{'s' if len(regions) > 1 else ''} "
                     + ", ".join(repr(region) for region in regions))
    worst, worst_parameter = _worst(report), _worst_parameter(report)
    if worst is not None and worst is not worst_parameter:
        lines.append(f"worst: {_describe_mismatch(worst)}")
    if worst_parameter is not None:
        lines.append(f"worst parameter: {_describe_mismatch(worst_parameter)}")
    lines.append(f"inputs: {describe_inputs(inputs)}")
    if reproduce:
        lines.append(reproduce)
    lines.append("")
    lines.append(str(report))
    return "\n".join(lines)
