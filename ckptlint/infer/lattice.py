"""The values inference works with: a small explicit lattice.

An expression may evaluate to several values (a union, kept as a list); the
empty list is *unknown*. The kinds:

- :class:`ClassRef`: a class or function reference (``nn.BatchNorm2d``,
  ``partial(Block, drop=0.1)``, an in-tree factory function);
- :class:`Instance`: a module object, with the constructor call and its
  arguments; a *container* instance (``nn.Sequential``, ``nn.ModuleList``,
  ``nn.ModuleDict``) also carries its elements, ordered or not;
- a callable body (``CallableRef`` in :mod:`ckptlint.infer.resolver`).

A :class:`Frame` says where an expression is evaluated: its module, the
local scope (:class:`~ckptlint.infer.scope.Env`, possibly with call-site
arguments bound to its parameters) and the class of ``self``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import libcst as cst

if TYPE_CHECKING:
    from ckptlint.infer.scope import Env
    from ckptlint.project import ClassInfo, FunctionInfo, ModuleInfo

__all__ = ["ClassRef", "Frame", "Instance", "is_literal", "literal_truth", "truth_in"]


@dataclass(frozen=True, eq=False)
class Frame:
    """Where an expression is evaluated: module, local scope, class of ``self``."""

    module: ModuleInfo
    env: Env | None
    owner: ClassInfo | None = None
    instance: Instance | None = None  # the object ``self`` is, when known (its constructor arguments bound)


@dataclass(frozen=True, eq=False)
class Instance:
    """A module object some expression may evaluate to."""

    qualnames: tuple[str, ...]
    cls: ClassInfo | None
    module: ModuleInfo
    call: cst.Call | None = None
    kwargs: tuple[tuple[str, cst.BaseExpression], ...] = ()
    args: tuple[cst.BaseExpression, ...] = ()
    elements: tuple[Instance, ...] = ()
    ordered: bool = False  # ``elements`` is exactly the container's sequence
    is_container: bool = False
    wrapped_by: cst.Call | None = None  # checkpoint_wrapper(...) around it
    wrapped_module: ModuleInfo | None = None
    prefix: int = 0  # leading elements whose positions are exact (``[First(...)]`` then appends)
    heads: int = 0  # leading elements that are the alternatives for the first slot (0: not known)
    keys: tuple[str | None, ...] = ()  # ModuleDict literal keys, parallel to ``elements``
    attrs: tuple[tuple[str, tuple["Instance", ...]], ...] = ()  # set on a bare ``nn.Module()`` namespace
    frame: Frame | None = None  # where the constructor call was evaluated (its arguments' scope)
    # Keywords a ``partial(Cls, norm_layer=GN)`` fixed before the call, each with its own scope.
    preset: tuple[tuple[str, cst.BaseExpression, Frame], ...] = ()

    def select(self, index: cst.BaseSlice) -> list[Instance]:
        """Elements ``container[index]`` may be."""
        els = list(self.elements)
        exact = len(els) if self.ordered else self.prefix
        if isinstance(index, cst.Index) and isinstance(index.value, cst.SimpleString) and self.keys:
            key = index.value.evaluated_value
            picked = [el for el, k in zip(els, self.keys) if k == key]
            return picked or [el for el, k in zip(els, self.keys) if k is None]
        if isinstance(index, cst.Index) and isinstance(index.value, cst.Integer):
            k = int(index.value.value, 0)
            if k < exact:
                return [els[k]]
            return els[exact:] if not self.ordered else []
        if isinstance(index, cst.Slice) and index.upper is None and index.step is None:
            lower = index.lower
            if isinstance(lower, cst.Integer):
                k = int(lower.value, 0)
                if k <= exact:
                    return els[k:]
                return els[exact:]
        return els

    def leaves(self, _depth: int = 0) -> list[Instance]:
        """The module objects calling this one runs directly: a ``Sequential``'s members, recursively.

        A ``ModuleList``/``ModuleDict`` is not callable; any other module is its own leaf.
        """
        if not self.is_container:
            return [self]
        if _depth > 8 or not any(q.endswith("Sequential") for q in self.qualnames):
            return []
        out: list[Instance] = []
        for el in self.elements:
            out.extend(el.leaves(_depth + 1))
        return out

    @property
    def short_name(self) -> str:
        if self.cls is not None:
            return self.cls.short
        return self.qualnames[0].rsplit(".", 1)[-1] if self.qualnames else "?"

    def truth(self, name: str, position: int | None = None) -> bool | None:
        """The truth of a constructor argument (``track_running_stats=track`` followed to its literal)."""
        value = self.kwarg(name, position)
        if value is None or self.frame is None:
            return literal_truth(value)
        return truth_in(value, self.frame)

    def kwarg(self, name: str, position: int | None = None) -> cst.BaseExpression | None:
        for key, value in reversed(self.kwargs):
            if key == name:
                return value
        if position is not None and position < len(self.args):
            return self.args[position]
        return None


@dataclass(frozen=True)
class ClassRef:
    """A class or function an expression names, with keywords bound by ``partial``."""

    qualnames: tuple[str, ...]
    cls: ClassInfo | None
    func: FunctionInfo | None
    kwargs: tuple[tuple[str, cst.BaseExpression], ...] = ()
    frame: Frame | None = None  # scope of the name (its factory's bound arguments)
    preset: tuple[tuple[str, cst.BaseExpression, Frame], ...] = ()  # ``partial`` keywords, with their scope


def truth_in(expr: cst.BaseExpression, frame: Frame, _depth: int = 0) -> bool | None:
    """Truth of ``expr`` where a name is followed through its scope's assignments and bound arguments."""
    found = literal_truth(expr)
    if found is not None or not isinstance(expr, cst.Name) or frame.env is None or _depth > 8:
        return found
    env = frame.env
    candidates = [(v, frame) for v in env.values.get(expr.value, ())] + list(env.bound.get(expr.value, ()))
    results = {truth_in(v, f, _depth + 1) for v, f in candidates if v is not expr}
    return results.pop() if len(results) == 1 else None


def literal_truth(expr: cst.BaseExpression | None) -> bool | None:
    """True/False for a literal (``True``, ``0``, ``None``...), None when unknown."""
    if expr is None:
        return None
    if isinstance(expr, cst.Name):
        if expr.value == "True":
            return True
        if expr.value in ("False", "None"):
            return False
        return None
    if isinstance(expr, cst.Integer):
        try:
            return int(expr.value, 0) != 0
        except ValueError:
            return None
    if isinstance(expr, cst.Float):
        return float(expr.value) != 0.0
    return None


def is_literal(expr: cst.BaseExpression) -> bool:
    """A constant written as such: a number (``-1`` too), a string, ``True``/``False``/``None``."""
    if isinstance(expr, (cst.Integer, cst.Float, cst.Imaginary, cst.SimpleString, cst.ConcatenatedString)):
        return True
    if isinstance(expr, cst.Name):
        return expr.value in ("True", "False", "None")
    return isinstance(expr, cst.UnaryOperation) and isinstance(expr.expression, (cst.Integer, cst.Float))
