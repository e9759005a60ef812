"""What ``ckptlint check`` prints: the chosen format, ``--statistics``, the
progress counter. Formatting only; the findings come from the runner.
"""

from __future__ import annotations

import argparse
import json
from typing import Callable, Mapping, TextIO

__all__ = ["documented_rules", "line_reader", "progress", "render", "statistics"]


def documented_rules() -> tuple[list, dict]:
    """The engine's rules plus CKP002, which lives with the suppressions.

    CKP002 is merged here rather than registered into the engine's registry:
    the engine never emits it, and its rule-case machinery should not see it.
    """
    from ckptlint import suppressions
    from ckptlint.rules import ALL_RULES, RULES_BY_CODE

    rules = sorted({*ALL_RULES, suppressions}, key=lambda m: m.CODE)
    return rules, {**RULES_BY_CODE, suppressions.CODE: suppressions}


def line_reader(texts: Mapping[str, str] | None = None) -> Callable[[str, int], str | None]:
    cache: dict[str, list[str]] = {p: t.splitlines() for p, t in (texts or {}).items()}

    def read_line(path: str, line: int) -> str | None:
        if path not in cache:
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    cache[path] = fh.read().splitlines()
            except OSError:
                cache[path] = []
        lines = cache[path]
        return lines[line - 1] if 0 < line <= len(lines) else None

    return read_line


def statistics(result: "object", fmt: str, unsafe: bool) -> str:
    from ckptlint.fixes import applicable

    findings = result.findings  # type: ignore[attr-defined]
    counts: dict[str, list[int]] = {}
    unsafe_only = 0
    for f in findings:
        entry = counts.setdefault(f.code, [0, 0])
        entry[0] += 1
        if applicable(f, unsafe=unsafe):
            entry[1] += 1
        elif applicable(f, unsafe=True):
            unsafe_only += 1
    by_code = documented_rules()[1]
    names = {code: getattr(by_code.get(code), "NAME", "") for code in counts}
    rows = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))
    if fmt == "json":
        return json.dumps(
            [{"code": c, "name": names.get(c, ""), "count": n, "fixable": fx} for c, (n, fx) in rows], indent=2
        ) + "\n"
    if not rows:
        return "No findings.\n"
    width = max(len(str(n)) for _, (n, _f) in rows)
    lines = [
        f"{n:>{width}}\t{c}\t{'[*] ' if fx else '    '}{names.get(c, '')}" for c, (n, fx) in rows
    ]
    total = sum(n for _, (n, _f) in rows)
    fixable = sum(fx for _, (_n, fx) in rows)
    lines.append(f"Found {total} finding{'s' if total != 1 else ''}.")
    if fixable:
        flag = "--fix" if not unsafe else "--unsafe-fixes"
        lines.append(f"[*] {fixable} fixable with {flag}.")
    if unsafe_only:
        lines.append(f"{unsafe_only} more fixable with --unsafe-fixes (they change behaviour a caller may see).")
    return "\n".join(lines) + "\n"


def render(args: argparse.Namespace, result: "object", color: bool, texts: Mapping[str, str] | None = None) -> str:
    from ckptlint.report import format_json, format_text
    from ckptlint.report.json import finding_to_json

    findings = result.findings  # type: ignore[attr-defined]
    suppressed = result.suppressed if args.show_suppressed else []  # type: ignore[attr-defined]
    if args.statistics:
        return statistics(result, args.format, args.unsafe_fixes)
    if args.format == "json":
        if not suppressed:
            return format_json(findings)
        items = [finding_to_json(f) | {"suppressed": False} for f in findings]
        items += [finding_to_json(f) | {"suppressed": True} for f in suppressed]
        items.sort(key=lambda d: (d["path"], d["line"], d["column"], d["code"]))
        return json.dumps(items, indent=2) + "\n"
    if args.format == "sarif":
        from ckptlint.report import sarif

        return sarif.render(findings, suppressed=suppressed, errors=result.errors)  # type: ignore[attr-defined]
    if args.format == "github":
        from ckptlint.report import github

        # Suppressed findings are deliberately not annotated on pull requests.
        return github.render(findings)
    if args.format == "concise":
        from ckptlint.report.concise import format_concise

        text = format_concise(findings, result.files_checked, unsafe_fixes=args.unsafe_fixes, quiet=args.quiet)  # type: ignore[attr-defined]
    else:
        text = format_text(findings, line_reader(texts), color, result.files_checked,  # type: ignore[attr-defined]
                           unsafe_fixes=args.unsafe_fixes, quiet=args.quiet)
    if suppressed:
        lines = [f"\nSuppressed ({len(suppressed)}):"]
        lines += [f"{f.path}:{f.line}:{f.column + 1}: {f.code} {f.message}" for f in suppressed]
        text += "\n".join(lines) + "\n"
    return text


def progress(stream: TextIO) -> Callable[[int, int], None] | None:
    """A one-line progress counter on a terminal, for long runs only."""
    if not stream.isatty():
        return None

    def show(done: int, total: int) -> None:
        if total < 200:
            return
        if done == total:
            stream.write("\r\x1b[K")
        elif done % 10 == 0:
            stream.write(f"\rckptlint: {done}/{total} files analysed")
        stream.flush()

    return show
