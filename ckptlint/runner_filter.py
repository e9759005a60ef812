"""What a run reports of its raw findings: rule selection, ``exclude``,
``per-file-ignores`` and suppression comments (unused ones too).

All of it depends on configuration rather than on code, so it is applied
after the cache (see :mod:`ckptlint.runner`): changing ``ignore`` never
invalidates a cached result.
"""

from __future__ import annotations

from typing import Any, Sequence

from ckptlint.config import code_matches
from ckptlint.files import display_path
from ckptlint.runner_types import RunSettings
from ckptlint.suppressions import apply_suppressions, parse_suppressions, unused_findings
from ckptlint.types import Finding

__all__: list[str] = []


def _decode(data: bytes) -> str:
    # Matches the engine's own reading (undecodable bytes never crash it).
    return data.decode("utf-8", errors="replace")


def _source_text(path: str, texts: dict[str, str], overlay: dict[str, str]) -> str | None:
    if path in overlay:
        return overlay[path]
    if path in texts:
        return texts[path]
    try:
        with open(path, "rb") as fh:
            return _decode(fh.read())
    except OSError:
        return None


def _filter(
    raw: Sequence[Finding],
    files: Sequence[str],
    settings: RunSettings,
    texts: dict[str, str],
    overlay: dict[str, str],
) -> tuple[list[Finding], list[Finding]]:
    """Apply selection, per-file-ignores and suppression comments."""
    config = settings.config
    enabled = config.enabled()
    selected: list[Finding] = []
    ignore_cache: dict[str, tuple[str, ...]] = {}
    excluded: dict[str, bool] = {}
    matcher = config.exclude_matcher()
    for finding in raw:
        if finding.code not in enabled:
            continue
        if matcher:
            # A hazard located in an excluded file (reached from a checked
            # one) is not reported either: excluded means "not my code".
            hidden_path = excluded.get(finding.path)
            if hidden_path is None:
                hidden_path = excluded[finding.path] = matcher.matches(finding.path)
            if hidden_path:
                continue
        ignored = ignore_cache.get(finding.path)
        if ignored is None:
            ignored = ignore_cache[finding.path] = config.ignored_for(finding.path)
        if ignored and code_matches(finding.code, ignored):
            continue
        selected.append(finding)

    by_path: dict[str, list[Finding]] = {}
    kept: list[Finding] = []
    for finding in selected:
        if finding.code == "CKP003":
            # Over a budget: reading (and tokenizing) the file for suppression
            # comments is what the budget avoids; ignore/per-file-ignores apply.
            kept.append(finding)
            continue
        by_path.setdefault(finding.path, []).append(finding)
    hidden: list[Finding] = []
    parsed: dict[str, Any] = {}
    for path, group in by_path.items():
        text = _source_text(path, texts, overlay)
        if text is None:
            kept.extend(group)
            continue
        sup = parse_suppressions(text, honor_bare_noqa=settings.honor_bare_noqa)
        parsed[path] = sup
        k, h = apply_suppressions(group, sup)
        kept.extend(k)
        hidden.extend(h)

    explicitly_ignored = any(code_matches("CKP002", layer.ignore) for layer in config.layers)
    if "CKP002" in enabled or (settings.report_unused_ignores and not explicitly_ignored):
        for path in files:
            shown = display_path(path)
            sup = parsed.get(shown)
            if sup is None:
                text = _source_text(path, texts, overlay)
                if text is None or ("noqa" not in text.lower() and "ckptlint" not in text):
                    continue
                sup = parse_suppressions(text, honor_bare_noqa=settings.honor_bare_noqa)
            for finding in unused_findings(shown, sup, enabled):
                ignored = config.ignored_for(finding.path)
                if not (ignored and code_matches(finding.code, ignored)):
                    kept.append(finding)
    return sorted(kept, key=Finding.sort_key), sorted(hidden, key=Finding.sort_key)
