"""The records a :class:`ckptlint.project.Project` lookup answers with (importable from project.py).

A :class:`ClassInfo` or :class:`FunctionInfo` names a class or function defined in the checked
tree, with the module it lives in and its libcst node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

from ckptlint.sourcemodule import ModuleInfo

__all__ = ["ClassInfo", "FunctionInfo"]


@dataclass
class FunctionInfo:
    """A function or method defined in the tree."""

    qualname: str  # "pkg.mod.Class.method"
    short: str  # "Class.method" (what messages show)
    module: ModuleInfo
    node: cst.FunctionDef
    cls: ClassInfo | None = None


@dataclass
class ClassInfo:
    """A class defined in the tree."""

    qualname: str
    short: str
    module: ModuleInfo
    node: cst.ClassDef
    bases: tuple[tuple[str, ...], ...]  # each base: its candidate qualified names
    methods: dict[str, cst.FunctionDef] = field(default_factory=dict)
    class_attrs: dict[str, cst.BaseExpression] = field(default_factory=dict)

