"""Shared per-function analysis: name facts, module-object evaluation, flow events."""

__all__ = ["flow", "names", "params", "values", "walk"]
