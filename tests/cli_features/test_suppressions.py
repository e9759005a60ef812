"""Suppression comments: noqa, ckptlint: ignore[...], skip-file, unused report."""

from __future__ import annotations

from ckptlint.suppressions import apply_suppressions, parse_suppressions, unused_findings
from ckptlint.types import Finding

ENABLED = frozenset({"CKP101", "CKP102", "CKP201", "CKP204", "CKP401"})


def _f(code: str, line: int, stmt: tuple[int, int] | None = None) -> Finding:
    return Finding(code, f"{code} msg", "m.py", line, 4, line, 9, statement_lines=stmt)


def _split(source: str, findings: list[Finding], **kw: bool) -> tuple[list[str], list[str]]:
    sup = parse_suppressions(source, **kw)
    kept, hidden = apply_suppressions(findings, sup)
    return [f"{f.code}@{f.line}" for f in kept], [f"{f.code}@{f.line}" for f in hidden]


def test_noqa_with_codes_and_prefixes() -> None:
    src = "a\nx.add_(1)  # noqa: CKP101\ny += 1  # noqa: E501, CKP1\nz  # noqa: E501\n"
    kept, hidden = _split(src, [_f("CKP101", 2), _f("CKP102", 3), _f("CKP102", 4)])
    assert hidden == ["CKP101@2", "CKP102@3"]
    assert kept == ["CKP102@4"]


def test_codes_are_case_insensitive() -> None:
    src = "x.add_(1)  # NOQA: ckp101\ny.add_(1)  # ckptlint: ignore[ckp1]\n"
    assert _split(src, [_f("CKP101", 1), _f("CKP101", 2)]) == ([], ["CKP101@1", "CKP101@2"])


def test_noqa_for_other_code_does_not_suppress() -> None:
    kept, hidden = _split("x.add_(1)  # noqa: CKP102\n", [_f("CKP101", 1)])
    assert kept == ["CKP101@1"] and hidden == []


def test_bare_noqa_only_with_flag() -> None:
    src = "x.add_(1)  # noqa\n"
    assert _split(src, [_f("CKP101", 1)]) == (["CKP101@1"], [])
    assert _split(src, [_f("CKP101", 1)], honor_bare_noqa=True) == ([], ["CKP101@1"])


def test_ckptlint_ignore_forms() -> None:
    src = (
        "x.add_(1)  # ckptlint: ignore[CKP101]\n"
        "self.n += 1  # ckptlint: ignore[CKP101, CKP2]\n"
        "y.zero_()  # ckptlint: ignore\n"
        "z.zero_()  # ckptlint: ignored-by-someone-else\n"
        "w.zero_()  # type: ignore  # ckptlint: ignore[CKP1]\n"
    )
    findings = [_f("CKP101", 1), _f("CKP201", 2), _f("CKP101", 3), _f("CKP101", 4), _f("CKP101", 5)]
    kept, hidden = _split(src, findings)
    assert hidden == ["CKP101@1", "CKP201@2", "CKP101@3", "CKP101@5"]
    assert kept == ["CKP101@4"]


def test_hash_inside_string_is_not_a_comment() -> None:
    src = 's = "# noqa: CKP101"; x.add_(1)\nt = "# ckptlint: skip-file"\n'
    sup = parse_suppressions(src)
    assert not sup.skip_file
    assert _split(src, [_f("CKP101", 1)]) == (["CKP101@1"], [])


def test_any_line_of_the_statement() -> None:
    src = (
        "out = checkpoint(\n"  # 1
        "    block,\n"  # 2
        "    x,\n"  # 3
        ")  # ckptlint: ignore[CKP401]\n"  # 4
        "other(1)\n"  # 5
    )
    kept, hidden = _split(src, [_f("CKP401", 1, (1, 4)), _f("CKP401", 5, (5, 5))])
    assert hidden == ["CKP401@1"]
    assert kept == ["CKP401@5"]
    # without statement_lines only the finding's own line counts
    assert _split(src, [_f("CKP401", 1)]) == (["CKP401@1"], [])


def test_skip_file() -> None:
    src = '"""doc"""\n# ckptlint: skip-file\nx.add_(1)\n'
    sup = parse_suppressions(src)
    assert sup.skip_file
    assert _split(src, [_f("CKP101", 3)]) == ([], ["CKP101@3"])
    assert unused_findings("m.py", sup, ENABLED) == []


def test_unused_ignores_are_reported() -> None:
    src = (
        "x.add_(1)  # ckptlint: ignore[CKP101]\n"  # used
        "y = 2  # ckptlint: ignore[CKP101]\n"  # unused
        "z.add_(1)  # ckptlint: ignore[CKP101,CKP201]\n"  # CKP201 unused
        "w = 1  # noqa: CKP102, E501\n"  # unused CKP102
        "v = 1  # noqa\n"  # bare noqa: other linters' business, never reported
        "u = 1  # ckptlint: ignore[CKP305]\n"  # CKP305 not enabled: not reported
        "t = 1  # ckptlint: ignore\n"  # bare ignore that silenced nothing
    )
    sup = parse_suppressions(src)
    apply_suppressions([_f("CKP101", 1), _f("CKP101", 3)], sup)
    unused = unused_findings("m.py", sup, ENABLED)
    assert [(f.code, f.line) for f in unused] == [("CKP002", 2), ("CKP002", 3), ("CKP002", 4), ("CKP002", 7)]
    assert "no CKP201 finding" in unused[1].message
    assert unused[0].column == src.splitlines()[1].index("#")


def test_broken_file_keeps_comments_before_the_error() -> None:
    src = "x.add_(1)  # noqa: CKP101\ndef broken(:\n    '''unterminated\n"
    sup = parse_suppressions(src)
    assert 1 in sup.by_line
