"""SARIF 2.1.0 output (``--format sarif``), the format GitHub code scanning reads.

Locations are repo-relative URIs with ``/`` separators under the
``%SRCROOT%`` base; regions are 1-based. Rule metadata comes from the rule
modules' docstrings, so ``ckptlint rule CODE`` and the code-scanning alert show
the same text.
"""

from __future__ import annotations

import json
import re
import os
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import quote

from ckptlint.report.escape import printable
from ckptlint.types import Finding

__all__ = ["INFORMATION_URI", "rule_descriptors", "sarif_log", "render"]

INFORMATION_URI = "https://github.com/ckptlint/ckptlint"
SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
_WARNING_CODES = frozenset({"CKP002"})


def _rule_modules() -> list[Any]:
    rules: list[Any] = []
    try:
        from ckptlint.rules import ALL_RULES

        rules.extend(ALL_RULES)
    except ImportError:
        pass
    from ckptlint import suppressions

    if not any(getattr(r, "CODE", None) == suppressions.CODE for r in rules):
        rules.append(suppressions)
    return sorted(rules, key=lambda r: str(getattr(r, "CODE", "")))


def _paragraphs(doc: str) -> list[str]:
    text = "\n".join(line.rstrip() for line in doc.strip().splitlines())
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def rule_descriptors() -> list[dict[str, Any]]:
    """``tool.driver.rules``: one reportingDescriptor per rule code."""
    out: list[dict[str, Any]] = []
    for rule in _rule_modules():
        code = str(rule.CODE)
        name = str(getattr(rule, "NAME", code))
        doc = (getattr(rule, "__doc__", None) or getattr(rule, "DOC", None) or "").strip()
        paragraphs = _paragraphs(doc) if doc else []
        short = paragraphs[0] if paragraphs else name.replace("-", " ")
        full = " ".join(paragraphs[:2]) if paragraphs else short
        out.append(
            {
                "id": code,
                "name": name,
                "shortDescription": {"text": short},
                "fullDescription": {"text": full},
                "help": {"text": doc or short},
                "helpUri": f"{INFORMATION_URI}#{code.lower()}",
                "defaultConfiguration": {"level": "warning" if code in _WARNING_CODES else "error"},
                "properties": {"tags": ["gradient-checkpointing", "correctness"]},
            }
        )
    return out


def find_repo_root(start: str | None = None) -> Path:
    """The folder holding ``.git`` above ``start`` (default: cwd), else cwd."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder
    return Path(os.getcwd()).resolve()


_SURROGATE = re.compile("[\ud800-\udfff]")


def _uri(path: str, root: Path) -> str:
    full = Path(path).resolve()
    try:
        rel = full.relative_to(root).as_posix()
    except ValueError:
        return full.as_uri()
    # bytes, not str: a file name that is not UTF-8 is percent-encoded as its bytes.
    return quote(os.fsencode(rel), safe="/")


def _region(line: int, column: int, end_line: int, end_column: int) -> dict[str, int]:
    start_col = max(column, 0) + 1
    end_l = max(end_line, line)
    end_col = max(end_column, 0) + 1
    if end_l == line and end_col < start_col:
        end_col = start_col
    return {"startLine": max(line, 1), "startColumn": start_col, "endLine": max(end_l, 1), "endColumn": end_col}


def _result(
    finding: Finding, index: dict[str, int], root: Path, suppressed: bool
) -> dict[str, Any]:
    uri = _uri(finding.path, root)
    location: dict[str, Any] = {"uri": uri}
    if not uri.startswith("file:"):
        location["uriBaseId"] = "%SRCROOT%"
    result: dict[str, Any] = {
        "ruleId": finding.code,
        "level": "warning" if finding.code in _WARNING_CODES else "error",
        "message": {"text": finding.message},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": location,
                    "region": _region(finding.line, finding.column, finding.end_line, finding.end_column),
                }
            }
        ],
    }
    if finding.code in index:
        result["ruleIndex"] = index[finding.code]
    props: dict[str, Any] = {}
    if finding.callable:
        props["callable"] = finding.callable
    if finding.checkpoint_site is not None:
        props["checkpointSite"] = str(finding.checkpoint_site)
    if finding.chain:
        props["chain"] = list(finding.chain)
    if props:
        result["properties"] = props
    if finding.fix is not None and finding.fix.edits:
        result["fixes"] = [
            {
                "description": {"text": f"{finding.fix.description} ({finding.fix.applicability})"},
                "artifactChanges": [
                    {
                        "artifactLocation": location,
                        "replacements": [
                            {
                                "deletedRegion": _region(e.start_line, e.start_column, e.end_line, e.end_column),
                                "insertedContent": {"text": e.replacement},
                            }
                            for e in finding.fix.edits
                        ],
                    }
                ],
            }
        ]
    if suppressed:
        result["suppressions"] = [{"kind": "inSource"}]
    return result


def sarif_log(
    findings: Sequence[Finding],
    *,
    suppressed: Iterable[Finding] = (),
    errors: Sequence[tuple[str, str]] = (),
    version: str | None = None,
    root: str | None = None,
) -> dict[str, Any]:
    """Build the SARIF log object for one run."""
    if version is None:
        from ckptlint import __version__ as version
    repo = Path(root).resolve() if root else find_repo_root()
    rules = rule_descriptors()
    index = {rule["id"]: i for i, rule in enumerate(rules)}
    results = [_result(f, index, repo, False) for f in findings]
    results.extend(_result(f, index, repo, True) for f in suppressed)
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "ckptlint",
                "version": version,
                "semanticVersion": version,
                "informationUri": INFORMATION_URI,
                "rules": rules,
            }
        },
        "originalUriBaseIds": {"%SRCROOT%": {"uri": repo.as_uri() + "/"}},
        "columnKind": "unicodeCodePoints",
        "results": results,
        "invocations": [
            {
                "executionSuccessful": not errors,
                "toolExecutionNotifications": [
                    {
                        "level": "error",
                        "message": {"text": text.strip().splitlines()[-1] if text.strip() else "internal error"},
                        "locations": [
                            {"physicalLocation": {"artifactLocation": {"uri": _uri(path, repo)}}}
                        ],
                    }
                    for path, text in errors
                ],
            }
        ],
    }
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}


def _writable(value: Any) -> Any:
    """Strings with undecodable file-name bytes escaped (UTF-8 cannot write them)."""
    if isinstance(value, str):
        return printable(value, keep_newlines=True) if _SURROGATE.search(value) else value
    if isinstance(value, dict):
        return {k: _writable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_writable(v) for v in value]
    return value


def render(findings: Sequence[Finding], **kwargs: Any) -> str:
    """The SARIF log as indented JSON text (ends with a newline)."""
    return json.dumps(_writable(sarif_log(findings, **kwargs)), indent=2, ensure_ascii=False) + "\n"
