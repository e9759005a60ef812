"""The fast child iteration yields exactly what libcst's own type tests would select."""

from __future__ import annotations

from pathlib import Path

import libcst as cst

from ckptlint.analysis.walk import _LEAVES, iter_children, walk

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _reference(node: cst.CSTNode) -> list[cst.CSTNode]:
    from ckptlint.analysis.walk import _fields

    out: list[cst.CSTNode] = []
    for name in _fields(type(node)):
        value = getattr(node, name)
        if isinstance(value, cst.CSTNode):
            if not isinstance(value, _LEAVES) or isinstance(value, cst.Name):
                out.append(value)
        elif isinstance(value, (list, tuple)):
            out.extend(
                el for el in value if isinstance(el, cst.CSTNode) and not isinstance(el, (cst.EmptyLine, cst.Comment, cst.Newline))
            )
    return out


def test_iter_children_matches_isinstance_reference_on_every_fixture() -> None:
    checked = 0
    for path in sorted(FIXTURES.rglob("*.py")):
        try:
            module = cst.parse_module(path.read_bytes())
        except cst.ParserSyntaxError:
            continue  # the syntax-error fixtures
        for node in walk(module):
            got = list(iter_children(node))
            assert [id(n) for n in got] == [id(n) for n in _reference(node)], (path.name, type(node).__name__)
            checked += 1
    assert checked > 10_000
