"""Splicing fix edits: ordering, overlap deferral, encodings, atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ckptlint.fixes import apply_fixes, applicable, read_source, reparses, unified_diff, write_source
from ckptlint.types import Edit, Finding, Fix


def _finding(line: int, *edits: Edit, safe: bool = True) -> Finding:
    fix = Fix("rewrite", "safe" if safe else "unsafe", tuple(edits))
    return Finding("CKP105", "m", "m.py", line, 0, line, 1, fix=fix)


SRC = "def f(x):\n    y = F.relu(x, inplace=True)\n    x.add_(1)\n    return y\n"


def test_single_and_multiple_edits() -> None:
    a = _finding(2, Edit(2, 26, 2, 30, "False"))
    b = _finding(3, Edit(3, 4, 3, 4, "x = "), Edit(3, 9, 3, 10, ""))
    out = apply_fixes(SRC, [b, a])
    assert out.text == "def f(x):\n    y = F.relu(x, inplace=False)\n    x = x.add(1)\n    return y\n"
    assert len(out.applied) == 2 and not out.deferred and not out.invalid
    assert reparses(out.text) is None


def test_overlapping_fix_is_deferred_not_merged() -> None:
    first = _finding(3, Edit(3, 4, 3, 13, "x = x.add(1)"))
    clash = _finding(3, Edit(3, 9, 3, 10, ""))
    out = apply_fixes(SRC, [clash, first])
    assert [f.fix for f in out.applied] == [first.fix]
    assert [f.fix for f in out.deferred] == [clash.fix]
    assert "x = x.add(1)" in out.text


def test_same_fix_twice_applies_once() -> None:
    a = _finding(2, Edit(2, 26, 2, 30, "False"))
    dup = Finding("CKP105", "m2", "m.py", 2, 0, 2, 1, fix=a.fix)
    out = apply_fixes(SRC, [a, dup])
    assert out.text.count("inplace=False") == 1
    assert len(out.applied) == 2


def test_two_insertions_at_one_point_clash() -> None:
    a = _finding(1, Edit(1, 0, 1, 0, "A"))
    b = _finding(1, Edit(1, 0, 1, 0, "B"))
    out = apply_fixes("x\n", [a, b])
    assert len(out.applied) == 1 and len(out.deferred) == 1


def test_adjacent_edits_do_not_clash() -> None:
    a = _finding(1, Edit(1, 0, 1, 1, "A"))
    b = _finding(1, Edit(1, 1, 1, 2, "B"))
    assert apply_fixes("xy\n", [a, b]).text == "AB\n"


def test_edit_outside_file_is_invalid() -> None:
    out = apply_fixes("x\n", [_finding(9, Edit(9, 0, 9, 1, "y"))])
    assert out.text == "x\n" and len(out.invalid) == 1


def test_crlf_and_cookie_preserved(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    raw = "# -*- coding: latin-1 -*-\r\ns = 'caf\xe9'\r\nF.relu(x, inplace=True)\r\n".encode("latin-1")
    path.write_bytes(raw)
    os.chmod(path, 0o751)
    src = read_source(str(path))
    assert src.encoding == "iso-8859-1"
    line3 = src.text.split("\r\n")[2]
    col = line3.index("True")
    out = apply_fixes(src.text, [_finding(3, Edit(3, col, 3, col + 4, "False"))])
    write_source(str(path), type(src)(out.text, src.encoding))
    assert path.read_bytes() == raw.replace(b"True", b"False")
    assert stat.S_IMODE(path.stat().st_mode) == 0o751
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ckptlint-")]


def test_bom_preserved(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_bytes(b"\xef\xbb\xbfx = 1\n")
    src = read_source(str(path))
    assert src.text == "x = 1\n"
    write_source(str(path), type(src)("x = 2\n", src.encoding))
    assert path.read_bytes() == b"\xef\xbb\xbfx = 2\n"


def test_applicability() -> None:
    safe = _finding(1, Edit(1, 0, 1, 1, "y"))
    unsafe = _finding(1, Edit(1, 0, 1, 1, "y"), safe=False)
    assert applicable(safe, unsafe=False) and applicable(safe, unsafe=True)
    assert not applicable(unsafe, unsafe=False) and applicable(unsafe, unsafe=True)
    assert not applicable(Finding("CKP101", "m", "m.py", 1, 0, 1, 1), unsafe=True)


def test_reparses_reports_breakage() -> None:
    assert reparses("x = (\n") is not None


def test_unified_diff() -> None:
    diff = unified_diff("pkg/m.py", "a\nb\n", "a\nc")
    assert diff.startswith("--- a/pkg/m.py\n+++ b/pkg/m.py\n")
    assert "-b\n" in diff and "+c\n\\ No newline at end of file\n" in diff


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(alphabet="ab \n", max_size=12), min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 6), st.text(alphabet="xy", max_size=3)), max_size=6),
)
def test_applied_edits_equal_sequential_splicing(chunks: list[str], raw_edits: list[tuple[int, int, str]]) -> None:
    """Applying non-overlapping edits at once equals applying them back to front."""
    text = "".join(chunks)
    # Express random offsets as (line, column) positions.
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]

    def pos(offset: int) -> tuple[int, int]:
        line = max(i for i, s in enumerate(starts) if s <= offset)
        return line + 1, offset - starts[line]

    findings = []
    for start, length, repl in raw_edits:
        s = min(start, len(text))
        e = min(s + length, len(text))
        (sl, sc), (el, ec) = pos(s), pos(e)
        findings.append(_finding(sl, Edit(sl, sc, el, ec, repl)))
    out = apply_fixes(text, findings)
    expected = text
    spans = set()
    for f in out.applied:
        (edit,) = f.fix.edits  # type: ignore[union-attr]
        # identical fixes count once (one hazard reported from two sites)
        spans.add(
            (
                starts[edit.start_line - 1] + edit.start_column,
                starts[edit.end_line - 1] + edit.end_column,
                edit.replacement,
            )
        )
    for s, e, r in sorted(spans, reverse=True):
        expected = expected[:s] + r + expected[e:]
    assert out.text == expected
    assert len(out.applied) + len(out.deferred) + len(out.invalid) == len(findings)
