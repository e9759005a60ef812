"""Which parameters of a checkpointed callable carry its inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import libcst as cst

from ckptlint.project import dotted_name

if TYPE_CHECKING:
    from ckptlint.infer.resolver import CallableRef

__all__ = ["input_params"]


_NON_TENSOR_TYPES = frozenset({"int", "float", "bool", "str", "bytes", "complex"})


def _is_non_tensor_annotation(ann: cst.BaseExpression) -> bool:
    if isinstance(ann, cst.Name):
        return ann.value in _NON_TENSOR_TYPES
    if isinstance(ann, cst.BinaryOperation) and isinstance(ann.operator, cst.BitOr):
        parts = [ann.left, ann.right]
        return all(_is_non_tensor_annotation(p) or (isinstance(p, cst.Name) and p.value == "None") for p in parts)
    if isinstance(ann, cst.Subscript) and dotted_name(ann.value) in ("Optional", "typing.Optional"):
        el = ann.slice[0].slice if ann.slice else None
        return isinstance(el, cst.Index) and _is_non_tensor_annotation(el.value)
    if isinstance(ann, cst.SimpleString):
        return ann.value.strip("'\"") in _NON_TENSOR_TYPES
    return False


def _is_literal_default(expr: cst.BaseExpression) -> bool:
    if isinstance(expr, (cst.Integer, cst.Float, cst.SimpleString, cst.ConcatenatedString, cst.Imaginary)):
        return True
    if isinstance(expr, cst.Name) and expr.value in ("True", "False"):
        return True
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.expression, (cst.Integer, cst.Float)):
        return True
    return False


def input_params(
    ref: CallableRef,
    positional: Sequence[cst.BaseExpression] | None = None,
    keywords: dict[str, cst.BaseExpression] | None = None,
    extra_nulled: frozenset[str] = frozenset(),
) -> frozenset[str]:
    """Parameters of ``ref`` that carry checkpoint inputs.

    ``positional``/``keywords`` are the arguments the checkpoint call passes
    when they are known (no ``*args``): a defaulted parameter nobody passes
    holds its default, and an argument spelled ``None`` carries nothing.
    """
    if not ref.receives_input:
        return frozenset()
    node = ref.node
    p = node.params
    ordered = [*p.posonly_params, *p.params]
    if ref.bound and ordered:
        ordered = ordered[1:]
    ordered = ordered[ref.partial_positional :]
    nulled = set(ref.nulled) | set(extra_nulled)
    out: set[str] = set()
    everything = [*ordered, *p.kwonly_params]
    for param in everything:
        name = param.name.value
        if name in nulled:
            continue
        if param.annotation is not None and _is_non_tensor_annotation(param.annotation.annotation):
            continue
        if param.default is not None and _is_literal_default(param.default):
            continue
        out.add(name)
    for star in (p.star_arg, p.star_kwarg):
        if isinstance(star, cst.Param):
            out.add(star.name.value)
    if positional is not None:
        kw = keywords or {}
        for i, param in enumerate(ordered):
            name = param.name.value
            if i < len(positional):
                value = positional[i]
                if isinstance(value, cst.Name) and value.value == "None":
                    out.discard(name)
            elif name in kw:
                value = kw[name]
                if isinstance(value, cst.Name) and value.value in ("None", "False"):
                    out.discard(name)
            elif param.default is not None:
                out.discard(name)
        for param in p.kwonly_params:
            name = param.name.value
            if name in kw:
                value = kw[name]
                if isinstance(value, cst.Name) and value.value in ("None", "False"):
                    out.discard(name)
            elif param.default is not None:
                out.discard(name)
        if len(positional) <= len(ordered) and isinstance(p.star_arg, cst.Param):
            out.discard(p.star_arg.name.value)
        if not kw and isinstance(p.star_kwarg, cst.Param):
            out.discard(p.star_kwarg.name.value)
    return frozenset(out)
