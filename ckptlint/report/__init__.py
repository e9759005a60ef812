"""Formatters: findings in, text out. A formatter never analyses."""

from __future__ import annotations

from ckptlint.report.json import format_json, finding_to_json
from ckptlint.report.text import format_text

__all__ = ["finding_to_json", "format_json", "format_text"]
