"""Small predicates shared by several rules."""

from __future__ import annotations

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.analysis.flow import CallEvent, Root
from ckptlint.discovery.sites import SiteCall
from ckptlint.infer.lattice import Instance, literal_truth
from ckptlint.rules.base import literal

__all__ = ["first_positional", "inplace_method", "inplace_torch_function", "is_input", "reentrant_variant", "written"]


def is_input(root: Root | None) -> bool:
    return root is not None and root.kind == "input"


def inplace_method(name: str | None) -> bool:
    """``add_``-style tensor method names (in-place by PyTorch convention)."""
    return (
        name is not None
        and name.endswith("_")
        and not name.startswith("_")
        and not name.endswith("__")
        and name not in N.INPLACE_EXCLUDED
    )


def inplace_torch_function(qualnames: tuple[str, ...]) -> str | None:
    """``torch.relu_``/``torch.nn.init.zeros_``: the last name, else None."""
    for q in qualnames:
        if q.startswith("torch.") and inplace_method(q.rsplit(".", 1)[-1]):
            return q.rsplit(".", 1)[-1]
    return None


def first_positional(event: CallEvent) -> tuple[cst.BaseExpression, Root] | None:
    for keyword, value, root, star in event.args:
        if keyword is None and not star:
            return value, root
        break
    return None


def written(node: cst.BaseExpression) -> str:
    """Short source-like text of a simple expression, for messages."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{written(node.value)}.{node.attr.value}"
    if isinstance(node, cst.Subscript):
        return f"{written(node.value)}[...]"
    if isinstance(node, cst.Call):
        return f"{written(node.func)}(...)"
    return "..."


def instance_flag(inst: Instance, name: str) -> bool | None:
    cls_short = inst.qualnames[0].rsplit(".", 1)[-1] if inst.qualnames else ""
    return literal_truth(inst.kwarg(name, N.INPLACE_POSITION.get(cls_short) if name == "inplace" else None))


def reentrant_variant(site: SiteCall) -> str | None:
    """How ``site`` selects torch's reentrant checkpoint: ``"omitted"`` (no ``use_reentrant``, which
    torch's own functions default to; not through ``**kwargs``), ``"explicit"`` (``use_reentrant=True``,
    at the call or bound by a partial or a patch), else None (non-reentrant, or not known here)."""
    value = site.option("use_reentrant")
    if value is None:
        return "omitted" if site.torch_api and not any(a.star == "**" for a in site.call.args) else None
    return "explicit" if literal(value) is True else None
