"""Writes that store the same value every time they run (for CKP201/CKP203 precision, issue 9).

The recompute in backward runs the body again; a write is harmless there when
it stores a value that depends only on what the recompute sees identically:
a literal constant (``self.mode = "route"``), a tensor's dtype or device (``self.input_dtype = x.dtype``, ``.device``; not ``.shape``,
which follows the input),
or a converted copy of the attribute itself (``self.classifier =
self.classifier.to(x.dtype)``). A ``dict.update`` writing back values it reads
from the same dict (``d.update(k=d["k"])``, ``d.update({"k": d.get("k")})``)
changes nothing. Such writes are not reported: a default-off code would add
noise for no bug, since the second write is a no-op by construction.
"""

from __future__ import annotations

import libcst as cst

from ckptlint.analysis.walk import walk
from ckptlint.infer.lattice import is_literal

__all__ = ["code_of", "idempotent_assignment", "idempotent_update"]

_METADATA = frozenset({"dtype", "device", "is_cuda", "layout"})  # not .shape: it follows the input
_METADATA_CALLS = frozenset({"get_device"})
_CONVERSIONS = frozenset({"to", "float", "half", "bfloat16", "double", "type", "cuda", "cpu", "contiguous", "type_as"})


def code_of(node: cst.CSTNode) -> str:
    """Source text of a node (for messages and same-expression tests)."""
    return cst.Module(body=[]).code_for_node(node)


def idempotent_assignment(stmt: cst.CSTNode, target: cst.BaseExpression) -> bool:
    """``target = value`` in ``stmt`` stores tensor metadata or a converted copy of ``target`` itself."""
    value = _value_for(stmt, target)
    if value is None:
        return False
    if is_literal(value):  # ``self.mlp.fwd_execution_map = "route"``: the same constant each run
        return True
    if isinstance(value, cst.Attribute) and value.attr.value in _METADATA:
        return True
    if isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute):
        if value.func.attr.value in _METADATA_CALLS:
            return True
        # self.classifier = self.classifier.to(dtype).float() ...
        expr: cst.BaseExpression = value
        while isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) and expr.func.attr.value in _CONVERSIONS:
            expr = expr.func.value
        return expr is not value and code_of(expr) == code_of(target)
    return False


def _value_for(stmt: cst.CSTNode, target: cst.BaseExpression) -> cst.BaseExpression | None:
    smalls = stmt.body if isinstance(stmt, cst.SimpleStatementLine) else (stmt,)
    for small in smalls:
        if isinstance(small, cst.Assign) and any(t.target is target for t in small.targets):
            return small.value
        if isinstance(small, cst.AnnAssign) and small.target is target:
            return small.value
    return None


def idempotent_update(call: cst.Call, scope: cst.CSTNode | None = None) -> bool:
    """``d.update(...)`` whose every value is read back from ``d`` under the same key.

    With ``scope`` (the function body), a value may be a local assigned once from such a read
    (diffusers: ``lora_scale = kwargs.get("scale", 1.0)`` ... ``kwargs.update({"scale": lora_scale})``).
    """
    func = call.func
    if not (isinstance(func, cst.Attribute) and func.attr.value == "update") or not call.args:
        return False
    receiver = code_of(func.value)
    pairs: list[tuple[str | None, cst.BaseExpression]] = []
    for arg in call.args:
        if arg.star:
            return False
        if arg.keyword is not None:
            pairs.append((repr(arg.keyword.value), arg.value))
        elif isinstance(arg.value, cst.Dict):
            for el in arg.value.elements:
                if not isinstance(el, cst.DictElement) or not isinstance(el.key, cst.SimpleString):
                    return False
                pairs.append((repr(el.key.evaluated_value), el.value))
        else:
            return False
    return bool(pairs) and all(key is not None and _reads_back(_through_local(value, scope), receiver, key) for key, value in pairs)


def _through_local(value: cst.BaseExpression, scope: cst.CSTNode | None) -> cst.BaseExpression:
    """The one value a local name is assigned in ``scope`` (else ``value`` itself)."""
    if scope is None or not isinstance(value, cst.Name):
        return value
    found: list[cst.BaseExpression] = []
    for node in walk(scope):
        if isinstance(node, cst.Assign) and any(isinstance(t.target, cst.Name) and t.target.value == value.value for t in node.targets):
            found.append(node.value)
        elif isinstance(node, (cst.AugAssign, cst.AnnAssign)) and isinstance(node.target, cst.Name) and node.target.value == value.value:
            return value
    return found[0] if len(found) == 1 else value


def _reads_back(value: cst.BaseExpression, receiver: str, key: str) -> bool:
    if isinstance(value, cst.Subscript) and len(value.slice) == 1 and isinstance(value.slice[0].slice, cst.Index):
        index = value.slice[0].slice.value
        return code_of(value.value) == receiver and isinstance(index, cst.SimpleString) and repr(index.evaluated_value) == key
    if isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and value.func.attr.value == "get" and value.args:
        first = value.args[0].value
        return code_of(value.func.value) == receiver and isinstance(first, cst.SimpleString) and repr(first.evaluated_value) == key
    return False
