"""Every rule's VALID/INVALID examples, collected from the rule modules."""

from __future__ import annotations

import pytest

from ckptlint.rules import ALL_RULES
from tests.linter.conftest import expectations

CASES = [
    pytest.param(rule, kind, i, src, id=f"{rule.CODE}-{kind}-{i}")
    for rule in ALL_RULES
    for kind in ("valid", "invalid")
    for i, src in enumerate(getattr(rule, kind.upper()))
]


@pytest.mark.parametrize(("rule", "kind", "index", "source"), CASES)
def test_rule_case(rule, kind, index, source, lint_source) -> None:
    findings = lint_source(source)
    got = sorted((f.line, f.code) for f in findings if f.code == rule.CODE)
    if kind == "valid":
        assert got == [], f"{rule.CODE} valid case {index} flagged: {[(f.line, f.message) for f in findings if f.code == rule.CODE]}"
    else:
        want = [e for e in expectations(source) if e[1] == rule.CODE]
        assert want, f"{rule.CODE} invalid case {index} has no '# expect: {rule.CODE}' marker"
        assert got == want, f"{rule.CODE} invalid case {index}: expected {want}, got {got}"


def test_every_rule_has_cases_and_docs() -> None:
    codes = [r.CODE for r in ALL_RULES]
    assert codes == sorted(codes)
    assert len(set(codes)) == len(codes)
    for rule in ALL_RULES:
        assert rule.VALID and rule.INVALID, rule.CODE
        doc = rule.__doc__ or ""
        assert doc.startswith(f"{rule.CODE} {rule.NAME}:"), rule.CODE
        for part in ("Why it", "How to fix", "Example"):
            assert part in doc, f"{rule.CODE} docstring lacks {part!r}"
        assert rule.NAME == rule.NAME.lower() and " " not in rule.NAME
