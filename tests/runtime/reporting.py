"""Helpers for tests that read a report's text."""

from __future__ import annotations


def one_line(report: object) -> str:
    """The report as one line: advice is wrapped to the terminal, tests match phrases."""
    return " ".join(str(report).split())
