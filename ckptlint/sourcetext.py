"""Reading one source file: decoding, names of dotted expressions, lazily parsed top-level tables.

The pieces :class:`ckptlint.sourcemodule.ModuleInfo` is built from: PEP 263
decoding, parse-error positions, ``Mapping`` views over top-level defs and
assignments that parse a statement only when looked up, and libcst position
resolution that survives deeply nested generated code.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

if TYPE_CHECKING:
    from ckptlint.sourcemodule import ModuleInfo

__all__ = [
    "LazyAssigns",
    "LazyDefs",
    "decode_source",
    "dotted_name",
    "flatten",
    "mentions_checkpoint",
    "resolve_positions",
    "syntax_error",
]


def dotted_name(node: cst.BaseExpression) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if isinstance(node, cst.Name):
        parts.append(node.value)
        return ".".join(reversed(parts))
    return None

def decode_source(data: bytes) -> str:
    """Decode like Python does (BOM / coding cookie), falling back to UTF-8 with replacement."""
    import io
    import tokenize

    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError):
        return data.decode("utf-8", errors="replace")


def syntax_error(source: str, exc: cst.ParserSyntaxError) -> tuple[str, int, int]:
    """Message and position of a parse error; CPython's when it agrees (more precise)."""
    import ast

    try:
        ast.parse(source)
    except SyntaxError as err:
        if err.lineno:
            return (err.msg, err.lineno, max((err.offset or 1) - 1, 0))
    except (ValueError, RecursionError, MemoryError):
        pass
    message = exc.message
    if message.startswith("parser error: "):
        message = message[len("parser error: "):]
    return (message, exc.raw_line, exc.raw_column)

class LazyDefs(Mapping[str, "cst.FunctionDef | cst.ClassDef"]):
    """Top-level defs by name, parsed only when looked up."""

    def __init__(self, info: "ModuleInfo") -> None:
        self._info = info

    def __getitem__(self, name: str) -> cst.FunctionDef | cst.ClassDef:
        seg = self._info._def_seg[name]
        found: cst.FunctionDef | cst.ClassDef | None = None
        for stmt in flatten(self._info.statement(seg)):
            if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)) and stmt.name.value == name:
                found = stmt
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name: object) -> bool:
        return name in self._info._def_seg

    def __iter__(self) -> Iterator[str]:
        return iter(self._info._def_seg)

    def __len__(self) -> int:
        return len(self._info._def_seg)


class LazyAssigns(Mapping[str, "list[cst.BaseExpression]"]):
    """Module-level ``name = value`` bindings, parsed only when looked up."""

    def __init__(self, info: "ModuleInfo") -> None:
        self._info = info
        self._cache: dict[str, list[cst.BaseExpression]] = {}

    def __getitem__(self, name: str) -> list[cst.BaseExpression]:
        if name in self._cache:
            return self._cache[name]
        segs = self._info._assign_segs[name]
        values: list[cst.BaseExpression] = []
        for seg in segs:
            for stmt in flatten(self._info.statement(seg)):
                if not isinstance(stmt, cst.SimpleStatementLine):
                    continue
                for small in stmt.body:
                    if isinstance(small, cst.Assign):
                        if any(isinstance(t.target, cst.Name) and t.target.value == name for t in small.targets):
                            values.append(small.value)
                    elif (
                        isinstance(small, cst.AnnAssign)
                        and isinstance(small.target, cst.Name)
                        and small.target.value == name
                        and small.value is not None
                    ):
                        values.append(small.value)
        self._cache[name] = values
        return values

    def __contains__(self, name: object) -> bool:
        return name in self._info._assign_segs

    def __iter__(self) -> Iterator[str]:
        return iter(self._info._assign_segs)

    def __len__(self) -> int:
        return len(self._info._assign_segs)


def flatten(stmt: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """A top-level statement and the statements of its if/try/with blocks (which bind names too)."""
    yield stmt
    bodies: list[Sequence[cst.CSTNode]] = []
    if isinstance(stmt, cst.If):
        bodies.append(stmt.body.body)
        orelse = stmt.orelse
        while orelse is not None:
            bodies.append(orelse.body.body)
            orelse = orelse.orelse if isinstance(orelse, cst.If) else None
    elif isinstance(stmt, (cst.Try, cst.TryStar)):
        bodies.append(stmt.body.body)
        bodies.extend(h.body.body for h in stmt.handlers)
        if stmt.orelse is not None:
            bodies.append(stmt.orelse.body.body)
        if stmt.finalbody is not None:
            bodies.append(stmt.finalbody.body.body)
    elif isinstance(stmt, cst.With):
        bodies.append(stmt.body.body)
    for body in bodies:
        for inner in body:
            yield from flatten(inner)


def resolve_positions(module: cst.Module) -> Mapping[cst.CSTNode, CodeRange] | None:
    """libcst positions for ``module``; deep generated expressions get a higher recursion limit."""
    import sys

    try:
        return MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    except (RecursionError, KeyError):
        pass
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(max(limit, 30000))
        return MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    except (RecursionError, KeyError, MemoryError):
        return None
    finally:
        sys.setrecursionlimit(limit)


def mentions_checkpoint(value: ast.expr) -> bool:
    """``torch.utils.checkpoint.checkpoint`` or ``partial(checkpoint, ...)`` as an assigned value."""
    candidates: list[ast.expr] = [value]
    if isinstance(value, ast.Call):
        candidates.extend(value.args)
    for c in candidates:
        while isinstance(c, ast.Attribute):
            if "checkpoint" in c.attr:
                return True
            c = c.value
        if isinstance(c, ast.Name) and "checkpoint" in c.id:
            return True
    return False
