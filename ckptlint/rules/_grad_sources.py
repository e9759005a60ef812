"""Which values in a function provably cannot carry gradient (for CKP403).

A value cannot require grad when it is ``t.detach()``, was computed under
``with torch.no_grad()`` / ``torch.inference_mode()``, or is the output of a
submodule whose parameters the class froze (``self.embed.requires_grad_(False)``,
``for p in self.embed.parameters(): p.requires_grad = False``). A name
counts only when *every* assignment to it in the function is such a value
and nothing turns grad back on (``x.requires_grad_()``,
``x.requires_grad = True``, ``enable_input_require_grads`` /
``make_inputs_require_grad`` hooks anywhere in the file).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

from ckptlint.analysis.walk import iter_children, walk
from ckptlint.project import ClassInfo, ModuleInfo, dotted_name

__all__ = ["GradSources", "REENABLERS", "frozen_submodules"]

_SAME = "<site>"
_NO_GRAD = frozenset({"no_grad", "inference_mode"})
# Text that turns gradient back on for frozen outputs (transformers' and PEFT's hooks).
REENABLERS = ("enable_input_require_grads", "make_inputs_require_grad", "make_inputs_require_grads")


@dataclass
class GradSources:
    """Assignments of one function body, each with why it cannot carry gradient (or ``""``)."""

    fn: cst.FunctionDef
    self_name: str | None
    frozen: frozenset[str]  # ``self.<attr>`` submodules the class froze
    site: cst.Call | None = None  # the reentrant checkpoint itself: its output inherits its inputs' state
    assigned: dict[str, list[str]] = field(default_factory=dict)
    reenabled: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, fn: cst.FunctionDef, self_name: str | None, frozen: frozenset[str], site: cst.Call | None = None) -> GradSources:
        out = cls(fn, self_name, frozen, site)
        out._scan(fn.body, False)
        return out

    def why(self, expr: cst.BaseExpression) -> str | None:
        """Why ``expr`` cannot require grad (``".detach()"``...), or None when it may."""
        reason = self._expr_reason(expr, False)
        if reason:
            return reason
        if isinstance(expr, cst.Name) and expr.value not in self.reenabled:
            # ``h = checkpoint(blk, h)`` in a loop: the output of a reentrant checkpoint over
            # grad-less inputs is grad-less too, so that assignment changes nothing.
            reasons = [r for r in self.assigned.get(expr.value, ()) if r != _SAME]
            if reasons and all(reasons):
                return reasons[0]
        return None

    def _expr_reason(self, expr: cst.BaseExpression, under_no_grad: bool) -> str:
        if expr is self.site:
            return _SAME
        if under_no_grad:
            return "computed under torch.no_grad()"
        if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute):
            if expr.func.attr.value == "detach" and not expr.args:
                return ".detach()"
            owner = expr.func.value
            if expr.func.attr.value in ("forward", "__call__"):
                owner_call = owner
            else:
                owner_call = None
            target = owner_call if owner_call is not None else expr.func
            if self._frozen_attr(target):
                return f"output of frozen '{dotted_name(target)}'"
        if isinstance(expr, cst.Call) and self._frozen_attr(expr.func):
            return f"output of frozen '{dotted_name(expr.func)}'"
        return ""

    def _frozen_attr(self, expr: cst.BaseExpression) -> bool:
        return (
            isinstance(expr, cst.Attribute)
            and isinstance(expr.value, cst.Name)
            and expr.value.value == self.self_name
            and expr.attr.value in self.frozen
        )

    def _scan(self, node: cst.CSTNode, under_no_grad: bool) -> None:
        for child in iter_children(node):
            if isinstance(child, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
                continue
            if isinstance(child, cst.With):
                inner = under_no_grad or any(_is_no_grad(item.item) for item in child.items)
                self._scan(child.body, inner)
                continue
            if isinstance(child, cst.Assign):
                for target in child.targets:
                    self._bind(target.target, child.value, under_no_grad)
            elif isinstance(child, (cst.AnnAssign, cst.AugAssign)) and child.value is not None:
                self._bind(child.target, child.value, under_no_grad and isinstance(child, cst.AnnAssign))
            elif isinstance(child, cst.For):
                self._bind(child.target, child.iter, False)
            elif isinstance(child, cst.Call):
                self._reenable(child)
            self._scan(child, under_no_grad)

    def _bind(self, target: cst.BaseExpression, value: cst.BaseExpression, under_no_grad: bool) -> None:
        if isinstance(target, cst.Name):
            self.assigned.setdefault(target.value, []).append(self._expr_reason(value, under_no_grad))
        elif isinstance(target, (cst.Tuple, cst.List)):
            for el in target.elements:
                self._bind(el.value, value, under_no_grad)
        elif isinstance(target, cst.Attribute) and target.attr.value == "requires_grad" and isinstance(target.value, cst.Name):
            self.reenabled.add(target.value.value)

    def _reenable(self, call: cst.Call) -> None:
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value == "requires_grad_":
            base = func.value
            while isinstance(base, (cst.Call, cst.Attribute)):
                base = base.func if isinstance(base, cst.Call) else base.value
            if isinstance(base, cst.Name):
                self.reenabled.add(base.value)


def _is_no_grad(expr: cst.BaseExpression) -> bool:
    if isinstance(expr, cst.Call):
        expr = expr.func
    name = dotted_name(expr) or ""
    return name.rsplit(".", 1)[-1] in _NO_GRAD and ("torch" in name or "." not in name)


def frozen_submodules(mod: ModuleInfo, cls: ClassInfo | None) -> frozenset[str]:
    """``self.<attr>`` submodules whose parameters some method of ``cls`` turns off."""
    if cls is None:
        return frozenset()
    out: set[str] = set()
    for node in walk(cls.node):
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == "requires_grad_":
            if node.args and _false(node.args[0].value):
                attr = _self_attr(node.func.value)
                if attr:
                    out.add(attr)
        elif isinstance(node, cst.For) and isinstance(node.target, cst.Name):
            # for p in self.embed.parameters(): p.requires_grad = False
            it = node.iter
            if isinstance(it, cst.Call) and isinstance(it.func, cst.Attribute) and it.func.attr.value == "parameters":
                attr = _self_attr(it.func.value)
                if attr and _body_freezes(node, node.target.value):
                    out.add(attr)
    return frozenset(out)


def _body_freezes(loop: cst.For, var: str) -> bool:
    for n in walk(loop.body):
        if isinstance(n, cst.Assign) and _false(n.value):
            for t in n.targets:
                if isinstance(t.target, cst.Attribute) and t.target.attr.value == "requires_grad" and dotted_name(t.target.value) == var:
                    return True
        if isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute) and n.func.attr.value == "requires_grad_":
            if dotted_name(n.func.value) == var and n.args and _false(n.args[0].value):
                return True
    return False


def _self_attr(expr: cst.BaseExpression) -> str | None:
    if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value == "self":
        return expr.attr.value
    return None


def _false(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "False"
