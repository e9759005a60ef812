"""Checkpointing switched on by module path: mmengine's ``turn_on_activation_checkpointing``.

``turn_on_activation_checkpointing(model, ["backbone.layer1", "backbone.layer2"])`` replaces the
``forward`` of each named submodule with ``checkpoint(forward, *args)`` (torch's default, reentrant;
the wrapper takes positional arguments only). The model's class is rarely known where the call is
(it comes from a registry config), so a path names every module stored under its last attribute
(``self.layer1 = ...`` or ``add_module("layer1", ...)``) by a class of the calling file or of the
in-tree modules it imports (transitively); a numeric last part (``"backbone.stages.0"``) names the
element at that index of the container under the part before it.
"""

from __future__ import annotations

import re

import libcst as cst

from ckptlint.discovery.patches import reach
from ckptlint.infer import Evaluator, Instance
from ckptlint.project import ClassInfo, ModuleInfo, Project

__all__ = ["instances_at_paths", "path_strings"]


def path_strings(expr: cst.BaseExpression | None) -> list[str]:
    """``"a.b"`` or ``["a.b", "c"]`` written at the call."""
    if isinstance(expr, cst.SimpleString) and isinstance(expr.evaluated_value, str):
        return [expr.evaluated_value]
    if isinstance(expr, (cst.List, cst.Tuple, cst.Set)):
        return [s for el in expr.elements for s in path_strings(el.value)]
    return []


def instances_at_paths(project: Project, evaluator: Evaluator, paths: list[str], caller: ModuleInfo) -> list[Instance]:
    out: list[Instance] = []
    files = sorted(reach(project, caller))
    for path in paths:
        parts = [p for p in path.split(".") if p]
        index = parts.pop() if parts and parts[-1].isdigit() else None
        if not parts or not parts[-1].isidentifier():
            continue
        attr = parts[-1]
        for inst in _stored_under(project, evaluator, attr, files):
            if index is None:
                out.append(inst)
            elif inst.is_container:
                out.extend(inst.select(cst.Index(cst.Integer(index))))
    return out


def _stored_under(project: Project, evaluator: Evaluator, attr: str, files: list[str]) -> list[Instance]:
    pattern = re.compile(rf"self\.{attr}\s*=[^=]|add_module\(\s*['\"]{attr}['\"]")
    out: list[Instance] = []
    for path in files:
        try:
            text = project.read(path)
        except OSError:
            continue
        if not pattern.search(text):
            continue
        mod = project.module(path)
        for name, node in list(mod.defs.items()):
            if not isinstance(node, cst.ClassDef):
                continue
            cls = project.lookup(f"{mod.name}.{name}", mod)
            if isinstance(cls, ClassInfo):
                out.extend(evaluator.attr_table(cls).get(attr, ()))
    return out
