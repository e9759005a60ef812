"""Fast child iteration over libcst trees.

``CSTNode.children`` runs libcst's visitor machinery and visits every
whitespace, comma and parenthesis node; walking dataclass fields directly
and skipping the formatting-only ones is ~4x faster, which matters on
million-line trees.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import libcst as cst

__all__ = ["iter_children", "walk"]

_SKIP = frozenset(
    {
        "lpar", "rpar", "comma", "leading_lines", "lines_after_decorators", "header", "footer",
        "semicolon", "operator", "dot", "equal", "colon", "trailing_whitespace", "lbracket",
        "rbracket", "lbrace", "rbrace", "asynchronous", "star_tok", "arrow",
    }
)
_FIELDS: dict[type, tuple[str, ...]] = {}
_LEAVES = (cst.Name, cst.SimpleString, cst.Integer, cst.Float, cst.Imaginary, cst.Comment, cst.EmptyLine, cst.Newline)


def _fields(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple(
            f.name for f in dataclasses.fields(cls) if not f.name.startswith("whitespace") and f.name not in _SKIP
        )
        _FIELDS[cls] = names
    return names


def iter_children(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """Child nodes that can hold code (formatting nodes and leaves skipped)."""
    for name in _fields(type(node)):
        value = getattr(node, name)
        if isinstance(value, cst.CSTNode):
            if not isinstance(value, _LEAVES) or isinstance(value, cst.Name):
                yield value
        elif isinstance(value, (list, tuple)):
            for el in value:
                if isinstance(el, cst.CSTNode) and not isinstance(el, (cst.EmptyLine, cst.Comment, cst.Newline)):
                    yield el


def walk(node: cst.CSTNode, into_defs: bool = True) -> Iterator[cst.CSTNode]:
    """Every code node under ``node`` (pre-order); ``into_defs=False`` stops at nested defs."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if not into_defs and n is not node and isinstance(n, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            continue
        children = list(iter_children(n))
        children.reverse()
        stack.extend(children)
