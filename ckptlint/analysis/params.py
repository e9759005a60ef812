"""Which parameters of a checkpointed callable carry its inputs."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

import libcst as cst

from ckptlint.infer.lattice import is_literal
from ckptlint.project import ClassInfo, Project, dotted_name

if TYPE_CHECKING:
    from ckptlint.infer.resolver import CallableRef

__all__ = ["GC_LAYER_NULLED", "gc_layer_nulled", "input_params", "installed_major"]


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
    if isinstance(ann, cst.Subscript) and dotted_name(ann.value) in ("tuple", "Tuple", "typing.Tuple"):
        # tuple[int, int], tuple[int, ...]: immutable and holding no tensor (a list could be mutated)
        elements = [el.slice.value for el in ann.slice if isinstance(el.slice, cst.Index)]
        return bool(elements) and all(isinstance(e, cst.Ellipsis) or _is_non_tensor_annotation(e) for e in elements)
    if isinstance(ann, cst.SimpleString):
        return ann.value.strip("'\"") in _NON_TENSOR_TYPES
    return False


def _is_literal_default(expr: cst.BaseExpression) -> bool:
    # ``None`` is the usual default of an optional tensor argument: not a sign of a non-tensor.
    return is_literal(expr) and not (isinstance(expr, cst.Name) and expr.value == "None")


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
                if is_literal(value):  # ``None``, a flag, a number or string: no tensor in it
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


# -- what transformers' GradientCheckpointingLayer passes as None under checkpoint ----------------
#
# Read from each release's ``modeling_layers.py`` (issue 9):
# - 4.5x (4.57.1 ``GradientCheckpointingLayer.__call__``): ``use_cache=False`` and
#   ``past_key_value`` / ``past_key_values`` / ``layer_past`` set to None; checkpoints ``__call__``.
# - 5.x (5.24.0 ``forward_with_checkpointing``): ``use_cache=False``; ``cache`` and ``layer_past`` set
#   to None only when the class keeps ``_can_checkpoint_with_cache = False`` (the default);
#   ``past_key_value(s)`` are NOT nulled; checkpoints ``forward``.
# Only keyword arguments are nulled: a cache passed positionally reaches the layer.
GC_LAYER_NULLED = {
    4: frozenset({"use_cache", "past_key_value", "past_key_values", "layer_past"}),
    5: frozenset({"use_cache", "cache", "layer_past"}),
}
_KEEPS_CACHE = frozenset({"use_cache"})
_NULL_RE = re.compile(r"""kwargs\[\s*["'](\w+)["']\s*\]\s*=\s*(?:None|False)\b""")
# ``for name in ("cache", "layer_past"): ... kwargs[name] = None``
_NULL_LOOP_RE = re.compile(r"""for\s+(\w+)\s+in\s+[(\[]([^)\]]*)[)\]]\s*:(?:(?!\nclass ).)*?kwargs\[\s*\1\s*\]\s*=\s*(?:None|False)\b""", re.S)


def installed_major(dist: str, default: int) -> int:
    """Major version of an installed distribution from its metadata (nothing is imported)."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return int(version(dist).split(".", 1)[0])
        except PackageNotFoundError:
            return default
    except (ValueError, ImportError):
        return default


def gc_layer_nulled(project: Project, cls: ClassInfo | None) -> frozenset[str]:
    """Keyword parameters a ``GradientCheckpointingLayer`` subclass receives as None/False under checkpoint.

    When the checked tree holds ``GradientCheckpointingLayer`` itself (linting transformers), its own
    source says which keywords it nulls; otherwise the installed transformers release decides. A class
    (or base) setting ``_can_checkpoint_with_cache = True`` keeps its cache on 5.x: only ``use_cache`` is
    nulled then.
    """
    if cls is None:
        return GC_LAYER_NULLED[5]
    chain = [cls, *project.base_classes(cls)]
    base = next((c for c in chain if c.short == "GradientCheckpointingLayer"), None)
    nulled: frozenset[str] = frozenset()
    conditional: frozenset[str] = frozenset()
    if base is not None:
        cache = project.cache.setdefault("gc_layer_nulled", {})
        key = (base.module.path, base.qualname)
        if key not in cache:
            text = base.module.code_for(base.node)
            guard = text.find("_can_checkpoint_with_cache:")
            names = {m.group(1): m.start() for m in _NULL_RE.finditer(text)}
            for m in _NULL_LOOP_RE.finditer(text):
                for name in re.findall(r"""["'](\w+)["']""", m.group(2)):
                    names.setdefault(name, m.start())
            cache[key] = (frozenset(names), frozenset(n for n, at in names.items() if 0 <= guard < at))
        nulled, conditional = cache[key]
    if not nulled:  # not in the tree, or written in a shape we do not read: the installed release
        nulled = GC_LAYER_NULLED[5 if installed_major("transformers", 5) >= 5 else 4]
        conditional = nulled - _KEEPS_CACHE if nulled == GC_LAYER_NULLED[5] else frozenset()
    for c in chain:
        flag = c.class_attrs.get("_can_checkpoint_with_cache")
        if flag is not None:
            if isinstance(flag, cst.Name) and flag.value == "True":
                return nulled - conditional
            break
    return nulled
