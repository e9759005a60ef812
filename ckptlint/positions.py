"""Where a node is in its file: libcst positions, computed for as little code as the question needs.

libcst computes positions by generating the code of a whole module. A file is parsed one
top-level statement at a time (:class:`ckptlint.sourcemodule.ModuleInfo`), and a model file's
top-level statements are mostly classes of hundreds or thousands of lines, while a finding or a
site label needs one node inside one method. So a node inside a method of a top-level class is
placed by generating that method alone, inside a copy of its class header (the same indentation,
hence the same columns); the method's first line comes from Python's own parser (the ``def``
line ``ast`` gave when the file was read). Anything else — module-level code, class attributes,
decorators of the class — is placed by generating its whole statement, as before. Each method and
each statement is generated at most once.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import libcst as cst
from libcst.metadata import CodeRange

from ckptlint.sourcetext import resolve_positions

__all__ = ["PositionIndex"]


class PositionIndex:
    """Positions of one file's nodes, filled on demand."""

    def __init__(self, starts: Sequence[int], method_lines: Mapping[int, Sequence[int]]) -> None:
        self.starts = starts  # first line of each top-level statement
        self.method_lines = method_lines  # statement index -> ``def`` line of each method of a top-level class
        self._positions: dict[cst.CSTNode, CodeRange] = {}
        self._done: set[int] = set()  # statements placed whole
        self._done_methods: set[tuple[int, int]] = set()
        self._stmt_of: dict[int, int] = {}  # id(node) -> statement index, filled as statements are walked
        self._method_of: dict[int, int] = {}  # id(node) -> which method of its class holds it
        self._walked: set[int] = set()

    def position(
        self,
        node: cst.CSTNode,
        stmts: Sequence[cst.BaseStatement | None],
        seg_mods: Mapping[int, cst.Module],
        full: cst.Module | None,
    ) -> CodeRange | None:
        found = self._positions.get(node)
        if found is not None:
            return found
        index = self._statement_index(node, stmts)
        if index is None or index in self._done:
            return None
        if full is not None:
            # Whole-file parse (fallback): one position pass over the file.
            self._positions.update(resolve_positions(full) or {})
            self._done.update(range(len(stmts)))
            return self._positions.get(node)
        k = self._method_of.get(id(node))
        if k is not None and (index, k) not in self._done_methods:
            self._done_methods.add((index, k))
            self._place_method(stmts[index], seg_mods[index], index, k)  # type: ignore[arg-type]
            found = self._positions.get(node)
            if found is not None:
                return found
        self._place_statement(seg_mods[index], index)
        return self._positions.get(node)

    def _place_statement(self, segment: cst.Module, index: int) -> None:
        self._done.add(index)
        positions = resolve_positions(segment)
        if positions is None:
            return
        self._add(positions, self.starts[index] - 1)  # the segment's line 1 is the statement's first line

    def _place_method(self, cls: cst.ClassDef, segment: cst.Module, index: int, k: int) -> None:
        methods = _methods(cls)
        lines = self.method_lines.get(index, ())
        if len(lines) != len(methods) or not isinstance(cls.body, cst.IndentedBlock):
            return  # ast and libcst disagree on the class's methods: place the whole statement instead
        method = methods[k]
        alone = segment.with_changes(body=[cls.with_changes(body=cls.body.with_changes(body=[method]))])
        positions = resolve_positions(alone)
        if positions is None or method.name not in positions:
            return
        offset = lines[k] - positions[method.name].start.line
        self._add({n: r for n, r in positions.items() if self._method_of.get(id(n)) == k and self._stmt_of.get(id(n)) == index}, offset)

    def _add(self, positions: Mapping[cst.CSTNode, CodeRange], offset: int) -> None:
        for n, r in positions.items():
            if offset:
                r = CodeRange((r.start.line + offset, r.start.column), (r.end.line + offset, r.end.column))
            self._positions[n] = r

    def _statement_index(self, node: cst.CSTNode, stmts: Sequence[cst.BaseStatement | None]) -> int | None:
        from ckptlint.analysis.walk import walk

        cached = self._stmt_of.get(id(node))
        if cached is not None:
            return cached
        for i, stmt in enumerate(stmts):
            if stmt is None or i in self._walked:
                continue
            self._walked.add(i)
            if isinstance(stmt, cst.ClassDef) and i in self.method_lines:
                for k, method in enumerate(_methods(stmt)):
                    for n in walk(method):
                        self._method_of[id(n)] = k
            for n in walk(stmt):
                self._stmt_of[id(n)] = i
            if id(node) in self._stmt_of:
                return i
        return self._stmt_of.get(id(node))


def _methods(cls: cst.ClassDef) -> list[cst.FunctionDef]:
    body = cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ()
    return [s for s in body if isinstance(s, cst.FunctionDef)]
