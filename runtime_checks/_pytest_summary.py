"""What the plugin keeps of each verification, and the terminal summary it prints.

Each verification of a running test is recorded on its item (:func:`record`),
aggregated into one row per (test, model) when the call ends, and carried in
the report's ``user_properties`` (so pytest-xdist workers' rows reach the
controller); :func:`format_summary` words the rows. Light: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest

__all__ = ["USER_PROPERTY", "current_item", "format_bytes", "format_summary", "record"]

#: Name under which each verification is stored in ``item.user_properties``; it travels with
#: the test report (also across pytest-xdist workers) and lands in junit XML as a property.
USER_PROPERTY = "ckptlint"

_item_entries_key = pytest.StashKey[list]()  # list[dict]: raw entries of the running item
_current_item_key = pytest.StashKey["pytest.Item | None"]()


def current_item(config: pytest.Config) -> pytest.Item | None:
    """The test item whose call phase is running (the fixture attributes its results to it)."""
    return config.stash.get(_current_item_key, None)


def record(item: pytest.Item | None, entry: dict[str, Any]) -> None:
    """Remember one verification of ``item`` for the terminal summary."""
    if item is None:
        return
    item.stash.setdefault(_item_entries_key, []).append(entry)


def _aggregate(nodeid: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary row per (test, model): hypothesis tests verify many times."""
    grouped: dict[str, dict[str, Any]] = {}
    ratios: dict[str, list[float]] = {}
    for entry in entries:
        row = grouped.get(entry["model"])
        if row is None:
            row = grouped[entry["model"]] = dict(entry, nodeid=nodeid, runs=0, failures=0)
            ratios[entry["model"]] = []
        row["runs"] += 1
        if not entry["equivalent"] or entry.get("thresholds"):
            row["failures"] += 1
        if not entry["equivalent"]:
            row["equivalent"] = False
        if entry.get("thresholds"):
            row["thresholds"] = entry["thresholds"]
        for key in ("worst", "worst_parameter"):
            if _worse(entry.get(key), row.get(key)):
                row[key] = entry[key]
        for key in ("saved_bytes", "baseline_bytes", "checkpointed_bytes"):
            if entry.get(key) is not None and (row.get(key) is None or entry[key] > row[key]):
                row[key] = entry[key]
        if entry.get("ratio") is not None:
            ratios[entry["model"]].append(entry["ratio"])
    for model, row in grouped.items():
        ordered = sorted(ratios[model])
        row["ratio"] = ordered[len(ordered) // 2] if ordered else None  # median over examples
    return list(grouped.values())


def _worse(new: dict[str, Any] | None, old: dict[str, Any] | None) -> bool:
    """Is mismatch ``new`` worse than ``old``? Errors and missing grads outrank any number."""
    if new is None:
        return False
    if old is None:
        return True
    new_abs, old_abs = new.get("abs"), old.get("abs")
    if new_abs is None:
        return old_abs is not None
    return old_abs is not None and new_abs > old_abs


def format_summary(results: list[dict[str, Any]]) -> list[str]:
    """Lines of the terminal summary: verdict, test, model, worst error, memory saved, overhead."""
    lines = []
    for row in results:
        verdict = "PASS" if row["equivalent"] and not row.get("thresholds") else "FAIL"
        several = row.get("runs", 1) > 1
        runs = f", {row['runs']} runs" if several else ""
        failures = f", {row['failures']} failing" if several and row.get("failures") else ""
        head = f"{verdict} {row['nodeid']} [{row['model']}{runs}{failures}] on {row.get('device', '?')}"
        lines.append(head)
        worst, parameter = row.get("worst"), row.get("worst_parameter")
        text = "worst error: " + (_format_mismatch(worst) if worst else "none")
        if parameter and parameter != worst:
            text += f"; worst parameter: {_format_mismatch(parameter)}"
        lines.append(f"    {text}")
        lines.append(f"    {_format_memory(row)}; {_format_ratio(row.get('ratio'))}")
        for missed in row.get("thresholds") or ():
            lines.append(f"    threshold missed: {missed}")
    return lines


def _format_mismatch(mismatch: Mapping[str, Any]) -> str:
    where = f" in region {mismatch['region']!r}" if mismatch.get("region") else ""
    return f"{mismatch['kind']} {mismatch['name']!r}{where}{_format_err(mismatch.get('abs'), mismatch.get('rel'))}"


def _format_err(abs_err: float | None, rel_err: float | None) -> str:
    if abs_err is None or not math.isfinite(abs_err):
        return ""
    text = f": abs {abs_err:.3g}"
    if rel_err is not None and math.isfinite(rel_err):
        text += f", rel {rel_err:.3g}"
    return text


def format_bytes(count: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - loop always returns


def _format_memory(row: Mapping[str, Any]) -> str:
    saved, baseline = row.get("saved_bytes"), row.get("baseline_bytes")
    if saved is None:
        return "activation memory saved: unknown"
    if saved <= 0:  # tiny models: the inputs and RNG states checkpoint keeps outweigh what it frees
        kept = row.get("checkpointed_bytes")
        detail = f" (checkpointing keeps {format_bytes(kept)}, frees {format_bytes(baseline or 0)})" if kept is not None else ""
        return f"activation memory saved: none{detail}"
    if baseline:
        return f"activation memory saved: {format_bytes(saved)} of {format_bytes(baseline)} ({saved / baseline:.0%})"
    return f"activation memory saved: {format_bytes(saved)}"


def _format_ratio(ratio: float | None) -> str:
    if ratio is None or not math.isfinite(ratio):
        return "recompute overhead: unknown"
    return f"recompute overhead: {ratio:.2f}x baseline time"
