"""``--format json``: a JSON array, one object per finding, 1-based columns."""

from __future__ import annotations

import json
from typing import Any, Sequence

from ckptlint.types import Finding

__all__ = ["finding_to_json", "format_json"]


def finding_to_json(f: Finding) -> dict[str, Any]:
    """The serialised form: ``column``/``end_column`` are 1-based here."""
    fix = None
    if f.fix is not None:
        fix = {
            "description": f.fix.description,
            "applicability": f.fix.applicability,
            "edits": [
                {
                    "start_line": e.start_line,
                    "start_column": e.start_column + 1,
                    "end_line": e.end_line,
                    "end_column": e.end_column + 1,
                    "replacement": e.replacement,
                }
                for e in f.fix.edits
            ],
        }
    return {
        "code": f.code,
        "message": f.message,
        "path": f.path,
        "line": f.line,
        "column": f.column + 1,
        "end_line": f.end_line,
        "end_column": f.end_column + 1,
        "callable": f.callable,
        "checkpoint_site": {"path": f.checkpoint_site.path, "line": f.checkpoint_site.line} if f.checkpoint_site else None,
        "chain": list(f.chain),
        "fix": fix,
    }


def format_json(findings: Sequence[Finding]) -> str:
    return json.dumps([finding_to_json(f) for f in findings], indent=2) + "\n"
