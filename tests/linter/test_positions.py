"""Positions placed per method agree with positions placed per whole statement, node for node."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ckptlint.analysis.walk import walk
from ckptlint.project import Project
from ckptlint.sourcetext import resolve_positions

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

TRICKY = '''\
import torch


class Model(torch.nn.Module):
    """Docstring
with a line at column 0."""

    scale = 2; shift = 1

    @property
    @torch.no_grad()
    def weight(self):
        return self.w

    async def fetch(self, x):
        return await x

    def forward(self, x,
y=None):
        text = """
not code
"""
        if y is None: return x * self.scale
        return torch.cat([x,
    y], dim=-1)

    class Inner:
        def method(self):
            return 1


def free(x):  # a function at top level
    return x
'''


def _reference(mod) -> dict:
    ref = {}
    for i in range(mod.statement_count):
        stmt = mod.statement(i)
        positions = resolve_positions(mod._seg_mods[i]) or {}
        offset = mod.starts[i] - 1
        for node in walk(stmt):
            if node in positions:
                r = positions[node]
                ref[node] = (r.start.line + offset, r.start.column, r.end.line + offset, r.end.column)
    return ref


def _sources() -> list[tuple[str, str]]:
    out = [("tricky.py", TRICKY), ("tricky_crlf.py", TRICKY.replace("\n", "\r\n"))]
    out += [(p.name, p.read_text(encoding="utf-8")) for p in sorted(FIXTURES.rglob("*.py"))
            if not p.name.startswith("syntax_error") and p.name != "encoding_latin1.py"]
    return out


@pytest.mark.parametrize("order", ["forward", "shuffled"])
def test_method_positions_equal_statement_positions(order: str) -> None:
    checked = 0
    for name, source in _sources():
        project = Project([name], sources={name: source})
        mod = project.module(name)
        if mod.parse_error is not None or mod._full is not None:
            continue  # not parsed per statement (syntax newer than this Python): one pass over the file
        ref = _reference(mod)
        nodes = list(ref)
        if order == "shuffled":
            random.Random(0).shuffle(nodes)  # a method first, then its class's other code, and the reverse
        for node in nodes:
            r = mod.position(node)
            assert r is not None, (name, type(node).__name__)
            assert (r.start.line, r.start.column, r.end.line, r.end.column) == ref[node], (name, type(node).__name__)
            checked += 1
    assert checked > 10_000


def test_a_method_is_placed_without_its_class() -> None:
    """The point of placing per method: a node in ``forward`` costs ``forward``'s code, not the class's."""
    project = Project(["tricky.py"], sources={"tricky.py": TRICKY})
    mod = project.module("tricky.py")
    cls = mod.statement(1)
    forward = [s for s in cls.body.body if getattr(s, "name", None) is not None and s.name.value == "forward"][0]
    ret = forward.body.body[-1]
    r = mod.position(ret)
    assert (r.start.line, r.start.column) == (24, 8)
    assert mod.position(cls.body.body[0]) is not None  # the docstring: its statement is placed whole
    assert mod.position(forward.name).start.line == 18
